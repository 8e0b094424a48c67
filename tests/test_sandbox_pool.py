"""The worker pool: recovery from killed workers, recycling, the fallback without namespaces, an unprivileged
worker, shutdown, the two commands (sandbox check, bench executor) and several jobs in one program process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from botlab.config import ExecutorConfig
from botlab.sandbox import Executor, Validation
from botlab.sandbox.executor import _worker_settings
from botlab.sandbox.runtime.hub import STANDBY_NAME
from botlab.sandbox.workers import Worker
from tests.fixtures.sandbox import (ATTACK_MODULES, TEST_LIMITS, leftover_processes, program_processes,
                                    programs_below)

ADD = [(f"def f(x):\n    return x + {k}", ["1"]) for k in range(8)]
EXPECTED = [Validation(True, [str(1 + k)]) for k in range(8)]
FOREVER = ("def f(x):\n    while True:\n        pass", ["1"])


def wait_for(condition, what: str, limit_s: float = 60.0):
    """Poll until `condition()` is truthy; the limit only turns a hang into a failure, it measures nothing."""
    end = time.monotonic() + limit_s
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"gave up waiting for {what}")


def _launcher_of_a_running_program(ex: Executor) -> psutil.Process | None:
    for program in program_processes(ex):
        try:
            return program.parent().parent()  # program <- fork server <- worker process
        except (psutil.NoSuchProcess, AttributeError):  # that program just finished
            continue
    return None


@pytest.fixture()
def pool():
    with Executor(ExecutorConfig(**TEST_LIMITS)) as ex:
        yield ex


@pytest.mark.parametrize("target", ["worker", "fork server"])
def test_a_killed_idle_worker_is_replaced(pool, target):
    victim = pool.worker_pids()[1]
    if target == "fork server":  # the worker's child that forks the programs (init of its pid namespace)
        victim = psutil.Process(victim).children()[0].pid
    os.kill(victim, signal.SIGKILL)
    assert pool.validate_many(ADD) == EXPECTED
    assert pool.validate_many(ADD) == EXPECTED
    assert leftover_processes(pool) == []


def test_a_worker_killed_mid_batch_is_replaced_and_its_item_retried(pool):
    pids_before = set(pool.worker_pids())
    outcome: dict = {}
    batch = threading.Thread(target=lambda: outcome.update(results=pool.validate_many([FOREVER] + ADD)))
    batch.start()
    launcher = wait_for(lambda: _launcher_of_a_running_program(pool), "a running program")
    launcher.send_signal(signal.SIGKILL)
    batch.join()
    results = outcome["results"]
    assert results[0].reason == "timeout", results[0]  # retried on the replacement, still endless
    assert results[1:] == EXPECTED
    assert launcher.pid not in pool.worker_pids()
    assert len(set(pool.worker_pids()) - pids_before) == 1
    assert leftover_processes(pool) == []


def test_the_standby_is_confined_before_it_has_a_job(pool):
    """Each fork server forks its next program process ahead of the jobs (runtime/hub.py): it is confined already,
    and it is not the process that ran the batch before."""
    pool.validate_many(ADD)
    for pid in pool.worker_pids():
        server = psutil.Process(pid).children()[0]
        standby = wait_for(lambda: [p for p in server.children() if p.name() == STANDBY_NAME], "a standby")[0]
        assert os.getsid(standby.pid) == standby.pid  # its own session
        assert standby.open_files() == [] and standby.num_fds() == 5  # /dev/null as 0-2, and its two pipes
        if os.geteuid() == 0:
            assert standby.uids() == (65534, 65534, 65534) and standby.gids() == (65534, 65534, 65534)
    assert pool.validate_many(ADD) == EXPECTED
    assert leftover_processes(pool) == []


def test_the_wall_clock_limit_kills_a_program_that_uses_no_cpu():
    config = ExecutorConfig(workers=1, timeout_s=1, cpu_s=5, banned_modules=[], extra_preload=["time"])
    with Executor(config) as ex:
        [v] = ex.validate_many([("import time\ndef f(x):\n    time.sleep(600)", ["1"])])
        assert (v.reason, v.detail) == ("timeout", "wall-clock limit of 1 s")
        assert leftover_processes(ex) == []


def test_endless_programs_are_stopped_by_the_cpu_limit(pool):
    [v] = pool.validate_many([FOREVER])
    assert (v.reason, v.detail) == ("timeout", "CPU-time limit of 1 s")


def test_workers_are_recycled_after_their_quota():
    with Executor(ExecutorConfig(**TEST_LIMITS, tasks_per_worker=3)) as ex:
        first = set(ex.worker_pids())
        assert ex.validate_many(ADD * 3) == EXPECTED * 3
        assert len(first - set(ex.worker_pids())) >= 2  # 48 runs over 4 workers: most reached their quota
        assert all(worker.runs < 3 for worker in ex._workers)  # noqa: SLF001 - each was replaced once idle
        assert ex.validate_many(ADD) == EXPECTED


def test_close_leaves_nothing_running():
    ex = Executor(ExecutorConfig(**TEST_LIMITS))
    pids = ex.worker_pids()
    ex.validate_many([FOREVER, *ADD[:2]])
    ex.close()
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_without_namespaces_sockets_are_refused_and_the_report_says_so():
    config = ExecutorConfig(
        **TEST_LIMITS | {"workers": 1}, namespaces=False, banned_modules=[], banned_builtins=[],
        block_introspection=False, extra_preload=ATTACK_MODULES,
    )
    program = (
        "import os\ndef f(x):\n    out = []\n    try:\n        import socket\n    except ImportError:\n"
        "        out.append('no socket')\n    try:\n        os.fork()\n    except OSError:\n        out.append('no fork')\n"
        "    return out"
    )
    with Executor(config) as ex:
        assert "NO network namespace" in ex.isolation
        assert ex.validate_many([(program, ["1"])]) == [Validation(True, ["['no socket', 'no fork']"])]
        assert leftover_processes(ex) == []


SYSTEM_PYTHON = "/usr/bin/python3"


def _usable_system_python() -> bool:
    if os.geteuid() != 0 or not os.access(SYSTEM_PYTHON, os.X_OK):
        return False
    version = subprocess.run([SYSTEM_PYTHON, "-c", "import sys; print(sys.version_info >= (3, 11))"],
                             capture_output=True, text=True)
    return version.stdout.strip() == "True"


@pytest.mark.skipif(not _usable_system_python(), reason="needs root (to start a worker as nobody) and a system python")
def test_an_unprivileged_worker_isolates_itself_in_a_user_namespace(tmp_path):
    """The non-root case, for real: a worker started as `nobody` with the system's interpreter."""
    config = ExecutorConfig(**TEST_LIMITS, banned_modules=[], banned_builtins=[], block_introspection=False,
                            extra_preload=ATTACK_MODULES)
    worker = Worker(0, 1, _worker_settings(config), tmp_path, python=SYSTEM_PYTHON, user=65534)
    worker.start()
    try:
        worker.wait_ready(time.monotonic() + 60)
        assert "user namespace" in worker.isolation and "network namespace" in worker.isolation
        attack = (
            "import ctypes, os, socket\ndef f(x):\n    out = []\n"
            "    for act in (os.fork, lambda: socket.create_connection(('1.1.1.1', 53), timeout=1),\n"
            "                lambda: open('/usr/botlab-escape', 'w')):\n"
            "        try:\n            act()\n            out.append('done')\n"
            "        except OSError as e:\n            out.append(type(e).__name__)\n"
            "    out.append(ctypes.CDLL(None).ptrace(16, os.getppid(), 0, 0))  # same uid, yet no ptrace\n"
            "    return out"
        )
        worker.send({"kind": "run", "program": attack, "inputs": ["1"]})
        result = worker.receive(timeout_s=60)  # a worker stopped by ptrace would never answer
        assert result["reason"] is None, result
        assert "done" not in result["outputs"][0] and result["outputs"][0].endswith(", -1]")
        assert not os.path.exists("/usr/botlab-escape")
        hub = psutil.Process(worker.pid).children()[0]
        assert hub.uids().real == 65534
        wait_for(lambda: not programs_below(hub), "the program process to be reaped")
    finally:
        worker.kill()


# --- the commands --------------------------------------------------------------------------------------------------


def _botlab(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "botlab.cli", *args], capture_output=True, text=True, timeout=120)


def test_sandbox_check_command(tmp_path: Path):
    good = tmp_path / "good.py"
    good.write_text("def f(s):\n    return s[::-1]\n")
    bad = tmp_path / "bad.py"
    bad.write_text("import os\ndef f(s):\n    return os.getcwd()\n")

    run = _botlab("sandbox", "check", str(good), "--input", "'hello'", "--json")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == {"valid": True, "output": "'olleh'", "reason": None}

    run = _botlab("sandbox", "check", str(bad), "--input", "1")
    assert run.returncode == 1
    assert "invalid" in run.stdout and "forbidden_import" in run.stdout and "isolation:" in run.stdout

    run = _botlab("sandbox", "check", str(tmp_path / "missing.py"), "--input", "1")
    assert run.returncode == 2 and "cannot read PROGRAM" in run.stderr and "Traceback" not in run.stderr


def test_the_replay_is_real_work_and_the_sandbox_still_judges_it_as_recorded():
    """bench/replay.jsonl (the headline of `botlab bench executor`): a few hundred entries of every kind, and the
    sandbox's verdicts on them what the file recorded; the AZR-style baseline accepts every valid proposal too."""
    from botlab.bench.executor import AzrBaseline, batches, replay_entries, replay_ours

    entries = [e for e in replay_entries() if e["category"] != "timeout"]  # those would only cost time here
    assert len(entries) >= 200
    assert {e["kind"] for e in entries} == {"validate", "check_output", "check_input", "check_program"}
    assert {"valid", "erroring"} <= {e["category"] for e in entries}
    ordered = [e for batch in batches(entries) for e in batch]
    with Executor(ExecutorConfig(**TEST_LIMITS)) as ex:
        verdicts = [ok for batch in batches(entries) for ok in replay_ours(ex, batch)]
    assert verdicts == [e["category"] == "valid" or e.get("correct", False) for e in ordered]
    baseline = AzrBaseline()
    try:
        assert all(baseline.replay(e) for e in entries if e["category"] == "valid")
    finally:
        baseline.close()


def test_the_benchmark_baseline_agrees_on_what_it_can_see():
    """The AZR-style baseline of `botlab bench executor`, on the fixed workload's quick items."""
    from botlab.bench.executor import AzrBaseline, BareWorker, workload

    items = [item for item in workload() if item[0] in ("simple", "invalid")][:40]
    verdicts = []
    for kind in (AzrBaseline, BareWorker):
        baseline = kind()
        try:
            verdicts.append([baseline.validate(code, arg) for _, code, arg in items])
        finally:
            baseline.close()
    with Executor(ExecutorConfig(**TEST_LIMITS)) as ex:
        verdicts.append([v.valid for v in ex.validate_many([(code, [arg]) for _, code, arg in items])])
    assert verdicts == [[category == "simple" for category, _, _ in items]] * 3


# --- several jobs in one program process (behind the gate) ----------------------------------------------------------


def test_a_job_that_kills_its_shared_process_fails_alone():
    with Executor(ExecutorConfig(**TEST_LIMITS | {"workers": 1})) as ex:  # one slot: the batch in few chunks
        memory = ("def f(x):\n    return len([0] * 10 ** 10)", ["1"])
        results = ex.validate_many(ADD[:3] + [FOREVER] + ADD[3:5] + [memory] + ADD[5:])
        assert [r.reason for r in results] == [None] * 3 + ["timeout"] + [None] * 2 + ["memory"] + [None] * 3
        assert [r for r in results if r.valid] == EXPECTED
        assert leftover_processes(ex) == []


def test_a_program_that_changes_shared_modules_cannot_reach_the_others(sandbox):
    changers = [
        "import math\nmath.pi = 3\ndef f(x):\n    return x",
        "import decimal\ndecimal.getcontext().prec = 3\ndef f(x):\n    return x",
        "from collections import Counter\nCounter.most_common = lambda self, n=None: [('x', 0)]\ndef f(x):\n"
        "    return x",
    ]
    readers = [
        "import math\ndef f(x):\n    return math.pi",
        "import decimal\ndef f(x):\n    return str(decimal.Decimal(1) / 7)",
        "from collections import Counter\ndef f(x):\n    return Counter(x).most_common(1)",
    ]
    items = [(p, ["'aab'"]) for p in changers + readers + changers + readers]
    outputs = [v.outputs for v in sandbox.validate_many(items)]
    clean = [["3.141592653589793"], ["'0.1428571428571428571428571429'"], ["[('a', 2)]"]]
    assert outputs[3:6] == clean and outputs[9:] == clean
