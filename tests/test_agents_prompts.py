"""What the roles' prompts contain: references, goal, curriculum, the answer format; what induction hides."""

import pytest

from botlab.agents.proposer import Proposer
from botlab.agents.solver import Solver
from botlab.curriculum import Curriculum
from botlab.tasks import Triplet, zero_triplet

REFERENCES = [
    zero_triplet("deduction"),
    Triplet("def f(xs, n):\n    return xs * n", ["[1, 2], 3"], ["[1, 2, 1, 2, 1, 2]"]),
]


def user_text(messages: list[dict]) -> str:
    assert messages[-1]["role"] == "user"
    assert all(set(m) == {"role", "content"} and isinstance(m["content"], str) for m in messages)
    return messages[-1]["content"]


@pytest.mark.parametrize("task_type", ["deduction", "abduction"])
def test_program_proposal_prompt_has_references_goal_and_curriculum(selfplay_cfg, task_type):
    proposer = Proposer(selfplay_cfg, goal="get good at string puzzles")
    curriculum = Curriculum(focus=["palindromes", "sorting"], difficulty=2)
    messages = proposer.messages(task_type, REFERENCES, curriculum)
    assert messages[0]["role"] == "system"  # our short one replaces the chat template's long default
    text = user_text(messages)
    for reference in REFERENCES:
        assert f"```python\n{reference.program}\n```" in text
        assert f"```input\n{reference.inputs[0]}\n```" in text
        assert f"```output\n{reference.outputs[0]}\n```" in text
    assert "Team goal: get good at string puzzles" in text
    assert "Focus on: palindromes, sorting" in text
    assert "harder than the examples" in text
    assert "```python block" in text and "```input block" in text
    assert ("predict" in text) == (task_type == "deduction")


def test_deduction_and_abduction_proposals_differ_only_in_their_task_line(selfplay_cfg):
    proposer = Proposer(selfplay_cfg)
    deduction = user_text(proposer.messages("deduction", REFERENCES))
    abduction = user_text(proposer.messages("abduction", REFERENCES))
    assert deduction != abduction
    assert deduction.splitlines()[1:] == abduction.splitlines()[1:]


def test_program_proposal_prompt_without_goal_focus_or_references(selfplay_cfg):
    text = user_text(Proposer(selfplay_cfg, goal="  ").messages("deduction", [], Curriculum()))
    assert "Team goal" not in text and "Focus on" not in text and "Examples" not in text
    assert "simpler" not in text and "harder" not in text
    assert "{" not in text and "\n\n" not in text  # no template residue, no empty sections


def test_difficulty_nudge_goes_both_ways(selfplay_cfg):
    proposer = Proposer(selfplay_cfg)
    easier = user_text(proposer.messages("abduction", REFERENCES, Curriculum(difficulty=-3)))
    assert "much simpler than the examples" in easier


def test_induction_proposal_prompt(selfplay_cfg):
    program = Triplet("def f(n):\n    return n * 2 + 1", ["1"], ["3"])
    text = user_text(Proposer(selfplay_cfg, goal="strings").messages("induction", [program], Curriculum()))
    assert f"```python\n{program.program}\n```" in text
    assert "Write 4 different calls of f" in text and "will see 2 calls" in text  # selfplay_cfg: 4 inputs, 2 shown
    assert "one per line in a ```python block" in text and "```message block" in text


def test_induction_proposal_needs_its_program(selfplay_cfg):
    with pytest.raises(ValueError, match=r"references\[0\]"):
        Proposer(selfplay_cfg).messages("induction", [], Curriculum())


def test_solver_deduction_and_abduction_prompts(selfplay_cfg, reverse_task):
    solver = Solver(selfplay_cfg)
    deduction = user_text(solver.messages("deduction", reverse_task))
    assert f"```python\n{reverse_task.program}\n```" in deduction
    assert "What does f('abc') return?" in deduction and "assert f('abc') == ..." in deduction
    assert "'cbaa'" not in deduction  # the answer is not in the question
    abduction = user_text(solver.messages("abduction", reverse_task))
    assert "for which f returns 'cbaa'" in abduction and "assert f(...) == 'cbaa'" in abduction
    assert "'abc'" not in abduction


def test_solver_induction_hides_the_hidden_pairs(selfplay_cfg, induction_task):
    text = user_text(Solver(selfplay_cfg).messages("induction", induction_task))
    assert "f(1) == 3" in text and "f(2) == 5" in text  # induction_visible = 2
    assert "f(3)" not in text and "f(4)" not in text and "== 7" not in text and "== 9" not in text
    assert "Hint: doubles, then one more" in text
    assert induction_task.program not in text and "n * 2" not in text
    assert "```python block" in text


def test_solver_rejects_a_malformed_task(selfplay_cfg):
    with pytest.raises(ValueError, match="as many outputs as inputs"):
        Solver(selfplay_cfg).messages("deduction", Triplet("def f(a):\n    return a", ["1"], []))


def test_prompts_stay_short(selfplay_cfg, builtin_model_dir, reverse_task, induction_task):
    """Every prompt token is paid for again in the backward pass: the demo's prompts must stay small."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(builtin_model_dir)

    def tokens(messages):
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    proposer, solver = Proposer(selfplay_cfg, goal="string puzzles"), Solver(selfplay_cfg)
    overhead = tokens(proposer.messages("deduction", [], Curriculum()))
    with_refs = tokens(proposer.messages("deduction", REFERENCES, Curriculum()))
    deduction = tokens(solver.messages("deduction", reverse_task))
    induction = tokens(solver.messages("induction", induction_task))
    print(f"proposer: {overhead} tokens + {with_refs - overhead} for 2 references; solver: {deduction}, {induction}")
    # Measured when written: 128 + 99, solver 77 and 77 (chat template and system prompt included).
    assert overhead < 140 and with_refs - overhead < 110
    assert deduction < 90 and induction < 90
