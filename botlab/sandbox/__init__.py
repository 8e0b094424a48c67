"""The sandboxed code executor: AZR task validation and answer checking, isolated and fast.

    from botlab.sandbox import Executor
    with Executor(team.executor) as ex:
        [v] = ex.validate_many([("def f(s):\n    return s[::-1]", ["'abc'"])])   # v.outputs == ["'cba'"]

Every rejection reason is listed, with its meaning, in REASONS (botlab/sandbox/runtime/reasons.py).
"""

from botlab.sandbox.executor import CheckResult, Executor, Validation
from botlab.sandbox.runtime.reasons import REASONS

__all__ = ["CheckResult", "Executor", "REASONS", "Validation"]
