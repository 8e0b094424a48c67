"""The reviewer's optional LLM pass: a smolagents agent with tools over the real sandbox and the buffer.

No capable LLM is reachable offline, so the decision paths use `ScriptedModel`, which stands in for one (a remote
litellm model in production) by answering from a script; everything around it is real: the smolagents agent, the
tool calls, the sandbox runs, the similarity search. The fallback paths run with the real policy model (slow).
"""

import json

import pytest
from smolagents.models import ChatMessage, MessageRole, Model

from botlab.agents.policy_model import PolicyModel
from botlab.agents.review_agent import parse_decision
from botlab.agents.reviewer import Reviewer
from botlab.config import ReviewerConfig
from botlab.tasks import Triplet

BUFFER = ["def f(xs):\n    return [x * 2 for x in xs]", "def f(s):\n    return s.count('a')"]
CANDIDATE = Triplet("def f(n):\n    return (n * 7) % 5", ["12"], ["4"], task_type="deduction")
ALLOWED_REASONS = {None, "off_goal", "safety", "llm_reject"}


def action(name: str, arguments: dict) -> str:
    return json.dumps({"name": name, "arguments": arguments})


class ScriptedModel(Model):
    """Answers each turn with the next scripted text and keeps the messages it was shown."""

    def __init__(self, replies: list[str]):
        super().__init__(model_id="scripted")
        self.replies = list(replies)
        self.seen: list[str] = []

    def generate(self, messages, stop_sequences=None, response_format=None, tools_to_call_from=None, **kwargs):
        self.seen.append(json.dumps([m.dict() if hasattr(m, "dict") else m for m in messages], default=str))
        if not self.replies:
            raise RuntimeError("script exhausted")
        return ChatMessage(role=MessageRole.ASSISTANT, content=self.replies.pop(0))


@pytest.mark.parametrize(
    "answer, expected",
    [
        ("ADMIT", (True, None)),
        ("admit - looks fine", (True, None)),
        ('"REJECT trivial: returns a constant"', (False, "llm_reject")),
        ("REJECT off_goal: nothing about strings", (False, "off_goal")),
        ("reject unsafe: probes the runtime", (False, "safety")),
        ({"answer": "REJECT rule: uses recursion"}, (False, "llm_reject")),
        ("REJECT", (False, "llm_reject")),
    ],
)
def test_parse_decision(answer, expected):
    decision = parse_decision(answer)
    assert (decision.admit, decision.reason) == expected


@pytest.mark.parametrize("answer", ["", None, "I think it is fine", "The task should be admitted.", 42])
def test_parse_decision_garbage(answer):
    assert parse_decision(answer) is None


def test_agent_uses_the_sandbox_and_the_buffer_then_rejects(sandbox):
    model = ScriptedModel(
        [
            action("run_program", {"arguments": "13"}),
            action("similar_pool_programs", {"count": 1}),
            action("final_answer", {"answer": "REJECT off_goal: arithmetic, the goal is strings"}),
        ]
    )
    reviewer = Reviewer(ReviewerConfig(llm=True), sandbox, goal="string processing", model=model)
    [verdict] = reviewer.review("deduction", [CANDIDATE], BUFFER, ["no recursion"])
    assert (verdict.admit, verdict.reason, verdict.source) == (False, "off_goal", "llm")
    assert "the goal is strings" in verdict.detail
    first_prompt, after_run, after_search = model.seen
    assert "Team goal: string processing" in first_prompt and "no recursion" in first_prompt
    assert "f(12) == 4" in first_prompt  # the candidate's pair, as the sandbox computed it
    assert "f(13) == 1" in after_run  # (13 * 7) % 5, computed by the real sandbox
    assert "similarity 0." in after_search and "s.count('a')" in after_search  # count=1: the nearest only
    assert "x * 2 for x in xs" not in after_search


def test_agent_sees_sandbox_rejections(sandbox):
    model = ScriptedModel([action("run_program", {"arguments": "'x', 'y'"}), action("final_answer", {"answer": "ADMIT"})])
    reviewer = Reviewer(ReviewerConfig(llm=True), sandbox, model=model)
    [verdict] = reviewer.review("deduction", [CANDIDATE], BUFFER, [])
    assert (verdict.admit, verdict.source) == (True, "llm")
    assert "f('x', 'y') failed:" in model.seen[1]


def test_rule_rejections_never_reach_the_llm(sandbox):
    model = ScriptedModel([])
    reviewer = Reviewer(ReviewerConfig(llm=True), sandbox, model=model)
    [verdict] = reviewer.review("deduction", [Triplet(BUFFER[0], ["[1]"], ["[2]"])], BUFFER, [])
    assert (verdict.reason, verdict.source) == ("exact_duplicate", "rules")
    assert model.seen == []


def test_a_failing_model_keeps_the_rule_verdict(sandbox):
    reviewer = Reviewer(ReviewerConfig(llm=True), sandbox, model=ScriptedModel([]))
    [verdict] = reviewer.review("deduction", [CANDIDATE], BUFFER, [])
    assert (verdict.admit, verdict.reason, verdict.source) == (True, None, "rules")
    assert "kept the rule verdict" in verdict.detail and "script exhausted" in verdict.detail


def test_a_rambling_model_keeps_the_rule_verdict(sandbox):
    model = ScriptedModel([action("final_answer", {"answer": "This is a nice function about numbers."})])
    reviewer = Reviewer(ReviewerConfig(llm=True), sandbox, model=model)
    [verdict] = reviewer.review("deduction", [CANDIDATE], BUFFER, [])
    assert verdict.admit and verdict.source == "rules"
    assert "llm answer unusable" in verdict.detail


@pytest.mark.slow
def test_llm_pass_with_the_real_policy_model(sandbox, transformers_engine):
    """SmolLM2-135M rarely follows the tool protocol; whatever it does, the review completes with a usable verdict,
    and every turn it took carries token ids and logprobs for training."""
    model = PolicyModel(transformers_engine, max_tokens=48, temperature=0)
    calls = []
    original = model.generate

    def recording(*args, **kwargs):
        message = original(*args, **kwargs)
        calls.append(message.raw)
        return message

    model.generate = recording
    reviewer = Reviewer(ReviewerConfig(llm=True), sandbox, goal="string processing", model=model)
    [verdict] = reviewer.review("deduction", [CANDIDATE], BUFFER, [])
    print(verdict)
    assert verdict.reason in ALLOWED_REASONS
    assert verdict.source == "llm" or "kept the rule verdict" in verdict.detail
    assert calls and all(len(raw["completion_ids"]) == len(raw["logprobs"]) > 0 for raw in calls)
