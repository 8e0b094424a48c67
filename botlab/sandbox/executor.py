"""The sandboxed executor: validates AZR task proposals and checks solver answers, in parallel, in isolation.

Model code never runs in this process, and is not even parsed here: each batch item becomes one or two jobs for
the pool of fork-server workers (workers.py, runtime/hub.py), which gate, compile and run it in fresh processes.

Determinism: a proposal runs twice, at the same time, in two fresh processes whose interpreters have different hash
seeds, so set iteration order, hash() and id() cannot make a task that looks deterministic. Only the first run's
outputs are kept, and only if the second run's are identical.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from botlab.config import ExecutorConfig
from botlab.sandbox.runtime.gate import DEFAULT_BANNED_BUILTINS, DEFAULT_BANNED_MODULES
from botlab.sandbox.scheduler import Batch, OnResult, Run
from botlab.sandbox.workers import START_TIMEOUT_S, Worker

HASH_SEEDS = (1, 2)  # worker group 0 and group 1; the two runs of a validation use one of each


@dataclass(frozen=True)
class Validation:
    """Outcome of validating one proposal: its canonical outputs (one per input) or why it is invalid."""

    valid: bool
    outputs: list[str] = field(default_factory=list)
    reason: str | None = None  # a key of botlab.sandbox.REASONS when invalid
    detail: str = ""


@dataclass(frozen=True)
class CheckResult:
    """Outcome of checking one solver answer."""

    correct: bool
    reason: str | None = None  # a key of botlab.sandbox.REASONS when not correct ("wrong_answer" if it just differs)
    detail: str = ""


class Executor:
    """A pool of sandbox workers, pre-started. Use as a context manager, or call close()."""

    def __init__(self, config: ExecutorConfig | None = None):
        self.config = config or ExecutorConfig()
        self.slots = _worker_count(self.config.workers)
        self._lock = threading.Lock()
        self._closed = False
        self._log_dir = Path(tempfile.mkdtemp(prefix="botlab-sandbox-logs-"))
        settings = _worker_settings(self.config)
        self._workers = [Worker(i, HASH_SEEDS[i % 2], settings, self._log_dir) for i in range(2 * self.slots)]
        self._finalizer = weakref.finalize(self, _shutdown, self._workers, self._log_dir, os.getpid())
        try:
            for worker in self._workers:
                worker.start()
            deadline = time.monotonic() + START_TIMEOUT_S
            for worker in self._workers:
                worker.wait_ready(deadline)
        except BaseException:
            self.close()
            raise

    @property
    def isolation(self) -> str:
        """Which isolation is active, in words (e.g. whether a network namespace could be created)."""
        return self._workers[0].isolation

    def worker_pids(self) -> list[int]:
        """Process ids of the fork-server workers (for monitoring and tests)."""
        return [w.pid for w in self._workers if w.pid is not None]

    def close(self) -> None:
        self._closed = True
        self._finalizer()

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # --- the public batch API ---------------------------------------------------------------------------------------

    def validate_many(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[Validation]:
        """Validate proposals (program, inputs): each input is the text of f's arguments, run as f(<input>)."""
        results: list[Validation | None] = [None] * len(items)
        firsts, seconds, runs = {}, {}, []
        for i, item in enumerate(items):
            program, inputs = _pair(item, i, "(program, inputs)")
            inputs = [_text(x, f"item {i} input {j}") for j, x in enumerate(_seq(inputs, f"item {i} inputs"))]
            problem = self._program_problem(_text(program, f"item {i} program")) or self._inputs_problem(inputs)
            if problem:
                results[i] = Validation(False, [], *problem)
            else:
                runs.append(Run(i, {"kind": "run", "program": program, "inputs": inputs}, group=0, stage=1))
        # The second runs start at once, on the other group's workers, in reverse order (scheduler.py says why);
        # one whose first run failed before it was sent is dropped.
        second_runs = {run.key: Run(run.key, run.job, group=1, stage=2) for run in reversed(runs)}

        def on_result(run: Run, group: int, result: dict) -> None:
            if results[run.key] is not None:
                return  # the first run failed: the second does not matter
            (firsts if run.stage == 1 else seconds)[run.key] = result
            if run.stage == 1 and result["reason"]:
                second_runs[run.key].cancelled = True
                results[run.key] = Validation(False, [], result["reason"], result["detail"])
            elif run.key in firsts and run.key in seconds:
                results[run.key] = _judge(run.job, firsts.pop(run.key), seconds.pop(run.key))

        self._schedule(runs + list(second_runs.values()), on_result)
        return results  # type: ignore[return-value]

    def check_outputs(self, items: Sequence[tuple[str, str]]) -> list[CheckResult]:
        """Deduction: is each answer expression equal (==) to the gold output? Items are (gold_repr, answer)."""
        return self._check(self._output_jobs(items))

    def check_inputs(self, items: Sequence[tuple[str, str, str]]) -> list[CheckResult]:
        """Abduction: does f(answer_input) equal the gold output? Items are (program, gold_repr, answer_input)."""
        return self._check(self._input_jobs(items))

    def check_programs(self, items: Sequence[tuple[str, Sequence[tuple[str, str]]]]) -> list[CheckResult]:
        """Induction: does the answer program map every input to its gold output? Items are (program, pairs)."""
        return self._check(self._program_jobs(items))

    def check_all(
        self,
        outputs: Sequence[tuple[str, str]] = (),
        inputs: Sequence[tuple[str, str, str]] = (),
        programs: Sequence[tuple[str, Sequence[tuple[str, str]]]] = (),
    ) -> tuple[list[CheckResult], list[CheckResult], list[CheckResult]]:
        """check_outputs, check_inputs and check_programs of the same items, in one batch: one round of program
        processes for all three kinds instead of one each."""
        jobs = [self._output_jobs(outputs), self._input_jobs(inputs), self._program_jobs(programs)]
        results = self._check([job for kind in jobs for job in kind])
        first, second = len(jobs[0]), len(jobs[0]) + len(jobs[1])
        return results[:first], results[first:second], results[second:]

    # --- answers as jobs -------------------------------------------------------------------------------------------

    def _output_jobs(self, items: Sequence[tuple[str, str]]) -> list[dict | tuple[str, str]]:
        jobs: list[dict | tuple[str, str]] = []
        for i, item in enumerate(items):
            gold, answer = _pair(item, i, "(gold_output, answer)")
            gold, answer = _text(gold, f"item {i} gold"), _text(answer, f"item {i} answer")
            if len(answer) > 2 * self.config.max_output_chars:  # gold reprs are capped; leave room for spacing
                jobs.append(("input_too_large", f"the answer has {len(answer)} characters"))
            else:
                jobs.append({"kind": "check_output", "gold": gold, "answer": answer})
        return jobs

    def _input_jobs(self, items: Sequence[tuple[str, str, str]]) -> list[dict | tuple[str, str]]:
        jobs: list[dict | tuple[str, str]] = []
        for i, item in enumerate(items):
            if not isinstance(item, (tuple, list)) or len(item) != 3:
                raise ValueError(f"item {i} must be a (program, gold_output, answer_input) tuple, not {item!r:.80}")
            program, gold, answer = (_text(x, f"item {i} {n}") for x, n in zip(item, ("program", "gold", "answer")))
            problem = self._program_problem(program) or self._inputs_problem([answer])
            jobs.append(problem or {"kind": "check_input", "program": program, "gold": gold, "answer": answer})
        return jobs

    def _program_jobs(self, items: Sequence[tuple[str, Sequence[tuple[str, str]]]]) -> list[dict | tuple[str, str]]:
        jobs: list[dict | tuple[str, str]] = []
        for i, item in enumerate(items):
            program, pairs = _pair(item, i, "(program, [(input, gold_output), ...])")
            pairs = [tuple(_text(x, f"item {i} pair {j}") for x in _pair(p, j, "(input, gold)"))
                     for j, p in enumerate(_seq(pairs, f"item {i} pairs"))]
            problem = self._program_problem(_text(program, f"item {i} program")) or self._inputs_problem(
                [text for text, _ in pairs]
            )
            jobs.append(problem or {"kind": "check_program", "program": program, "pairs": pairs})
        return jobs

    # --- helpers ---------------------------------------------------------------------------------------------------

    def _program_problem(self, program: str) -> tuple[str, str] | None:
        limit = self.config.max_program_chars
        if len(program) > limit:
            return "program_too_large", f"{len(program)} characters, the limit is {limit}"
        return None

    def _inputs_problem(self, inputs: list[str]) -> tuple[str, str] | None:
        if not inputs:
            return "no_inputs", "no inputs given"
        limit = self.config.max_input_chars
        for j, text in enumerate(inputs):
            if len(text) > limit:
                return "input_too_large", f"input {j} has {len(text)} characters, the limit is {limit}"
        return None

    def _schedule(self, runs: list[Run], on_result: OnResult) -> None:
        if not runs:
            return
        with self._lock:  # one batch at a time: a batch already uses every worker
            if self._closed:
                raise RuntimeError("the sandbox executor is closed")
            c = self.config
            Batch(self._workers, self.slots, c.timeout_s, c.tasks_per_worker, on_result, lambda: self._closed).run(runs)

    def _check(self, jobs: list[dict | tuple[str, str]]) -> list[CheckResult]:
        results: list[CheckResult | None] = [None] * len(jobs)
        runs = []
        for i, job in enumerate(jobs):
            if isinstance(job, tuple):
                results[i] = CheckResult(False, *job)
            else:
                runs.append(Run(i, job))

        def on_result(run: Run, group: int, result: dict) -> None:
            results[run.key] = CheckResult(result["reason"] is None, result["reason"], result["detail"])

        self._schedule(runs, on_result)
        return results  # type: ignore[return-value]


def _worker_count(workers: int | str) -> int:
    if workers == "auto":
        return max(1, len(os.sched_getaffinity(0)))
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"executor.workers must be 'auto' or a number >= 1, not {workers!r}")
    return workers


def _worker_settings(config: ExecutorConfig) -> dict:
    banned = list(DEFAULT_BANNED_MODULES) if config.banned_modules is None else list(config.banned_modules)
    builtins = list(DEFAULT_BANNED_BUILTINS) if config.banned_builtins is None else list(config.banned_builtins)
    return {
        "timeout_s": config.timeout_s,
        "cpu_s": config.cpu_s,
        "memory_mb": config.memory_mb,
        "max_output_chars": config.max_output_chars,
        "allow_none_output": config.allow_none_output,
        "banned_modules": sorted(set(banned + list(config.extra_banned_modules))),
        "banned_builtins": sorted(set(builtins)),
        "block_introspection": config.block_introspection,
        "namespaces": config.namespaces,
        "extra_preload": list(config.extra_preload),
    }


def _shutdown(workers: list[Worker], log_dir: Path, owner_pid: int) -> None:
    if os.getpid() != owner_pid:  # a forked copy of the trainer exiting: the workers are not its to stop
        return
    for worker in workers:
        worker.kill()
    shutil.rmtree(log_dir, ignore_errors=True)


def _judge(job: dict, first: dict, second: dict) -> Validation:
    """A validation whose first run succeeded: valid if the second gave the same outputs."""
    if second["reason"]:
        detail = f"the first run succeeded, the second failed: {second['reason']} ({second['detail']})"
        return Validation(False, [], "nondeterministic", detail)
    if second["outputs"] != first["outputs"]:
        return Validation(False, [], "nondeterministic", _difference(job, first["outputs"], second))
    return Validation(True, first["outputs"])


def _difference(job: dict, first: list[str], result: dict) -> str:
    for i, (a, b) in enumerate(zip(first, result["outputs"])):
        if a != b:
            return f"input {i} ({job['inputs'][i][:60]}): first run {a[:80]}, second run {b[:80]}"
    return "the runs returned different numbers of outputs"


def _pair(item: object, index: int, shape: str) -> tuple:
    if not isinstance(item, (tuple, list)) or len(item) != 2:
        raise ValueError(f"item {index} must be a {shape} pair, not {item!r:.80}")
    return tuple(item)


def _seq(value: object, where: str) -> list:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ValueError(f"{where} must be a list of strings, not {type(value).__name__}")
    return list(value)


def _text(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{where} must be a string, not {type(value).__name__}")
    return value
