"""Hostile programs, written as an attacker would. Each must be rejected or contained; afterwards the pool still
works and nothing a program started is left running.

Two layers are tested separately: the gate (default executor), and the operating-system isolation alone
(`open_sandbox`: gate off, so the program can import os, ctypes, socket... and really try).
"""

from __future__ import annotations

import os
import socket
import sys
import uuid

import pytest

from tests.fixtures.sandbox import SECRET_ENV, leftover_processes

# --- layer 1: the gate (and the limits) of the executor as the loop uses it ------------------------------------------

GATED = {
    "write outside tmp": ("def f(p):\n    open(p, 'w').write('x')\n    return 1", "'/etc/pwned'", {"forbidden_call"}),
    "pathlib write": ("from pathlib import Path\ndef f(p):\n    return Path(p).write_text('x')", "'/x'",
                      {"forbidden_import"}),
    "io.open": ("import io\ndef f(p):\n    return io.open(p, 'w')", "'/x'", {"forbidden_import"}),
    "env secrets": ("import os\ndef f(x):\n    return dict(os.environ)", "1", {"forbidden_import"}),
    "dynamic import": ("def f(x):\n    return __import__('o' + 's').environ", "1", {"forbidden_call"}),
    "builtins module": ("import builtins\ndef f(x):\n    return builtins.open", "1", {"forbidden_import"}),
    "socket": ("import socket\ndef f(x):\n    return socket.gethostname()", "1", {"forbidden_import"}),
    "fork bomb": ("import os\ndef f(x):\n    while True:\n        os.fork()", "1", {"forbidden_import"}),
    "multiprocessing": ("from multiprocessing import Process\ndef f(x):\n    return 1", "1", {"forbidden_import"}),
    "memory bomb": ("def f(x):\n    return len([0] * 10 ** 10)", "1", {"memory"}),
    "string bomb": ("def f(x):\n    s = 'ab'\n    while True:\n        s = s + s", "1", {"memory", "timeout"}),
    "C-level loop": ("def f(x):\n    return sum(range(10 ** 12))", "1", {"timeout"}),
    "C-level power": ("def f(x):\n    return len(str(9 ** 9 ** 9))", "1", {"timeout", "memory", "exception"}),
    "busy loop": ("def f(x):\n    while True:\n        x += 1", "1", {"timeout"}),
    "subclasses": ("def f(x):\n    return ().__class__.__base__.__subclasses__()", "1", {"forbidden_attribute"}),
    "subclasses via getattr": ("def f(x):\n    return getattr((), '__cl' + 'ass__')", "1", {"forbidden_call"}),
    "globals via function": ("def f(x):\n    return f.__globals__['__builtins__']", "1", {"forbidden_attribute"}),
    "frame walk": ("def f(x):\n    g = (i for i in [1])\n    return g.gi_frame.f_back.f_globals", "1",
                   {"forbidden_attribute"}),
    "traceback frames": ("def f(x):\n    try:\n        1 / 0\n    except Exception as e:\n"
                         "        return e.__traceback__.tb_frame.f_globals", "1", {"forbidden_attribute"}),
    "format-string attribute": ("def f(x):\n    return '{0.__class__.__mro__}'.format(x)", "1",
                                {"forbidden_attribute"}),
    "module re-export": ("import typing\ndef f(x):\n    return typing.sys.modules['os'].getcwd()", "1",
                         {"forbidden_attribute"}),
    "private module alias": ("import collections\ndef f(x):\n    return collections._sys.modules", "1",
                             {"forbidden_attribute"}),
    "class factory": ("def f(x):\n    return type('T', (), {'__eq__': lambda s, o: True})()", "1",
                      {"forbidden_call"}),
    "signal handlers": ("import signal\ndef f(x):\n    signal.signal(15, signal.SIG_IGN)\n    while True:\n"
                        "        pass", "1", {"forbidden_import"}),
    "recursion limit": ("import sys\nsys.setrecursionlimit(10 ** 8)\ndef f(x):\n    return f(x + 1)", "1",
                        {"forbidden_import"}),
    "plain deep recursion": ("def f(x):\n    return f(x + 1) + 1", "1", {"exception"}),
    "huge output": ("def f(x):\n    return 'x' * 10 ** 7", "1", {"output_too_large"}),
    "huge int output": ("def f(x):\n    return 10 ** 100000", "1", {"output_too_large"}),
    "self-containing output": ("def f(x):\n    a = [x]\n    a.append(a)\n    return a", "1",
                               {"uncomparable_output"}),
    "always-equal object": ("class E:\n    def __eq__(self, o):\n        return True\ndef f(x):\n    return E()", "1",
                            {"uncomparable_output"}),
    "exec": ("def f(x):\n    exec('import os')\n    return 1", "1", {"forbidden_call"}),
    "eval in the input": ("def f(x):\n    return x", "eval('__import__(\"os\")')", {"forbidden_call"}),
    "statement smuggled in the input": ("def f(x):\n    return x", "1)\nimport os\nf(1", {"bad_input"}),
    "kill the worker": ("import os\ndef f(x):\n    os.kill(os.getppid(), 9)\n    return 1", "1", {"forbidden_import"}),
    "exit": ("def f(x):\n    exit(0)", "1", {"forbidden_call"}),
    "system exit": ("def f(x):\n    raise SystemExit(0)", "1", {"exception"}),
    "printing a flood": ("def f(x):\n    print('x' * 10 ** 7)\n    return x", "1", {None}),  # contained: /dev/null
    "ctypes": ("import ctypes\ndef f(x):\n    return ctypes.CDLL(None).fork()", "1", {"forbidden_import"}),
    "gc objects": ("import gc\ndef f(x):\n    return len(gc.get_objects())", "1", {"forbidden_import"}),
    "breakpoint": ("def f(x):\n    breakpoint()\n    return x", "1", {"forbidden_call"}),
}


@pytest.fixture(scope="module")
def gated_results(sandbox):
    """The whole corpus in one batch: the pool runs it in parallel, as the loop would."""
    pids = sandbox.worker_pids()
    results = sandbox.validate_many([(program, [arg]) for program, arg, _ in GATED.values()])
    return dict(zip(GATED, results)), pids


@pytest.mark.parametrize("name", list(GATED))
def test_gated_corpus_is_rejected_or_contained(gated_results, name):
    results, _ = gated_results
    assert results[name].reason in GATED[name][2], results[name]


def test_after_the_gated_corpus_nothing_runs_and_the_pool_works(gated_results, sandbox):
    _, pids_before = gated_results
    assert leftover_processes(sandbox) == []
    assert sandbox.worker_pids() == pids_before  # no worker died or needed replacing
    assert sandbox.validate_many([("def f(x):\n    return x + 1", ["1"])])[0].outputs == ["2"]


# --- layer 2: the operating system alone (gate off) ----------------------------------------------------------------

# Each program reports what its attack achieved; the tests check the host side too.
WRITE = """
def f(paths):
    out = []
    for p in paths:
        try:
            with open(p, 'w') as fh:
                fh.write('pwned')
            out.append('wrote')
        except OSError as e:
            out.append(type(e).__name__)
    return out
"""

READ_SECRETS = """
import os
def f(host_pid):
    seen = [repr(dict(os.environ))]
    for pid in ['self', '1', str(host_pid)] + os.listdir('/proc'):
        try:
            with open('/proc/%s/environ' % pid, 'rb') as fh:
                seen.append(fh.read().decode(errors='replace'))
        except OSError as e:
            seen.append(type(e).__name__)
    return [s[:100] for s in seen if 'BOTLAB_SANDBOX' in s]
"""

NETWORK = """
import socket
def f(port):
    out = []
    for address in [('127.0.0.1', port), ('10.255.255.1', 80), ('1.1.1.1', 53)]:
        try:
            socket.create_connection(address, timeout=0.5).close()
            out.append('connected')
        except OSError as e:
            out.append(type(e).__name__)
    try:
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('1.1.1.1', 53))
        out.append('sent')
    except OSError as e:
        out.append(type(e).__name__)
    return out
"""

SPAWN = """
import os, subprocess, threading
def f(n):
    out = []
    for _ in range(n):
        try:
            if os.fork() == 0:
                while True:
                    pass
            out.append('forked')
        except OSError as e:
            out.append(type(e).__name__)
    for attempt in (lambda: subprocess.Popen(['sleep', '100']),
                    lambda: threading.Thread(target=lambda: None).start(),
                    lambda: os.posix_spawn('/bin/sleep', ['sleep', '100'], {})):
        try:
            attempt()
            out.append('started')
        except (OSError, RuntimeError) as e:
            out.append(type(e).__name__)
    out.append(str(os.system('sleep 100 &')))
    return sorted(set(out))
"""

KILL_EVERYONE = """
import os, signal
def f(x):
    out = []
    for target in (os.getppid(), 1, -1):
        try:
            os.kill(target, signal.SIGKILL)
            out.append('sent')
        except OSError as e:
            out.append(type(e).__name__)
    return out
"""

# The processes it can see besides its worker (pid 1) and itself: no earlier program, no process forked ahead
# for a later one.
OTHERS = """
import os
def f(x):
    return sorted(int(p) for p in os.listdir('/proc') if p.isdigit() and int(p) not in (1, os.getpid()))
"""

SUBCLASS_ESCAPE = """
def f(marker):
    for cls in ().__class__.__base__.__subclasses__():
        if cls.__name__ == '_wrap_close':
            return cls.__init__.__globals__['system']('echo pwned > ' + marker)
    return 'not found'
"""

PRIVILEGES = """
import ctypes, os
def f(x):
    libc = ctypes.CDLL(None, use_errno=True)
    return [libc.fork(), libc.mount(b'none', b'/mnt', b'tmpfs', 0, None), libc.chroot(b'/tmp'), libc.setuid(0),
            libc.unshare(0x40000000), libc.ptrace(16, os.getppid(), 0, 0)]  # PTRACE_ATTACH to the worker
"""

IGNORE_SIGNALS = """
import signal
def f(x):
    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGXCPU, signal.SIGALRM, signal.SIGUSR1):
        signal.signal(s, signal.SIG_IGN)
    return sum(range(10 ** 12))
"""

RECURSION = """
import sys
sys.setrecursionlimit(10 ** 8)
def f(x):
    a, b = [x], [x]
    for _ in range(10 ** 5):
        a, b = [a], [b]
    return a == b  # == recurses in C: with the guard lifted, the C stack overflows
"""

FORGE_RESULT = """
import os
def f(x):
    for fd in range(3, 64):
        try:
            os.write(fd, b'garbage')
        except OSError:
            pass
    return 1
"""

BIG_FILE = "def f(x):\n    with open('big', 'wb') as fh:\n        fh.write(b'x' * (64 << 20))\n    return 1"
MEMORY = "def f(x):\n    return len(bytearray(2 ** 33))"


@pytest.fixture(scope="module")
def host_paths(tmp_path_factory):
    """World-writable places on the host a program might try to write to."""
    shared = tmp_path_factory.mktemp("world-writable")
    os.chmod(shared, 0o777)
    tag = uuid.uuid4().hex
    return [str(shared / "pwned"), f"/tmp/botlab-escape-{tag}", f"/dev/shm/botlab-escape-{tag}",
            f"/var/tmp/botlab-escape-{tag}", os.path.join(sys.prefix, f"botlab-escape-{tag}")]


@pytest.fixture(scope="module")
def listener():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.setblocking(False)
    yield server
    server.close()


@pytest.fixture(scope="module")
def open_results(open_sandbox, host_paths, listener):
    marker = host_paths[0] + "-system"
    pids = open_sandbox.worker_pids()
    corpus = {
        "write": (WRITE, repr(host_paths)),
        "secrets": (READ_SECRETS, str(os.getpid())),
        "network": (NETWORK, str(listener.getsockname()[1])),
        "spawn": (SPAWN, "20"),
        "kill": (KILL_EVERYONE, "1"),
        "others": (OTHERS, "1"),
        "subclass escape": (SUBCLASS_ESCAPE, repr(marker)),
        "privileges": (PRIVILEGES, "1"),
        "ignore signals": (IGNORE_SIGNALS, "1"),
        "recursion": (RECURSION, "1"),
        "forge result": (FORGE_RESULT, "1"),
        "big file": (BIG_FILE, "1"),
        "memory": (MEMORY, "1"),
    }
    results = open_sandbox.validate_many([(program, [arg]) for program, arg in corpus.values()])
    return dict(zip(corpus, results)), pids, marker


def test_isolation_is_reported(open_sandbox):
    assert "network namespace" in open_sandbox.isolation
    assert "NO network namespace" not in open_sandbox.isolation  # this machine allows one; a test that can fail


def test_writes_never_reach_the_host(open_results, host_paths):
    results, _, _ = open_results
    assert results["write"].valid
    for path in host_paths:
        assert not os.path.exists(path), path


def test_environment_secrets_are_out_of_reach(open_results):
    results, _, _ = open_results
    assert results["secrets"].outputs == ["[]"]
    assert os.environ[SECRET_ENV] not in repr(results)


def test_no_network(open_results, listener):
    results, _, _ = open_results
    assert results["network"].valid
    assert "connected" not in results["network"].outputs[0]
    assert "sent" not in results["network"].outputs[0]
    with pytest.raises(BlockingIOError):
        listener.accept()  # nothing ever connected


def test_no_process_can_be_started(open_results, open_sandbox):
    results, _, _ = open_results
    output = results["spawn"].outputs[0]
    assert "forked" not in output and "started" not in output
    assert leftover_processes(open_sandbox) == []


def test_a_program_shares_its_pid_namespace_with_no_other_program(open_results):
    results, _, _ = open_results
    assert results["others"].outputs == ["[]"], results["others"]


def test_privileged_calls_fail(open_results):
    results, _, _ = open_results
    assert results["privileges"].outputs == ["[-1, -1, -1, -1, -1, -1]"]


def test_full_code_execution_still_cannot_run_commands(open_results):
    results, _, marker = open_results
    assert results["subclass escape"].valid  # system() ran... and failed: no process can start
    assert not os.path.exists(marker)


@pytest.mark.parametrize(
    "name, reasons",
    [
        ("ignore signals", {"timeout"}),  # SIGKILL cannot be ignored
        ("recursion", {"crash"}),  # SIGSEGV, in the program's process only
        ("forge result", {"crash"}),  # garbage on the result pipe is detected, never trusted
        ("big file", {"exception", "file_too_large"}),
        ("memory", {"memory"}),
        ("kill", {None}),  # runs, but reaches nobody: the worker is init of its own pid namespace
    ],
)
def test_contained_outcomes(open_results, name, reasons):
    results, _, _ = open_results
    assert results[name].reason in reasons, results[name]


def test_after_the_open_corpus_nothing_runs_and_the_pool_works(open_results, open_sandbox):
    _, pids_before, _ = open_results
    assert leftover_processes(open_sandbox) == []
    assert open_sandbox.worker_pids() == pids_before
    assert open_sandbox.validate_many([("def f(x):\n    return x * 2", ["21"])])[0].outputs == ["42"]
