"""A sandbox worker: a fork server that gates and compiles each job, then runs it in a fresh confined process.

Started by the trainer as `python -S ... -c "from runtime.hub import main; main()"`. Its life:
1. read the settings frame, preload the standard-library modules programs may import, clear the environment;
2. enter namespaces (isolation.py) and fork its init, which serves jobs (pid 1 of the new pid namespace);
3. per frame (one job or a list): parse + gate + compile here (cached), hand the code objects to the standby child
   (forked and confined before the frame came) that runs them, read each job's result under its own deadline,
   SIGKILL whatever is left and answer; then reap it, remove its temp dir and fork the next standby.
The worker itself never runs model code. A child takes one frame's jobs and is never used again; the next is forked
only once the last one is reaped, so no two ever meet. Behind the gate, the jobs of a frame that change nothing
shared run one after another in one child (gate.may_share_a_process); any other job gets a child of its own
(docs/sandbox.md).
"""

from __future__ import annotations

import ast
import ctypes
import gc
import marshal
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
from .child import SANDBOX_MODULE, Job, decode_result, encode_result, run_job, safe_builtins
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
_JOBS = struct.Struct(">I")  # the one message a program process receives: its length, then _pack_jobs' bytes
STANDBY_NAME, PROGRAM_NAME = "botlab-standby", "botlab-program"  # process names: waiting for jobs, or has them
# Run by every standby before it waits for its jobs, results thrown away: its first touches of the worker's memory
# (copy-on-write faults, about 100 for even the smallest job) then happen before a job is sent, not while the
# trainer waits. Fixed text of ours, one job of each kind, with no builtin or import a configured gate could ban;
# it leaves nothing the jobs could see (_warm_up).
WARM_UP = (
    {"kind": "run", "program": "def f(a, b):\n    return [a, b, {'k': (a, 2.5)}, {b}, b * a]",
     "inputs": ["1, 'x'"]},
    {"kind": "check_output", "gold": "[1, 'x']", "answer": "[1, 'x']"},
    {"kind": "check_input", "program": "def f(a):\n    return a", "gold": "(1, 'x')", "answer": "(1, 'x')"},
    {"kind": "check_program", "program": "def f(a):\n    return a", "pairs": [["1", "1"], ["'x'", "'y'"]]},
)
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
        self.warm_up = _pack_jobs([self._prepare_warm_up(job) for job in WARM_UP])
        self.standby: Process | None = None  # forked and confined ahead, waiting for its jobs
        self.used: Process | None = None  # ran jobs and was sent SIGKILL; not yet reaped

    def serve(self) -> None:
        """Until the trainer closes the pipe (or dies): a worker never outlives it. The answer goes out as soon as
        the last program process is killed; reaping it and forking the next standby happen while the trainer
        reads, before the next frame is read. (With the next frame already waiting, the process is forked for it
        once it is gated: a standby would only spend its warm-up while the frame waits.)"""
        try:
            while True:
                if self.standby is None and not select.select([0], [], [], 0)[0]:
                    self.standby = self._fork_standby()
                write_frame(1, self.handle(read_frame(0)))
                self._reap()
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

    def _prepare_warm_up(self, job: dict) -> Job:
        try:
            return self.prepare(job)
        except gate.Rejected as rejected:  # a gate configured to refuse even this: a bug of ours, said at start
            raise RuntimeError(f"the sandbox's own warm-up job was refused: {rejected.detail}") from None

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
                nodes = gate.check(tree, self.policy, sys.modules)
                return compile(tree, f"<{role}>", mode), gate.may_share_a_process(nodes)
            except gate.Rejected:
                raise
            except SyntaxError as err:
                raise gate.Rejected(parse_fail, f"{err.msg} (line {err.lineno})") from None
            except (ValueError, RecursionError, MemoryError, OverflowError) as err:
                raise gate.Rejected(parse_fail, f"{type(err).__name__}: {err}"[:200]) from None

    # --- run in a confined child --------------------------------------------------------------------------------

    def run_confined(self, jobs: list[Job]) -> list[dict]:
        """Run the jobs one after another in one fresh confined process (the standby). Returns the results of a
        prefix of them: every job that finished, then the one that was running if the process died or ran out of
        time. The process is sent SIGKILL before this returns: no program code runs once its results are in."""
        self._reap()  # the process of a job before these in the same frame: gone before the next one starts
        process = self.standby or self._fork_standby(warm_up=False)  # no standby ready: one for these jobs now
        self.standby, self.used = None, process
        try:
            _write_all(process.jobs_fd, _JOBS.pack(len(body := _pack_jobs(jobs))) + body)
        except OSError:  # it died before taking its jobs (its confinement failed): _collect reports how
            pass
        results, process.status, cpu, stopped = self._collect(process, jobs)
        self._stop(process)
        if len(results) == len(jobs) or (process.status == 0 and results):  # all done, or it stopped after MemoryError
            return results
        return results + [self._interpret(stopped, process.status, cpu, len(jobs))]

    def _fork_standby(self, warm_up: bool = True) -> "Process":
        """A fresh process, forked from this (gated, trusted) state before any job is known and confined at once;
        it waits for one frame of jobs (runtime/child.py runs them) and is never used again."""
        self.runs += 1
        workdir = os.path.join(self.base, str(self.runs))
        os.mkdir(workdir, 0o700)
        if self.iso.run_as:
            os.chown(workdir, *self.iso.run_as)
        jobs_read, jobs_write = os.pipe()
        results_read, results_write = os.pipe()
        pid = _raw_fork()
        if pid < 0:
            raise OSError("fork failed")
        if pid == 0:
            self._child(jobs_read, results_write, workdir, warm_up)
        os.close(jobs_read)
        os.close(results_write)
        try:
            exit_fd = os.pidfd_open(pid)  # readable once the child has exited
        except OSError:  # kernels before 5.3, or a seccomp filter: poll instead
            exit_fd = None
        return Process(pid, jobs_write, results_read, exit_fd, _ChildClock(pid if self.own_proc else None), workdir)

    def _child(self, jobs_fd: int, write_fd: int, workdir: str, warm_up: bool) -> None:
        try:
            gc.freeze()  # the collector must not walk (and so copy) the worker's young objects: O(1) list splice
            isolation.confine_child(self.iso, self.null_fd, (jobs_fd, write_fd), workdir)
            isolation.set_process_name(STANDBY_NAME)  # only once confined
            if warm_up and not select.select([jobs_fd], [], [], 0)[0]:  # its jobs are not here yet: time to spare
                self._warm_up()
            jobs = _unpack_jobs(jobs_fd)
            if jobs is None:
                os._exit(0)  # the worker is going away
            isolation.set_process_name(PROGRAM_NAME)
            s = self.settings
            isolation.limit_cpu(s.cpu_s * len(jobs))
            for job in jobs:
                if len(jobs) > 1:  # each job its own CPU-time limit (the rlimit above bounds them all)
                    signal.setitimer(signal.ITIMER_PROF, s.cpu_s)
                result = run_job(job, self.builtins, s.max_output_chars, s.allow_none_output)
                body = encode_result(result)
                _write_all(write_fd, _FRAME.pack(len(body)) + body)
                if result["reason"] == "memory":
                    os._exit(0)  # what it left behind must not squeeze the next program: they get a new process
            # All reported: wait for the worker's SIGKILL instead of exiting. Tearing a process down takes a few
            # hundred microseconds of CPU, which would otherwise run before the worker can read the last result.
            os.read(jobs_fd, 1)
        except BaseException:  # noqa: BLE001 - the harness itself failed: no result, a distinct status
            os._exit(HARNESS_FAILED)
        os._exit(0)

    def _warm_up(self) -> None:
        """In the standby, confined, before its jobs: the same paths a job takes, on WARM_UP."""
        s = self.settings
        for job in (Job(*fields) for fields in marshal.loads(self.warm_up)):
            encode_result(run_job(job, self.builtins, s.max_output_chars, s.allow_none_output))
        sys.modules.pop(SANDBOX_MODULE, None)  # the warm-up program's module: no job may find it

    def _collect(self, process: "Process", jobs: list[Job]) -> tuple[list[dict], int | None, float, str]:
        """Read the child's results as they come, until it exits or a job runs out of time or sends too much.

        Returns (results, wait status or None, cpu seconds, why it was stopped: "timeout", "malformed" or "").
        Each job's wall-clock limit runs from the end of the one before, not counting the time the child waited
        for a CPU (a busy host must not turn a good program into a timeout); at most WALL_STRETCH times the limit.
        """
        pid, read_fd, exit_fd, clock = process.pid, process.results_fd, process.exit_fd, process.clock
        limit = self.settings.timeout_s
        buffer = bytearray()
        results: list[dict] = []
        reading, status, cpu = True, None, 0.0
        clock.start()
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

    def _stop(self, process: "Process") -> None:
        """SIGKILL the process and whatever it started (nothing a program started may survive it); the kernel tears
        it down while the answer goes out, and _reap collects it."""
        if self._as_init():
            targets = [-1]  # every other process in this pid namespace (there is no standby while a job runs)
        else:  # its process group outlives it only with members
            targets = [-process.pid] if process.status is not None else [-process.pid, process.pid]
        for target in targets:
            try:
                os.kill(target, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def _reap(self) -> None:
        """Wait for the last used process (already sent SIGKILL) and its orphans to be gone; remove its temp dir."""
        process, self.used = self.used, None
        if process is None:
            return
        if process.status is None:
            os.waitpid(process.pid, 0)
        while self._as_init():  # orphans are handed to init: reap every one (all were sent SIGKILL)
            try:
                os.waitpid(-1, 0)
            except ChildProcessError:
                break
        process.close()
        _remove_tree(process.workdir)

    def _as_init(self) -> bool:
        return self.iso.pid and os.getpid() == 1

    def _make_base_dir(self) -> str:
        # The private /tmp when there is one; else a tmpfs if the host has one (a disk rmdir costs milliseconds).
        root = "/tmp" if self.iso.private_tmp or not os.access("/dev/shm", os.W_OK) else "/dev/shm"
        path = os.path.join(root, f"botlab-sandbox-{os.getpid()}-{time.time_ns()}")
        os.mkdir(path, 0o711)  # the confined user may enter its own subdirectory, not list the others
        return path


@dataclass
class Process:
    """A confined program process seen from the worker: its pipes, its clock and its temp dir."""

    pid: int
    jobs_fd: int  # the worker writes its jobs here, once
    results_fd: int  # it writes one result frame per job here
    exit_fd: int | None  # a pidfd, readable once it has exited
    clock: "_ChildClock"
    workdir: str
    status: int | None = None  # its wait status, once the worker has reaped it

    def close(self) -> None:
        for fd in (self.jobs_fd, self.results_fd, self.exit_fd):
            if fd is not None:
                os.close(fd)
        self.clock.close()


def _pack_jobs(jobs: list[Job]) -> bytes:
    """The compiled jobs for a process forked before they were known. marshal carries code objects (it is how
    .pyc files store them); only ever from this worker to its own child, never from model code."""
    return marshal.dumps([(job.kind, job.program, job.calls, job.golds, job.answer) for job in jobs])


def _unpack_jobs(fd: int) -> list[Job] | None:
    """In the standby: its jobs, or None when the worker closed the pipe without sending any."""
    try:
        (size,) = _JOBS.unpack(_read_exactly(fd, _JOBS.size))
        return [Job(*fields) for fields in marshal.loads(_read_exactly(fd, size))]
    except EOFError:
        return None


def _read_exactly(fd: int, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = os.read(fd, size - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return bytes(data)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


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
