"""The progress digest, read from the store and rendered as plain text, HTML (chart inline) and a compact note.

`collect_facts` reads everything a digest says since the previous one; `render` turns facts plus a narrative
paragraph into the three forms. The narrative comes from the reporter agent or, as fallback, `template_narrative`.
Every number in the digest is rendered here from the store, never by the model. People read digests on a phone:
each form opens with what changed, the held-out scores and what needs the reader.
"""

from __future__ import annotations

import base64
import html
import json
import re
import textwrap
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any

from botlab.config import TeamConfig
from botlab.curriculum import HELP, Curriculum, load_curriculum
from botlab.reporting.chart import CHART_WIDTH_PX, render_chart
from botlab.rundir import LAST_EVAL_KEY, RUN_LAST_STEP_KEY
from botlab.selfplay.summary import StepSummary
from botlab.store import Store

__all__ = ["DigestFacts", "RenderedDigest", "collect_facts", "email_message", "render", "render_chart",
           "standalone_html", "template_narrative"]

CHART_CID = "chart"
MAX_CHART_POINTS = 400
SHORT_LIMIT, SHORT_LINE = 600, 120  # the Nostr DM: characters in all, characters a line
REPLY_HINT = "Reply: /focus abduction, /harder, /easier, /pause, /resume, /digest or plain words."


@dataclass
class Example:
    task_type: str
    program: str
    inputs: list
    outputs: list
    answer: str
    reward: float


@dataclass
class FeedbackNote:
    id: int
    channel: str
    sender: str
    text: str
    status: str
    response: str


@dataclass
class DigestFacts:
    team: str
    goal: str
    number: int
    created_at: float
    since: float | None  # when the previous digest was made
    first_step: int | None  # the steps new since the previous digest
    last_step: int | None
    total_steps: int  # the team's planned steps (train.steps)
    steps_done: int = 0  # the newest committed step, new or not
    run_last_step: int | None = None  # where this run stops (botlab run --steps), when it stops before total_steps
    solve_rates: dict[str, float] = field(default_factory=dict)
    solve_rate_change: dict[str, float] = field(default_factory=dict)
    change_basis: str = ""  # what the change is measured against, in words: "against steps 1-4"
    rewards: dict[str, dict[str, float]] = field(default_factory=dict)
    valid_rate: float | None = None
    admitted_rate: float | None = None
    rejections: list[tuple[str, int]] = field(default_factory=list)
    examples: list[Example] = field(default_factory=list)
    evaluation: dict[str, dict[str, Any]] = field(default_factory=dict)  # suite -> newest score, interval, start
    feedback: list[FeedbackNote] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # messages that arrived but were not taken, with why
    seconds_per_step: float | None = None
    tokens_per_second: float | None = None
    errors: list[str] = field(default_factory=list)  # the latest few
    error_count: int = 0
    restarts: int = 0  # starts after an unclean stop
    unclean_stops: int = 0  # crashes, and kills found at the next start
    curriculum: dict[str, Any] = field(default_factory=dict)
    series: dict[str, list[tuple[int, float]]] = field(default_factory=dict)

    @property
    def steps(self) -> int:
        return 0 if self.first_step is None else self.last_step - self.first_step + 1

    @property
    def target_step(self) -> int:
        """The step the console counts towards: this run's last step, else the team's planned steps."""
        return self.run_last_step or self.total_steps

    @property
    def messages(self) -> int:
        """Every message that arrived since the previous digest, read or refused."""
        return len(self.feedback) + len(self.refused)

    def for_agent(self) -> dict[str, Any]:
        """The facts without the chart series: what the narrative agent may read."""
        out = asdict(self)
        out.pop("series")
        out["steps"] = self.steps
        out["messages"] = self.messages
        return out


# --- reading the store -----------------------------------------------------------------------------------------------


def _mean(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _window_means(summaries: list[StepSummary]) -> tuple[dict, dict, float | None, float | None]:
    solve: dict[str, list[float]] = {}
    rewards: dict[str, dict[str, list[float]]] = {}
    for s in summaries:
        for t, rate in s.solve_rates.items():
            solve.setdefault(t, []).append(rate)
        for t, by_role in s.rewards.items():
            for role, r in (by_role or {}).items():
                rewards.setdefault(t, {}).setdefault(role, []).append(r)
    solve_m = {t: m for t, v in solve.items() if (m := _mean(v)) is not None}
    rewards_m = {t: {r: m for r, v in roles.items() if (m := _mean(v)) is not None} for t, roles in rewards.items()}
    return (solve_m, rewards_m, _mean([s.valid_rate for s in summaries]),
            _mean([s.admitted_rate for s in summaries]))


def collect_facts(store: Store, team: TeamConfig, now: float | None = None) -> DigestFacts:
    now = time.time() if now is None else now
    previous = store.query("SELECT created_at FROM digests ORDER BY id DESC LIMIT 1")
    since = previous[0]["created_at"] if previous else None
    # The newest step any digest reported: a digest with no new steps stores none, and must not reset the window.
    after_step = store.scalar("SELECT COALESCE(MAX(last_step), 0) FROM digests") or 0
    rows = store.query("SELECT * FROM steps WHERE step > ? ORDER BY step", (after_step,))
    summaries = [StepSummary.from_json(r["summary"]) for r in rows]
    run_last = store.get(RUN_LAST_STEP_KEY)
    facts = DigestFacts(
        team=team.name, goal=team.goal,
        number=(store.scalar("SELECT COALESCE(MAX(id), 0) FROM digests") or 0) + 1,
        created_at=now, since=since,
        first_step=rows[0]["step"] if rows else None, last_step=rows[-1]["step"] if rows else None,
        total_steps=team.train.steps, steps_done=store.last_step(),
        run_last_step=run_last if isinstance(run_last, int) and run_last != team.train.steps else None,
        curriculum=load_curriculum(store).model_dump(),
    )
    facts.solve_rates, facts.rewards, facts.valid_rate, facts.admitted_rate = _window_means(summaries)
    if rows:
        facts.solve_rate_change, facts.change_basis = _solve_change(store, after_step, rows, summaries)
        facts.seconds_per_step = _mean([r["finished_at"] - r["started_at"] for r in rows])
        facts.tokens_per_second = _mean([s.tokens_per_second for s in summaries])
        facts.rejections = _rejections(store, after_step, summaries)
        facts.examples = _examples(store, after_step)
    facts.evaluation = held_out_scores(store)
    facts.feedback = _feedback(store)
    facts.refused = _refused(store, since)
    facts.errors, facts.error_count = _errors(store, since)
    facts.restarts, facts.unclean_stops = _stops(store, since)
    facts.series = _series(store)
    return facts


def _step_range(first: int, last: int) -> str:
    return f"step {first}" if first == last else f"steps {first}-{last}"


def _solve_change(store: Store, after_step: int, rows: list, summaries: list[StepSummary],
                  ) -> tuple[dict[str, float], str]:
    """Solve rate change per task type and what it is measured against: the same number of steps before this
    window; in a run's first window, its first step against its last."""
    before = store.query("SELECT step, summary FROM steps WHERE step <= ? ORDER BY step DESC LIMIT ?",
                         (after_step, len(rows)))
    if before:
        old = _window_means([StepSummary.from_json(r["summary"]) for r in before])[0]
        new = _window_means(summaries)[0]
        return ({t: new[t] - old[t] for t in new if t in old},
                f"against {_step_range(before[-1]['step'], before[0]['step'])}")
    if len(rows) < 2:
        return {}, ""  # a run's first step: nothing to compare with
    first, last = summaries[0].solve_rates, summaries[-1].solve_rates
    change = {t: last[t] - first[t] for t in last if last[t] is not None and first.get(t) is not None}
    return change, f"from step {rows[0]['step']} to step {rows[-1]['step']}"


def _rejections(store: Store, after_step: int, summaries: list[StepSummary]) -> list[tuple[str, int]]:
    rows = store.query(
        "SELECT reason, COUNT(*) AS n FROM tasks WHERE step > ? AND status != 'admitted' AND reason IS NOT NULL "
        "GROUP BY reason ORDER BY n DESC, reason LIMIT 5", (after_step,))
    if rows:
        return [(r["reason"], r["n"]) for r in rows]
    counts: Counter[str] = Counter()
    for s in summaries:
        counts.update(s.rejections)
    return counts.most_common(5)


def _examples(store: Store, after_step: int, limit: int = 3) -> list[Example]:
    """Admitted tasks of this window with a solver attempt: one per task type, a solved one first."""
    rows = store.query(
        """SELECT t.task_type, t.program, t.inputs, t.outputs, s.completion, s.reward
           FROM samples s JOIN tasks t ON t.id = s.task_id
           WHERE s.role = 'solver' AND s.step > ? AND t.status = 'admitted'
           ORDER BY s.reward DESC, s.id DESC LIMIT 200""", (after_step,))
    picked: dict[str, Example] = {}
    for r in rows:
        if r["task_type"] not in picked:
            picked[r["task_type"]] = Example(
                task_type=r["task_type"], program=_clip(r["program"], 600), inputs=json.loads(r["inputs"])[:3],
                outputs=json.loads(r["outputs"])[:3], answer=_clip(r["completion"].strip(), 300), reward=r["reward"])
        if len(picked) == limit:
            break
    return list(picked.values())


def held_out_scores(store: Store) -> dict[str, dict[str, Any]]:
    """The newest held-out score per suite, with its interval and where it stood at the start (step 0 or first);
    `botlab status` shows the same."""
    out: dict[str, dict[str, Any]] = {}
    last = store.get(LAST_EVAL_KEY)
    if not isinstance(last, dict) or "suite" in last:  # nothing yet, or an older run's single flat result
        return out
    for suite, r in sorted(last.items()):
        if not isinstance(r, dict) or not isinstance(r.get("score"), (int, float)):
            continue
        result = {"score": r["score"], "ci95": r.get("ci95") or 0.0, "problems": r.get("problems"),
                  "step": r.get("step"), "start_score": None, "start_step": None}
        first = store.query("SELECT step, value FROM metrics WHERE name = ? ORDER BY step LIMIT 1", (f"eval/{suite}",))
        if first and first[0]["step"] != r.get("step"):
            result |= {"start_score": first[0]["value"], "start_step": first[0]["step"]}
        out[suite] = result
    return out


def _feedback(store: Store) -> list[FeedbackNote]:
    rows = store.query("SELECT * FROM feedback WHERE reported_in IS NULL AND status != 'pending' ORDER BY id")
    return [FeedbackNote(id=r["id"], channel=r["channel"], sender=r["sender"], text=_clip(r["text"], 300),
                         status=r["status"], response=r["response"]) for r in rows]


def _refused(store: Store, since: float | None) -> list[str]:
    """Messages the channels would not take as feedback (a sender not allowed, automatic mail, ...): they reach
    the store only as events, with the reason."""
    return [r["message"] for r in store.query(
        "SELECT message FROM events WHERE kind = 'feedback_ignored' AND at > ? ORDER BY id", (since or 0,))]


def _errors(store: Store, since: float | None) -> tuple[list[str], int]:
    """The latest three errors since `since`, and how many there were."""
    since = since or 0
    latest = [r["message"] for r in store.query(
        "SELECT message FROM events WHERE level = 'error' AND at > ? ORDER BY id DESC LIMIT 3", (since,))]
    return latest, store.scalar("SELECT COUNT(*) FROM events WHERE level = 'error' AND at > ?", (since,)) or 0


def _stops(store: Store, since: float | None) -> tuple[int, int]:
    """(restarts after an unclean stop, unclean stops) since `since`. A stop is unclean when the daemon crashed, or
    when it was killed: the next start finds the previous one never logged a stop. A restart after a clean stop is
    ordinary and not counted."""
    since = since or 0
    running = crashed = False
    restarts = unclean = 0
    for r in store.query("SELECT kind, at FROM events WHERE kind IN ('start', 'stop', 'crash') ORDER BY id"):
        recent = r["at"] > since
        if r["kind"] == "crash":
            crashed = True
            unclean += recent
        elif r["kind"] == "stop":
            running = False
        else:
            unclean += running and recent  # killed: the run before this start never stopped
            restarts += (running or crashed) and recent
            running, crashed = True, False
    return restarts, unclean


def _series(store: Store) -> dict[str, list[tuple[int, float]]]:
    """What the chart draws over the whole run: solve rate per task type, held-out scores and their intervals."""
    rows = store.query(
        "SELECT step, name, value FROM metrics WHERE name LIKE 'solve_rate/%' "
        "OR name LIKE 'eval/%' OR name LIKE 'eval_ci95/%' ORDER BY step")
    series: dict[str, list[tuple[int, float]]] = {}
    for r in rows:
        series.setdefault(r["name"], []).append((r["step"], r["value"]))
    for name, points in series.items():
        if len(points) > MAX_CHART_POINTS:
            stride = len(points) / MAX_CHART_POINTS
            series[name] = [points[int(i * stride)] for i in range(MAX_CHART_POINTS)] + [points[-1]]
    return series


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- the words every form shares -------------------------------------------------------------------------------------


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.0%}"


def _num(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _pts(change: float) -> str:
    """A change of a rate, in percentage points: +12 pts."""
    return f"{change * 100:+.0f} pts"


def _where(facts: DigestFacts) -> str:
    """How far the run is, in the console's terms: "step 8 of 20", "step 4 of 4 in this run, 20 planned"."""
    text = f"step {facts.steps_done} of {facts.target_step}"
    return text + (f" in this run, {facts.total_steps} planned" if facts.run_last_step else "")


def _mean_change(facts: DigestFacts) -> float | None:
    return _mean(list(facts.solve_rate_change.values()))


def _changed(facts: DigestFacts) -> list[str]:
    """What changed since the previous digest, sentence by sentence: the steps, the solve rate, the messages."""
    if not facts.steps:
        out = [f"No new steps ({_where(facts)})."]
    else:
        out = [f"{_step_range(facts.first_step, facts.last_step).capitalize()} ran; {_where(facts)}."]
        if facts.solve_rates:
            change = _mean_change(facts)
            out.append(f"Solve rate {_pct(_mean(list(facts.solve_rates.values())))}"
                       + (f" ({_pts(change)} {facts.change_basis})." if change is not None else "."))
    if facts.messages:
        applied = sum(n.status == "applied" for n in facts.feedback)
        kinds = [(applied, "applied"), (len(facts.feedback) - applied, "answered without a change"),
                 (len(facts.refused), "refused")]
        out.append(f"{facts.messages} message(s) arrived: " + ", ".join(f"{n} {k}" for n, k in kinds if n) + ".")
    return out


def _eval_brief(suite: str, e: dict[str, Any]) -> str:
    text = f"{suite} {e['score']:.2f} ± {e['ci95']:.2f}"
    return text + (f" (from {e['start_score']:.2f} at step {e['start_step']})" if e["start_score"] is not None else "")


def eval_text(e: dict[str, Any]) -> str:
    text = f"{e['score']:.3f} ± {e['ci95']:.3f} (n={e['problems']}, step {e['step']})"
    return text + (f"; {e['start_score']:.3f} at step {e['start_step']}" if e["start_score"] is not None else "")


def _held_out(facts: DigestFacts) -> str:
    return "; ".join(_eval_brief(s, e) for s, e in facts.evaluation.items())


def _held_out_short(facts: DigestFacts) -> str:
    return "Held-out: " + ", ".join(f"{s} {e['score']:.2f}" + (f" (was {e['start_score']:.2f})"
                                                                if e["start_score"] is not None else "")
                                    for s, e in facts.evaluation.items())


def _needs_reader(facts: DigestFacts) -> list[str]:
    """What the reader should look at or do; empty when the run goes on fine by itself."""
    out = []
    if facts.curriculum.get("paused"):
        out.append("training is paused: reply /resume to continue")
    failed = sum(n.status == "error" for n in facts.feedback)
    if failed:
        out.append(f"{failed} message(s) could not be applied (see feedback)")
    if facts.refused:
        out.append(f"{len(facts.refused)} message(s) refused (why: see feedback)")
    if facts.error_count:
        out.append(f"{facts.error_count} error(s) logged (see health)")
    if facts.unclean_stops:
        out.append(f"{facts.unclean_stops} unclean stop(s), a crash or a kill (see health)")
    return out


def _needs_line(facts: DigestFacts) -> str:
    needs = _needs_reader(facts)
    return "; ".join(needs) if needs else "nothing"


def template_narrative(facts: DigestFacts) -> str:
    """A deterministic paragraph from the facts: used when no model writes one, or the model's is unusable."""
    if not facts.steps:
        lines = [f"No self-play step finished since the last digest (team {facts.team}, {_where(facts)})."]
    else:
        lines = [f"{_step_range(facts.first_step, facts.last_step).capitalize()} ran since the last digest; "
                 f"now at {_where(facts)}."]
        if facts.solve_rates:
            best = max(facts.solve_rates, key=facts.solve_rates.get)
            worst = min(facts.solve_rates, key=facts.solve_rates.get)
            if _pct(facts.solve_rates[best]) == _pct(facts.solve_rates[worst]):
                lines.append(f"The solver solves {_pct(facts.solve_rates[best])} of every task type.")
            else:
                lines.append(f"The solver does best on {best} ({_pct(facts.solve_rates[best])}) "
                             f"and worst on {worst} ({_pct(facts.solve_rates[worst])}).")
        if facts.valid_rate is not None:
            lines.append(f"{_pct(facts.valid_rate)} of proposals were valid programs and "
                         f"{_pct(facts.admitted_rate)} were admitted by the reviewer.")
    if facts.messages:
        lines.append(f"{facts.messages} message(s) of feedback arrived"
                     + (f", {len(facts.refused)} of them refused" if facts.refused else "")
                     + "; what each changed is listed below.")
    if facts.curriculum.get("paused"):
        lines.append("Training is paused by feedback: reply /resume to continue.")
    if facts.error_count:
        lines.append(f"{facts.error_count} error(s) were logged; the latest is shown under health.")
    return " ".join(lines)


@dataclass
class RenderedDigest:
    subject: str
    text: str
    html: str  # the chart referenced as cid:chart (email); see standalone_html for a file
    short: str  # compact form for Nostr
    chart_png: bytes | None
    narrative_source: str


def render(facts: DigestFacts, narrative: str, narrative_source: str = "template") -> RenderedDigest:
    headline = f"step {facts.last_step}/{facts.target_step}" if facts.last_step else "no new steps"
    if facts.solve_rates:
        headline += f", solve {_pct(_mean(list(facts.solve_rates.values())))}"
    if facts.curriculum.get("paused"):
        headline += ", paused"
    subject = f"[botlab {facts.team}] digest #{facts.number}: {headline}"
    chart = render_chart(facts)
    return RenderedDigest(subject=subject, text=_text(facts, narrative), html=_html(facts, narrative, chart, subject),
                          short=_short(facts, headline, narrative), chart_png=chart, narrative_source=narrative_source)


def _type_rows(facts: DigestFacts) -> list[tuple[str, str, str, str, str]]:
    """(type, solve rate, change, proposer reward, solver reward); the change is "new" for a type the compared
    steps did not have."""
    rows = []
    for t in sorted(set(facts.solve_rates) | set(facts.rewards)):
        change = facts.solve_rate_change.get(t)
        rows.append((t, _pct(facts.solve_rates.get(t)), "new" if change is None else _pts(change),
                     _num(facts.rewards.get(t, {}).get("proposer")), _num(facts.rewards.get(t, {}).get("solver"))))
    return rows


def _curriculum_line(facts: DigestFacts) -> str:
    c = Curriculum.model_validate(facts.curriculum)
    parts = ["weights " + ", ".join(f"{t} {w:g}" for t, w in c.task_weights.items()),
             f"difficulty {c.difficulty:+d}"]
    parts += [f"{t} difficulty {c.difficulty_for(t):+d}" for t, d in c.type_difficulty.items() if d]
    if c.focus:
        parts.append("focus " + ", ".join(c.focus))
    if c.reviewer_rules:
        parts.append(f"{len(c.reviewer_rules)} reviewer rule(s)")
    if c.paused:
        parts.append("PAUSED")
    return "; ".join(parts)


def _feedback_line(note: FeedbackNote) -> str:
    outcome = note.response or ("applied" if note.status == "applied" else "nothing changed")
    return f"\"{note.text}\" ({note.channel}, {note.sender}): {outcome}"


def _feedback_lines(facts: DigestFacts) -> list[str]:
    return [_feedback_line(n) for n in facts.feedback] + [f"refused: {why}" for why in facts.refused]


def _health_line(facts: DigestFacts) -> str:
    parts = []
    if facts.seconds_per_step is not None:
        parts.append(f"{facts.seconds_per_step:.1f} s/step")
    if facts.tokens_per_second is not None:
        parts.append(f"{facts.tokens_per_second:.0f} tokens/s")
    parts.append(f"{facts.error_count} error(s)" + (f", latest: {facts.errors[0]}" if facts.errors else ""))
    if facts.unclean_stops:
        parts.append(f"{facts.unclean_stops} unclean stop(s) (crash or kill), {facts.restarts} restart(s) after one")
    else:
        parts.append("no crash")
    return "; ".join(parts)


def _how_to_reply(facts: DigestFacts) -> str:
    return f"Reply in plain words, or with commands: {HELP}."


def _answer_lines(ex: Example) -> list[str]:
    """The solver's reply as it wrote it, line by line (at most 12)."""
    return ex.answer.splitlines()[:12]


def _calls(ex: Example) -> list[str]:
    """The task's input/output pairs as calls: f('abc') == 'cba'."""
    return [_clip(f"f({i}) == {o}", 200) for i, o in zip(ex.inputs, ex.outputs)]


# --- plain text ------------------------------------------------------------------------------------------------------


def _text(facts: DigestFacts, narrative: str) -> str:
    out = [f"botlab team {facts.team} - digest #{facts.number}", "",
           f"Since the last digest: {' '.join(_changed(facts))}"]
    if facts.evaluation:
        out.append(f"Held-out: {_held_out(facts)}")
    out += [f"Needs you: {_needs_line(facts)}", "", narrative, ""]
    if facts.goal:
        out += [f"Goal: {facts.goal}", ""]
    rows = _type_rows(facts)
    if rows:
        out.append("Per task type (solve rate, change, proposer reward, solver reward):")
        out += [f"  {t:<10} solve {s:>4} {c:>8}  proposer {p:>5}  solver {v:>5}" for t, s, c, p, v in rows]
        if facts.change_basis:
            out.append(f"  (change {facts.change_basis})")
        out.append("")
    if facts.valid_rate is not None:
        out.append(f"Proposals: {_pct(facts.valid_rate)} valid, {_pct(facts.admitted_rate)} admitted.")
    if facts.rejections:
        out.append("Top rejection reasons: " + ", ".join(f"{r} ({n})" for r, n in facts.rejections))
    if facts.examples:
        out += ["", "Examples:"]
        for ex in facts.examples:
            out += [f"- {ex.task_type}, solver reward {ex.reward:+.2f}", _indent(ex.program.splitlines()),
                    *[f"  {call}" for call in _calls(ex)], "  solver said:", _indent(_answer_lines(ex))]
    if facts.evaluation:
        out += ["", "Held-out evaluation (greedy pass@1, 95% interval):"]
        out += [f"  {suite} {eval_text(e)}" for suite, e in facts.evaluation.items()]
    out += ["", "Feedback since the last digest:"]
    out += [f"- {line}" for line in _feedback_lines(facts)] or ["- none"]
    out += ["", f"Curriculum now: {_curriculum_line(facts)}", f"Health: {_health_line(facts)}", "",
            _how_to_reply(facts)]
    return "\n".join(out) + "\n"


def _indent(lines: list[str]) -> str:
    return "\n".join("    " + line for line in lines[:12])


# --- the short form (Nostr) ------------------------------------------------------------------------------------------


def _short(facts: DigestFacts, headline: str, narrative: str) -> str:
    """At most SHORT_LIMIT characters, no line over SHORT_LINE: the headline and a link-free summary first, then the
    numbers, the narrative as far as it fits, and how to reply."""
    first = f"botlab {facts.team} #{facts.number}: {headline}"
    optional = _pack(_changed(facts), SHORT_LINE)  # the second line is the console's one-line summary
    if facts.evaluation:
        optional.append(_held_out_short(facts))
    optional.append(f"Needs you: {_needs_line(facts)}")
    if facts.solve_rates:
        optional.append("Solve rate: " + ", ".join(
            f"{t} {s}" + (f" ({c})" if c != "new" else "") for t, s, c, _, _ in _type_rows(facts)))
    if facts.feedback:
        optional.append(f"Latest feedback: {_feedback_line(facts.feedback[-1])}")
    lines = [_clip(first, SHORT_LINE)]
    reserve = len(REPLY_HINT) + 1
    for text in optional:  # each whole or not at all
        wrapped = textwrap.wrap(text, SHORT_LINE)
        if _size(lines + wrapped) + 1 + reserve <= SHORT_LIMIT:
            lines += wrapped
    narrative = _whole_sentences(" ".join(narrative.split()), SHORT_LIMIT - _size(lines) - reserve - 1)
    lines += textwrap.wrap(narrative, SHORT_LINE)
    return "\n".join(lines + [REPLY_HINT])


def _whole_sentences(text: str, limit: int) -> str:
    """The leading sentences of `text` that fit in `limit` characters with the line breaks wrapping adds ('' if
    not even the first does): a DM never ends mid-sentence."""
    out = ""
    for sentence in re.split(r"(?<=[.!?])\s+", text):
        candidate = f"{out} {sentence}".strip()
        if len(candidate) > limit:
            break
        out = candidate
    return out


def _pack(sentences: list[str], width: int) -> list[str]:
    """Sentences joined into lines of at most `width` characters, a sentence split only when it is longer."""
    lines: list[str] = []
    for sentence in sentences:
        if lines and len(lines[-1]) + 1 + len(sentence) <= width:
            lines[-1] += " " + sentence
        else:
            lines.append(sentence)
    return lines


def _size(lines: list[str]) -> int:
    return sum(len(line) for line in lines) + len(lines) - 1


# --- HTML ------------------------------------------------------------------------------------------------------------

# Inline styles: many mail apps drop a <style> block. Nothing may widen the page past a 390 px phone screen: the
# chart shrinks, long words (npubs, URLs) break anywhere, code and tables scroll inside their own box.
_S = {
    "page": "max-width:680px;margin:0 auto;padding:12px 14px;font:16px/1.45 -apple-system,'Segoe UI',Roboto,"
            "Helvetica,Arial,sans-serif;color:#1a1a1a;overflow-wrap:anywhere;word-break:break-word",
    "h1": "font-size:20px;margin:4px 0 10px",
    "h2": "font-size:17px;margin:20px 0 6px",
    "h3": "font-size:15px;margin:14px 0 4px",
    "headline": "margin:0 0 12px;padding:8px 12px;background:#f1f5fa;border-left:4px solid #3b6ea5;list-style:none",
    "li": "margin:3px 0",
    "img": f"display:block;width:100%;max-width:{CHART_WIDTH_PX}px;height:auto;margin:8px 0",
    "pre": "margin:4px 0 10px;padding:8px 10px;background:#f5f5f5;border-radius:4px;overflow-x:auto;max-width:100%;"
           "box-sizing:border-box;white-space:pre;overflow-wrap:normal;word-break:normal;font-size:13px;"
           "line-height:1.35;font-family:ui-monospace,Menlo,Consolas,monospace",
    "scroll": "overflow-x:auto;max-width:100%",
    "table": "border-collapse:collapse;font-size:14px",
    # Cells break at spaces only ("proposer reward"), never inside a word: a table too wide scrolls in its box.
    "cell": "border:1px solid #ccc;padding:4px 6px;text-align:left;overflow-wrap:normal;word-break:normal",
    "num": "border:1px solid #ccc;padding:4px 6px;text-align:right;white-space:nowrap",
    "note": "color:#555;font-size:14px;margin:4px 0",
}


def _pre(text: str) -> str:
    return f'<pre style="{_S["pre"]}">{html.escape(text)}</pre>'


def _html(facts: DigestFacts, narrative: str, chart: bytes | None, subject: str) -> str:
    e = html.escape
    head = [("Since the last digest", " ".join(_changed(facts)))]
    if facts.evaluation:
        head.append(("Held-out", _held_out(facts)))
    head.append(("Needs you", _needs_line(facts)))
    items = "".join(f'<li style="{_S["li"]}"><b>{e(k)}:</b> {e(v)}</li>' for k, v in head)
    parts = [f'<h1 style="{_S["h1"]}">botlab {e(facts.team)} &middot; digest #{facts.number}</h1>',
             f'<ul style="{_S["headline"]}">{items}</ul>', f"<p>{e(narrative)}</p>"]
    if facts.goal:
        parts.append(f"<p><b>Goal:</b> {e(facts.goal)}</p>")
    if chart:
        parts.append(f'<img src="cid:{CHART_CID}" width="{CHART_WIDTH_PX}" style="{_S["img"]}" '
                     'alt="solve rate per task type and held-out pass@1 over steps">')
    parts += _html_types(facts)
    if facts.valid_rate is not None:
        text = f"Proposals: {_pct(facts.valid_rate)} valid, {_pct(facts.admitted_rate)} admitted."
        if facts.rejections:
            text += " Top rejection reasons: " + ", ".join(f"{r} ({n})" for r, n in facts.rejections) + "."
        parts.append(f"<p>{e(text)}</p>")
    if facts.examples:
        parts.append(f'<h2 style="{_S["h2"]}">Examples</h2>')
        for ex in facts.examples:
            parts += [f'<h3 style="{_S["h3"]}">{e(ex.task_type)}, solver reward {ex.reward:+.2f}</h3>',
                      _pre(ex.program), f'<p style="{_S["note"]}">Checks</p>', _pre("\n".join(_calls(ex))),
                      f'<p style="{_S["note"]}">The solver said</p>', _pre("\n".join(_answer_lines(ex)))]
    if facts.evaluation:
        rows = "".join(f"<li>{e(s)} {e(eval_text(v))}</li>" for s, v in facts.evaluation.items())
        parts.append(f'<h2 style="{_S["h2"]}">Held-out evaluation</h2><p style="{_S["note"]}">greedy pass@1, '
                     f"95% interval</p><ul>{rows}</ul>")
    notes = "".join(f'<li style="{_S["li"]}">{e(line)}</li>' for line in _feedback_lines(facts)) or "<li>none</li>"
    parts.append(f'<h2 style="{_S["h2"]}">Feedback since the last digest</h2><ul>{notes}</ul>')
    parts.append(f'<h2 style="{_S["h2"]}">Curriculum and health</h2><p><b>Curriculum now:</b> '
                 f"{e(_curriculum_line(facts))}<br><b>Health:</b> {e(_health_line(facts))}</p>")
    parts.append(f"<p><i>{e(_how_to_reply(facts))}</i></p>")
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{e(subject)}</title></head>\n"
            f'<body style="margin:0"><div style="{_S["page"]}">\n' + "\n".join(parts) + "\n</div></body></html>\n")


def _html_types(facts: DigestFacts) -> list[str]:
    rows = _type_rows(facts)
    if not rows:
        return []
    head = "".join(f'<th style="{_S["cell"]}">{h}</th>' for h in ("type", "solve", "change", "proposer reward",
                                                                 "solver reward"))
    body = "".join(f'<tr><td style="{_S["cell"]}">{html.escape(row[0])}</td>'
                   + "".join(f'<td style="{_S["num"]}">{html.escape(c)}</td>' for c in row[1:]) + "</tr>"
                   for row in rows)
    out = [f'<h2 style="{_S["h2"]}">Per task type</h2>',
           f'<div style="{_S["scroll"]}"><table style="{_S["table"]}"><tr>{head}</tr>{body}</table></div>']
    if facts.change_basis:
        out.append(f'<p style="{_S["note"]}">Change in solve rate {html.escape(facts.change_basis)}, '
                   "in percentage points.</p>")
    return out


def standalone_html(digest: RenderedDigest) -> str:
    """The HTML with the chart embedded as a data: URI, for a file opened in a browser."""
    if not digest.chart_png:
        return digest.html
    data = base64.b64encode(digest.chart_png).decode()
    return digest.html.replace(f"cid:{CHART_CID}", f"data:image/png;base64,{data}")


def from_address(team: TeamConfig) -> str:
    """The address digests and answers come from: notifiers.email.from_addr, else one that can never be delivered
    (the console's .eml files and previews still need a From)."""
    email = team.notifiers.email
    return email.from_addr if email is not None else f"botlab@{team.name}.invalid"


def email_message(digest: RenderedDigest, from_addr: str, to: str, message_id: str,
                  date: float | None = None) -> EmailMessage:
    """multipart/alternative: the text part, then HTML with the chart as an inline related image."""
    msg = EmailMessage()
    msg["Subject"] = digest.subject
    msg["From"] = from_addr
    msg["To"] = to
    msg["Date"] = formatdate(date, localtime=False)
    msg["Message-ID"] = message_id
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: vacation responders must not answer
    msg.set_content(digest.text)
    msg.add_alternative(digest.html, subtype="html")
    if digest.chart_png:
        html_part = msg.get_payload()[1]
        html_part.add_related(digest.chart_png, "image", "png", cid=f"<{CHART_CID}>", filename="chart.png",
                              disposition="inline")
    return msg
