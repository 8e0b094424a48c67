"""The three AZR task types through the real sandbox: validation, deduction, abduction, induction."""

from __future__ import annotations

import builtins

import pytest

from botlab.config import ExecutorConfig
from botlab.sandbox import REASONS, CheckResult, Executor, Validation

REVERSE = "def f(s):\n    return s[::-1]"


def test_validation_gives_canonical_outputs_per_input(sandbox):
    [v] = sandbox.validate_many([(REVERSE, ["'Hello world'", "'ab'  # a comment is fine"])])
    assert v == Validation(True, ["'dlrow olleH'", "'ba'"])


def test_inputs_are_argument_lists(sandbox):
    program = "def f(xs, k=0, *rest):\n    return [x + k for x in xs] + list(rest)"
    [v] = sandbox.validate_many([(program, ["[1, 2], 3", "[1], k=10", "[], 0, 'a', 'b'"])])
    assert v.outputs == ["[4, 5]", "[11]", "['a', 'b']"]


def test_imports_and_classes_of_the_standard_library_work(sandbox):
    program = (
        "from collections import Counter\nfrom dataclasses import dataclass\nimport heapq, math, re\n"
        "@dataclass\nclass P:\n    x: int\n"
        "def f(s):\n    c = Counter(re.findall('[a-z]', s))\n    return heapq.nlargest(2, c.values()), P(3).x, math.gcd(12, 18)"
    )
    [v] = sandbox.validate_many([(program, ["'hello world'"])])
    assert v == Validation(True, ["([3, 2], 3, 6)"])


def test_sets_and_dicts_are_valid_whatever_the_hash_seed(sandbox):
    program = "def f(s):\n    return set(s), {c: s.count(c) for c in set(s)}"
    [v] = sandbox.validate_many([(program, ["'mississippi'"])])
    assert v.outputs == ["({'i', 'm', 'p', 's'}, {'i': 4, 'm': 1, 'p': 2, 's': 4})"]


@pytest.mark.parametrize(
    "program, inputs, reason",
    [
        ("def f(s)\n    return s", ["1"], "syntax_error"),
        ("def g(s):\n    return s", ["1"], "no_entry_function"),
        ("f = 3", ["1"], "no_entry_function"),
        ("def f(s):\n    return s[10]", ["'abc'"], "exception"),
        ("raise ValueError('at import')\ndef f(s):\n    return s", ["1"], "exception"),
        ("def f(s):\n    raise SystemExit(0)", ["1"], "exception"),
        ("def f(s):\n    pass", ["1"], "none_output"),
        ("def f(s):\n    return lambda: s", ["1"], "uncomparable_output"),
        ("def f(s):\n    return float('nan')", ["1"], "uncomparable_output"),
        ("def f(s):\n    return list(set(s))", ["'abcdefghij'"], "nondeterministic"),  # order follows the seed
        ("def f(s):\n    return hash(s)", ["'abc'"], "nondeterministic"),
        ("def f(n):\n    return 'x' * n", ["5000"], "output_too_large"),
        (REVERSE, ["'x' * 2000"], "output_too_large"),
        (REVERSE, ["1), (2"], "bad_input"),
        (REVERSE, ["'a'" + " " * 1000], "input_too_large"),
        (REVERSE, ["__import__('os')"], "forbidden_call"),
        (REVERSE, [], "no_inputs"),
        ("def f(n):\n    return n\n" + "#" * 20000, ["1"], "program_too_large"),
    ],
)
def test_invalid_proposals_carry_a_reason(sandbox, program, inputs, reason):
    [v] = sandbox.validate_many([(program, inputs)])
    assert (v.valid, v.outputs, v.reason) == (False, [], reason)
    assert reason in REASONS


def test_one_bad_input_invalidates_the_task(sandbox):
    [v] = sandbox.validate_many([("def f(x):\n    return 10 // x", ["1", "2", "0"])])
    assert (v.valid, v.reason) == (False, "exception")
    assert "ZeroDivisionError" in v.detail


def test_batches_keep_their_order_and_repeat_exactly(sandbox):
    items = [(f"def f(x):\n    return x * {k}", [str(k)]) for k in range(30)]
    items.insert(7, ("import os\ndef f(x):\n    return x", ["1"]))
    items.insert(19, ("def f(x):\n    return sorted(set(str(x)))", ["123"]))
    first = sandbox.validate_many(items)
    assert first == sandbox.validate_many(items)
    assert [v.outputs for v in first if v.valid][:3] == [["0"], ["1"], ["4"]]
    assert first[7].reason == "forbidden_import"
    assert first[19].outputs == ["['1', '2', '3']"]
    assert sum(v.valid for v in first) == 31


def test_none_output_can_be_allowed():
    with Executor(ExecutorConfig(workers=1, allow_none_output=True)) as ex:
        assert ex.validate_many([("def f(x):\n    pass", ["1"])]) == [Validation(True, ["None"])]


def test_the_banned_list_comes_from_the_config():
    with Executor(ExecutorConfig(workers=1, extra_banned_modules=["heapq"])) as ex:
        [v] = ex.validate_many([("import heapq\ndef f(x):\n    return x", ["1"])])
    assert v.reason == "forbidden_import"


def test_a_gate_that_bans_every_builtin_still_starts():
    """Each program process warms up on a fixed job of ours before its own (runtime/hub.py): no ban may refuse it."""
    every = [name for name in dir(builtins) if not name.startswith("_")]
    with Executor(ExecutorConfig(workers=1, banned_builtins=every)) as ex:
        assert ex.validate_many([("def f(a):\n    return [a, {a: (a,)}]", ["1"])]) == [Validation(True, ["[1, {1: (1,)}]"])]


# --- deduction: the solver predicts the output -------------------------------------------------------------------


@pytest.mark.parametrize(
    "gold, answer, correct, reason",
    [
        ("[1, 2]", "[1,2]", True, None),
        ("(1, 2)", "(1 , 2)", True, None),
        ("{1, 2}", "{2, 1}", True, None),
        ("{'a': 1, 'b': 2}", "{'b': 2, 'a': 1}", True, None),
        ("2", "2.0", True, None),  # Python's ==
        ("(1, 2)", "[1, 2]", False, "wrong_answer"),
        ("0.3", "0.1 + 0.2", False, "wrong_answer"),
        ("'abc'", "'abd'", False, "wrong_answer"),
        ("1", "1 +", False, "syntax_error"),
        ("1", "type('X', (), {'__eq__': lambda s, o: True})()", False, "forbidden_call"),
        ("1", "__import__('os').getpid()", False, "forbidden_call"),
        ("[1]", "[x for x in iter(int, 1)]", False, "timeout"),  # an answer that never finishes
        ("1", "1 / 0", False, "exception"),
        ("[1]", "[1" + ", 1" * 2000 + "]", False, "input_too_large"),
    ],
)
def test_deduction_answers(sandbox, gold, answer, correct, reason):
    [result] = sandbox.check_outputs([(gold, answer)])
    assert isinstance(result, CheckResult)
    assert (result.correct, result.reason) == (correct, reason)


# --- abduction: the solver predicts an input ---------------------------------------------------------------------


def test_abduction_accepts_any_input_with_the_gold_output(sandbox):
    program = "def f(xs):\n    return sorted(xs)[-1]"
    results = sandbox.check_inputs(
        [(program, "9", "[9, 1]"), (program, "9", "[3, 9, 4]"), (program, "9", "[1, 2]"),
         (program, "9", "[]"), (program, "9", "open('/etc/passwd')"), (program, "9", "[1, 2")]
    )
    assert [(r.correct, r.reason) for r in results] == [
        (True, None), (True, None), (False, "wrong_answer"), (False, "exception"), (False, "forbidden_call"),
        (False, "bad_input"),
    ]


# --- induction: the solver writes the program -------------------------------------------------------------------


def test_induction_needs_every_hidden_pair(sandbox):
    pairs = [("'ab'", "'ba'"), ("'abc'", "'cba'"), ("''", "''")]
    results = sandbox.check_programs(
        [
            ("def f(s):\n    return ''.join(reversed(s))", pairs),
            ("def f(s):\n    return s[::-1] if len(s) < 3 else s", pairs),  # passes 2 of 3
            ("import os\ndef f(s):\n    return s[::-1]", pairs),
            ("class E:\n    def __eq__(self, o):\n        return True\ndef f(s):\n    return E()", pairs),
            ("def f(s):\n    while True:\n        pass", pairs),
        ]
    )
    assert [(r.correct, r.reason) for r in results] == [
        (True, None), (False, "wrong_answer"), (False, "forbidden_import"), (False, "uncomparable_output"),
        (False, "timeout"),
    ]


def test_all_three_kinds_in_one_batch_judge_as_each_kind_alone(sandbox):
    program = "def f(xs):\n    return sorted(xs)[-1]"
    pairs = [("'ab'", "'ba'"), ("'abc'", "'cba'")]
    outputs = [("[1, 2]", "[1,2]"), ("1", "1 / 0"), ("'a'", "'b'")]
    inputs = [(program, "9", "[9, 1]"), (program, "9", "open('/etc/passwd')"), (program, "9", "[1, 2]")]
    programs = [("def f(s):\n    return s[::-1]", pairs), ("def f(s):\n    while True:\n        pass", pairs)]
    together = sandbox.check_all(outputs, inputs, programs)
    assert [[(r.correct, r.reason) for r in kind] for kind in together] == [
        [(True, None), (False, "exception"), (False, "wrong_answer")],
        [(True, None), (False, "forbidden_call"), (False, "wrong_answer")],
        [(True, None), (False, "timeout")],
    ]
    assert together == (sandbox.check_outputs(outputs), sandbox.check_inputs(inputs), sandbox.check_programs(programs))
    assert sandbox.check_all(inputs=inputs[:1]) == ([], [CheckResult(True)], [])


def test_bad_arguments_name_the_item():
    with Executor(ExecutorConfig(workers=1)) as ex:
        with pytest.raises(ValueError, match="item 1 program must be a string"):
            ex.validate_many([(REVERSE, ["1"]), (None, ["1"])])
        with pytest.raises(ValueError, match="item 0 inputs must be a list"):
            ex.validate_many([(REVERSE, "1")])
        with pytest.raises(ValueError, match="item 0 must be a"):
            ex.check_inputs([(REVERSE, "1")])
        with pytest.raises(ValueError, match="item 0 must be a"):
            ex.check_all(inputs=[(REVERSE, "1")])
