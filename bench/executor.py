"""Validations and checks per second of botlab's sandbox vs. an AZR-style executor, measured in the same run.

    botlab bench executor [--json]

The headline is the replay: bench/replay.jsonl holds a few hundred proposals and solver answers written by the
model in real self-play runs (captured with bench/capture_replay.py), with their natural share of invalid, erroring
and timing-out cases. The sandbox gets them the way a step sends them (one validate_many per step, then one
check_all for the step's answers of every task type); the baseline gets them one by one. Each of the replay's
categories is also timed alone.

The second line is the old synthetic mix (simple, loop-heavy, invalid and never-ending programs), kept for
comparison: its ratio is carried by its timing-out items, which cost the serial baseline a full timeout each.

The baseline mimics the original AZR executor (docs/method.md, "Where botlab departs"): ONE persistent worker
process in a process pool, the program exec'd inside it with AZR's determinism template (f run twice in the same
process), an in-process SIGALRM timeout, and a kill + respawn of the worker when that timeout cannot fire (a loop
inside C code). No limits, no isolation. Solver answers are checked the same way: one template exec'd in the
worker (gold == answer, f(answer) == gold, or the answer program on every hidden pair). A second, leaner baseline
(the same worker behind a bare pipe, no pool) is printed too: no unisolated design can be much faster. Ours: the
real Executor with its default settings except the timeout, which all share.

The host's load average is reported with the numbers: both sides run interleaved, so a busy moment hits both,
but a loaded host favours neither design in the same way.
"""

from __future__ import annotations

import ast
import json
import multiprocessing
import os
import signal
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

from botlab.config import ExecutorConfig
from botlab.sandbox import Executor

TIMEOUT_S = 1.0
REPEATS = 3
REPLAY_REPEATS = 5  # the replay is short: more passes, and a median per batch
CATEGORIES = ("simple", "loop-heavy", "invalid", "timing-out")
REPLAY = Path(__file__).with_name("replay.jsonl")
REPLAY_CATEGORIES = ("valid", "rejected", "erroring", "timeout", "answer-deduction", "answer-abduction",
                     "answer-induction")
CHECKS = ("check_output", "check_input", "check_program")  # answer kinds, in Executor.check_all's argument order
AZR_BANNED = ("logging", "random", "multiprocessing", "pebble", "subprocess", "threading", "datetime", "time",
              "hashlib", "hmac", "bcrypt", "os.sys", "os.path", "sys.exit", "os.environ", "calendar")


def workload() -> list[tuple[str, str, str]]:
    """(category, program, input) items, interleaved the way a proposer batch would mix them."""
    simple = [
        ("def f(s):\n    return s[::-1] + s[:{k}]", "'hello world'"),
        ("def f(xs):\n    return sorted(x * {k} for x in xs if x % 2)", "[5, 3, 8, 1, 9, 2]"),
        ("def f(s):\n    counts = {{}}\n    for c in s:\n        counts[c] = counts.get(c, 0) + {k}\n    return counts",
         "'mississippi'"),
        ("from collections import Counter\ndef f(s):\n    return Counter(s).most_common({k})", "'abracadabra'"),
        ("def f(n):\n    a, b = 0, 1\n    for _ in range(n + {k}):\n        a, b = b, a + b\n    return a", "20"),
        ("def f(xs, k):\n    return [xs[i:i + k] for i in range(0, len(xs), k)][{k} % 3:]", "[1, 2, 3, 4, 5, 6, 7], 2"),
    ]
    loops = [
        ("def f(n):\n    total = 0\n    for i in range(n):\n        total = (total * 31 + i * {k}) % 1000003\n"
         "    return total", "100000"),
        ("def f(n):\n    sieve = [True] * n\n    for i in range(2, n):\n        if sieve[i]:\n"
         "            for j in range(i * i, n, i):\n                sieve[j] = False\n    return sum(sieve) + {k}",
         "100000"),
    ]
    invalid = [
        ("def f(x)\n    return x + {k}", "1"),  # syntax error
        ("import random\ndef f(x):\n    return random.random() + {k}", "1"),  # banned import
        ("def f(xs):\n    return xs[{k} + 10]", "[1, 2, 3]"),  # IndexError
    ]
    forever = [
        ("def f(x):\n    while True:\n        x += {k}", "1"),
        ("def f(x):\n    return sum(range(10 ** 12)) + {k}", "1"),  # inside C: no signal can interrupt it
    ]
    items: list[tuple[str, str, str]] = []
    for k in range(40):
        for template, arg in simple:
            items.append(("simple", template.format(k=k), arg))
        if k % 2 == 0:
            for template, arg in loops:
                items.append(("loop-heavy", template.format(k=k), arg))
        if k % 2 == 1:
            for template, arg in invalid:
                items.append(("invalid", template.format(k=k), arg))
        if k % 20 == 10:
            for template, arg in forever:
                items.append(("timing-out", template.format(k=k), arg))
    return items


def replay_entries(path: Path = REPLAY) -> list[dict]:
    """The replay file's entries, in their order; each has `batch`, `kind`, `category` and the job's fields."""
    entries = []
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            entry = json.loads(line)
            if entry.get("kind") not in ("validate", *CHECKS) or entry.get("category") not in REPLAY_CATEGORIES:
                raise ValueError(f"{path} line {number}: unknown kind or category in {line[:80]!r}")
            entries.append(entry)
    return entries


def _call(arg: str) -> str:
    return f"f(\n{arg}\n)"  # newlines: an argument may end in a comment


def azr_template(entry: dict) -> tuple[str | None, str]:
    """(the program AZR's pre-checks look at, the source its worker execs) for one replay entry."""
    kind = entry["kind"]
    if kind == "validate":
        calls = "".join(f"{_call(a)}, " for a in entry["inputs"])
        return entry["program"], (f"{entry['program']}\nreturns = ({calls})\nif returns != ({calls}):\n"
                                  "    raise Exception('Non-deterministic code')")
    if kind == "check_output":
        return None, f"assert ({entry['gold']}) == (\n{entry['answer']}\n)"
    if kind == "check_input":
        return entry["program"], f"{entry['program']}\nassert {_call(entry['answer'])} == ({entry['gold']})"
    checks = "".join(f"\nassert {_call(arg)} == ({gold})" for arg, gold in entry["pairs"])
    return entry["program"], entry["program"] + checks


# --- the baselines: AZR's design, reproduced ------------------------------------------------------------------------


def _azr_passes_checks(code: str) -> bool:
    """AZR's pre-checks: it must parse, no banned word as a dotted import component, no `input(`."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return False
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        for name in names:
            if any(word in name.split(".") or word == name for word in AZR_BANNED):
                return False
    return "input(" not in code


def _on_alarm(signum, frame):
    raise TimeoutError("timed out")


def _quiet() -> None:
    """In the worker, once: what programs print goes nowhere (not into the benchmark's own output)."""
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(null, 2)
    sys.stdout = sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - for the life of the worker


def _azr_execute(source: str) -> str:
    """In the worker: the template exec'd in-process under an in-process SIGALRM timeout (timeout_decorator)."""
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, TIMEOUT_S)
    try:
        namespace: dict = {}
        exec(source, namespace)  # noqa: S102 - the baseline is the unisolated design we compare against
        return "done: " + repr(namespace.get("returns"))
    except BaseException as err:  # noqa: BLE001
        return f"error: {type(err).__name__}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def _determinism_template(code: str, arg: str) -> str:
    return f"{code}\nreturns = f({arg})\nif returns != f({arg}):\n    raise Exception('Non-deterministic code')"


class AzrBaseline:
    """AZR's executor design: ONE persistent worker in a process pool (AZR uses pebble's; this is the standard
    library's), a future per call, and on a timeout the worker is killed and replaced."""

    def __init__(self):
        self._start()

    def _start(self) -> None:
        context = multiprocessing.get_context("fork")
        self.pool = ProcessPoolExecutor(max_workers=1, mp_context=context, initializer=_quiet)

    def validate(self, code: str, arg: str) -> bool:
        return self.execute(code, _determinism_template(code, arg))

    def replay(self, entry: dict) -> bool:
        return self.execute(*azr_template(entry))

    def execute(self, checked: str | None, source: str) -> bool:
        """Run `source` in the worker, after AZR's pre-checks of the program `checked`; True if it raised nothing."""
        if checked is not None and not _azr_passes_checks(checked):
            return False
        future = self.pool.submit(_azr_execute, source)
        try:
            return "error" not in future.result(timeout=TIMEOUT_S + 0.5)
        except FutureTimeout:  # the loop is inside C code: no signal can stop it, so the worker goes
            for process in list(self.pool._processes.values()):  # noqa: SLF001 - what pebble does on a timeout
                process.kill()
            self.pool.shutdown(wait=True, cancel_futures=True)
            self._start()
            return False

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def _bare_worker(conn) -> None:
    _quiet()
    while True:
        conn.send(_azr_execute(conn.recv()))


class BareWorker(AzrBaseline):
    """The same without the pool: one worker behind a raw pipe. A lower bound for any unisolated design."""

    def _start(self) -> None:
        self.conn, child = multiprocessing.Pipe()
        self.process = multiprocessing.get_context("fork").Process(target=_bare_worker, args=(child,), daemon=True)
        self.process.start()

    def execute(self, checked: str | None, source: str) -> bool:
        if checked is not None and not _azr_passes_checks(checked):
            return False
        self.conn.send(source)
        if self.conn.poll(TIMEOUT_S + 0.5):
            return "error" not in self.conn.recv()
        self.process.kill()
        self.process.join()
        self._start()
        return False

    def close(self) -> None:
        self.process.kill()
        self.process.join()


# --- measuring ------------------------------------------------------------------------------------------------------


def _timed_baseline(kind: type[AzrBaseline], items) -> tuple[float, int]:
    baseline = kind()
    try:
        start = time.perf_counter()
        valid = sum(baseline.validate(code, arg) for _, code, arg in items)
        return time.perf_counter() - start, valid
    finally:
        baseline.close()


def _timed_ours(ex: Executor, items) -> tuple[float, int]:
    start = time.perf_counter()
    results = ex.validate_many([(code, [arg]) for _, code, arg in items])
    return time.perf_counter() - start, sum(r.valid for r in results)


def replay_ours(ex: Executor, entries: list[dict]) -> list[bool]:
    """Each entry valid (or correct), sent the way a step sends them: validations first, then all the answers in
    one call (botlab/selfplay/checking.py). (Call it once per batch.)"""
    ok = [False] * len(entries)
    todo = [i for i, entry in enumerate(entries) if entry["kind"] == "validate"]
    for i, v in zip(todo, ex.validate_many([(entries[i]["program"], entries[i]["inputs"]) for i in todo])):
        ok[i] = v.valid
    answers = [[i for i, entry in enumerate(entries) if entry["kind"] == kind] for kind in CHECKS]
    for todo, results in zip(answers, ex.check_all(*([_check_item(entries[i]) for i in todo] for todo in answers))):
        for i, c in zip(todo, results):
            ok[i] = c.correct
    return ok


def _check_item(entry: dict) -> tuple:
    if entry["kind"] == "check_output":
        return entry["gold"], entry["answer"]
    if entry["kind"] == "check_input":
        return entry["program"], entry["gold"], entry["answer"]
    return entry["program"], [tuple(pair) for pair in entry["pairs"]]


def batches(entries: list[dict]) -> list[list[dict]]:
    """The entries grouped by the step they came from, in order of appearance."""
    grouped: dict[str, list[dict]] = {}
    for entry in entries:
        grouped.setdefault(entry["batch"], []).append(entry)
    return list(grouped.values())


def _replay_pass(ex: Executor, baseline: AzrBaseline, entries: list[dict]) -> dict[str, tuple[list[float], int]]:
    """One pass over the entries, batch by batch, each batch through the sandbox and the baseline in turn (which
    goes first alternates): both meet the host in the same state, however its load changes. Seconds per batch."""
    seconds: dict[str, list[float]] = {"sandbox": [], "azr": []}
    ok = {"sandbox": 0, "azr": 0}
    sides = {"sandbox": lambda batch: sum(replay_ours(ex, batch)),
             "azr": lambda batch: sum(baseline.replay(entry) for entry in batch)}
    for number, batch in enumerate(batches(entries)):
        for name in sorted(sides, reverse=bool(number % 2)):
            start = time.perf_counter()
            ok[name] += sides[name](batch)
            seconds[name].append(time.perf_counter() - start)
    return {name: (seconds[name], ok[name]) for name in seconds}


def _measure_replay(ex: Executor, subsets: dict[str, list[dict]], repeats: int) -> dict:
    """Seconds and the count per (subset, side): the sum over batches of each batch's median time, so that a burst
    of load during one batch of one pass does not decide the ratio. A subset with timeouts runs once (its time is
    the timeout's), except the whole replay."""
    seconds: dict[tuple[str, str], list[list[float]]] = {}
    counts: dict[tuple[str, str], int] = {}
    for rep in range(repeats):
        baseline = AzrBaseline()
        try:
            for label, subset in subsets.items():
                if not subset or (rep and any(e["category"] == "timeout" for e in subset) and label != "replay"):
                    continue
                for name, (per_batch, count) in _replay_pass(ex, baseline, subset).items():
                    seconds.setdefault((label, name), []).append(per_batch)
                    counts[label, name] = count
        finally:
            baseline.close()
    return {key: (sum(statistics.median(times) for times in zip(*passes)), counts[key])
            for key, passes in seconds.items()}


def _timed_bare_replay(entries: list[dict]) -> tuple[float, int]:
    bare = BareWorker()
    try:
        start = time.perf_counter()
        ok = sum(bare.replay(entry) for entry in entries)
        return time.perf_counter() - start, ok
    finally:
        bare.close()


def _measure(subsets: dict[str, list], runners: dict[str, Callable], repeats: int, once: set[str]) -> dict:
    """Median seconds and the last count per (subset, runner), interleaved so a busy moment hits both alike."""
    seconds: dict[tuple[str, str], list[float]] = {}
    counts: dict[tuple[str, str], int] = {}
    for rep in range(repeats):
        for label, subset in subsets.items():
            if not subset or (label in once and rep):
                continue
            for name, measure in runners.items():
                elapsed, counts[label, name] = measure(subset)
                seconds.setdefault((label, name), []).append(elapsed)
    return {key: (statistics.median(times), counts[key]) for key, times in seconds.items()}


def _table(subsets: dict[str, list], measured: dict, labels) -> dict:
    table = {}
    for label in labels:
        if (label, "sandbox") not in measured:
            table[label] = {"items": 0}
            continue
        n = len(subsets[label])
        ours, theirs = n / measured[label, "sandbox"][0], n / measured[label, "azr"][0]
        table[label] = {"items": n, "sandbox_per_s": ours, "azr_per_s": theirs, "ratio": ours / theirs}
    return table


def run(repeats: int = REPEATS, replay_repeats: int = REPLAY_REPEATS, replay_path: Path = REPLAY) -> dict:
    """The replay (`replay_repeats` passes) and the synthetic mix (median of `repeats`), each whole and each category
    alone (once where it times out: its time is the timeout's), sandbox and AZR-like baseline interleaved; the bare
    worker once each."""
    entries = replay_entries(replay_path)
    items = workload()
    replay_sets = {"replay": entries} | {c: [e for e in entries if e["category"] == c] for c in REPLAY_CATEGORIES}
    synthetic_sets = {"mixed": items} | {c: [i for i in items if i[0] == c] for c in CATEGORIES}
    report: dict = {"timeout_s": TIMEOUT_S, "repeats": repeats, "replay_repeats": replay_repeats,
                    "cpus": len(os.sched_getaffinity(0)),
                    "load_before": os.getloadavg()[0]}
    with Executor(ExecutorConfig(timeout_s=TIMEOUT_S)) as ex:
        report["workers"] = ex.slots
        report["isolation"] = ex.isolation
        replayed = _measure_replay(ex, replay_sets, replay_repeats)
        bare_s, bare_ok = _timed_bare_replay(entries)
        synthetic = _measure(synthetic_sets, {
            "sandbox": lambda subset: _timed_ours(ex, subset),
            "azr": lambda subset: _timed_baseline(AzrBaseline, subset),
        }, repeats, once={"timing-out"})
        synthetic_bare_s, synthetic_bare_ok = _timed_baseline(BareWorker, items)
    report["load_after"] = os.getloadavg()[0]
    replay = _table(replay_sets, replayed, ["replay"])["replay"]
    replay |= {"sandbox_ok": replayed["replay", "sandbox"][1], "azr_ok": replayed["replay", "azr"][1],
               "bare_per_s": len(entries) / bare_s, "bare_ok": bare_ok,
               "categories": _table(replay_sets, replayed, REPLAY_CATEGORIES)}
    mixed = _table(synthetic_sets, synthetic, ["mixed"])["mixed"]
    mixed |= {"sandbox_valid": synthetic["mixed", "sandbox"][1], "azr_valid": synthetic["mixed", "azr"][1],
              "bare_per_s": len(items) / synthetic_bare_s, "bare_valid": synthetic_bare_ok,
              "categories": _table(synthetic_sets, synthetic, CATEGORIES)}
    report |= {"ratio": replay["ratio"], "replay": replay, "synthetic": mixed}
    return report


def _print_part(title: str, part: dict, ok_key: str) -> None:
    print(title)
    print(f"  sandbox          : {part['sandbox_per_s']:8.1f}/s ({part['sandbox_' + ok_key]} {ok_key})")
    print(f"  AZR-like baseline: {part['azr_per_s']:8.1f}/s ({part['azr_' + ok_key]} {ok_key})")
    print(f"  bare worker      : {part['bare_per_s']:8.1f}/s ({part['bare_' + ok_key]} {ok_key}, one run)")
    print(f"  ratio sandbox / AZR-like: {part['ratio']:.2f}   (sandbox / bare worker: "
          f"{part['sandbox_per_s'] / part['bare_per_s']:.2f})")
    print("  each category alone:")
    for name, c in part["categories"].items():
        if c["items"]:
            print(f"    {name:17s} {c['items']:4d} items  sandbox {c['sandbox_per_s']:8.1f}/s  "
                  f"AZR-like {c['azr_per_s']:8.1f}/s  ratio {c['ratio']:.2f}")
        else:
            print(f"    {name:17s}    0 items")


def main(as_json: bool = False) -> int:
    report = run()
    if as_json:
        print(json.dumps(report, indent=2))
        return 0
    replay, mixed = report["replay"], report["synthetic"]
    print(f"timeout {TIMEOUT_S:g} s, sandbox workers {report['workers']}, {report['cpus']} CPUs, load average "
          f"{report['load_before']:.1f} before, {report['load_after']:.1f} after")
    _print_part(f"replay of real self-play ({replay['items']} proposals and answers, {REPLAY.name}; per batch the "
                f"median of {report['replay_repeats']} passes):", replay, "ok")
    print(f"  => replay ratio: {report['ratio']:.2f}")
    _print_part(f"synthetic mix ({mixed['items']} validations: simple, loop-heavy, invalid, timing-out; median of "
                f"{report['repeats']} runs):", mixed, "valid")
    print(f"isolation: {report['isolation']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(as_json="--json" in sys.argv[1:]))
