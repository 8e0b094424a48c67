"""Validations per second of botlab's sandbox vs. an AZR-style executor, on one fixed mixed workload, same run.

    botlab bench executor [--json]

The baseline mimics the original AZR executor (azr-method.md §2, §5): ONE persistent worker process, the program
exec'd inside it with AZR's determinism template (f run twice in the same process), an in-process SIGALRM timeout,
and a kill + respawn of the worker when that timeout cannot fire (a loop inside C code). No limits, no isolation.
Ours: the real Executor with its default settings except the timeout, which both sides share.

The workload is fixed (no randomness): simple programs, loop-heavy programs, invalid programs (syntax errors,
banned imports, exceptions) and programs that never finish. Both executors get the same items in the same order.
"""

from __future__ import annotations

import ast
import json
import multiprocessing
import signal
import sys
import time

from botlab.config import ExecutorConfig
from botlab.sandbox import Executor

TIMEOUT_S = 1.0
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
         "    return total", "30000"),
        ("def f(n):\n    sieve = [True] * n\n    for i in range(2, n):\n        if sieve[i]:\n"
         "            for j in range(i * i, n, i):\n                sieve[j] = False\n    return sum(sieve) + {k}",
         "20000"),
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


# --- the baseline: AZR's design, reproduced -------------------------------------------------------------------------


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


def _azr_worker(conn) -> None:
    signal.signal(signal.SIGALRM, _on_alarm)
    while True:
        code, arg = conn.recv()
        template = f"{code}\nreturns = f({arg})\nif returns != f({arg}):\n    raise Exception('Non-deterministic code')"
        try:
            signal.setitimer(signal.ITIMER_REAL, TIMEOUT_S)
            namespace: dict = {}
            exec(template, namespace)  # noqa: S102 - the baseline is the unisolated design we compare against
            status, output = "done", repr(namespace["returns"])
        except BaseException as err:  # noqa: BLE001
            status, output = f"error: {type(err).__name__}", ""
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        conn.send((status, output))


class AzrBaseline:
    """One persistent worker; a timeout that the worker cannot handle itself costs a kill and a new worker."""

    def __init__(self):
        self.context = multiprocessing.get_context("fork")
        self._start()

    def _start(self) -> None:
        self.conn, child = self.context.Pipe()
        self.process = self.context.Process(target=_azr_worker, args=(child,), daemon=True)
        self.process.start()

    def validate(self, code: str, arg: str) -> bool:
        if not _azr_passes_checks(code):
            return False
        self.conn.send((code, arg))
        if self.conn.poll(TIMEOUT_S + 0.5):
            status, _ = self.conn.recv()
            return "error" not in status
        self.process.kill()
        self.process.join()
        self._start()
        return False

    def close(self) -> None:
        self.process.kill()
        self.process.join()


# --- measuring ------------------------------------------------------------------------------------------------------


def _measure_baseline(items) -> tuple[float, list[bool]]:
    baseline = AzrBaseline()
    try:
        start = time.perf_counter()
        valid = [baseline.validate(code, arg) for _, code, arg in items]
        return time.perf_counter() - start, valid
    finally:
        baseline.close()


def _measure_ours(ex: Executor, items) -> tuple[float, list[bool]]:
    start = time.perf_counter()
    results = ex.validate_many([(code, [arg]) for _, code, arg in items])
    return time.perf_counter() - start, [r.valid for r in results]


def run() -> dict:
    items = workload()
    categories = sorted({c for c, _, _ in items}, key=["simple", "loop-heavy", "invalid", "timing-out"].index)
    report: dict = {"timeout_s": TIMEOUT_S, "items": len(items), "categories": {}}
    with Executor(ExecutorConfig(timeout_s=TIMEOUT_S)) as ex:
        report["workers"] = ex.slots
        report["isolation"] = ex.isolation
        ours_s, ours_valid = _measure_ours(ex, items)
        base_s, base_valid = _measure_baseline(items)
        for category in categories:  # each category alone, to show where the time goes
            subset = [item for item in items if item[0] == category]
            o, _ = _measure_ours(ex, subset)
            b, _ = _measure_baseline(subset)
            report["categories"][category] = {
                "items": len(subset), "ours_per_s": len(subset) / o, "baseline_per_s": len(subset) / b, "ratio": b / o,
            }
    report.update(
        ours_per_s=len(items) / ours_s,
        baseline_per_s=len(items) / base_s,
        ratio=base_s / ours_s,
        ours_valid=sum(ours_valid),
        baseline_valid=sum(base_valid),
    )
    return report


def main(as_json: bool = False) -> int:
    report = run()
    if as_json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"mixed workload: {report['items']} validations, timeout {TIMEOUT_S:g} s, {report['workers']} workers")
    print(f"  sandbox : {report['ours_per_s']:8.1f} validations/s ({report['ours_valid']} valid)")
    print(f"  AZR-like: {report['baseline_per_s']:8.1f} validations/s ({report['baseline_valid']} valid)")
    print(f"  ratio sandbox/baseline: {report['ratio']:.2f}")
    print("per category (each measured alone):")
    for name, c in report["categories"].items():
        print(f"  {name:11s} {c['items']:4d} items  sandbox {c['ours_per_s']:8.1f}/s  "
              f"AZR-like {c['baseline_per_s']:8.1f}/s  ratio {c['ratio']:.2f}")
    print(f"isolation: {report['isolation']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(as_json="--json" in sys.argv[1:]))
