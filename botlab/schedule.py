"""The daemon's timed work as APScheduler jobs on its side loop: digests, reply polls, evaluations, pruning.

The side loop (an asyncio loop in its own thread) is free while the main thread trains, so a job runs on time even
in the middle of a long phase. Work that needs the rollout engine cannot: the step is using it, and vLLM wants the
main thread. Such a job only hands its work over (`for_boundary`), and the main thread runs it at the next phase
boundary (`run_boundary`, from `Daemon._tick`), never in the middle of a phase.

State across restarts: each job's last run is a time in the run's kv table, written by the work itself when it is
done, and a job's first run after a start is one interval after that time, or at once when that has passed: a long
downtime gives one catch-up run, never one per missed interval, and nothing runs twice. APScheduler times the runs
(its MemoryJobStore, IntervalTrigger and DateTrigger, coalescing missed runs into one); its persistent job stores
are not used: the SQLAlchemy one needs SQLAlchemy, which botlab does not install, and every persistent store keeps a
job as a pickled callable with its arguments, while our jobs are methods of live objects (channels with open
connections, the engine) that a restart builds anew. What must survive is when each was last done, and the kv
table holds that in the run's own store.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
from datetime import datetime, timezone
from typing import Any, Callable

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from botlab.store import Store

log = logging.getLogger(__name__)
# APScheduler logs every run of every job at INFO: a reply poll each minute would fill the run's log.
logging.getLogger("apscheduler").setLevel(logging.WARNING)


def _at(when: float) -> datetime:
    return datetime.fromtimestamp(when, timezone.utc)


class Schedule:
    def __init__(self, store: Store, loop: asyncio.AbstractEventLoop):
        self.store = store
        # coalesce: runs missed while the loop was busy become one; no grace limit: a late run still runs.
        self.scheduler = AsyncIOScheduler(event_loop=loop, timezone=timezone.utc, job_defaults={
            "coalesce": True, "max_instances": 1, "misfire_grace_time": None})
        self._waiting: dict[str, Callable[[], Any]] = {}  # name -> work for the main thread's next boundary
        self._waiting_lock = threading.Lock()
        self._at_boundary = False  # work run at a boundary reaches boundaries of its own (an eval's phases)

    def start(self) -> None:
        self.scheduler.start()

    def stop(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)

    # --- jobs ---------------------------------------------------------------------------------------------------------

    def every(self, name: str, seconds: float, work: Callable[[], Any], last_key: str) -> None:
        """`work` every `seconds`, counted from its last run (kv `last_key`, which the work writes when done). Never
        run before: the first run is one interval after now. `work` may be a coroutine function (run on the loop)
        or a plain function (run in a worker thread). seconds <= 0: the job is removed."""
        if seconds <= 0:
            self.cancel(name)
            return
        now = time.time()
        last = self.store.get(last_key)
        if last is None:
            self.store.put(last_key, now)
            last = now
        self.scheduler.add_job(self._guarded(name, work), IntervalTrigger(seconds=seconds, timezone=timezone.utc),
                               id=name, name=name, next_run_time=_at(max(last + seconds, now)),
                               replace_existing=True)

    def at(self, name: str, when: float | None, work: Callable[[], Any], max_instances: int = 1) -> None:
        """`work` once at `when` (at once if that has passed; None: not at all), replacing an earlier `at` of the
        same name."""
        if when is None:
            self.cancel(name)
            return
        self.scheduler.add_job(self._guarded(name, work), DateTrigger(_at(max(when, time.time())), timezone.utc),
                               id=name, name=name, replace_existing=True, max_instances=max_instances)

    def cancel(self, name: str) -> None:
        if self.scheduler.get_job(name) is not None:
            self.scheduler.remove_job(name)

    def next_run(self, name: str) -> float | None:
        job = self.scheduler.get_job(name)
        return job.next_run_time.timestamp() if job is not None and job.next_run_time is not None else None

    def _guarded(self, name: str, work: Callable[[], Any]) -> Callable[[], Any]:
        """A failing job is logged (and in the events) and runs again at its next time; it never stops the loop."""
        async def run() -> None:
            try:
                if inspect.iscoroutinefunction(work):
                    await work()
                else:
                    await asyncio.to_thread(work)
            except asyncio.CancelledError:  # the schedule stops (the daemon shuts down): not a failure
                log.info("scheduled %s stopped with the schedule", name)
            except Exception as err:
                log.warning("scheduled %s failed: %s", name, err)
                self.store.log_event("error", f"scheduled {name}: {type(err).__name__}: {err}", level="error")

        return run

    # --- work that needs the engine -----------------------------------------------------------------------------------

    def for_boundary(self, name: str, work: Callable[[], Any]) -> None:
        """Hand `work` to the main thread's next phase boundary (once, however often it is handed over before)."""
        with self._waiting_lock:
            self._waiting[name] = work
        log.info("%s is due; it runs at the next pause between phases", name)

    def waiting(self) -> list[str]:
        with self._waiting_lock:
            return list(self._waiting)

    def run_boundary(self) -> list[str]:
        """In the main thread, between phases: run what the jobs handed over; the names run."""
        if self._at_boundary:
            return []
        with self._waiting_lock:
            waiting, self._waiting = self._waiting, {}
        self._at_boundary = True
        try:
            for name, work in waiting.items():
                try:
                    work()
                except Exception as err:
                    log.exception("%s failed", name)
                    self.store.log_event("error", f"{name}: {type(err).__name__}: {err}", level="error")
        finally:
            self._at_boundary = False
        return list(waiting)
