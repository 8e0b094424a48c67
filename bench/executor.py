"""Validations per second of botlab's sandbox vs. an AZR-style executor, on one fixed mixed workload, same run.

    botlab bench executor [--json]

The baseline mimics the original AZR executor (docs/method.md, "Where botlab departs"): ONE persistent worker process in a process
pool, the program exec'd inside it with AZR's determinism template (f run twice in the same process), an
in-process SIGALRM timeout, and a kill + respawn of the worker when that timeout cannot fire (a loop inside C
code). No limits, no isolation. A second, leaner baseline (the same worker behind a bare pipe, no pool) is printed
too: no unisolated design can be much faster. Ours: the real Executor with its default settings except the
timeout, which all share.

The workload is fixed (no randomness): simple programs, loop-heavy programs, invalid programs (syntax errors,
banned imports, exceptions) and programs that never finish. Both executors get the same items in the same order.
"""

from __future__ import annotations

import ast
import json
import multiprocessing
import signal
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

from botlab.config import ExecutorConfig
from botlab.sandbox import Executor

TIMEOUT_S = 1.0
REPEATS = 3
CATEGORIES = ("simple", "loop-heavy", "invalid", "timing-out")
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


def _azr_execute(code: str, arg: str) -> str:
    """In the worker: AZR's template, exec'd in-process under an in-process SIGALRM timeout (timeout_decorator)."""
    template = f"{code}\nreturns = f({arg})\nif returns != f({arg}):\n    raise Exception('Non-deterministic code')"
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, TIMEOUT_S)
    try:
        namespace: dict = {}
        exec(template, namespace)  # noqa: S102 - the baseline is the unisolated design we compare against
        return "done: " + repr(namespace["returns"])
    except BaseException as err:  # noqa: BLE001
        return f"error: {type(err).__name__}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


class AzrBaseline:
    """AZR's executor design: ONE persistent worker in a process pool (AZR uses pebble's; this is the standard
    library's), a future per call, and on a timeout the worker is killed and replaced."""

    def __init__(self):
        self._start()

    def _start(self) -> None:
        self.pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("fork"))

    def validate(self, code: str, arg: str) -> bool:
        if not _azr_passes_checks(code):
            return False
        future = self.pool.submit(_azr_execute, code, arg)
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
    while True:
        conn.send(_azr_execute(*conn.recv()))


class BareWorker(AzrBaseline):
    """The same without the pool: one worker behind a raw pipe. A lower bound for any unisolated design."""

    def _start(self) -> None:
        self.conn, child = multiprocessing.Pipe()
        self.process = multiprocessing.get_context("fork").Process(target=_bare_worker, args=(child,), daemon=True)
        self.process.start()

    def validate(self, code: str, arg: str) -> bool:
        if not _azr_passes_checks(code):
            return False
        self.conn.send((code, arg))
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


def run(repeats: int = REPEATS) -> dict:
    """The mixed workload and each category alone, sandbox and AZR-like baseline interleaved, median of `repeats`
    runs (the timing-out category once: its time is the timeout's); the bare worker once, on the mixed workload."""
    items = workload()
    subsets = {"mixed": items} | {c: [i for i in items if i[0] == c] for c in CATEGORIES}
    report: dict = {"timeout_s": TIMEOUT_S, "items": len(items), "repeats": repeats, "categories": {}}
    seconds: dict[tuple[str, str], list[float]] = {}
    with Executor(ExecutorConfig(timeout_s=TIMEOUT_S)) as ex:
        runners = {
            "sandbox": lambda subset: _timed_ours(ex, subset),
            "azr": lambda subset: _timed_baseline(AzrBaseline, subset),
        }
        report["workers"] = ex.slots
        report["isolation"] = ex.isolation
        for rep in range(repeats):  # interleaved, so a busy moment on the machine hits both alike
            for label, subset in subsets.items():
                if label == "timing-out" and rep:
                    continue
                for name, measure in runners.items():
                    elapsed, valid = measure(subset)
                    seconds.setdefault((label, name), []).append(elapsed)
                    if label == "mixed":
                        report[f"{name}_valid"] = valid
        elapsed, report["bare_valid"] = _timed_baseline(BareWorker, items)
    rate = {key: len(subsets[key[0]]) / statistics.median(times) for key, times in seconds.items()}
    report.update(sandbox_per_s=rate["mixed", "sandbox"], azr_per_s=rate["mixed", "azr"],
                  bare_per_s=len(items) / elapsed)
    for label in CATEGORIES:
        report["categories"][label] = {
            "items": len(subsets[label]),
            "sandbox_per_s": rate[label, "sandbox"],
            "azr_per_s": rate[label, "azr"],
            "ratio": rate[label, "sandbox"] / rate[label, "azr"],
        }
    report["ratio"] = report["sandbox_per_s"] / report["azr_per_s"]
    report["ratio_vs_bare"] = report["sandbox_per_s"] / report["bare_per_s"]
    return report


def main(as_json: bool = False) -> int:
    report = run()
    if as_json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"mixed workload: {report['items']} validations (simple, loop-heavy, invalid, timing-out), "
          f"timeout {TIMEOUT_S:g} s, sandbox workers {report['workers']}, median of {report['repeats']} runs")
    print(f"  sandbox          : {report['sandbox_per_s']:8.1f} validations/s ({report['sandbox_valid']} valid)")
    print(f"  AZR-like baseline: {report['azr_per_s']:8.1f} validations/s ({report['azr_valid']} valid)")
    print(f"  bare worker      : {report['bare_per_s']:8.1f} validations/s ({report['bare_valid']} valid, one run)")
    print(f"  ratio sandbox / AZR-like: {report['ratio']:.2f}   (sandbox / bare worker: {report['ratio_vs_bare']:.2f})")
    print("each category alone:")
    for name, c in report["categories"].items():
        print(f"  {name:11s} {c['items']:4d} items  sandbox {c['sandbox_per_s']:8.1f}/s  "
              f"AZR-like {c['azr_per_s']:8.1f}/s  ratio {c['ratio']:.2f}")
    print(f"isolation: {report['isolation']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(as_json="--json" in sys.argv[1:]))
