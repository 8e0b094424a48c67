"""A busy host: a short wall-clock limit must not turn a good program into a timeout because other processes had
the CPUs. (Busy processes on every core, for real; the limits are the executor's own, nothing here is timed.)"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from botlab.config import ExecutorConfig
from botlab.sandbox import Executor

BUSY_PER_CORE = 3
# About a twentieth of a second of CPU; with several processes per core it needs far more wall-clock time than
# the limit below, all of it spent waiting for a CPU.
WORK = "def f(n):\n    t = 0\n    for i in range(n):\n        t = (t + i * i) % 1000003\n    return t"


@pytest.fixture()
def busy_host() -> Iterator[None]:
    spinners = [subprocess.Popen([sys.executable, "-c", "while True:\n    pass"])
                for _ in range(BUSY_PER_CORE * len(os.sched_getaffinity(0)))]
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def test_a_busy_host_turns_no_good_program_into_a_timeout(busy_host):
    config = ExecutorConfig(workers=2, timeout_s=0.3, cpu_s=10)
    with Executor(config) as ex:
        validations = ex.validate_many([(WORK, [str(200_000 + k)]) for k in range(12)])
        assert [v.reason for v in validations] == [None] * 12
        checks = ex.check_inputs([(WORK, v.outputs[0], str(200_000 + k)) for k, v in enumerate(validations)])
        assert [c.reason for c in checks] == [None] * 12
        # the wall clock still stops what waits instead of computing: a CPU spinner is stopped by the CPU limit,
        # and a sleeper (test_sandbox_pool) by the wall clock
        [endless] = ex.validate_many([("def f(x):\n    while True:\n        x += 1", ["1"])])
        assert endless.reason == "timeout"
