"""The phrase grammar for plain-word feedback (botlab/phrases.py): real-sounding replies and what each must do.

Every row starts from a curriculum where a `/weights deduction=2` was sent before, so a reply that resets other
weights shows up as a wrong SetWeights. ASK rows must give a question back (and change nothing they are unsure of).
"""

from __future__ import annotations

import pytest

from botlab.curriculum import (
    ClearFocus, Curriculum, DigestNow, Easier, Focus, Harder, Pause, Resume, ReviewerRule, SetWeights, load_curriculum,
    save_curriculum,
)
from botlab.reporting.feedback import apply_pending, record
from botlab.notifiers.replies import Incoming
from botlab.phrases import read_phrases
from botlab.store import Store

BEFORE = Curriculum(task_weights={"deduction": 2.0, "abduction": 1.0, "induction": 1.0})


def W(**weights: float) -> SetWeights:  # noqa: N802 (reads like the directive)
    return SetWeights(weights=weights)


class Ask:
    """The reply must contain a question with these words."""

    def __init__(self, *words: str):
        self.words = words


TABLE = [
    # focus: sets focus, changes only the named type's weight
    ("please focus on abduction, deduction is too easy", [Focus(topics=["abduction"]), Harder(task_type="deduction")]),
    ("Focus on abduction.", [Focus(topics=["abduction"])]),
    ("Could you focus on string manipulation?", [Focus(topics=["string manipulation"])]),
    ("focus on recursion, strings and lists", [Focus(topics=["recursion", "strings", "lists"])]),
    ("concentrate on abduction and induction", [Focus(topics=["abduction", "induction"])]),
    ("more string manipulation tasks please", [Focus(topics=["string manipulation"])]),
    ("stop focusing on strings", [ClearFocus()]),
    # difficulty of one type
    ("deduction is too easy", [Harder(task_type="deduction")]),
    ("Deduction is way too easy now.", [Harder(task_type="deduction")]),
    ("the deduction problems seem too simple", [Harder(task_type="deduction")]),
    ("abduction is too hard for it", [Easier(task_type="abduction")]),
    ("induction is too difficult, please make it easier", [Easier(task_type="induction")]),
    ("make the abduction tasks a bit harder", [Harder(task_type="abduction")]),
    ("harder deduction tasks please", [Harder(task_type="deduction")]),
    ("deduction and abduction are too easy", [Harder(task_type="deduction"), Harder(task_type="abduction")]),
    ("deduction is too easy and induction is too hard", [Harder(task_type="deduction"), Easier(task_type="induction")]),
    ("Deduction looks fine now, but abduction needs to be harder.", [Harder(task_type="abduction")]),
    ("Nice work! Abduction should be easier though.", [Easier(task_type="abduction")]),
    ("Induction is going well. It is too easy though", [Harder(task_type="induction")]),
    ("lower the induction difficulty", [Easier(task_type="induction")]),
    ("Deduction: too easy.", [Harder(task_type="deduction")]),
    ("Hi team, the abduction ones seem too hard for the model right now. Maybe ease off a bit?",
     [Easier(task_type="abduction")]),
    # difficulty of everything
    ("everything is too easy", [Harder()]),
    ("this is too hard for it", [Easier()]),
    ("I want harder problems", [Harder()]),
    ("It's too easy.", [Harder()]),
    ("the tasks are not challenging enough", [Harder()]),
    ("raise the difficulty", [Harder()]),
    # weights: only the named types move
    ("more abduction please", [W(abduction=2.0)]),
    ("less deduction", [W(deduction=1.0)]),
    ("fewer induction tasks", [W(induction=0.5)]),
    ("no more induction", [W(induction=0.0)]),
    ("stop induction for now", [W(induction=0.0)]),
    ("turn off abduction", [W(abduction=0.0)]),
    ("only deduction from now on", [W(abduction=0.0, induction=0.0)]),
    ("set abduction to 4", [W(abduction=4.0)]),
    ("induction weight 0.5", [W(induction=0.5)]),
    ("equal weights please", [W(deduction=1.0)]),
    ("less induction and more abduction", [W(abduction=2.0, induction=0.5)]),
    ("Can you put more weight on induction?", [W(induction=2.0)]),
    ("Let's do more deduction and less abduction.", [W(deduction=4.0, abduction=0.5)]),
    ("deduction 2, abduction 0", [W(abduction=0.0)]),
    # reviewer rules
    ("rule: reject functions that only return their input, or that sort and reverse",
     [ReviewerRule(rule="reject functions that only return their input, or that sort and reverse")]),
    ("no more string reversal tasks", [ReviewerRule(rule="no more string reversal tasks")]),
    ("avoid tasks that use recursion", [ReviewerRule(rule="avoid tasks that use recursion")]),
    # pause, resume, digest
    ("please pause for now", [Pause()]),
    ("hold off until monday", [Pause()]),
    ("you can resume now", [Resume()]),
    ("how is it going?", [DigestNow()]),
    ("Thanks! Let's resume training and send me an update.", [Resume(), DigestNow()]),
    # small talk and negations change nothing and ask nothing
    ("Great progress, thanks.", []),
    ("don't pause, it is going well", []),
    ("it is not too hard", []),
    # unclear or contradictory: a question, no guess
    ("Focus on abduction. The string tasks are too easy.",
     [Focus(topics=["abduction"]), Ask("The string tasks are too easy", "not for \"The string tasks\"")]),
    ("the string tasks are too easy", [Ask("difficulty changes for all tasks", "string tasks")]),
    ("deduction is too easy but deduction is too hard", [Ask("opposite changes", "deduction is too hard")]),
    ("too easy and too hard at once", [Ask("opposite changes")]),
    ("more abduction, less abduction", [Ask('"more abduction" and "less abduction"')]),
    ("focus on abduction but less abduction", [Ask("opposite changes")]),
    ("make it more interesting", [Ask('did not understand "make it more interesting"')]),
    ("deduction is meh", [Ask('did not understand "deduction is meh"')]),
    ("more steps please", [Ask("only task types", "steps")]),
    ("set deduction to 50", [Ask("weights go from 0 to 10")]),
    ("harder, and less string stuff", [Harder(), Ask('"less string stuff"', "only task types")]),
    ("stop making string tasks", [Ask("only task types", 'rule: reject string tasks')]),
    ("why is deduction so hard?", [Ask('did not understand "why is deduction so hard"')]),
]


def test_the_table_is_large_enough():
    assert len(TABLE) >= 40 and sum(any(isinstance(x, Ask) for x in row[1]) for row in TABLE) >= 10


@pytest.mark.parametrize(("text", "expected"), TABLE, ids=[row[0][:40] for row in TABLE])
def test_phrases(text, expected):
    reading = read_phrases(text, BEFORE)
    asks = [x for x in expected if isinstance(x, Ask)]
    assert reading.directives == [x for x in expected if not isinstance(x, Ask)]
    assert len(reading.questions) == len(asks), reading.questions
    for ask, question in zip(asks, reading.questions):
        for words in ask.words:
            assert words in question


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "botlab.sqlite") as s:
        yield s


def _reply(store: Store, text: str, n: int) -> dict:
    record(store, Incoming(channel="email", external_id=f"<{n}@x>", sender="h@x.test", text=text))
    apply_pending(store)
    return dict(store.query("SELECT status, response FROM feedback WHERE external_id = ?", (f"<{n}@x>",))[0])


def test_the_reported_reply_keeps_earlier_weights_and_sets_focus(store):
    """The issue's case: /weights minutes before, then "please focus on abduction, deduction is too easy"."""
    save_curriculum(store, Curriculum())
    assert _reply(store, "/weights deduction=2 induction=0.5", 1)["status"] == "applied"
    row = _reply(store, "please focus on abduction, deduction is too easy", 2)
    c = load_curriculum(store)
    assert c.task_weights == {"deduction": 2.0, "abduction": 3.0, "induction": 0.5}
    assert c.focus == ["abduction"] and c.difficulty == 0 and c.difficulty_for("deduction") == 1
    assert c.difficulty_for("abduction") == 0
    assert row == {"status": "applied", "response": "focus on abduction; task weights abduction 1 -> 3; "
                                                    "deduction difficulty +0 -> +1"}


def test_an_unclear_reply_is_answered_with_a_question_and_changes_nothing(store):
    save_curriculum(store, Curriculum())
    row = _reply(store, "Great work. The string tasks are too easy", 1)
    assert row["status"] == "question"
    assert row["response"].startswith('question: "The string tasks are too easy": difficulty changes for all tasks')
    assert load_curriculum(store) == Curriculum()


def test_words_are_read_after_the_commands_of_the_same_message(store):
    save_curriculum(store, Curriculum())
    _reply(store, "/weights induction=4\nless induction please", 1)
    assert load_curriculum(store).task_weights["induction"] == 2.0


def test_a_model_reads_the_words_and_the_grammar_is_the_fallback(store):
    """With a reporter model its reading wins; when it fails or finds nothing valid, the grammar reads the words."""
    save_curriculum(store, Curriculum())
    text = "deduction is too easy"
    model_says = lambda words, cur: [{"kind": "focus", "topics": ["recursion"]}]  # noqa: E731
    record(store, Incoming(channel="cli", external_id="m1", sender="me", text=text))
    apply_pending(store, model_says)
    assert load_curriculum(store).focus == ["recursion"] and load_curriculum(store).difficulty_for("deduction") == 0

    def broken(words, cur):  # the model's server is down: a fault we cannot cause for real here
        raise ConnectionError("no route to the model")

    for n, interpreter in enumerate([broken, lambda words, cur: [], lambda words, cur: [{"kind": "executor"}]]):
        save_curriculum(store, Curriculum())
        record(store, Incoming(channel="cli", external_id=f"f{n}", sender="me", text=text))
        apply_pending(store, interpreter)
        assert load_curriculum(store).difficulty_for("deduction") == 1, n
    responses = [r["response"] for r in store.query("SELECT response FROM feedback ORDER BY id")]
    assert responses[1] == ("deduction difficulty +0 -> +1; the model could not read the words (ConnectionError); "
                            "the phrase grammar was used")
    assert responses[3].startswith("deduction difficulty +0 -> +1; ignored {'kind': 'executor'}")


def test_per_type_difficulty_and_focus_reach_the_proposer_prompt():
    from botlab.agents.proposer import Proposer
    from botlab.config import SelfPlayConfig
    from botlab.tasks import Triplet

    c = Curriculum(focus=["abduction", "recursion"], type_difficulty={"deduction": 1, "induction": -1})
    proposer, program = Proposer(SelfPlayConfig()), Triplet("def f(n):\n    return n * 2", ["1"], ["2"])
    prompt = {t: proposer.messages(t, [program], c)[-1]["content"] for t in ("deduction", "abduction", "induction")}
    assert "Make it a little harder than the examples." in prompt["deduction"]
    assert "harder" not in prompt["abduction"] and "simpler" not in prompt["abduction"]
    assert "Choose calls that make f's purpose easy to see." in prompt["induction"]
    assert "Focus on: recursion\n" in prompt["deduction"]  # the focused task type is its weight, not a topic


def test_a_message_that_cannot_be_applied_is_answered_and_does_not_block_the_next(store):
    """A curriculum the store cannot read (written by hand, say): each message gets an error answer, none stays
    pending, and once the curriculum is readable again the next message applies."""
    store.put("curriculum", {"task_weights": {"deduction": "lots"}})
    for n, text in enumerate(["/harder", "/pause"]):
        record(store, Incoming(channel="email", external_id=f"<{n}@x>", sender="h@x.test", text=text))
    assert apply_pending(store) == [1, 2]
    rows = store.query("SELECT status, response FROM feedback ORDER BY id")
    assert [r["status"] for r in rows] == ["error", "error"]
    assert rows[0]["response"].startswith("could not be applied (ValidationError:")
    assert rows[0]["response"].endswith("nothing was changed, please send it again")
    save_curriculum(store, Curriculum())
    assert _reply(store, "/harder", 3)["status"] == "applied"


def test_the_digest_curriculum_line_shows_per_type_difficulty():
    from botlab.reporting.digest import DigestFacts, _curriculum_line

    c = Curriculum(difficulty=1, type_difficulty={"deduction": 1, "abduction": 0})
    facts = DigestFacts(team="t", goal="", number=1, created_at=0, since=None, first_step=None, last_step=None,
                        total_steps=10, curriculum=c.model_dump())
    assert _curriculum_line(facts) == ("weights deduction 1, abduction 1, induction 1; difficulty +1; "
                                       "deduction difficulty +2")
