"""Runs one batch of jobs on the worker pool.

- Jobs travel in chunks: one frame to a worker, one frame back, and (behind the gate) one program process for the
  whole chunk, each job in it with its own limits (runtime/hub.py). A chunk holds a slot's share of the batch, but
  at least 32 jobs (each process started costs the host 2-3 ms of CPU, mostly copy-on-write faults in it and in
  the worker: more than most jobs, and on a busy host that CPU is what the batch waits for) and at most 64 (a big
  batch still comes in a few chunks per worker, so that a validation whose first run failed, a timeout above all,
  has its second run dropped before it is sent). A chunk is formed when a worker takes it.
- At most `slots` chunks run at once: one per busy worker.
- Each busy worker also holds one chunk in reserve, so it starts the next without waiting for us.
- A run with a `group` goes to a worker of that hash-seed group: a validation's two runs go one to each, at the
  same time, the second runs in reverse order. A program that changed what a later one in its process sees
  cannot change it the same way in both runs, so the determinism check catches it. A run cancelled before it was
  sent is dropped.
- A worker that dies or stops answering is replaced; the runs of its running chunk are retried once, then each is
  reported as "worker_crash"; the chunk it held in reserve is simply queued again.
"""

from __future__ import annotations

import selectors
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from botlab.sandbox.runtime.protocol import WALL_STRETCH, WorkerGone
from botlab.sandbox.workers import Worker

GRACE_S = 10.0  # beyond its jobs' own deadlines, how long a worker may take to answer before it is replaced
MIN_CHUNK, MAX_CHUNK = 32, 64  # jobs per frame (and per program process): enough to spread a process start thinly


@dataclass(eq=False)
class Run:
    """One job; `key` says which batch item it belongs to."""

    key: int
    job: dict
    group: int | None = None  # the hash-seed group it must run in (None: any)
    stage: int = 1
    cancelled: bool = False  # set by the caller: no longer needed, skipped if not yet sent
    failures: list[str] = field(default_factory=list)  # why the workers running it were replaced


@dataclass(eq=False)
class Chunk:
    """Runs sent to one worker in one frame."""

    runs: list[Run]


# Called with each result (or a synthesized "worker_crash" one) and the seed group it ran in.
OnResult = Callable[[Run, int, dict], None]


class Batch:
    def __init__(self, workers: list[Worker], slots: int, timeout_s: float, tasks_per_worker: int,
                 on_result: OnResult, is_closed: Callable[[], bool]):
        self.workers = workers
        self.slots = slots
        self.timeout_s = timeout_s
        self.tasks_per_worker = tasks_per_worker
        self.on_result = on_result
        self.is_closed = is_closed
        self.pending: dict[int | None, deque[Run]] = {None: deque(), 0: deque(), 1: deque()}
        self.assigned: dict[Worker, deque[Chunk]] = {}  # in order; the first one is running
        self.deadline: dict[Worker, float] = {}

    def run(self, runs: list[Run]) -> None:
        # Few chunks: a process start costs more than most jobs, and a round is as slow as its slowest chunk.
        self.size = max(MIN_CHUNK, min(MAX_CHUNK, -(-len(runs) // self.slots)))
        for run in runs:
            self.pending[run.group].append(run)
        with selectors.DefaultSelector() as self.selector:
            while self._drop_cancelled() or self.assigned:
                self._assign()
                self._wait()

    def _drop_cancelled(self) -> bool:
        """Forget cancelled runs; True if any run is still waiting."""
        for group, queue in self.pending.items():
            if any(run.cancelled for run in queue):
                self.pending[group] = deque(run for run in queue if not run.cancelled)
        return any(self.pending.values())

    # --- handing out jobs ------------------------------------------------------------------------------------------

    def _assign(self) -> None:
        self._drop_cancelled()
        while len(self.assigned) < self.slots:
            worker = self._idle_worker()
            chunk = worker and self._take(_group(worker))
            if not chunk:
                break
            self._send(worker, chunk)
        for worker in list(self.assigned):  # one chunk in reserve behind the running one
            if len(self.assigned.get(worker, ())) == 1 and (chunk := self._take(_group(worker))):
                self._send(worker, chunk)

    def _idle_worker(self) -> Worker | None:
        idle = [w for w in self.workers if w not in self.assigned]
        for group in (0, 1):  # second stages first: they complete items
            if self.pending[group]:
                match = _longest_idle(w for w in idle if _group(w) == group)
                if match:
                    return match
        if not self.pending[None] or not idle:
            return None
        busy = [sum(1 for w in self.assigned if _group(w) == group) for group in (0, 1)]
        return min(idle, key=lambda w: (busy[_group(w)], w.answered_at))  # the quieter group, then the longest idle

    def _take(self, group: int) -> Chunk | None:
        for queue in (self.pending[group], self.pending[None]):
            if queue:
                return Chunk([queue.popleft() for _ in range(min(self.size, len(queue)))])
        return None

    def _patience(self, chunk: Chunk) -> float:
        return len(chunk.runs) * self.timeout_s * WALL_STRETCH + GRACE_S

    def _send(self, worker: Worker, chunk: Chunk) -> None:
        queue = self.assigned.setdefault(worker, deque())
        queue.append(chunk)
        if len(queue) == 1:
            self.deadline[worker] = time.monotonic() + self._patience(chunk)
            self.selector.register(worker, selectors.EVENT_READ)
        try:
            worker.send([run.job for run in chunk.runs])
        except WorkerGone as gone:
            self._replace(worker, f"send failed: {gone}")

    # --- collecting results --------------------------------------------------------------------------------------

    def _wait(self) -> None:
        if not self.assigned:
            return
        timeout = max(0.0, min(self.deadline.values()) - time.monotonic())
        for key, _ in self.selector.select(timeout):
            worker = key.fileobj
            queue = self.assigned[worker]
            try:
                results = worker.receive()
                if not isinstance(results, list) or len(results) != len(queue[0].runs):
                    raise WorkerGone(f"{len(results)} results for {len(queue[0].runs)} jobs")
            except WorkerGone as gone:
                self._replace(worker, str(gone))
                continue
            self._deliver(queue.popleft(), _group(worker), results)
            if queue:
                self.deadline[worker] = time.monotonic() + self._patience(queue[0])
            else:
                self._release(worker)
                if worker.runs >= self.tasks_per_worker:
                    worker.restart()
        now = time.monotonic()
        for worker, deadline in list(self.deadline.items()):
            if now > deadline:  # the worker itself is stuck: its jobs' own deadlines should have fired long ago
                self._replace(worker, f"no answer {self._patience(self.assigned[worker][0]):g} s after it started")

    def _deliver(self, chunk: Chunk, group: int, results: list[dict]) -> None:
        for run, result in zip(chunk.runs, results):
            self.on_result(run, group, result)

    def _release(self, worker: Worker) -> list[Chunk]:
        self.selector.unregister(worker)
        self.deadline.pop(worker)
        return list(self.assigned.pop(worker))

    def _replace(self, worker: Worker, why: str) -> None:
        """A worker died or hangs: start a new one, retry its running chunk's runs once, queue its reserve again."""
        if self.is_closed():  # closed from another thread while this batch ran
            raise RuntimeError("the sandbox executor was closed during a batch")
        running, *reserve = self._release(worker)
        worker.restart()
        retry, failed = [], []
        for run in running.runs:
            run.failures.append(why)
            (retry if len(run.failures) < 2 else failed).append(run)
        for run in reversed([run for chunk in reserve for run in chunk.runs] + retry):
            self.pending[run.group].appendleft(run)
        for run in failed:
            detail = "the sandbox worker failed twice on this item: " + "; ".join(run.failures)
            self.on_result(run, _group(worker), {"reason": "worker_crash", "detail": detail, "outputs": []})


def _group(worker: Worker) -> int:
    return worker.index % 2


def _longest_idle(workers) -> Worker | None:
    """The one that answered longest ago: it has had the most time to reap its last program process and fork the
    next one (runtime/hub.py)."""
    return min(workers, key=lambda w: w.answered_at, default=None)
