"""The digest read from a real store: window, numbers, examples, health, feedback, chart and the three forms."""

from __future__ import annotations

import json
import shutil
import struct
import time
from html import escape as html_escape
from email import message_from_string, policy

import pytest

from botlab.agents.reporter import check_narrative, write_narrative
from botlab.config import TeamConfig
from botlab.reporting.digest import collect_facts, email_message, render, render_chart, standalone_html, template_narrative
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
    """What the reporter stores for a sent digest (notifiers/service.py): the row, its feedback marked reported."""
    with store.transaction() as db:
        db.execute("INSERT INTO digests(id, created_at, first_step, last_step, subject, text) VALUES (?, ?, ?, ?, 's', 't')",
                   (facts.number, facts.created_at, facts.first_step, facts.last_step))
        db.executemany("UPDATE feedback SET reported_in = ? WHERE id = ?", [(facts.number, n.id) for n in facts.feedback])


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
    assert (facts.restarts, facts.unclean_stops) == (1, 1)  # the second start found the first never stopped
    assert (facts.errors, facts.error_count) == (["reporter: TimeoutError: smtp"], 1)
    assert facts.evaluation == {"heldout/deduction": {"score": 0.25, "ci95": 0.1, "problems": 32, "step": 4,
                                                      "start_score": 0.125, "start_step": 0}}
    assert facts.series["eval/heldout/deduction"] == [(0, 0.125), (4, 0.25)]
    assert [(n.text, n.response) for n in facts.feedback] == [("/harder", "difficulty +0 -> +1")]
    text = render(facts, template_narrative(facts)).text
    assert '"/harder" (email, h@x.test): difficulty +0 -> +1' in text
    assert "1 unclean stop(s) (crash or kill), 1 restart(s) after one" in text
    assert "heldout/deduction 0.250 ± 0.100 (n=32, step 4); 0.125 at step 0" in text
    assert "Held-out: heldout/deduction 0.25 ± 0.10 (from 0.12 at step 0)" in text  # in the headline
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
    assert len(digest.short) <= 600
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


# --- what a reader on a phone gets -----------------------------------------------------------------------------------

NPUB = "npub1" + "q8s0uv7mh3k2j4x9c6w5e0r7t2y8u1i3o5p7a9s2d4f6g8h0j2k4l6z8x0c"
LONG_LINE = "    return ''.join(sorted(set(s), key=lambda c: (s.count(c), -ord(c)), reverse=True)) + s[::-1] * 2  # ties"


def record_run(store: Store, steps: int = 120) -> None:
    """A realistic run: many steps, three task types (induction never solved), a held-out curve of three suites
    (one at 0 all along), a long program, a multi-line solver reply, feedback from an npub, a refused message."""
    record_steps(store, range(1, steps + 1),
                 solve=lambda step, i: [min(0.9, 0.2 + step / 200), 0.1 + 0.002 * step, 0.0][i])
    at = time.time() - 1800
    with store.transaction() as db:
        task = db.execute(
            "INSERT INTO tasks(step, task_type, program, inputs, outputs, status, created_at) "
            "VALUES (?, 'abduction', ?, ?, ?, 'admitted', ?)",
            (steps, "def f(s):\n    if not s:\n        return ''\n" + LONG_LINE, json.dumps(["'banana'"]),
             json.dumps(["'anbananab'"]), at)).lastrowid
        db.execute("INSERT INTO samples(step, role, task_type, task_id, prompt, completion, reward) "
                   "VALUES (?, 'solver', 'abduction', ?, 'prompt', ?, 1.0)",
                   (steps, task, "```input\n'banana'\n```\nThe output starts with the most common letter, so"))
        evals = {"heldout/deduction": lambda s: 0.2 + s / 600, "heldout/abduction": lambda s: 0.05 + s / 2000,
                 "humaneval": lambda s: 0.0}
        for suite, score in evals.items():
            for step in range(0, steps + 1, 20):
                db.execute("INSERT INTO metrics VALUES (?, ?, ?, ?)", (step, f"eval/{suite}", score(step), at))
                db.execute("INSERT INTO metrics VALUES (?, ?, ?, ?)", (step, f"eval_ci95/{suite}", 0.08, at))
        db.execute("INSERT INTO feedback(channel, external_id, sender, received_at, text, status, response) "
                   "VALUES ('nostr', 'r1', ?, ?, 'focus on abduction, see https://example.org/a/very/long/path/"
                   "that/keeps/going/and/going?with=parameters&and=more', 'applied', 'focus: abduction')", (NPUB, at))
    store.put("last_eval", {suite: {"suite": suite, "score": score(steps), "ci95": 0.08, "problems": 64,
                                    "step": steps} for suite, score in evals.items()})
    store.log_event("feedback_ignored", f"nostr: DM from {NPUB}x, which is not allowed to steer this team",
                    level="warning")


def test_a_digest_after_one_without_steps_starts_after_the_last_reported_step(store, team):
    record_steps(store, range(1, 4))
    _store_digest(store, collect_facts(store, team))
    empty = collect_facts(store, team)
    assert empty.steps == 0 and "No new steps (step 3 of 500)" in render(empty, template_narrative(empty)).text
    _store_digest(store, empty)  # stored with no steps
    record_steps(store, [4])
    facts = collect_facts(store, team)
    assert (facts.first_step, facts.last_step) == (4, 4)
    assert template_narrative(facts).startswith("Step 4 ran since the last digest; now at step 4 of 500.")


def test_refused_messages_count_as_feedback(store, team):
    record_steps(store, [1])
    with store.transaction() as db:
        for i, status in enumerate(("applied", "question", "ignored")):
            db.execute("INSERT INTO feedback(channel, external_id, sender, received_at, text, status, response) "
                       "VALUES ('email', ?, 'h@x.test', 0, 'more abduction', ?, '')", (f"<{i}@x>", status))
    store.log_event("feedback_ignored", "email uid 7: sender eve@x.test is not allowed to steer this team",
                    level="warning")
    store.log_event("feedback_ignored", "email uid 8: automatic mail (Auto-Submitted: auto-replied)", level="warning")
    facts = collect_facts(store, team)
    assert facts.messages == 5 and len(facts.refused) == 2
    digest = render(facts, template_narrative(facts))
    assert "5 message(s) of feedback arrived, 2 of them refused" in template_narrative(facts)
    assert "5 message(s) arrived: 1 applied, 2 answered without a change, 2 refused." in digest.text
    assert "- refused: email uid 7: sender eve@x.test is not allowed to steer this team" in digest.text
    assert "Needs you: 2 message(s) refused" in digest.text
    _store_digest(store, facts)
    assert collect_facts(store, team).refused == []  # reported once
    store.log_event("feedback_ignored", "email uid 9: not a reply to a digest of this team", level="warning")
    later = collect_facts(store, team)
    assert "1 message(s) arrived: 1 refused." in render(later, template_narrative(later)).text


@pytest.mark.parametrize(("events", "restarts", "unclean"), [
    (["start", "stop", "start"], 0, 0),                    # a clean stop, started again
    (["start", "crash", "stop", "start"], 1, 1),           # crashed (the daemon still logs its stop), restarted
    (["start", "start"], 1, 1),                            # killed: no stop before the next start
    (["start", "crash", "stop"], 0, 1),                    # crashed, not started since
])
def test_only_unclean_stops_count_as_restarts(store, team, events, restarts, unclean):
    for kind in events:
        store.log_event(kind, kind, level="error" if kind == "crash" else "info")
    facts = collect_facts(store, team)
    assert (facts.restarts, facts.unclean_stops) == (restarts, unclean)
    health = render(facts, template_narrative(facts)).text
    assert ("no crash" in health) == (unclean == 0)


def test_the_change_column_is_filled_from_the_first_digest_on(store, team):
    record_steps(store, range(1, 5))
    first = collect_facts(store, team)
    assert first.change_basis == "from step 1 to step 4"
    assert first.solve_rate_change["deduction"] == pytest.approx(0.3)
    digest = render(first, template_narrative(first))
    assert "<td" in digest.html and "+30 pts" in digest.html and "from step 1 to step 4" in digest.html
    _store_digest(store, first)
    record_steps(store, range(5, 7))
    second = collect_facts(store, team)
    assert second.change_basis == "against steps 3-4"
    assert second.solve_rate_change["deduction"] == pytest.approx(0.2)


def test_the_digest_counts_to_the_step_the_console_does(store, team):
    from botlab.rundir import RUN_LAST_STEP_KEY

    record_steps(store, range(1, 5))
    store.put(RUN_LAST_STEP_KEY, 4)  # botlab run --steps 4: the console shows "step 4/4"
    facts = collect_facts(store, team)
    digest = render(facts, template_narrative(facts))
    assert digest.subject.startswith("[botlab demo] digest #1: step 4/4,")
    assert "Steps 1-4 ran; step 4 of 4 in this run, 500 planned." in digest.text


def test_the_short_form_fits_a_phone(store, team):
    record_run(store)
    facts = collect_facts(store, team)
    short = render(facts, template_narrative(facts)).short
    lines = short.splitlines()
    assert len(short) <= 600 and max(map(len, lines)) <= 120
    assert lines[0].startswith("botlab demo #1: step 120/500")
    assert lines[1] == "Steps 1-120 ran; step 120 of 500. Solve rate 24% (+28 pts from step 1 to step 120)."
    assert "Held-out: heldout/abduction 0.11 (was 0.05), heldout/deduction 0.40 (was 0.20)" in short
    summary = short[: short.index("Solve rate:")]
    assert "://" not in summary and "Needs you: 1 message(s) refused" in summary
    assert lines[-1].startswith("Reply: /focus abduction")


def test_code_and_solver_replies_keep_their_lines(store, team):
    record_run(store)
    facts = collect_facts(store, team)
    digest = render(facts, template_narrative(facts))
    assert "<pre" in digest.html and html_escape(LONG_LINE) in digest.html
    assert html_escape("```input\n'banana'\n```\nThe output starts") in digest.html
    assert "    ```input\n    'banana'\n    ```\n" in digest.text


def test_the_chart_has_a_panel_per_task_type_and_the_held_out_curve(store, team):
    record_run(store, steps=30)
    png = render_chart(collect_facts(store, team))
    width, height = struct.unpack(">II", png[16:24])  # the PNG header's image size
    assert (width, height) == (960, 800)  # 2 columns x 2 rows: deduction, abduction, induction, held-out
    record_steps(store, [31])
    facts = collect_facts(store, team)
    facts.series = {k: v for k, v in facts.series.items() if k == "solve_rate/deduction"}
    assert struct.unpack(">II", render_chart(facts)[16:24]) == (960, 400)  # one panel


def _chromium() -> str:
    """The system Chromium (Debian's `chromium`, installed by scripts/setup.sh --dev); playwright drives it."""
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed: scripts/setup.sh --dev")
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("no chromium on PATH: scripts/setup.sh --dev installs Debian's chromium")
    return path


@pytest.mark.slow
def test_the_html_digest_reads_on_a_phone_and_a_desktop(store, team, tmp_path):
    from playwright.sync_api import sync_playwright

    record_run(store)
    facts = collect_facts(store, team)
    page_file = tmp_path / "digest.html"
    page_file.write_text(standalone_html(render(facts, template_narrative(facts))), encoding="utf-8")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=_chromium())
        try:
            for width in (390, 1000):
                page = browser.new_page(viewport={"width": width, "height": 844})
                page.goto(page_file.as_uri())
                page.wait_for_load_state("load")
                seen = page.evaluate("""() => {
                    const img = document.querySelector('img');
                    const pres = [...document.querySelectorAll('pre')];
                    return {scroll: document.documentElement.scrollWidth, inner: window.innerWidth,
                            img: img.getBoundingClientRect().width, loaded: img.complete && img.naturalWidth > 0,
                            wide_pres: pres.filter(p => p.scrollWidth > p.clientWidth).length,
                            pre_right: Math.max(...pres.map(p => p.getBoundingClientRect().right)),
                            first: document.querySelector('ul li').innerText};
                }""")
                page.screenshot(path=tmp_path / f"digest-{width}px.png", full_page=True)
                assert seen["scroll"] <= seen["inner"], f"the page scrolls sideways at {width} px: {seen}"
                assert seen["loaded"] and 0 < seen["img"] <= width, seen
                assert seen["pre_right"] <= width, seen  # code stays inside the page
                if width == 390:
                    assert seen["wide_pres"] >= 1, seen  # the long line scrolls inside its own box
                assert seen["first"].startswith("Since the last digest: Steps 1-120 ran")
                page.close()
        finally:
            browser.close()
    print("screenshots:", *sorted(tmp_path.glob("digest-*.png")))


def test_no_best_type_is_named_when_all_solve_alike(store, team):
    record_steps(store, [1, 2], solve=lambda step, i: 0.0)
    narrative = template_narrative(collect_facts(store, team))
    assert "The solver solves 0% of every task type." in narrative and "best" not in narrative


def test_the_short_form_stays_short_whatever_it_holds(store, tmp_path):
    team = TeamConfig(name="a-team-with-a-rather-long-name-" + "x" * 30, goal="g", storage_dir=tmp_path)
    record_run(store, steps=5)
    with store.transaction() as db:
        for i in range(6):
            db.execute("INSERT INTO feedback(channel, external_id, sender, received_at, text, status, response) "
                       "VALUES ('nostr', ?, ?, 0, ?, 'applied', ?)", (f"m{i}", NPUB, "word " * 80, "weights " * 30))
    for i in range(4):
        store.log_event("error", f"engine: {'trace ' * 60}", level="error")
    facts = collect_facts(store, team)
    for narrative in ("x" * 2000, "One sentence. " * 100, "no full stop " * 100):
        short = render(facts, narrative).short
        assert len(short) <= 600 and max(map(len, short.splitlines())) <= 120, short
        assert short.splitlines()[-1].startswith("Reply: /focus abduction")
