"""The AST gate and canonical reprs, as pure functions (no processes)."""

from __future__ import annotations

import ast
import sys
from collections import Counter, OrderedDict, defaultdict

import pytest

from botlab.config import ExecutorConfig
from botlab.sandbox import REASONS
from botlab.sandbox.runtime import gate
from botlab.sandbox.runtime.values import TooLarge, Uncomparable, canonical


def rejection(source: str, policy: gate.Policy | None = None) -> str | None:
    try:
        gate.check(ast.parse(source), policy or gate.Policy(), sys.modules)
    except gate.Rejected as rejected:
        assert rejected.reason in REASONS
        return rejected.reason
    return None


@pytest.mark.parametrize(
    "source",
    [
        "def f(s):\n    return s[::-1]",
        "from collections import Counter, deque\nimport heapq, math\ndef f(xs):\n    return heapq.nsmallest(2, xs)",
        "from typing import List\ndef f(xs: List[int]) -> int:\n    return sum(xs)",
        "class Node:\n    def __init__(self, v):\n        self.v = v\n    def __eq__(self, o):\n        return self.v == o.v\n"
        "def f(x):\n    return Node(x) == Node(x)",
        "class A:\n    def __init__(self):\n        super().__init__()\n        self._cache = {}\ndef f(x):\n    return x",
        "def f(input):\n    return input.upper()",  # a parameter named like a banned builtin is not the builtin
        "def f(x):\n    return type(x).__name__",
        "if __name__ == '__main__':\n    pass\ndef f(x):\n    return x",
        "from collections import abc\ndef f(x):\n    return isinstance(x, abc.Sequence)",
    ],
)
def test_ordinary_programs_pass(source):
    assert rejection(source) is None


@pytest.mark.parametrize(
    "source, reason",
    [
        ("import os", "forbidden_import"),
        ("import os.path as p", "forbidden_import"),
        ("from os import path", "forbidden_import"),
        ("import random", "forbidden_import"),
        ("import importlib.util", "forbidden_import"),
        ("from . import x", "forbidden_import"),
        ("from typing import sys", "forbidden_import"),  # a module re-exported by an allowed one
        ("x = __import__('os')", "forbidden_call"),
        ("x = eval('1')", "forbidden_call"),
        ("e = exec", "forbidden_call"),  # naming it is enough, calling it later is not needed
        ("x = open('/etc/passwd')", "forbidden_call"),
        ("x = getattr(1, 'real')", "forbidden_call"),
        ("x = globals()", "forbidden_call"),
        ("X = type('X', (), {})", "forbidden_call"),
        ("x = ().__class__.__base__.__subclasses__()", "forbidden_attribute"),
        ("x = (lambda: 0).__globals__", "forbidden_attribute"),
        ("g = (i for i in []); x = g.gi_frame.f_back", "forbidden_attribute"),
        ("import operator\nx = operator.attrgetter('real')", "forbidden_attribute"),
        ("x = '{0.__class__}'.format(1)", "forbidden_attribute"),
        ("import collections\nx = collections._sys", "forbidden_attribute"),
        ("import typing\nx = typing.sys", "forbidden_attribute"),
        ("from collections import _sys", "forbidden_attribute"),
        ("x = __builtins__", "forbidden_name"),
        ("match 1:\n    case object(__class__=c):\n        pass", "forbidden_attribute"),
    ],
)
def test_escape_routes_are_rejected(source, reason):
    assert rejection(source) == reason


def test_the_banned_lists_are_configurable():
    lenient = gate.Policy(frozenset(), frozenset(), block_introspection=False)
    assert rejection("import os\nx = eval('1').__class__", lenient) is None
    strict = gate.Policy(frozenset({"heapq"}) | frozenset(gate.DEFAULT_BANNED_MODULES))
    assert rejection("import heapq", strict) == "forbidden_import"
    assert rejection("import heapq") is None


def test_the_config_rejects_malformed_names():
    with pytest.raises(ValueError, match="not a module or builtin name"):
        ExecutorConfig(extra_banned_modules=["os; rm -rf"])


def test_deep_nesting_does_not_overflow_the_gate():
    tree = ast.parse("x = " + "-" * 500 + "1")
    gate.check(tree, gate.Policy(), sys.modules)  # iterative walk: no RecursionError


@pytest.mark.parametrize(
    "value, text",
    [
        (None, "None"),
        (True, "True"),
        (3, "3"),
        (0.1 + 0.2, "0.30000000000000004"),
        (float("inf"), "float('inf')"),
        ("it's", '"it\'s"'),
        (b"\x00", "b'\\x00'"),
        ((1,), "(1,)"),
        ([1, (2, 3)], "[1, (2, 3)]"),
        ({"b": 1, "a": [2]}, "{'a': [2], 'b': 1}"),  # sorted: insertion order may follow a set's order
        ({3, 1, 2}, "{1, 2, 3}"),
        (set(), "set()"),
        (frozenset({"y", "x"}), "frozenset({'x', 'y'})"),
        (Counter("aab"), "{'a': 2, 'b': 1}"),
        (defaultdict(int, {1: 2}), "{1: 2}"),
        (OrderedDict([(2, 0), (1, 0)]), "{1: 0, 2: 0}"),
        (range(3), "range(0, 3)"),
        (1 + 2j, "(1+2j)"),
    ],
)
def test_canonical_reprs_evaluate_back_to_equal_values(value, text):
    assert canonical(value, 1000) == text
    assert eval(text) == value  # noqa: S307 - our own canonical text, in the test process


@pytest.mark.parametrize("value", [object(), float("nan"), lambda: 0, iter([]), type("X", (int,), {})(1)])
def test_values_without_value_equality_are_uncomparable(value):
    with pytest.raises(Uncomparable):
        canonical(value, 1000)


def test_self_containing_values_are_uncomparable():
    loop: list = []
    loop.append(loop)
    with pytest.raises(Uncomparable):
        canonical(loop, 1000)


@pytest.mark.parametrize("value", ["x" * 1001, 10**1001, [1] * 400, {i: i for i in range(300)}])
def test_size_cap(value):
    with pytest.raises(TooLarge):
        canonical(value, 1000)


def test_every_reason_is_documented():
    assert all(isinstance(text, str) and text for text in REASONS.values())


@pytest.mark.parametrize(
    "source, shareable",
    [
        ("def f(s):\n    return s[::-1]", True),
        ("from collections import Counter\ndef f(s):\n    return Counter(s).most_common(2)", True),
        ("class P:\n    def __init__(self, x):\n        self.x = x\ndef f(x):\n    return P(x).x", True),
        ("import math\nmath.pi = 3\ndef f(x):\n    return x", False),  # a module's attribute outlives the program
        ("from collections import Counter\nCounter.total = len\ndef f(x):\n    return x", False),
        ("import decimal\ndecimal.getcontext().prec = 3\ndef f(x):\n    return x", False),
        ("from decimal import setcontext, Context\nsetcontext(Context(prec=3))\ndef f(x):\n    return x", False),
        ("from collections import abc\nabc.Sequence.register(int)\ndef f(x):\n    return x", False),
        ("import warnings\nwarnings.simplefilter('error')\ndef f(x):\n    return x", False),
        ("def f(x):\n    del x.attr\n    return 1", False),
    ],
)
def test_only_programs_that_change_nothing_shared_may_share_a_process(source, shareable):
    assert gate.may_share_a_process(gate.check(ast.parse(source), gate.Policy(), sys.modules)) is shareable


def test_programs_share_processes_only_behind_the_whole_gate():
    assert gate.Policy().contains_programs
    assert not gate.Policy(block_introspection=False).contains_programs
    assert not gate.Policy(banned_builtins=frozenset(gate.DEFAULT_BANNED_BUILTINS) - {"getattr"}).contains_programs
    assert not gate.Policy(banned_modules=frozenset(gate.DEFAULT_BANNED_MODULES) - {"os"}).contains_programs
