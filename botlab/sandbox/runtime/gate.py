"""The AST gate: rejects programs, inputs and answers that reach for forbidden modules, builtins or escape routes.

It is the first line of defence and the source of precise rejection reasons. It is not the last line: whatever
slips past it still runs in a process with no network, no writable files outside its own temp dir, no way to
start processes, and hard limits (see isolation.py).
"""

from __future__ import annotations

import ast
import re
import types
from dataclasses import dataclass, field
from functools import cached_property

# The AZR list (paper Fig. 8), plus everything that reaches the OS, the interpreter's internals, files, the
# network, processes, clocks and randomness.
DEFAULT_BANNED_MODULES: tuple[str, ...] = (
    # AZR's own list
    "logging", "random", "multiprocessing", "pebble", "subprocess", "threading", "datetime", "time", "hashlib",
    "hmac", "bcrypt", "calendar",
    # the OS, processes, signals, limits
    "os", "sys", "posix", "nt", "pwd", "grp", "spwd", "resource", "signal", "pty", "tty", "termios", "fcntl", "mmap",
    "_thread", "_posixsubprocess", "concurrent", "sched", "asyncio", "atexit", "faulthandler", "platform", "sysconfig",
    "site",
    # interpreter internals, code loading and introspection
    "builtins", "importlib", "imp", "pkgutil", "runpy", "zipimport", "gc", "inspect", "types", "code", "codeop",
    "pdb", "bdb", "trace", "traceback", "tracemalloc", "dis", "ctypes", "_ctypes", "cffi", "weakref", "copyreg",
    "marshal", "pickle", "_pickle", "cPickle", "shelve", "dbm",
    # files and paths
    "io", "_io", "pathlib", "shutil", "tempfile", "glob", "fileinput", "linecache", "filecmp", "zipfile", "tarfile",
    "gzip", "bz2", "lzma", "sqlite3", "codecs", "csv",
    # network
    "socket", "_socket", "ssl", "select", "selectors", "socketserver", "http", "urllib", "urllib3", "requests",
    "ftplib", "smtplib", "poplib", "imaplib", "telnetlib", "xmlrpc", "webbrowser",
    # randomness and clocks by other names
    "secrets", "uuid", "zoneinfo",
)

DEFAULT_BANNED_BUILTINS: tuple[str, ...] = (
    "__import__", "eval", "exec", "compile", "open", "input", "breakpoint", "globals", "locals", "vars", "getattr",
    "setattr", "delattr", "exit", "quit", "help", "copyright", "credits", "license",
)

# Dunder attributes with no escape value that ordinary class-based programs use.
SAFE_DUNDERS = frozenset({
    "__init__", "__name__", "__doc__", "__main__", "__len__", "__iter__", "__next__", "__contains__",
    "__getitem__", "__setitem__", "__delitem__", "__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__",
    "__hash__", "__str__", "__repr__", "__bool__", "__add__", "__sub__", "__mul__", "__call__",
})

# Attributes without dunders that lead from an object to frames, code or arbitrary attribute lookups.
ESCAPE_ATTRIBUTES = frozenset({
    "gi_frame", "gi_code", "gi_yieldfrom", "cr_frame", "cr_code", "cr_await", "ag_frame", "ag_code", "ag_await",
    "f_back", "f_globals", "f_locals", "f_builtins", "f_code", "f_trace", "tb_frame", "tb_next", "co_code",
    "attrgetter", "methodcaller", "Formatter", "mro",
})

# Without these bans a program could reach the process itself, and programs must not share one.
UNSHARED_BUILTINS = frozenset({"__import__", "eval", "exec", "compile", "open", "globals", "locals", "vars",
                               "getattr", "setattr", "delattr", "breakpoint"})
UNSHARED_MODULES = ("os", "sys", "builtins", "importlib", "gc", "ctypes", "signal", "threading", "_thread", "io",
                    "inspect", "types", "weakref")

_DUNDER = re.compile(r"__\w+__")
_WORD = re.compile(r"[A-Za-z_]\w*")


class Rejected(Exception):
    """A gate rejection: `reason` is a key of REASONS, `detail` says what and where."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Policy:
    banned_modules: frozenset[str] = field(default_factory=lambda: frozenset(DEFAULT_BANNED_MODULES))
    banned_builtins: frozenset[str] = field(default_factory=lambda: frozenset(DEFAULT_BANNED_BUILTINS))
    block_introspection: bool = True

    @cached_property  # asked for every job
    def contains_programs(self) -> bool:
        """True when the gate keeps programs off the interpreter's machinery (introspection, the OS, dynamic code),
        so that several may share one process, one after another (see may_share_a_process)."""
        return self.block_introspection and UNSHARED_BUILTINS <= self.banned_builtins and all(
            self.module_banned(name) for name in UNSHARED_MODULES
        )

    def module_banned(self, dotted: str) -> str | None:
        """The banned entry that `dotted` falls under: 'os' bans 'os' and 'os.path'; 'os.path' bans only that."""
        parts = dotted.split(".")
        for i in range(1, len(parts) + 1):
            prefix = ".".join(parts[:i])
            if prefix in self.banned_modules:
                return prefix
        return None


def check(tree: ast.AST, policy: Policy, modules: dict[str, types.ModuleType]) -> list[ast.AST]:
    """Raise Rejected if the tree uses anything the policy forbids; else return the tree's nodes (for
    may_share_a_process: one walk of the tree per job, not two).

    `modules` are the modules already loaded in the worker: they let the gate see that `typing.sys` is a module.
    """
    nodes = _all_nodes(tree)
    imported, bound = _bindings(nodes)
    for node in nodes:
        if isinstance(node, ast.Import):
            for alias in node.names:
                _check_module(alias.name, policy, node)
        elif isinstance(node, ast.ImportFrom):
            _check_import_from(node, policy, modules)
        elif isinstance(node, ast.Attribute):
            _check_attribute(node, policy, imported, modules)
        elif isinstance(node, ast.Name):
            _check_name(node, policy, bound)
        elif isinstance(node, ast.Call):
            _check_call(node, bound)
        elif isinstance(node, ast.MatchClass) and policy.block_introspection:
            for attr in node.kwd_attrs:  # `case C(__class__=x)` is attribute access too
                _check_attribute_name(attr, policy, node)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and policy.block_introspection:
            _check_string(node, policy)
    return nodes


# Calls that change process-wide state other programs would see (warning filters, ABC registries, the locale,
# decimal's context): a program making them runs in a process of its own.
GLOBAL_MUTATORS = frozenset({
    "register", "setcontext", "getcontext", "simplefilter", "filterwarnings", "resetwarnings", "setlocale",
    "update_wrapper", "wraps", "total_ordering", "dataclass", "unique",
})


def may_share_a_process(nodes: list[ast.AST]) -> bool:
    """Whether the program of these nodes (check's result) may run after others in one process (each with a fresh
    module and builtins).

    Conservative: no attribute is assigned or deleted except on `self` (a module's, a class's or a shared
    object's would outlive the program), and no name of a known state-changing call appears. Only meaningful
    behind the gate: without it a program can reach anything, and every program gets a process of its own."""
    for node in nodes:
        if isinstance(node, ast.Attribute):
            if node.attr in GLOBAL_MUTATORS:
                return False
            on_self = isinstance(node.value, ast.Name) and node.value.id == "self"
            if not isinstance(node.ctx, ast.Load) and not on_self:
                return False
        elif (isinstance(node, ast.Name) and node.id in GLOBAL_MUTATORS) or (
            isinstance(node, ast.alias) and node.name.rpartition(".")[2] in GLOBAL_MUTATORS
        ):
            return False
    return True


def _all_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node, breadth first. Iterative, so deep trees cannot overflow the stack; about twice as fast as
    list(ast.walk(tree)), which matters because the gate runs on every proposal and every answer."""
    nodes = [tree]
    for node in nodes:  # the list grows while we walk it
        for name in node._fields:
            value = getattr(node, name, None)
            if isinstance(value, list):
                nodes.extend(item for item in value if isinstance(item, ast.AST))
            elif isinstance(value, ast.AST):
                nodes.append(value)
    return nodes


def _bindings(nodes: list[ast.AST]) -> tuple[dict[str, str], set[str]]:
    """Names bound to imported modules (name -> module), and every name the program binds anywhere."""
    imported: dict[str, str] = {}
    bound: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            for alias in node.names:
                name = alias.asname or alias.name.split(".")[0]
                imported[name] = alias.name if alias.asname else alias.name.split(".")[0]
                bound.add(name)
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                bound.add(alias.asname or alias.name)
                if node.module and not node.level:
                    imported[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            bound.add(node.id)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, (ast.MatchAs, ast.MatchStar)) and node.name:
            bound.add(node.name)
    return imported, bound


def _where(node: ast.AST) -> str:
    line = getattr(node, "lineno", None)
    return f" (line {line})" if line else ""


def _check_module(dotted: str, policy: Policy, node: ast.AST) -> None:
    banned = policy.module_banned(dotted)
    if banned:
        raise Rejected("forbidden_import", f"imports {dotted!r}, banned as {banned!r}{_where(node)}")


def _check_import_from(node: ast.ImportFrom, policy: Policy, modules: dict[str, types.ModuleType]) -> None:
    if node.level:
        raise Rejected("forbidden_import", f"relative import{_where(node)}")
    module = node.module or ""
    _check_module(module, policy, node)
    for alias in node.names:
        if alias.name == "*":
            continue
        _check_module(f"{module}.{alias.name}", policy, node)
        if policy.block_introspection:
            _check_attribute_name(alias.name, policy, node)
            if alias.name.startswith("_"):
                raise Rejected("forbidden_attribute", f"imports private name {module}.{alias.name}{_where(node)}")
        value = getattr(modules.get(module), alias.name, None)
        if isinstance(value, types.ModuleType):
            _check_module(value.__name__, policy, node)


def _check_attribute_name(attr: str, policy: Policy, node: ast.AST) -> None:
    if (_DUNDER.fullmatch(attr) and attr not in SAFE_DUNDERS) or attr in ESCAPE_ATTRIBUTES:
        raise Rejected("forbidden_attribute", f"attribute {attr!r}{_where(node)}")


def _check_attribute(
    node: ast.Attribute, policy: Policy, imported: dict[str, str], modules: dict[str, types.ModuleType]
) -> None:
    if not policy.block_introspection:
        return
    _check_attribute_name(node.attr, policy, node)
    if isinstance(node.value, ast.Name) and node.value.id in imported:
        module_name = imported[node.value.id]
        if node.attr.startswith("_"):
            raise Rejected("forbidden_attribute", f"private attribute {module_name}.{node.attr}{_where(node)}")
        value = getattr(modules.get(module_name), node.attr, None)
        if isinstance(value, types.ModuleType) and policy.module_banned(value.__name__):
            raise Rejected(
                "forbidden_attribute", f"{module_name}.{node.attr} is the banned module {value.__name__}{_where(node)}"
            )


def _check_name(node: ast.Name, policy: Policy, bound: set[str]) -> None:
    if node.id in policy.banned_builtins and node.id not in bound:
        raise Rejected("forbidden_call", f"uses builtin {node.id!r}{_where(node)}")
    if policy.block_introspection and _DUNDER.fullmatch(node.id) and node.id not in SAFE_DUNDERS:
        raise Rejected("forbidden_name", f"name {node.id!r}{_where(node)}")


def _check_call(node: ast.Call, bound: set[str]) -> None:
    # type(name, bases, dict) builds a class from strings, e.g. one whose __eq__ always says True.
    func = node.func
    if isinstance(func, ast.Name) and func.id == "type" and "type" not in bound and len(node.args) != 1:
        raise Rejected("forbidden_call", f"type() with {len(node.args)} arguments{_where(node)}")


def _check_string(node: ast.Constant, policy: Policy) -> None:
    text = node.value
    if "_" not in text:
        return
    for word in _WORD.findall(text):
        if (_DUNDER.fullmatch(word) and word not in SAFE_DUNDERS) or word in ESCAPE_ATTRIBUTES:
            raise Rejected("forbidden_attribute", f"string names {word!r}{_where(node)}")
