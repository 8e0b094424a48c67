"""Canonical reprs: the text form of a task's output, equal for equal values and evaluable back to an equal value.

Only plain builtin values qualify (exact types, so no subclass can bring its own __eq__). Sets and dicts are
written in sorted order, because their iteration order can depend on the hash seed while their value does not.
"""

from __future__ import annotations

import math
from collections import Counter, OrderedDict, defaultdict


class Uncomparable(Exception):
    """The value has no value equality that survives repr()."""


class TooLarge(Exception):
    """The canonical repr would exceed the size cap."""


_SCALARS = (type(None), bool, int, float, complex, str, bytes, range)
_DICTS = (dict, Counter, OrderedDict, defaultdict)  # all compare equal to the plain dict of their items


def canonical(value: object, limit: int) -> str:
    """The canonical repr of `value`, at most `limit` characters; raises Uncomparable or TooLarge."""
    out: list[str] = []
    budget = [limit]
    _write(value, out, budget, set())
    return "".join(out)


def is_plain(value: object) -> bool:
    """True if `value` is made only of types canonical() accepts (answers must be, before they are compared)."""
    try:
        canonical(value, 1 << 62)
    except (Uncomparable, TooLarge, RecursionError):
        return False
    return True


def _emit(text: str, out: list[str], budget: list[int]) -> None:
    budget[0] -= len(text)
    if budget[0] < 0:
        raise TooLarge
    out.append(text)


def _write(value: object, out: list[str], budget: list[int], path: set[int]) -> None:
    kind = type(value)
    if kind in _SCALARS:
        _emit(_scalar(value, kind, budget[0]), out, budget)
        return
    if id(value) in path:
        raise Uncomparable("a container that contains itself")
    path.add(id(value))
    if kind is list or kind is tuple:
        _emit("[" if kind is list else "(", out, budget)
        for i, item in enumerate(value):  # type: ignore[arg-type]
            if i:
                _emit(", ", out, budget)
            _write(item, out, budget, path)
        _emit("]" if kind is list else ("," if len(value) == 1 else "") + ")", out, budget)  # type: ignore[arg-type]
    elif kind in _DICTS:
        items = [(canonical_part(k, budget, path), v) for k, v in value.items()]  # type: ignore[attr-defined]
        items.sort(key=lambda kv: kv[0])
        _emit("{", out, budget)
        for i, (key, item) in enumerate(items):
            _emit((", " if i else "") + key + ": ", out, budget)
            _write(item, out, budget, path)
        _emit("}", out, budget)
    elif kind is set or kind is frozenset:
        parts = sorted(canonical_part(v, budget, path) for v in value)  # type: ignore[attr-defined]
        body = "{" + ", ".join(parts) + "}" if parts else ""
        text = (body or "set()") if kind is set else f"frozenset({body})"
        _emit(text, out, budget)
    else:
        raise Uncomparable(f"{kind.__name__} values have no value equality that survives repr()")
    path.discard(id(value))


def canonical_part(value: object, budget: list[int], path: set[int]) -> str:
    """Canonical repr of a set element or dict key, within the remaining budget (charged when emitted)."""
    out: list[str] = []
    _write(value, out, [budget[0]], path)
    return "".join(out)


def _scalar(value: object, kind: type, room: int) -> str:
    if kind is float:
        if math.isnan(value):  # type: ignore[arg-type]
            raise Uncomparable("NaN is not equal to itself")
        if math.isinf(value):  # type: ignore[arg-type]
            return "float('inf')" if value > 0 else "-float('inf')"  # type: ignore[operator]
    elif kind is complex:
        if not all(math.isfinite(part) for part in (value.real, value.imag)):  # type: ignore[attr-defined]
            raise Uncomparable("a complex number with an infinite or NaN part")
    elif kind is int:
        if value.bit_length() > room * 3.33 + 4:  # type: ignore[attr-defined]  # ~log2(10) bits per digit
            raise TooLarge
    elif kind is str or kind is bytes:
        if len(value) > room:  # type: ignore[arg-type]
            raise TooLarge
    try:
        return repr(value)
    except ValueError as err:  # ints beyond sys.get_int_max_str_digits()
        raise TooLarge from err
