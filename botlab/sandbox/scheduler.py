"""Runs one batch of jobs on the worker pool.

- At most `slots` programs run at once: one per busy worker.
- Each busy worker also holds one job in reserve, so it starts the next program without waiting for us.
- A validation's second run must go to a worker of the other hash-seed group (`Run.group`).
- A worker that dies or stops answering is replaced; its running job is retried once, then reported as
  "worker_crash"; the job it held in reserve is simply queued again.
"""

from __future__ import annotations

import selectors
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from botlab.sandbox.runtime.protocol import WorkerGone
from botlab.sandbox.workers import Worker

GRACE_S = 10.0  # beyond its own deadline, how long a worker may take to answer before it is replaced


@dataclass
class Run:
    """One job for one worker; `key` says which batch item it belongs to."""

    key: int
    job: dict
    group: int | None = None  # the hash-seed group it must run in (None: any)
    stage: int = 1
    failures: list[str] = field(default_factory=list)  # why the workers running it were replaced


# Called with each result (or a synthesized "worker_crash" one) and the seed group it ran in; may return a
# follow-up run (a validation's second stage).
OnResult = Callable[[Run, int, dict], "Run | None"]


class Batch:
    def __init__(self, workers: list[Worker], slots: int, timeout_s: float, tasks_per_worker: int,
                 on_result: OnResult, is_closed: Callable[[], bool]):
        self.workers = workers
        self.slots = slots
        self.patience_s = timeout_s + GRACE_S
        self.tasks_per_worker = tasks_per_worker
        self.on_result = on_result
        self.is_closed = is_closed
        self.pending: dict[int | None, deque[Run]] = {None: deque(), 0: deque(), 1: deque()}
        self.assigned: dict[Worker, deque[Run]] = {}  # in order; the first one is running
        self.deadline: dict[Worker, float] = {}

    def run(self, runs: list[Run]) -> None:
        self.pending[None].extend(runs)
        with selectors.DefaultSelector() as self.selector:
            while any(self.pending.values()) or self.assigned:
                self._assign()
                self._wait()

    # --- handing out jobs ------------------------------------------------------------------------------------------

    def _assign(self) -> None:
        while len(self.assigned) < self.slots:
            worker = self._idle_worker()
            run = worker and self._take(_group(worker))
            if not run:
                break
            self._send(worker, run)
        for worker in list(self.assigned):  # one job in reserve behind the running one
            if len(self.assigned.get(worker, ())) == 1 and (run := self._take(_group(worker))):
                self._send(worker, run)

    def _idle_worker(self) -> Worker | None:
        idle = [w for w in self.workers if w not in self.assigned]
        for group in (0, 1):  # second stages first: they complete items
            if self.pending[group]:
                match = next((w for w in idle if _group(w) == group), None)
                if match:
                    return match
        if not self.pending[None] or not idle:
            return None
        busy_in_0 = sum(1 for w in self.assigned if _group(w) == 0)
        group = 0 if busy_in_0 <= len(self.assigned) - busy_in_0 else 1
        return next((w for w in idle if _group(w) == group), idle[0])

    def _take(self, group: int) -> Run | None:
        for queue in (self.pending[group], self.pending[None]):
            if queue:
                return queue.popleft()
        return None

    def _send(self, worker: Worker, run: Run) -> None:
        queue = self.assigned.setdefault(worker, deque())
        queue.append(run)
        if len(queue) == 1:
            self.deadline[worker] = time.monotonic() + self.patience_s
            self.selector.register(worker, selectors.EVENT_READ)
        try:
            worker.send(run.job)
        except WorkerGone as gone:
            self._replace(worker, f"send failed: {gone}")

    # --- collecting results --------------------------------------------------------------------------------------

    def _wait(self) -> None:
        if not self.assigned:
            return
        timeout = max(0.0, min(self.deadline.values()) - time.monotonic())
        for key, _ in self.selector.select(timeout):
            worker = key.fileobj
            try:
                result = worker.receive()
            except WorkerGone as gone:
                self._replace(worker, str(gone))
                continue
            queue = self.assigned[worker]
            self._deliver(queue.popleft(), _group(worker), result)
            if queue:
                self.deadline[worker] = time.monotonic() + self.patience_s
            else:
                self._release(worker)
                if worker.runs >= self.tasks_per_worker:
                    worker.restart()
        now = time.monotonic()
        for worker, deadline in list(self.deadline.items()):
            if now > deadline:  # the worker itself is stuck: its own deadline should have fired long ago
                self._replace(worker, f"no answer {self.patience_s:g} s after the program started")

    def _deliver(self, run: Run, group: int, result: dict) -> None:
        follow_up = self.on_result(run, group, result)
        if follow_up is not None:
            self.pending[follow_up.group].append(follow_up)

    def _release(self, worker: Worker) -> list[Run]:
        self.selector.unregister(worker)
        self.deadline.pop(worker)
        return list(self.assigned.pop(worker))

    def _replace(self, worker: Worker, why: str) -> None:
        """A worker died or hangs: start a new one, retry its running job once, queue its reserve again."""
        if self.is_closed():  # closed from another thread while this batch ran
            raise RuntimeError("the sandbox executor was closed during a batch")
        running, *reserve = self._release(worker)
        worker.restart()
        for run in reversed(reserve):
            self.pending[run.group].appendleft(run)
        running.failures.append(why)
        if len(running.failures) < 2:
            self.pending[running.group].appendleft(running)
        else:
            detail = "the sandbox worker failed twice on this item: " + "; ".join(running.failures)
            self._deliver(running, _group(worker), {"reason": "worker_crash", "detail": detail, "outputs": []})


def _group(worker: Worker) -> int:
    return worker.index % 2
