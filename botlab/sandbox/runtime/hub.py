"""A sandbox worker: a fork server that gates and compiles each job, then runs it in a fresh confined process.

Started by the trainer as `python -S ... -c "from runtime.hub import main; main()"`. Its life:
1. read the settings frame, preload the standard-library modules programs may import, clear the environment;
2. enter namespaces (isolation.py) and fork its init, which serves jobs (pid 1 of the new pid namespace);
3. per frame (one job or a list): parse + gate + compile here (cached), fork a child that confines itself and runs
   the code objects, read each job's result under its own deadline, SIGKILL whatever is left, remove its temp dir.
The worker itself never runs model code. Behind the gate, the jobs of a frame that change nothing shared run one
after another in one child (gate.may_share_a_process); any other job gets a child of its own (docs/sandbox.md).
"""

from __future__ import annotations

import ast
import ctypes
import gc
import os
import select
import signal
import struct
import sys
import time
import warnings
from collections import OrderedDict
from dataclasses import dataclass

from . import gate, isolation
from .child import Job, decode_result, encode_result, run_job, safe_builtins
from .protocol import WALL_STRETCH, WorkerGone, read_frame, write_frame

# Modules programs may import (minus the banned list). Loaded before the fork, so a program pays nothing for them;
# other modules may be unreadable for the confined user and are then simply missing.
PRELOAD = (
    "__future__", "abc", "array", "ast", "base64", "binascii", "bisect", "cmath", "collections", "collections.abc",
    "contextlib", "copy", "dataclasses", "decimal", "difflib", "enum", "fractions", "functools", "graphlib", "heapq",
    "itertools", "json", "keyword", "math", "numbers", "operator", "pprint", "queue", "re", "reprlib", "statistics",
    "string", "struct", "textwrap", "typing", "unicodedata", "zlib",
)
CACHE_SIZE = 128  # compiled programs kept; a small heap keeps every fork cheap
_FRAME = struct.Struct(">I")  # each result a program process sends: its length, then encode_result's bytes
HARNESS_FAILED = 70  # exit status of a program process whose confinement or reporting failed

# fork(2) without CPython's at-fork handlers. The worker is single-threaded, so there is nothing for them to
# repair, and the ones that preloaded modules register (threading's, random's reseeding) would cost every program
# process ~180 copy-on-write page faults, about 0.6 ms. PyDLL keeps the GIL held across the call.
try:
    _raw_fork = ctypes.PyDLL(None).fork
    _raw_fork.restype = ctypes.c_int
except AttributeError:  # not glibc/musl: the ordinary fork is correct, only slower
    _raw_fork = os.fork


@dataclass(frozen=True)
class Settings:
    timeout_s: float
    cpu_s: int
    memory_mb: int
    max_output_chars: int
    allow_none_output: bool
    banned_modules: list[str]
    banned_builtins: list[str]
    block_introspection: bool
    namespaces: bool
    extra_preload: list[str]


def main() -> None:
    settings = Settings(**read_frame(0))
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # as pid 1, default-handled signals from programs are ignored
    os.environ.clear()
    for name in PRELOAD + tuple(settings.extra_preload):
        try:
            __import__(name)
        except ImportError:
            pass
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path[:] = [p for p in sys.path if p and os.path.abspath(p) != here]  # programs cannot import us by path
    iso = isolation.enter_namespaces(settings.namespaces)
    _fork_server_process()
    isolation.finish_in_init(iso)
    isolation.limit_worker(settings.memory_mb)
    hub = Hub(settings, iso)
    gc.freeze()  # keep the collector off the inherited heap in children: fewer copy-on-write faults
    write_frame(1, {"ready": True, "isolation": iso.describe(), "pid": os.getpid()})
    hub.serve()


def _fork_server_process() -> None:
    """Continue in a child: in a new pid namespace the first child is its init (pid 1). The original process only
    waits, and exits with it. (Without a pid namespace the same shape keeps the process tree uniform.)"""
    pid = os.fork()
    if pid:
        os.close(0)
        os.close(1)
        _, status = os.waitpid(pid, 0)
        os._exit(os.waitstatus_to_exitcode(status) & 0xFF)
    isolation.set_parent_death_signal()


class Hub:
    def __init__(self, settings: Settings, iso: isolation.Isolation):
        self.settings = settings
        self.iso = iso
        self.policy = gate.Policy(
            frozenset(settings.banned_modules), frozenset(settings.banned_builtins), settings.block_introspection
        )
        self.builtins = safe_builtins(self.policy.banned_builtins, self.policy.module_banned)
        self.cache: OrderedDict[tuple[str, str], object] = OrderedDict()
        self.null_fd = os.open(os.devnull, os.O_RDWR)
        self.base = self._make_base_dir()
        self.runs = 0
        # /proc shows this namespace's processes (so /proc/<child pid> is the child): the load-aware clock needs it
        self.own_proc = _own_proc()

    def serve(self) -> None:
        """Until the trainer closes the pipe (or dies): a worker never outlives it."""
        try:
            while True:
                write_frame(1, self.handle(read_frame(0)))
        except WorkerGone:
            return

    def handle(self, message: dict | list) -> dict | list:
        """One job (a dict) or a batch of jobs (a list, answered with a list of results in the same order)."""
        if isinstance(message, dict):
            return self.handle_batch([message])[0]
        return self.handle_batch(message)

    def handle_batch(self, jobs: list[dict]) -> list[dict]:
        results: list[dict | None] = [None] * len(jobs)
        shared: list[tuple[int, Job]] = []
        for i, job in enumerate(jobs):
            try:
                prepared = self.prepare(job)
            except gate.Rejected as rejected:
                results[i] = _failure(rejected.reason, rejected.detail)
                continue
            if self.policy.contains_programs and prepared.shareable:
                shared.append((i, prepared))
            else:
                results[i] = self.run_confined([prepared])[0]
        while shared:  # one process for all of them; after a job that kills it, the rest go on in a new one
            done = self.run_confined([job for _, job in shared])
            for (i, _), result in zip(shared, done):
                results[i] = result
            shared = shared[len(done):]
        return results  # type: ignore[return-value]

    # --- gate and compile ---------------------------------------------------------------------------------------

    def prepare(self, job: dict) -> Job:
        """Gate and compile every piece of a job (raises gate.Rejected); shareable only if every piece is."""
        verdicts: list[bool] = []

        def code(role: str, text: str):
            compiled, shareable = self.compiled(role, text)
            verdicts.append(shareable)
            return compiled

        kind = job["kind"]
        if kind == "run":
            program = code("program", job["program"])
            calls = tuple(code("call", text) for text in job["inputs"])
            return Job(kind, program, calls, shareable=all(verdicts), n_outputs=len(calls))
        if kind == "check_output":
            golds, answer = (code("gold", job["gold"]),), code("answer", job["answer"])
            return Job(kind, golds=golds, answer=answer, shareable=all(verdicts))
        if kind == "check_input":
            program = code("program", job["program"])
            calls, golds = (code("call", job["answer"]),), (code("gold", job["gold"]),)
            return Job(kind, program, calls, golds, shareable=all(verdicts))
        if kind == "check_program":
            program = code("program", job["program"])
            calls = tuple(code("call", text) for text, _ in job["pairs"])
            golds = tuple(code("gold", gold) for _, gold in job["pairs"])
            return Job(kind, program, calls, golds, shareable=all(verdicts))
        raise ValueError(f"unknown job kind {kind!r}")

    def compiled(self, role: str, text: str):
        key = (role, text)
        hit = self.cache.get(key)
        if hit is None:
            try:
                hit = self._compile(role, text)
            except gate.Rejected as rejected:
                hit = rejected
            self.cache[key] = hit
            if len(self.cache) > CACHE_SIZE:
                self.cache.popitem(last=False)
        else:
            self.cache.move_to_end(key)
        if isinstance(hit, gate.Rejected):
            raise hit
        return hit

    def _compile(self, role: str, text: str):
        # An input is f's argument list; newlines let it end in a comment without swallowing the parenthesis.
        if role == "program":
            source, mode = text, "exec"
        else:
            source, mode = (f"f(\n{text}\n)" if role == "call" else text.strip()), "eval"
        parse_fail = {"program": "syntax_error", "call": "bad_input", "answer": "syntax_error", "gold": "bad_gold"}[role]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # SyntaxWarnings of model code are not ours to print
            try:
                tree = ast.parse(source, f"<{role}>", mode)
                if role == "call" and not _is_call_of_f(tree):
                    raise gate.Rejected("bad_input", "the input is not an argument list: f(<input>) is not one call")
                gate.check(tree, self.policy, sys.modules)
                return compile(tree, f"<{role}>", mode), gate.may_share_a_process(tree)
            except gate.Rejected:
                raise
            except SyntaxError as err:
                raise gate.Rejected(parse_fail, f"{err.msg} (line {err.lineno})") from None
            except (ValueError, RecursionError, MemoryError, OverflowError) as err:
                raise gate.Rejected(parse_fail, f"{type(err).__name__}: {err}"[:200]) from None

    # --- run in a confined child --------------------------------------------------------------------------------

    def run_confined(self, jobs: list[Job]) -> list[dict]:
        """Run the jobs one after another in one fresh confined process. Returns the results of a prefix of them:
        every job that finished, then the one that was running if the process died or ran out of time."""
        self.runs += 1
        workdir = os.path.join(self.base, str(self.runs))
        os.mkdir(workdir, 0o700)
        if self.iso.run_as:
            os.chown(workdir, *self.iso.run_as)
        read_fd, write_fd = os.pipe()
        pid = _raw_fork()
        if pid < 0:
            raise OSError("fork failed")
        if pid == 0:
            self._child(jobs, read_fd, write_fd, workdir)
        os.close(write_fd)
        status = None
        try:
            results, status, cpu, stopped = self._collect(pid, read_fd, jobs)
        finally:
            os.close(read_fd)
            self._kill_leftovers(pid, reaped=status is not None)
            _remove_tree(workdir)
        if len(results) == len(jobs) or (status == 0 and results):  # all done, or it stopped after a MemoryError
            return results
        return results + [self._interpret(stopped, status, cpu, len(jobs))]

    def _child(self, jobs: list[Job], read_fd: int, write_fd: int, workdir: str) -> None:
        try:
            gc.freeze()  # the collector must not walk (and so copy) the worker's young objects: O(1) list splice
            os.close(read_fd)
            s = self.settings
            isolation.confine_child(self.iso, s.cpu_s * len(jobs), self.null_fd, write_fd, workdir)
            for job in jobs:
                if len(jobs) > 1:  # each job its own CPU-time limit (the rlimit above bounds them all)
                    signal.setitimer(signal.ITIMER_PROF, s.cpu_s)
                result = run_job(job, self.builtins, s.max_output_chars, s.allow_none_output)
                body = encode_result(result)
                view = memoryview(_FRAME.pack(len(body)) + body)
                while view:
                    view = view[os.write(write_fd, view) :]
                if result["reason"] == "memory":
                    break  # what it left behind must not squeeze the next program: they get a new process
        except BaseException:  # noqa: BLE001 - the harness itself failed: no result, a distinct status
            os._exit(HARNESS_FAILED)
        os._exit(0)

    def _collect(self, pid: int, read_fd: int, jobs: list[Job]) -> tuple[list[dict], int | None, float, str]:
        """Read the child's results as they come, until it exits or a job runs out of time or sends too much.

        Returns (results, wait status or None, cpu seconds, why it was stopped: "timeout", "malformed" or "").
        Each job's wall-clock limit runs from the end of the one before, not counting the time the child waited
        for a CPU (a busy host must not turn a good program into a timeout); at most WALL_STRETCH times the limit.
        """
        clock = _ChildClock(pid if self.own_proc else None)
        limit = self.settings.timeout_s
        try:
            exit_fd = os.pidfd_open(pid)  # readable once the child has exited
        except OSError:  # kernels before 5.3, or a seccomp filter: poll instead
            exit_fd = None
        buffer = bytearray()
        results: list[dict] = []
        reading, status, cpu = True, None, 0.0
        clock.start()
        try:
            while (reading or status is None) and len(results) < len(jobs):
                remaining = clock.remaining(limit)
                if remaining <= 0:
                    return results, None, 0.0, "timeout"
                if reading:
                    waiting, wait = [read_fd], remaining
                else:
                    waiting, wait = ([exit_fd], remaining) if exit_fd is not None else ([], min(remaining, 0.002))
                ready, _, _ = select.select(waiting, [], [], wait)
                if read_fd in ready:
                    chunk = os.read(read_fd, 65536)
                    reading = bool(chunk)
                    buffer += chunk
                    while len(buffer) >= _FRAME.size and len(results) < len(jobs):
                        (size,) = _FRAME.unpack_from(buffer)
                        if size > self._cap(jobs[len(results)]):
                            return results, None, 0.0, "malformed"
                        if len(buffer) < _FRAME.size + size:
                            break
                        result = decode_result(bytes(buffer[_FRAME.size : _FRAME.size + size]))
                        if result is None:
                            return results, None, 0.0, "malformed"
                        del buffer[: _FRAME.size + size]
                        results.append(result)
                        clock.start()
                elif not reading:
                    done, status, usage = os.wait4(pid, os.WNOHANG)
                    status = status if done else None
                    cpu = usage.ru_utime + usage.ru_stime
        finally:
            clock.close()
            if exit_fd is not None:
                os.close(exit_fd)
        return results, status, cpu, ""

    def _cap(self, job: Job) -> int:
        return 65536 + job.n_outputs * (self.settings.max_output_chars * 6 + 16)

    def _interpret(self, stopped: str, status: int | None, cpu: float, n_jobs: int) -> dict:
        """The failure of the job that was running when its process was stopped or died."""
        s = self.settings
        if stopped == "timeout":
            return _failure("timeout", f"wall-clock limit of {s.timeout_s:g} s")
        if stopped == "malformed" or status is None:
            return _failure("crash", "the program process sent a malformed result")
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            if sig in (signal.SIGXCPU, signal.SIGPROF) or (sig == signal.SIGKILL and cpu >= s.cpu_s * n_jobs):
                return _failure("timeout", f"CPU-time limit of {s.cpu_s} s")
            if sig == signal.SIGXFSZ:
                return _failure("file_too_large", "a file grew past the file-size limit")
            return _failure("crash", f"killed by {signal.Signals(sig).name}")
        return _failure("crash", f"exited with status {os.waitstatus_to_exitcode(status)} and no valid result")

    def _kill_leftovers(self, pid: int, reaped: bool) -> None:
        """Nothing a program started may survive it."""
        as_init = self.iso.pid and os.getpid() == 1
        if as_init:
            targets = [-1]  # every other process in this pid namespace
        else:
            targets = [-pid] if reaped else [-pid, pid]  # its process group outlives it only with members
        for target in targets:
            try:
                os.kill(target, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if not reaped:
            os.waitpid(pid, 0)
        while as_init:  # orphans are handed to init: reap every one (all were just sent SIGKILL)
            try:
                os.waitpid(-1, 0)
            except ChildProcessError:
                return

    def _make_base_dir(self) -> str:
        # The private /tmp when there is one; else a tmpfs if the host has one (a disk rmdir costs milliseconds).
        root = "/tmp" if self.iso.private_tmp or not os.access("/dev/shm", os.W_OK) else "/dev/shm"
        path = os.path.join(root, f"botlab-sandbox-{os.getpid()}-{time.time_ns()}")
        os.mkdir(path, 0o711)  # the confined user may enter its own subdirectory, not list the others
        return path


def _remove_tree(path: str) -> None:
    """Remove a program's temp dir and whatever it wrote there, whatever modes it set (best effort)."""
    try:
        os.rmdir(path)  # the usual case: it wrote nothing
        return
    except OSError:
        pass
    try:
        for root, dirs, files in os.walk(path, topdown=True):
            for name in dirs:
                os.chmod(os.path.join(root, name), 0o700, follow_symlinks=False)
        for root, dirs, files in os.walk(path, topdown=False):
            for name in files + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
                os.unlink(os.path.join(root, name))
            for name in dirs:
                if not os.path.islink(os.path.join(root, name)):
                    os.rmdir(os.path.join(root, name))
        os.rmdir(path)
    except OSError:
        pass  # left in the worker's private /tmp, which disappears with the worker


def _is_call_of_f(tree: ast.Expression) -> bool:
    body = tree.body
    return isinstance(body, ast.Call) and isinstance(body.func, ast.Name) and body.func.id == "f"


def _failure(reason: str, detail: str) -> dict:
    return {"reason": reason, "detail": detail, "outputs": []}


def _own_proc() -> bool:
    try:
        return os.readlink("/proc/self") == str(os.getpid())
    except OSError:
        return False


class _ChildClock:
    """A job's wall-clock time, less the time its process spent runnable but waiting for a CPU (/proc/<pid>/
    schedstat): on a busy host a program must not time out for other processes' work. Sleeping and blocking still
    count, so the limit still stops a program that waits forever; a spinning one is stopped once it has had the
    limit's worth of CPU time (or by the CPU-time limit)."""

    def __init__(self, pid: int | None):
        self.fds: list[int] = []
        try:
            for name in ("schedstat", "stat") if pid is not None else ():
                self.fds.append(os.open(f"/proc/{pid}/{name}", os.O_RDONLY))
        except OSError:
            self.close()  # without both, the plain wall clock
        self.started = self.cpu = self.waited = 0.0

    def start(self) -> None:
        self.started = time.monotonic()
        self.cpu, self.waited = self._schedstat()

    def remaining(self, limit: float) -> float:
        """Seconds left before `limit`, and never more than WALL_STRETCH times the limit of wall-clock time."""
        elapsed = time.monotonic() - self.started
        left = limit - elapsed
        if left > 0 or elapsed >= limit * WALL_STRETCH or not self.fds:
            return left
        cpu, waited = self._schedstat()
        left = limit - (elapsed - (waited - self.waited))
        if left <= 0 and cpu - self.cpu < limit and self._runnable():
            left = limit / 20  # waiting for a CPU right now: the kernel counts that wait only once it ends
        return min(left, limit * WALL_STRETCH - elapsed)

    def _schedstat(self) -> tuple[float, float]:
        """(CPU time, time spent waiting for a CPU) of the process so far, in seconds."""
        if not self.fds:
            return 0.0, 0.0
        try:
            on_cpu, waiting = os.pread(self.fds[0], 128, 0).split()[:2]
            return int(on_cpu) / 1e9, int(waiting) / 1e9
        except (OSError, ValueError):
            return 0.0, 0.0

    def _runnable(self) -> bool:
        try:
            return os.pread(self.fds[1], 512, 0).rpartition(b")")[2].split()[0] == b"R"
        except (OSError, IndexError):
            return False

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = []
