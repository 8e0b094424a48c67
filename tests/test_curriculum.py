"""Feedback -> curriculum: commands, the closed directive set, and applying messages from the store.
The phrase grammar for plain words has its own table in tests/test_feedback_phrases.py."""

from __future__ import annotations

import pytest

from botlab.agents.reporter import InterpretError, parse_directive_list
from botlab.curriculum import (
    Curriculum, Easier, Focus, Harder, Pause, ReviewerRule, SetWeights, apply_directive, load_curriculum,
    parse_commands, save_curriculum, validate_directives,
)
from botlab.reporting.feedback import DIGEST_REQUESTED_KEY, apply_pending, record
from botlab.notifiers.replies import Incoming
from botlab.store import Store

FOCUS_ABDUCTION = Focus(topics=["abduction"])


@pytest.mark.parametrize(("text", "directives", "plain"), [
    ("/focus abduction", [FOCUS_ABDUCTION], ""),
    ("/pause", [Pause()], ""),
    ("/harder /easier", [Harder(), Easier()], ""),
    ("/weights deduction=2 induction:0.5", [SetWeights(weights={"deduction": 2, "induction": 0.5})], ""),
    ("/focus string manipulation, abduction", [Focus(topics=["string manipulation", "abduction"])], ""),
    ("/rule no identity functions\nthanks!", [ReviewerRule(rule="no identity functions")], "thanks!"),
    ("Nice work.\n/HARDER", [Harder()], "Nice work."),
    ("see https://example.test/pause", [], "see https://example.test/pause"),  # a URL is not a command
])
def test_commands(text, directives, plain):
    parsed = parse_commands(text)
    assert (parsed.directives, parsed.plain_words, parsed.problems) == (directives, plain, [])


@pytest.mark.parametrize(("text", "problem"), [
    ("/weights deduction=lots", "/weights: 'deduction=lots': 'lots' is not a number"),
    ("/weights reduction=2", "/weights: 'reduction=2' is not type=weight"),
    ("/weights abduction=50", "/weights: weights.abduction Input should be less than or equal to 10"),
    ("/focus", "/focus: say what to focus on"),
    ("/recipients evil@x.test", "/recipients is not a command"),
])
def test_bad_commands_say_what_is_wrong(text, problem):
    parsed = parse_commands(text)
    assert parsed.directives == []
    assert parsed.problems[0].startswith(problem)


def test_only_the_closed_set_passes_validation():
    items = parse_directive_list(
        'Sure! [{"kind": "harder", "why": "too easy"}, {"kind": "set_recipients", "to": ["evil@x.test"]},'
        ' {"kind": "executor", "timeout_s": 999}, {"kind": "weights", "weights": {"deduction": -1}}, "pause"]')
    valid, problems = validate_directives(items)
    assert valid == [Harder()]
    assert problems == [
        "ignored why of harder: not something feedback can change",
        "ignored {'kind': 'set_recipients', 'to': ['evil@x.test']}: not something feedback can change",
        "ignored {'kind': 'executor', 'timeout_s': 999}: not something feedback can change",
        "ignored weights: weights.deduction Input should be greater than or equal to 0",
        "ignored 'pause': not something feedback can change",
    ]
    assert parse_directive_list('{"kind": "pause"}') == [{"kind": "pause"}]
    with pytest.raises(InterpretError):
        parse_directive_list("I would make it harder")


def test_applying_directives_says_what_changed():
    c = Curriculum()
    c, said = apply_directive(c, SetWeights(weights={"deduction": 2.0}))
    c, said = apply_directive(c, FOCUS_ABDUCTION)
    assert said == "focus on abduction; task weights abduction 1 -> 3"
    assert c.task_weights == {"deduction": 2.0, "abduction": 3.0, "induction": 1.0}  # the others keep theirs
    assert c.focus == ["abduction"] and c.topics == []  # a task type is not a topic for the proposer prompt
    assert apply_directive(c, FOCUS_ABDUCTION)[1] == ""  # no change the second time
    c, said = apply_directive(c, Harder(task_type="deduction"))
    assert said == "deduction difficulty +0 -> +1" and c.difficulty == 0
    assert [c.difficulty_for(t) for t in ("deduction", "abduction", "induction")] == [1, 0, 0]
    c, said = apply_directive(c, Easier())
    assert said == "difficulty +0 -> -1" and [c.difficulty_for(t) for t in ("deduction", "abduction")] == [0, -1]
    c, _ = apply_directive(c, Harder())
    off = SetWeights(weights={"deduction": 0, "abduction": 0, "induction": 0})
    assert apply_directive(c, off) == (c, "ignored weights: every task type would be switched off")
    for _ in range(5):
        c, _ = apply_directive(c, Harder())
    assert c.difficulty == 3  # clamped
    c, said = apply_directive(c, Focus(topics=["strings", "Strings", "lists"]))
    assert c.focus == ["abduction", "strings", "lists"] and said == "focus on strings, lists"


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "botlab.sqlite") as s:
        yield s


def test_messages_are_stored_once_and_applied_in_order(store):
    first = Incoming(channel="email", external_id="<1@x>", sender="h@x.test", text="/focus abduction\n/pause")
    assert record(store, first) == 1
    assert record(store, first) is None  # the same Message-ID again
    record(store, Incoming(channel="nostr", external_id="ab12", sender="npub1x", text="/resume and /digest"))
    record(store, Incoming(channel="cli", external_id="c1", sender="me", text="lovely weather"))
    assert apply_pending(store) == [1, 2, 3]
    assert apply_pending(store) == []
    rows = {r["id"]: r for r in store.query("SELECT * FROM feedback")}
    assert rows[1]["response"] == "focus on abduction; task weights abduction 1 -> 3; training paused"
    assert rows[2]["response"] == "training resumed; a digest will be sent now"
    assert (rows[3]["status"], rows[3]["response"]) == ("ignored", "nothing to change was found in this message")
    curriculum = load_curriculum(store)
    assert curriculum.task_weights["abduction"] == 3 and not curriculum.paused
    assert store.get(DIGEST_REQUESTED_KEY) is True


def test_feedback_never_touches_anything_outside_the_curriculum(store):
    save_curriculum(store, Curriculum())
    record(store, Incoming(channel="email", external_id="<2@x>", sender="h@x.test",
                           text="/recipients evil@x.test\n/executor timeout_s=999\n/nsec nsec1abc"))
    apply_pending(store)
    row = store.query("SELECT * FROM feedback")[0]
    assert row["status"] == "ignored" and row["response"].count("is not a command") == 3
    assert load_curriculum(store) == Curriculum()
    assert {r["key"] for r in store.query("SELECT key FROM kv")} == {"curriculum"}


@pytest.mark.slow
def test_the_real_model_reads_plain_words_into_valid_directives(store, builtin_model_dir):
    """SmolLM2-135M through smolagents: whatever it answers, only validated directives reach the curriculum."""
    from smolagents import TransformersModel

    from botlab.agents.reporter import interpret_feedback

    model = TransformersModel(model_id=str(builtin_model_dir), device_map="cpu", max_new_tokens=32, do_sample=False)
    record(store, Incoming(channel="cli", external_id="c1", sender="me", text="the string tasks are too easy"))
    apply_pending(store, lambda text, cur: interpret_feedback(model, text, cur))
    row = store.query("SELECT * FROM feedback")[0]
    assert row["status"] in ("applied", "ignored", "question") and row["response"]  # a question back when unclear
    Curriculum.model_validate(store.get("curriculum"))  # still a valid curriculum
