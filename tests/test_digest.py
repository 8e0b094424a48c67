"""The digest read from a real store: window, numbers, examples, health, feedback, chart and the three forms."""

from __future__ import annotations

import json
import time
from email import message_from_string, policy

import pytest

from botlab.agents.reporter import check_narrative, write_narrative
from botlab.config import TeamConfig
from botlab.digest import collect_facts, email_message, render, render_chart, standalone_html, template_narrative
from botlab.store import Store

TYPES = ("deduction", "abduction", "induction")


def record_steps(store: Store, steps, solve=lambda step, i: min(1.0, 0.1 * step + 0.05 * i), at: float | None = None):
    """Commit steps the way the self-play loop does: a steps row with summary, metrics, tasks and samples."""
    at = time.time() - 3600 if at is None else at
    with store.transaction() as db:
        for step in steps:
            rates = {t: solve(step, i) for i, t in enumerate(TYPES)}
            rewards = {t: {"proposer": 0.3, "solver": rates[t] - 0.2} for t in TYPES}
            summary = {"rewards": rewards, "solve_rates": rates, "valid_rate": 0.5, "admitted_rate": 0.25,
                       "tokens_per_second": 100.0 + step, "format_rate": {"proposer": 0.9, "solver": 0.8},
                       "rejections": {"near_duplicate": 2}}
            db.execute("INSERT INTO steps(step, started_at, finished_at, timings, summary) VALUES (?, ?, ?, ?, ?)",
                       (step, at + step * 10, at + step * 10 + 4.0, json.dumps({"propose": 2.0}), json.dumps(summary)))
            for t in TYPES:
                db.execute("INSERT INTO metrics VALUES (?, ?, ?, ?)", (step, f"solve_rate/{t}", rates[t], at))
                for role in ("proposer", "solver"):
                    db.execute("INSERT INTO metrics VALUES (?, ?, ?, ?)",
                               (step, f"reward/{role}/{t}", rewards[t][role], at))
            task = db.execute(
                "INSERT INTO tasks(step, task_type, program, inputs, outputs, status, created_at) "
                "VALUES (?, 'deduction', ?, ?, ?, 'admitted', ?)",
                (step, f"def f(s):\n    return s[::-1] * {step}", json.dumps(["'ab'"]), json.dumps([f"'ba' * {step}"]),
                 at)).lastrowid
            db.execute("INSERT INTO tasks(step, task_type, program, inputs, outputs, status, reason, created_at) "
                       "VALUES (?, 'abduction', 'def f(x):\n    return x', '[]', '[]', 'rejected', 'trivial', ?)",
                       (step, at))
            db.execute("INSERT INTO samples(step, role, task_type, task_id, prompt, completion, reward) "
                       "VALUES (?, 'solver', 'deduction', ?, 'prompt', ?, 1.0)", (step, task, "```output\n'ba'\n```"))


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "botlab.sqlite") as s:
        yield s


@pytest.fixture
def team(tmp_path):
    return TeamConfig(name="demo", goal="reason about strings", storage_dir=tmp_path)


def _store_digest(store: Store, facts) -> None:
    with store.transaction() as db:
        db.execute("INSERT INTO digests(id, created_at, first_step, last_step, subject, text) VALUES (?, ?, ?, ?, 's', 't')",
                   (facts.number, facts.created_at, facts.first_step, facts.last_step))


def test_facts_cover_the_steps_since_the_last_digest(store, team):
    record_steps(store, range(1, 5))
    first = collect_facts(store, team)
    assert (first.number, first.first_step, first.last_step, first.steps) == (1, 1, 4, 4)
    # deduction solve rates 0.1 .. 0.4: the window mean
    assert first.solve_rates["deduction"] == pytest.approx(0.25)
    assert first.rewards["abduction"]["proposer"] == pytest.approx(0.3)
    assert (first.valid_rate, first.admitted_rate) == (0.5, 0.25)
    assert first.rejections == [("trivial", 4)]  # from the tasks table
    assert first.seconds_per_step == pytest.approx(4.0)
    assert [e.task_type for e in first.examples] == ["deduction"]
    assert first.examples[0].answer.startswith("```output")
    _store_digest(store, first)

    record_steps(store, range(5, 9))
    second = collect_facts(store, team)
    assert (second.number, second.first_step, second.last_step) == (2, 5, 8)
    assert second.solve_rates["deduction"] == pytest.approx(0.65)
    assert second.solve_rate_change["deduction"] == pytest.approx(0.4)  # against steps 1-4
    assert len(second.series["solve_rate/deduction"]) == 8  # the chart shows the whole run


def test_health_eval_and_feedback_are_reported(store, team):
    record_steps(store, [1])
    store.log_event("start", "daemon started")
    store.log_event("restart", "restarted after an unclean stop", level="warning")
    store.log_event("start", "daemon started")
    store.log_event("error", "reporter: TimeoutError: smtp", level="error")
    store.put("last_eval", {"heldout/deduction": {"suite": "heldout/deduction", "score": 0.25, "ci95": 0.1,
                                                  "problems": 32, "step": 4}})
    with store.transaction() as db:
        db.execute("INSERT INTO metrics VALUES (0, 'eval/heldout/deduction', 0.125, 0)")
        db.execute("INSERT INTO metrics VALUES (0, 'eval_ci95/heldout/deduction', 0.05, 0)")
        db.execute("INSERT INTO metrics VALUES (4, 'eval/heldout/deduction', 0.25, 0)")
        db.execute("INSERT INTO metrics VALUES (4, 'eval_ci95/heldout/deduction', 0.1, 0)")
        db.execute("INSERT INTO feedback(channel, external_id, sender, received_at, text, status, response) "
                   "VALUES ('email', '<a@b>', 'h@x.test', 0, '/harder', 'applied', 'difficulty +0 -> +1')")
        db.execute("INSERT INTO feedback(channel, external_id, sender, received_at, text) "
                   "VALUES ('email', '<b@b>', 'h@x.test', 0, 'still pending')")
    facts = collect_facts(store, team)
    assert (facts.restarts, facts.unclean_stops) == (1, 1)
    assert facts.errors == ["reporter: TimeoutError: smtp"]
    assert facts.evaluation == {"heldout/deduction": "0.250 ± 0.100 (n=32, step 4); 0.125 at step 0"}
    assert facts.series["eval/heldout/deduction"] == [(0, 0.125), (4, 0.25)]
    assert [(n.text, n.response) for n in facts.feedback] == [("/harder", "difficulty +0 -> +1")]
    text = render(facts, template_narrative(facts)).text
    assert '"/harder" (email, h@x.test): difficulty +0 -> +1' in text
    assert "1 restart(s) (1 after a crash or kill)" in text
    assert "heldout/deduction 0.250 ± 0.100 (n=32, step 4); 0.125 at step 0" in text
    assert render_chart(facts).startswith(b"\x89PNG")  # with the held-out panel


def test_rendered_forms(store, team):
    record_steps(store, range(1, 4))
    facts = collect_facts(store, team)
    digest = render(facts, template_narrative(facts))
    assert digest.subject == "[botlab demo] digest #1: step 3/500, solve 25%"
    assert digest.chart_png.startswith(b"\x89PNG\r\n\x1a\n")
    assert 'src="cid:chart"' in digest.html and "<table" in digest.html
    assert "data:image/png;base64," in standalone_html(digest)
    for form in (digest.text, digest.short):
        assert "deduction" in form and "/focus abduction" in form
    assert len(digest.short) < 1200
    assert "f('ab') == 'ba' * 3" in digest.text  # the example task as a call

    raw = email_message(digest, "bot@x.test", "h@x.test", "<digest-1@x.test>").as_string()
    msg = message_from_string(raw, policy=policy.default)
    assert msg.get_content_type() == "multipart/alternative"
    plain, related = msg.get_payload()
    assert plain.get_content_type() == "text/plain"
    html_part, image = related.get_payload()
    assert (related.get_content_type(), html_part.get_content_type()) == ("multipart/related", "text/html")
    assert image["Content-ID"] == "<chart>" and image.get_content() == digest.chart_png


def test_a_run_without_steps_still_renders(store, team):
    facts = collect_facts(store, team)
    digest = render(facts, template_narrative(facts))
    assert facts.steps == 0 and digest.chart_png is None
    assert "No self-play step finished" in digest.text and "cid:chart" not in digest.html


@pytest.mark.parametrize(("text", "problem"), [
    ("", "empty"),
    ("word " * 200 + "25%", "words (limit 180)"),
    ("Training went well overall.", "no numbers"),
    ('{"answer": "deduction 25%"}', "code or markup"),
    ("Solve rate reached 97% and 1234 tasks were admitted.", "not in the data"),
])
def test_unusable_narratives_are_rejected(store, team, text, problem):
    record_steps(store, range(1, 4))
    facts = collect_facts(store, team).for_agent()
    assert problem in check_narrative(text, facts, max_words=180)


def test_a_grounded_narrative_is_accepted(store, team):
    record_steps(store, range(1, 4))
    facts = collect_facts(store, team).for_agent()
    text = "Steps 1-3 are done. Deduction solves 20% of tasks, induction 30%, and 50% of proposals were valid."
    assert check_narrative(text, facts, max_words=180) == ""


def test_a_model_that_fails_gives_no_narrative(store, team):
    """A real connection failure: an OpenAI-compatible model whose server is not there."""
    from smolagents import OpenAIModel

    from tests.fixtures.mail import free_port

    model = OpenAIModel(model_id="none", api_base=f"http://127.0.0.1:{free_port()}/v1", api_key="x",
                        client_kwargs={"max_retries": 0})
    record_steps(store, [1])
    text, why = write_narrative(model, collect_facts(store, team).for_agent(), max_words=180)
    assert text is None
    assert "did not finish" in why or "failed" in why
