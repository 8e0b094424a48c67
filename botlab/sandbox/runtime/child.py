"""What a program process does once confined: run the precompiled job and describe the outcome as a dict.

Everything here runs in the forked process, after `isolation.confine_child`. Code objects arrive precompiled
(the gate has already passed them; marshal'd by the worker), so the child does no parsing: fewer pages touched.
"""

from __future__ import annotations

import builtins
import sys
from dataclasses import dataclass
from types import CodeType, ModuleType
from typing import Callable

from .reasons import REASONS
from .values import TooLarge, Uncomparable, canonical, is_plain

DETAIL_CHARS = 300
SANDBOX_MODULE = "__sandbox__"  # the module each program's top level runs in (a new one per run)


@dataclass(frozen=True)
class Job:
    """A precompiled unit of work; `kind` says which fields are set."""

    kind: str  # "run" | "check_output" | "check_input" | "check_program"
    program: CodeType | None = None
    calls: tuple[CodeType, ...] = ()  # f(<input>) for each input
    golds: tuple[CodeType, ...] = ()  # gold output expressions, paired with calls (or alone for check_output)
    answer: CodeType | None = None  # the solver's expression (check_output)
    shareable: bool = False  # may run in one process after other jobs (gate.may_share_a_process)
    n_outputs: int = 1  # how many outputs the result may carry (its size cap)


class Failure(Exception):
    def __init__(self, reason: str, detail: str = ""):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def safe_builtins(banned: frozenset[str], banned_module: Callable[[str], str | None]) -> dict:
    """The builtins programs see: banned names removed, imports checked against the banned list at run time too."""
    real_import = builtins.__import__

    def guarded_import(name, globals=None, locals=None, fromlist=(), level=0):  # noqa: A002
        if level:
            raise ImportError("relative imports are not allowed in the sandbox")
        hit = banned_module(name) or next(
            (banned_module(f"{name}.{item}") for item in fromlist or () if banned_module(f"{name}.{item}")), None
        )
        if hit or name.split(".")[0] == "runtime":
            raise ImportError(f"module {name!r} is not allowed in the sandbox")
        return real_import(name, globals, locals, fromlist, level)

    table = {name: value for name, value in vars(builtins).items() if name not in banned}
    table["__import__"] = guarded_import
    return table


def encode_result(result: dict) -> bytes:
    """reason, detail, outputs... joined by NUL: much cheaper than json in a fresh fork (fewer pages touched).

    Outputs are reprs, so they contain no NUL and no lone surrogate; the detail is cleaned of both.
    """
    parts = [result["reason"] or "", result["detail"].replace("\0", " "), *result["outputs"]]
    return "\0".join(parts).encode("utf-8", "backslashreplace")


def decode_result(data: bytes) -> dict | None:
    """The inverse of encode_result, or None for anything that is not a well-formed result."""
    try:
        reason, detail, *outputs = data.decode("utf-8").split("\0")
    except ValueError:
        return None
    if reason and reason not in REASONS:
        return None
    return {"reason": reason or None, "detail": detail, "outputs": outputs}


def run_job(job: Job, builtins_table: dict, output_limit: int, allow_none: bool) -> dict:
    try:
        outputs = _dispatch(job, dict(builtins_table), output_limit, allow_none)  # a copy: nothing carries over
    except Failure as failure:
        return {"reason": failure.reason, "detail": failure.detail[:DETAIL_CHARS], "outputs": []}
    return {"reason": None, "detail": "", "outputs": outputs}


def _dispatch(job: Job, table: dict, limit: int, allow_none: bool) -> list[str]:
    if job.kind == "run":
        return [_output(_call_f(job.program, call, table), limit, allow_none) for call in job.calls]
    if job.kind == "check_output":
        gold = _gold(job.golds[0], table)
        answer = _evaluate(job.answer, {"__builtins__": table}, "answer")
        _compare(gold, answer)
        return []
    # check_input (one pair) and check_program (all pairs): f(input) must equal each gold output
    for call, gold_code in zip(job.calls, job.golds):
        _compare(_gold(gold_code, table), _call_f(job.program, call, table))
    return []


def _call_f(program: CodeType, call: CodeType, table: dict) -> object:
    """Run the program's top level in a fresh module, then evaluate f(<input>) there."""
    module = ModuleType(SANDBOX_MODULE)  # a real module: dataclasses, typing, pickle-free introspection find it
    sys.modules[module.__name__] = module
    namespace = module.__dict__
    namespace["__builtins__"] = table
    _evaluate(program, namespace, "top level", statements=True)
    if not callable(namespace.get("f")):
        raise Failure("no_entry_function", "the program defines no function f")
    return _evaluate(call, namespace, "f")


def _evaluate(code: CodeType, namespace: dict, where: str, statements: bool = False) -> object:
    try:
        if statements:
            exec(code, namespace)  # noqa: S102 - precompiled, gated code in the confined child process
            return None
        return eval(code, namespace)  # noqa: S307 - same
    except MemoryError:
        raise Failure("memory", f"{where}: MemoryError") from None
    except BaseException as err:  # noqa: BLE001 - model code may raise anything, SystemExit included
        raise Failure("exception", f"{where}: {_describe(err)}") from None


def _describe(err: BaseException) -> str:
    try:
        return f"{type(err).__name__}: {err}"
    except BaseException:  # noqa: BLE001 - a hostile __str__
        return type(err).__name__


def _output(value: object, limit: int, allow_none: bool) -> str:
    if value is None and not allow_none:
        raise Failure("none_output", "f returned None")
    try:
        return canonical(value, limit)
    except Uncomparable as err:
        raise Failure("uncomparable_output", str(err)) from None
    except TooLarge:
        raise Failure("output_too_large", f"the output's repr is longer than {limit} characters") from None
    except RecursionError:
        raise Failure("uncomparable_output", "the output is nested too deeply") from None


def _gold(code: CodeType, table: dict) -> object:
    try:
        value = eval(code, {"__builtins__": table})  # noqa: S307 - gated expression, confined process
    except BaseException as err:  # noqa: BLE001
        raise Failure("bad_gold", _describe(err)) from None
    if not is_plain(value):
        raise Failure("bad_gold", "the gold output is not a plain value")
    return value


def _compare(gold: object, answer: object) -> None:
    # Both sides plain builtins (exact types), so == here cannot run model-defined code.
    if not is_plain(answer):
        raise Failure("uncomparable_output", f"the answer is a {type(answer).__name__}, not a plain value")
    try:
        equal = gold == answer
    except RecursionError:
        equal = False
    if not equal:
        raise Failure("wrong_answer", "")
