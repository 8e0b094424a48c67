"""Parsing the roles' answers: every accepted shape and every failure reason, for all three task types."""

import pytest

from botlab.agents.blocks import split_blocks
from botlab.agents.proposer import Proposer
from botlab.agents.solver import Solver

F = "```"  # keeps the fenced answers below readable


def fenced(kind: str, body: str) -> str:
    return f"{F}{kind}\n{body}\n{F}"


@pytest.fixture
def proposer(selfplay_cfg):
    return Proposer(selfplay_cfg, goal="")


@pytest.fixture
def solver(selfplay_cfg):
    return Solver(selfplay_cfg)


# --- blocks ----------------------------------------------------------------------------------------------------------


def test_blocks_tags_are_normalised_and_closing_fence_may_end_a_line():
    text = "intro\n```Python3\ndef f(a):\n    return a\n```\n```input_1\n3```\n```text\nhello\n```\n```json\n{}\n```"
    blocks = split_blocks(text)
    assert [(b.kind, b.text) for b in blocks.blocks] == [
        ("python", "def f(a):\n    return a"),
        ("input", "3"),
        ("", "hello"),
        ("json", "{}"),
    ]
    assert not blocks.unclosed
    assert split_blocks("```output\n5").unclosed


# --- proposer: deduction and abduction ---------------------------------------------------------------------------


GOOD_PROGRAM = "def f(xs, k):\n    return sorted(xs)[k:]"


@pytest.mark.parametrize("task_type", ["deduction", "abduction"])
def test_proposal_with_thoughts_prose_and_blocks(proposer, task_type):
    text = (
        "<think>try ```python\ndef g(x):\n    return x\n``` first</think>\nHere it is:\n"
        + fenced("python", GOOD_PROGRAM)
        + "\n"
        + fenced("input", "[3, 1, 2], 1")
        + "\n"
        + fenced("input", "[9], 0")
    )
    parsed = proposer.parse(task_type, text)
    assert parsed.ok, parsed
    assert parsed.program == GOOD_PROGRAM  # blocks inside the thoughts never count
    assert parsed.inputs == ["[3, 1, 2], 1"]  # the first input block
    assert parsed.reason is None


def test_proposal_first_code_block_wins_and_def_is_renamed(proposer):
    text = (
        fenced("python", "def shift(s, n):\n    if n == 0:\n        return s\n    return shift(s[1:] + s[0], n - 1)")
        + "\n"
        + fenced("python", "def f(a):\n    return a")
        + "\n"
        + fenced("input", "'abc', 1")
    )
    parsed = proposer.parse("deduction", text)
    assert parsed.ok
    # the recursive call is renamed too, and a name inside a string would not be
    assert parsed.program == "def f(s, n):\n    if n == 0:\n        return s\n    return f(s[1:] + s[0], n - 1)"


def test_proposal_untagged_blocks_and_scaffolding(proposer):
    text = (
        f"{F}\nimport math\n\ndef area(r):\n    '''circle'''\n    return round(math.pi * r * r, 2)\n\nprint(area(2))\n"
        f"assert area(0) == 0\nif __name__ == '__main__':\n    area(1)\n{F}\n{F}\n2\n{F}"
    )
    parsed = proposer.parse("abduction", text)
    assert parsed.ok, parsed
    assert parsed.program == "import math\n\ndef f(r):\n    '''circle'''\n    return round(math.pi * r * r, 2)"
    assert parsed.inputs == ["2"]


def test_proposal_with_forgotten_closing_fence_and_indented_blocks(proposer):
    text = "1. The code:\n   ```python\n   def f(n):\n       return n % 7\n   ```input\n   12\n   ```"
    parsed = proposer.parse("deduction", text)
    assert parsed.ok, parsed
    assert (parsed.program, parsed.inputs) == ("def f(n):\n    return n % 7", ["12"])


def test_proposal_drops_calls_of_the_entry_but_keeps_globals(proposer):
    code = "TABLE = {1: 'a'}\n\ndef look(k):\n    return TABLE.get(k, '?')\n\nresult = look(5)\nprint(result)"
    parsed = proposer.parse("deduction", fenced("python", code) + "\n" + fenced("input", "1"))
    assert parsed.program == "TABLE = {1: 'a'}\n\ndef f(k):\n    return TABLE.get(k, '?')"


def test_proposal_keeps_helpers_beside_f(proposer):
    program = "def helper(x):\n    return x * 2\n\ndef f(xs):\n    return [helper(x) for x in xs]"
    parsed = proposer.parse("deduction", fenced("python", program) + "\n" + fenced("input", "[1, 2]"))
    assert parsed.ok and parsed.program == program


def test_proposal_drops_functions_f_never_reaches(proposer):
    program = ("def f(a):\n    return helper(a) * 3\n\n\ndef helper(x):\n    return Box(x).v\n\n"
               "class Box:\n    def __init__(self, v):\n        self.v = v\n\n"
               "def f_variant(a, b):\n    return f(a * 3, b)\n\n@decorated\ndef f_other():\n    print('Hello')\n")
    parsed = proposer.parse("deduction", fenced("python", program) + "\n" + fenced("input", "2"))
    assert parsed.program == ("def f(a):\n    return helper(a) * 3\n\ndef helper(x):\n    return Box(x).v\n\n"
                              "class Box:\n    def __init__(self, v):\n        self.v = v")


def test_proposal_keeps_only_the_definition_that_runs(proposer):
    program = "def f(x):\n    return x * 5\ndef f(a):\n    return a + 5\n\ndef g(a):\n    return 1\ndef g(a):\n    return 2"
    parsed = proposer.parse("deduction", fenced("python", program) + "\n" + fenced("input", "2"))
    assert parsed.program == "def f(a):\n    return a + 5"  # Python runs the last f; no g is reached
    kept = "def f(x):\n    return x\nold = f\ndef f(x):\n    return old(x) + 1"  # the first f is still used
    assert proposer.parse("deduction", fenced("python", kept) + "\n" + fenced("input", "2")).program == kept


def test_proposal_drops_comments_and_values_f_never_reads(proposer):
    # What the demo's proposer writes: comments and stray values copied from one proposal to the next.
    program = ("# Example with no output\nx = 1\n\n# Encapsulation\ndef f(x, y):\n    return x + y + K  # sum\n\n"
               "K = len(TABLE)\nTABLE = '# kept: a string'\ninput = 'Hello world'\ntest_data = ['a', 'b']  # (1, 2)")
    parsed = proposer.parse("deduction", fenced("python", program) + "\n" + fenced("input", "1, 2"))
    assert parsed.program == "def f(x, y):\n    return x + y + K\n\nK = len(TABLE)\nTABLE = '# kept: a string'"


@pytest.mark.parametrize(
    "text, reason",
    [
        ("", "empty_completion"),
        ("   \n ", "empty_completion"),
        ("<think>I will write " + fenced("python", GOOD_PROGRAM), "unclosed_think"),
        ("def f(a): return a\nf(3)", "no_code_block"),
        (fenced("python", "") + "\n" + fenced("input", "1"), "empty_program"),
        (fenced("python", "def f(a):\n    return a +") + "\n" + fenced("input", "1"), "syntax_error"),
        (fenced("python", "x = 3\ny = x * 2") + "\n" + fenced("input", "1"), "no_function"),
        (fenced("python", "def g(a):\n    return a\n\ndef h(b):\n    return g(b)") + "\n" + fenced("input", "1"),
         "multiple_functions"),
        (fenced("python", GOOD_PROGRAM), "no_input_block"),
        (fenced("python", GOOD_PROGRAM) + "\n```input\n[1, 2], 0", "unclosed_block"),
        (fenced("python", GOOD_PROGRAM) + "\n" + fenced("input", "  "), "empty_input"),
        (fenced("python", GOOD_PROGRAM) + "\n" + fenced("input", "[1, 2"), "input_syntax_error"),
        (fenced("python", GOOD_PROGRAM) + "\n" + fenced("input", "1); import os; (2"), "input_syntax_error"),
        (fenced("python", "def f(a):\n    return a" + " + 1" * 6000) + "\n" + fenced("input", "1"), "too_long"),
    ],
)
def test_proposal_failures(proposer, text, reason):
    parsed = proposer.parse("deduction", text)
    assert not parsed.ok
    assert parsed.reason == reason, parsed
    assert parsed.detail


def test_program_cut_off_inside_the_code_block_is_unclosed(proposer):
    parsed = proposer.parse("deduction", "```python\ndef f(a):\n    return a")
    assert parsed.reason == "unclosed_block"


# --- proposer: induction ---------------------------------------------------------------------------------------------


def test_induction_inputs_as_call_lines(proposer):
    text = "```python\nf(1)  # small\nf([1,2])\nf( 'a', k=2)\n# a comment\nf(1)\nf(-3)\n```\n```message\nhi\n```"
    parsed = proposer.parse("induction", text)
    assert parsed.ok and parsed.inputs == ["1", "[1,2]", "'a', k=2", "-3"]


@pytest.mark.parametrize("line", ["f(1); import os", "f(1) + 2", "f(1)(2)", "f(1"])
def test_induction_call_lines_must_be_one_call(proposer, line):
    text = f"```python\nf(1)\n{line}\nf(3)\nf(4)\n```\n```message\nhi\n```"
    assert proposer.parse("induction", text).reason == "input_syntax_error"


def test_primed_proposals_parse_when_the_loop_joins_the_parts(proposer):
    parts = proposer.primed("induction")  # one part per call (induction_inputs = 4), then the message
    assert len(parts) == 5 and all(p.stop == "\n" for p in parts[:4])
    sampled = ["1)", "2)  # two", "3)", "4)", "adds one"]
    text = "".join(p.opening + s + p.parsed_closing for p, s in zip(parts, sampled))
    parsed = proposer.parse("induction", text)
    assert parsed.ok and parsed.inputs == ["1", "2", "3", "4"] and parsed.message == "adds one"
    parts = proposer.primed("deduction")
    text = "".join(p.opening + s + p.parsed_closing for p, s in zip(parts, ["n):\n    return n * 2\n", "21"]))
    assert proposer.parse("deduction", text).inputs == ["21"]


def induction_answer(inputs: list[str], message: str | None = "doubles, then one more") -> str:
    parts = [fenced("input", i) for i in inputs]
    if message is not None:
        parts.append(fenced("message", message))
    return "\n".join(parts)


def test_induction_proposal(proposer):
    text = induction_answer(["1", "2", "[1,2]", "[1, 2]", "3", "4", "5"])  # "[1,2]" == "[1, 2]" after parsing
    parsed = proposer.parse("induction", text, program="def f(n):\n    return n * 2 + 1")
    assert parsed.ok, parsed
    assert parsed.inputs == ["1", "2", "[1,2]", "3"]  # the first 4 distinct (selfplay_cfg: induction_inputs=4)
    assert parsed.message == "doubles, then one more"
    assert parsed.program == "def f(n):\n    return n * 2 + 1"


@pytest.mark.parametrize(
    "text, reason",
    [
        ("", "empty_completion"),
        ("<think>hmm", "unclosed_think"),
        (induction_answer(["1", "2", "2", "2 "]), "too_few_inputs"),
        (induction_answer(["1", "2", "3"]) + "\n```input\n4", "unclosed_block"),
        (induction_answer(["1", "2", "(3", "4"]), "input_syntax_error"),
        (induction_answer(["1", "2", "3", "4"], message=None), "no_message_block"),
        (induction_answer(["1", "2", "3", "4"], message=" "), "empty_message"),
        (induction_answer(["1", "2", "3", "4"], message="it is def f(n): return n * 2 + 1"), "message_leaks_code"),
        (induction_answer(["1", "2", "3", "4"], message="computes return n * 2 + 1 for you"), "message_leaks_code"),
    ],
)
def test_induction_proposal_failures(proposer, text, reason):
    parsed = proposer.parse("induction", text, program="def f(n):\n    return n * 2 + 1")
    assert not parsed.ok
    assert parsed.reason == reason, parsed


def test_unknown_task_type_is_a_clear_error(proposer, solver):
    with pytest.raises(ValueError, match="task_type must be one of deduction, abduction, induction"):
        proposer.parse("code_o", "x")
    with pytest.raises(ValueError, match="task_type"):
        solver.parse("", "x")


# --- solver ----------------------------------------------------------------------------------------------------------


def test_solver_deduction_takes_the_last_output_block(solver):
    text = "f reverses... first guess\n```output\n'cba'\n```\nno wait, plus s[0]:\n```output\n'cbaa'\n```"
    parsed = solver.parse("deduction", text)
    assert parsed.ok and parsed.answer == "'cbaa'"


def test_solver_accepts_untagged_answer_blocks(solver):
    assert solver.parse("deduction", "```\n[1, 2]\n```").answer == "[1, 2]"
    assert solver.parse("abduction", "The input:\n```\n'abc', 2\n```").answer == "'abc', 2"
    program = solver.parse("induction", "```\ndef double(n):\n    return 2 * n\n```").answer
    assert program == "def f(n):\n    return 2 * n"


@pytest.mark.parametrize(
    "value",
    ["None", "-3", "2.5e-3", "(1+2j)", "-1-2j", "b'xy'", "[1, (2,), {'a': {3}}]", "set()", "frozenset({1, 2})",
     "range(0, 3)", "-float('inf')", "{(1, 2): [True, False]}"],
)
def test_solver_deduction_accepts_every_canonical_value_form(solver, value):
    parsed = solver.parse("deduction", f"```output\n{value}\n```")
    assert parsed.ok and parsed.answer == value


def test_solver_abduction_accepts_keyword_and_positional_values(solver):
    assert solver.parse("abduction", "```input\n[1, 2], k=-1\n```").answer == "[1, 2], k=-1"


def test_solver_value_in_a_python_block_counts(solver):
    assert solver.parse("deduction", "```python\n'cbaa'\n```").answer == "'cbaa'"
    assert solver.parse("abduction", "```python\n'abc', 2\n```").answer == "'abc', 2"
    code = "```python\ndef f(s):\n    return s\n```"
    assert solver.parse("deduction", code).reason == "no_output_block"  # code is not a value
    assert solver.parse("deduction", "```python\nx = f('abc')\nprint(x)\n```").reason == "answer_syntax_error"


def test_solver_reads_the_last_assertion(solver):
    text = "f reverses:\n```python\nassert f('abc') == 'cba'\n```\nno, plus s[0]:\n```python\nassert f('abc') == 'cbaa'\n```"
    assert solver.parse("deduction", text).answer == "'cbaa'"
    assert solver.parse("abduction", "```python\nassert f([1, (2, 3)], k='é') == 6  # sum\n```").answer == \
        "[1, (2, 3)], k='é'"
    assert solver.parse("abduction", "```python\nassert f() == 0\n```").answer == ""


def test_primed_solver_replies_parse_after_the_loop_closes_them(solver, reverse_task):
    """What the loop hands the parser: opening + sampled text + the part's closing."""
    for task_type, sampled, answer in [("deduction", "'cbaa'", "'cbaa'"), ("abduction", "'abc') == 'cbaa'", "'abc'"),
                                       ("induction", "s):\n    return s[::-1] + s[0]\n",
                                        "def f(s):\n    return s[::-1] + s[0]")]:
        [part] = solver.primed(task_type, reverse_task)
        assert solver.parse(task_type, part.opening + sampled + part.parsed_closing).answer == answer
    [deduction] = solver.primed("deduction", reverse_task)
    assert deduction.opening.endswith("assert f('abc') == ") and deduction.stop == "\n"


def test_solver_abduction_and_induction(solver):
    assert solver.parse("abduction", "<think>f reverses</think>\n```input\n'cba'\n```").answer == "'cba'"
    text = "```python\ndef f(n):\n    return n\n```\nbetter:\n```python\ndef f(n):\n    return 2 * n + 1\nprint(f(2))\n```"
    assert solver.parse("induction", text).answer == "def f(n):\n    return 2 * n + 1"


@pytest.mark.parametrize(
    "task_type, text, reason",
    [
        ("deduction", "", "empty_completion"),
        ("deduction", "<think>the answer is", "unclosed_think"),
        ("deduction", "The answer is 5.", "no_output_block"),
        ("deduction", "```input\n5\n```", "no_output_block"),
        ("deduction", "```output\n5", "unclosed_block"),
        ("deduction", "```output\n\n```", "empty_answer"),
        ("deduction", "```output\n[1, 2\n```", "answer_syntax_error"),
        ("deduction", "```output\n(lambda s: s[::-1] + s[0])('abc')\n```", "answer_not_a_value"),
        ("deduction", "```output\nsorted([3, 1, 2])\n```", "answer_not_a_value"),
        ("deduction", "```output\n'ab' * 2\n```", "answer_not_a_value"),
        ("abduction", "f('abc')", "no_input_block"),
        ("abduction", "```input\nnext(x for x in range(99) if f(x) == 7)\n```", "answer_not_a_value"),
        ("abduction", "```input\n1, key=[i for i in 'ab']\n```", "answer_not_a_value"),
        ("abduction", "```input\n  \n```", "empty_answer"),
        ("abduction", "```input\n'a' 'b' ]\n```", "answer_syntax_error"),
        ("deduction", "```python\nassert f(3) ==\n```", "answer_syntax_error"),
        ("deduction", "```python\nassert f(3) != 4\n```", "answer_syntax_error"),
        ("deduction", "```python\nassert f(3) == sorted([4])\n```", "answer_not_a_value"),
        ("abduction", "```python\nassert f(x) == 4\n```", "answer_not_a_value"),
        ("abduction", "```python\nassert f(range(9)[2]) == 4\n```", "answer_not_a_value"),
        ("induction", "```output\n5\n```", "no_code_block"),
        ("induction", "```python\n\n```", "empty_answer"),
        ("induction", "```python\ndef f(n)\n    return n\n```", "syntax_error"),
        ("induction", "```python\nf = lambda n: n\n```", "no_function"),
        ("induction", "```python\ndef a(n):\n    return n\ndef b(n):\n    return a(n)\n```", "multiple_functions"),
    ],
)
def test_solver_failures(solver, task_type, text, reason):
    parsed = solver.parse(task_type, text)
    assert not parsed.ok
    assert parsed.reason == reason, parsed
    assert parsed.detail


def test_calls_of_f_are_read_line_by_line_without_repeats(proposer):
    # What a primed calls reply looks like: the loop wrote "```python\nf(" and each later "f(".
    text = "```python\nf(1, 2)\nf([1,2], 'ab')  # a list\nf(1,2)\nprint(f(3))\nf(1, \nf(x=[3])"
    assert proposer.read_calls(text) == ["1, 2", "[1,2], 'ab'", "x=[3]"]
    assert proposer.read_calls("no calls here") == []


def test_the_program_is_read_whatever_became_of_the_input(proposer):
    bad_input = fenced("python", "def g(a, b):\n    return a * b\n\nprint(g(2, 3))") + "\n" + fenced("input", "two, three")
    assert proposer.read_program(bad_input).strip() == "def f(a, b):\n    return a * b"
    assert proposer.read_program(f"{F}python\ndef f(a):\n    return a +\n{F}") is None
    assert proposer.read_program("just words") is None
