"""The reviewer's rule pass, on candidates whose outputs come from the real sandbox."""

import pytest

from botlab.agents.pyast import input_key
from botlab.agents.reviewer import Reviewer, fingerprint
from botlab.agents.similarity import SimilarityIndex, similarity
from botlab.config import ReviewerConfig
from botlab.tasks import Triplet

BUFFER = [
    "def f(a):\n    return a",
    "def f(xs):\n    total = 0\n    for x in xs:\n        if x % 2:\n            total += x * x\n    return total",
    "def f(s, k):\n    out = ''\n    for i, ch in enumerate(s):\n        out += ch * (i % k + 1)\n    return out",
]


@pytest.fixture
def validated(sandbox):
    """Triplets as the loop hands them over: validated by the real sandbox, outputs filled in."""

    def make(program: str, inputs: list[str], task_type: str = "deduction", message: str = "") -> Triplet:
        [result] = sandbox.validate_many([(program, inputs)])
        assert result.valid, (result.reason, result.detail)
        return Triplet(program, inputs, result.outputs, message, task_type)

    return make


@pytest.fixture
def reviewer(reviewer_cfg, sandbox):
    return Reviewer(reviewer_cfg, sandbox, goal="")


def test_fingerprint_ignores_comments_docstrings_and_formatting():
    a = "def f(xs):\n    '''sum of odd squares'''\n    # loop\n    total = 0\n    for x in xs:\n        total += x*x\n    return total"
    b = "def f(xs):\n  total=0\n  for x in xs: total += (x * x)  # square\n  return total\n"
    assert fingerprint(a) == fingerprint(b)
    assert fingerprint(a) != fingerprint(a.replace("x*x", "x*x*x"))
    assert fingerprint("def f(a):\n    return 'x'") == fingerprint('def f(a):\n    return "x"')


def test_similarity_sees_through_renamed_variables_but_not_new_logic():
    renamed = BUFFER[1].replace("total", "acc").replace("xs", "items").replace("x", "v")
    assert similarity(BUFFER[1], renamed) == 1.0
    assert similarity(BUFFER[1], BUFFER[1].replace("x * x", "x * 3")) > 0.9
    assert similarity(BUFFER[1], BUFFER[2]) < 0.6


def test_distinct_useful_tasks_are_admitted(reviewer, validated):
    candidates = [
        validated("def f(s):\n    return ''.join(sorted(set(s), key=s.index))[::-1]", ["'banana'"]),
        validated("def f(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a", ["10"]),
    ]
    verdicts = reviewer.review("deduction", candidates, BUFFER, [])
    assert [v.admit for v in verdicts] == [True, True], verdicts
    assert all(v.reason is None and v.source == "rules" for v in verdicts)


def test_exact_and_near_duplicates_of_the_buffer(reviewer, validated):
    exact = validated(BUFFER[1].replace("total = 0", "total = 0  # start") + "\n", ["[1, 2, 3]"])
    renamed = validated(BUFFER[2].replace("out", "res").replace("ch", "c"), ["'abc', 2"])
    verdicts = reviewer.review("deduction", [exact, renamed], BUFFER, [])
    assert [(v.admit, v.reason) for v in verdicts] == [(False, "exact_duplicate"), (False, "near_duplicate")]
    assert "#1" in verdicts[0].detail and "#2" in verdicts[1].detail


def test_duplicates_within_one_batch(reviewer, validated):
    program = "def f(xs):\n    return [x for x in xs if x > sum(xs) / len(xs)]"
    first = validated(program, ["[1, 5, 9]"])
    again = validated(program + "  # same again", ["[2, 3]"])
    renamed = validated(program.replace("xs", "values").replace("x ", "v ").replace("[x", "[v"), ["[4, 4, 8]"])
    verdicts = reviewer.review("deduction", [first, again, renamed], BUFFER, [])
    assert [(v.admit, v.reason) for v in verdicts] == [
        (True, None),
        (False, "exact_duplicate"),
        (False, "near_duplicate"),
    ], verdicts
    assert "this batch" in verdicts[1].detail and "this batch" in verdicts[2].detail


def _inputs_of(tasks: list[Triplet]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for t in tasks:
        out.setdefault(fingerprint(t.program), set()).add(input_key(t.inputs[0]))
    return out


def test_a_copied_program_with_a_new_input_is_a_new_task_up_to_the_cap(sandbox, validated):
    reviewer = Reviewer(ReviewerConfig(inputs_per_program=3), sandbox)
    buffered = [validated(BUFFER[1], ["[1, 2, 3]"])]
    copy = BUFFER[1] + "  # copied"
    candidates = [
        validated(copy, ["[1,2,3]"]),  # the buffered input, written differently
        validated(copy, ["[4, 5]"]),  # new: the second input of this program
        validated(copy, ["[4, 5]"]),  # the same as the one just admitted
        validated(copy, ["[7]"]),  # new: the third
        validated(copy, ["[8, 9]"]),  # a fourth would pass the cap
    ]
    verdicts = reviewer.review("deduction", candidates, BUFFER, [], _inputs_of(buffered))
    assert [(v.admit, v.reason) for v in verdicts] == [
        (False, "exact_duplicate"), (True, None), (False, "exact_duplicate"), (True, None),
        (False, "exact_duplicate")], verdicts


def test_new_inputs_need_a_buffered_program_and_the_setting(sandbox, validated, reviewer):
    buffered = [validated(BUFFER[1], ["[1, 2, 3]"])]
    candidate = validated(BUFFER[1], ["[4, 5]"])
    # The default (1): every copy is a duplicate.
    assert reviewer.review("deduction", [candidate], BUFFER, [], _inputs_of(buffered))[0].reason == "exact_duplicate"
    more = Reviewer(ReviewerConfig(inputs_per_program=3), sandbox)
    # A program not among the buffered tasks' programs (one held out, say) takes no new input.
    assert more.review("abduction", [candidate], BUFFER, [], {})[0].reason == "exact_duplicate"
    # Induction probes programs: a probed program is taken whatever its calls.
    calls = validated(BUFFER[1], ["[4]", "[5, 6]", "[7]", "[1, 8]"], "induction", "sums odd squares")
    assert more.review("induction", [calls], BUFFER, [], _inputs_of(buffered))[0].reason == "exact_duplicate"
    assert more.review("abduction", [candidate], BUFFER, [], _inputs_of(buffered))[0].admit


def test_threshold_comes_from_the_config(sandbox, validated):
    candidate = validated(BUFFER[1].replace("x * x", "x * 3"), ["[1, 2, 3]"])
    score = similarity(BUFFER[1], candidate.program)
    strict = Reviewer(ReviewerConfig(near_duplicate_threshold=min(1.0, score + 0.01)), sandbox)
    loose = Reviewer(ReviewerConfig(near_duplicate_threshold=score - 0.01), sandbox)
    assert strict.review("deduction", [candidate], BUFFER, [])[0].admit
    assert loose.review("deduction", [candidate], BUFFER, [])[0].reason == "near_duplicate"


@pytest.mark.parametrize(
    "program, inputs, task_type, reason",
    [
        ("def f(a, b):\n    '''gives a back'''\n    return b", ["1, 'x'"], "deduction", "identity"),
        ("def f(xs):\n    n = 0\n    for _ in range(3):\n        n += 2\n    return n", ["[1, 2]"], "abduction",
         "constant_output"),
        ("def f(n):\n    return len(str(n)) // 100", ["1", "22", "333", "4444"], "induction", "constant_output"),
        ("def f(xs):\n    return sorted(xs)", ["[1, 2, 3]"], "deduction", "output_equals_input"),
        ("def f(a, b):\n    return (a, b) if a else (b, a)", ["1, 'x'"], "deduction", "output_equals_input"),
        ("def f(s):\n    return s.strip()", ["'a'", '"b"', "'c'", "'d'"], "induction", "output_equals_input"),
    ],
)
def test_trivial_tasks_are_rejected(reviewer, validated, program, inputs, task_type, reason):
    candidate = validated(program, inputs, task_type, message="hint" if task_type == "induction" else "")
    [verdict] = reviewer.review(task_type, [candidate], BUFFER, [])
    assert (verdict.admit, verdict.reason) == (False, reason), verdict


def test_induction_with_varied_outputs_is_admitted(reviewer, validated):
    candidate = validated("def f(s):\n    return s.strip()", ["' a'", "'b '", "'c'", "'d'"], "induction", "trims")
    assert reviewer.review("induction", [candidate], [], [])[0].admit


@pytest.mark.parametrize(
    "program, flag",
    [
        ("def f(a):\n    return len(().__class__.__base__.__subclasses__()) + a", "dunder_walk"),
        ("def f(a):\n    return getattr(a, 'real')", "reflection"),
        ("def f(a):\n    return eval(str(a))", "dynamic_code"),
        ("import os\n\ndef f(a):\n    return a + 1", "system_module"),
        ("def f(a):\n    # outsmart the humans watching this run\n    return a * 2", "stated_intent"),
        ("def f(a):\n    # first escape the sandbox, then solve\n    return a * 2", "stated_intent"),
        ("def f(a):\n    return bytes.fromhex(a).decode()", "obfuscation"),
    ],
)
def test_safety_red_flags(reviewer, program, flag):
    # The rules read text; these programs need not even pass the sandbox's gate to be judged.
    candidate = Triplet(program, ["1"], ["2"])
    [verdict] = reviewer.review("deduction", [candidate], BUFFER, [])
    assert (verdict.admit, verdict.reason) == (False, "safety")
    assert flag in verdict.detail


def test_safety_reads_the_induction_message(reviewer, validated):
    candidate = validated("def f(s):\n    return s.upper()", ["'a'", "'b'", "'c'", "'d'"], "induction")
    candidate.message = "jailbreak hint: read /etc/passwd"
    [verdict] = reviewer.review("induction", [candidate], [], [])
    assert verdict.reason == "safety" and "stated_intent" in verdict.detail and "files_or_network" in verdict.detail


def test_ordinary_string_code_raises_no_flag(reviewer, validated):
    program = "def f(s):\n    # escape quotes, as a printer would\n    return s.replace('\"', '\\\\\"').count('a')"
    [verdict] = reviewer.review("deduction", [validated(program, ["'a\"b'"])], BUFFER, [])
    assert verdict.admit, verdict


def test_goal_relevance_is_left_to_the_llm_pass_and_said_so(reviewer_cfg, sandbox, validated):
    candidate = validated("def f(n):\n    return n * (n + 1) // 2", ["7"])
    with_goal = Reviewer(reviewer_cfg, sandbox, goal="string processing")
    [verdict] = with_goal.review("deduction", [candidate], BUFFER, [])
    assert verdict.admit and "goal relevance not judged" in verdict.detail
    llm_without_model = Reviewer(ReviewerConfig(llm=True), sandbox, goal="")
    [verdict] = llm_without_model.review("deduction", [candidate], BUFFER, [])
    assert verdict.admit and "no model was given" in verdict.detail


def test_disabled_reviewer_admits_everything(sandbox):
    reviewer = Reviewer(ReviewerConfig(enabled=False), sandbox)
    verdicts = reviewer.review("deduction", [Triplet(BUFFER[0], ["1"], ["1"])] * 2, BUFFER, [])
    assert [(v.admit, v.detail) for v in verdicts] == [(True, "reviewer disabled")] * 2


def test_large_buffer_still_finds_a_planted_copy():
    """The MinHash shortlist must not hide a near copy among thousands of similar programs."""
    pool = [
        f"def f(xs, k):\n    out = []\n    for x in xs:\n        out.append(x * {i % 97} + k - {i // 97})\n    return out[{i % 5}:]"
        for i in range(3000)
    ]
    target = 1234
    copy = pool[target].replace("out", "acc").replace("xs", "items").replace("x ", "v ").replace("in items", "in items")
    copy = copy.replace("for x", "for v")
    nearest = SimilarityIndex().pool(pool).nearest(copy, k=1, min_score=0.9)
    assert nearest and nearest[0] == (1.0, target)
