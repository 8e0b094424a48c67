"""Operating-system isolation of the sandbox workers: Linux namespaces, a read-only filesystem, dropped privileges
and resource limits.

Set up once per worker (namespaces are inherited by every program process it forks), then per program process
`confine_child` applies what must be per process: limits, a new session, no privileges (and `limit_cpu` once the
process has its jobs).

What is active depends on the machine and is reported in words by `Isolation.describe()`:
- as root: network, mount, pid, ipc and uts namespaces; program processes run as `nobody`;
- as another user: the same inside a user namespace (where the kernel allows unprivileged ones);
- else: no namespaces; the import guard refuses socket modules and the rlimits still apply.
"""

from __future__ import annotations

import ctypes
import os
import pwd
import resource
import signal
import sys
from dataclasses import dataclass, field

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REC, MS_PRIVATE = 2, 4, 8, 0x4000, 1 << 18
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID = 0x1, 0x2
AT_FDCWD, AT_RECURSIVE = -100, 0x8000
SYS_MOUNT_SETATTR = 442  # the same number on every architecture (added after the syscall table unification)
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_NAME, PR_SET_NO_NEW_PRIVS = 1, 4, 15, 38
_LINUX_CAPABILITY_VERSION_3 = 0x20080522

PRIVATE_TMPFS = ("/tmp", "/var/tmp", "/dev/shm", "/run")  # the world-writable places, replaced by empty ones
TMPFS_OPTIONS = "size=64m,nr_inodes=4096,mode=1777"
CHILD_FILE_LIMIT = 8 << 20  # bytes any one file may grow to
CHILD_OPEN_FILES = 64

_libc = ctypes.CDLL(None, use_errno=True)


class _MountAttr(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in ("attr_set", "attr_clr", "propagation", "userns_fd")]


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _call(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = (lambda s: s.encode() if s is not None else None)  # noqa: E731
    _call(_libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)), f"mount {target}")


@dataclass
class Isolation:
    """What this worker achieved; decided once, before any program runs."""

    network: bool = False  # private network namespace: no interfaces but a down loopback
    pid: bool = False  # private pid namespace: the worker is its init, programs see no other process
    user_namespace: bool = False  # unprivileged: namespaces owned by a user namespace
    readonly_root: bool = False
    private_tmp: bool = False
    run_as: tuple[int, int] | None = None  # (uid, gid) programs switch to (root only)
    problems: list[str] = field(default_factory=list)

    def describe(self) -> str:
        parts = []
        if self.network:
            parts.append("network namespace (no interfaces)")
        else:
            parts.append("NO network namespace: socket modules refused by the import guard and the AST gate")
        parts.append("pid namespace" if self.pid else "no pid namespace (process groups killed instead)")
        if self.readonly_root:
            parts.append("read-only filesystem" + (" with private /tmp" if self.private_tmp else ""))
        else:
            parts.append("filesystem NOT read-only (writes limited by permissions only)")
        if self.run_as:
            parts.append(f"programs run as uid {self.run_as[0]}")
        elif self.user_namespace:
            parts.append("user namespace, no capabilities")
        parts.append("rlimits cpu/as/fsize/nproc, empty env, own temp dir")
        text = "; ".join(parts)
        return text + (f" [unavailable: {'; '.join(self.problems)}]" if self.problems else "")


def enter_namespaces(enabled: bool) -> Isolation:
    """In the worker, before it forks its init: unshare namespaces and lay out the filesystem."""
    iso = Isolation()
    uid, gid = os.geteuid(), os.getegid()
    if uid == 0:
        iso.run_as = _nobody()
    if not enabled:
        iso.problems.append("namespaces disabled by executor.namespaces")
        return iso
    flags = CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS
    if uid != 0:
        flags |= CLONE_NEWUSER
    try:
        _call(_libc.unshare(flags), "unshare")
        if uid != 0:
            _write_id_maps(uid, gid)
    except OSError as err:
        iso.problems.append(str(err))
        return iso
    iso.network = iso.pid = True
    iso.user_namespace = uid != 0
    try:
        _mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing we mount leaks back to the host
        _make_root_readonly()
        iso.readonly_root = True
        for path in PRIVATE_TMPFS:
            if os.path.isdir(path):
                _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, TMPFS_OPTIONS)
        if uid != 0:
            _hide_home(uid)
        iso.private_tmp = True
    except OSError as err:
        iso.problems.append(str(err))
    return iso


def finish_in_init(iso: Isolation) -> None:
    """In the worker's init process (pid 1 of its namespace): mount its /proc, give up what programs must not have."""
    if iso.pid:
        try:
            _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        except OSError as err:  # the host's /proc stays: programs could see other processes (not signal them)
            iso.problems.append(str(err))
    if iso.user_namespace:
        _drop_capabilities()
    _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)  # inherited: no program can gain privileges through exec
    _libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)  # no ptrace or /proc/<pid>/mem of the worker, even by its own uid
    if not iso.network:
        for name in ("_socket", "socket", "_ssl", "ssl", "select", "_posixsubprocess"):
            sys.modules[name] = None  # type: ignore[assignment]  # any import of these now fails


def limit_worker(memory_mb: int) -> None:
    """Limits that can be set once in the fork server and are inherited by every program process."""
    for which, value in (
        (resource.RLIMIT_AS, memory_mb << 20),
        (resource.RLIMIT_FSIZE, CHILD_FILE_LIMIT),
        (resource.RLIMIT_CORE, 0),
        (resource.RLIMIT_NOFILE, CHILD_OPEN_FILES),
    ):
        resource.setrlimit(which, (value, value))


def confine_child(iso: Isolation, null_fd: int, keep_fds: tuple[int, ...], workdir: str) -> None:
    """In each program process, after fork and before it takes its jobs: a new session, no privileges, no
    inherited file except its own pipes `keep_fds` (the worker's pipe to the trainer above all is closed). Its CPU
    limit comes with its jobs (limit_cpu)."""
    os.setsid()  # its own process group: killpg reaches whatever it manages to start
    if not iso.pid:  # in a pid namespace the worker's death already takes every program process with it
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    for fd in (0, 1, 2):
        os.dup2(null_fd, fd)
    start = 3
    for fd in sorted(keep_fds):
        os.closerange(start, fd)
        start = fd + 1
    os.closerange(start, 1 << 16)
    resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))  # no fork at all (enforced for non-root: hence `nobody`)
    os.chdir(workdir)
    if iso.run_as:
        uid, gid = iso.run_as
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)  # drops every capability


def limit_cpu(cpu_s: int) -> None:
    """A program process's CPU-time limit, set once it knows how many jobs it runs, before the first one (lowered
    only: never above the limit it inherited)."""
    _, inherited = resource.getrlimit(resource.RLIMIT_CPU)
    soft, hard = cpu_s, cpu_s + 1
    if inherited != resource.RLIM_INFINITY:
        soft, hard = min(soft, inherited), min(hard, inherited)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def set_process_name(name: str) -> None:
    """What ps (and the tests) show for a program process: whether it is still a standby or has taken jobs."""
    _libc.prctl(PR_SET_NAME, name.encode()[:15], 0, 0, 0)


def set_parent_death_signal() -> None:
    """Die with the parent: a worker never outlives the trainer, a program never outlives its worker."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _write_id_maps(uid: int, gid: int) -> None:
    with open("/proc/self/setgroups", "w") as fh:
        fh.write("deny")
    with open("/proc/self/uid_map", "w") as fh:
        fh.write(f"{uid} {uid} 1")
    with open("/proc/self/gid_map", "w") as fh:
        fh.write(f"{gid} {gid} 1")


def _make_root_readonly() -> None:
    attr = _MountAttr(MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID, 0, 0, 0)
    result = _libc.syscall(SYS_MOUNT_SETATTR, AT_FDCWD, b"/", AT_RECURSIVE, ctypes.byref(attr), ctypes.sizeof(attr))
    _call(result, "mount_setattr (read-only root)")


def _hide_home(uid: int) -> None:
    """Same uid as the trainer: cover its home directory (keys, tokens) with an empty one."""
    try:
        home = pwd.getpwuid(uid).pw_dir
    except KeyError:
        return
    if home not in ("", "/") and os.path.isdir(home):
        _mount("tmpfs", home, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=755")


def _drop_capabilities() -> None:
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    _call(_libc.capset(ctypes.byref(header), ctypes.byref(data)), "capset")


def _nobody() -> tuple[int, int]:
    try:
        entry = pwd.getpwnam("nobody")
        return entry.pw_uid, entry.pw_gid
    except KeyError:
        return 65534, 65534
