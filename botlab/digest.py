"""The progress digest, read from the store and rendered as plain text, HTML (chart inline) and a compact note.

`collect_facts` reads everything a digest says since the previous one; `render` turns facts plus a narrative
paragraph into the three forms. The narrative comes from the reporter agent or, as fallback, `template_narrative`.
Every number in the digest is rendered here from the store, never by the model.
"""

from __future__ import annotations

import base64
import html
import io
import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any

from botlab.config import TeamConfig
from botlab.curriculum import HELP, Curriculum, load_curriculum
from botlab.store import Store

CHART_CID = "chart"
CHART_SERIES = ("solve_rate", "reward/proposer", "reward/solver")
MAX_CHART_POINTS = 400


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
    first_step: int | None
    last_step: int | None
    total_steps: int
    solve_rates: dict[str, float] = field(default_factory=dict)
    solve_rate_change: dict[str, float] = field(default_factory=dict)
    rewards: dict[str, dict[str, float]] = field(default_factory=dict)
    valid_rate: float | None = None
    admitted_rate: float | None = None
    rejections: list[tuple[str, int]] = field(default_factory=list)
    examples: list[Example] = field(default_factory=list)
    evaluation: dict[str, Any] = field(default_factory=dict)
    feedback: list[FeedbackNote] = field(default_factory=list)
    seconds_per_step: float | None = None
    tokens_per_second: float | None = None
    errors: list[str] = field(default_factory=list)
    restarts: int = 0
    unclean_stops: int = 0  # crashes and kills found at the next start
    curriculum: dict[str, Any] = field(default_factory=dict)
    series: dict[str, list[tuple[int, float]]] = field(default_factory=dict)

    @property
    def steps(self) -> int:
        return 0 if self.first_step is None else self.last_step - self.first_step + 1

    def for_agent(self) -> dict[str, Any]:
        """The facts without the chart series: what the narrative agent may read."""
        out = asdict(self)
        out.pop("series")
        out["steps"] = self.steps
        return out


# --- reading the store -----------------------------------------------------------------------------------------------


def _mean(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _window_means(summaries: list[dict]) -> tuple[dict, dict, float | None, float | None]:
    solve: dict[str, list[float]] = {}
    rewards: dict[str, dict[str, list[float]]] = {}
    for s in summaries:
        for t, rate in (s.get("solve_rates") or {}).items():
            solve.setdefault(t, []).append(rate)
        for t, by_role in (s.get("rewards") or {}).items():
            for role, r in (by_role or {}).items():
                rewards.setdefault(t, {}).setdefault(role, []).append(r)
    solve_m = {t: m for t, v in solve.items() if (m := _mean(v)) is not None}
    rewards_m = {t: {r: m for r, v in roles.items() if (m := _mean(v)) is not None} for t, roles in rewards.items()}
    return (solve_m, rewards_m, _mean([s.get("valid_rate") for s in summaries]),
            _mean([s.get("admitted_rate") for s in summaries]))


def collect_facts(store: Store, team: TeamConfig, now: float | None = None) -> DigestFacts:
    now = time.time() if now is None else now
    previous = store.query("SELECT id, created_at, last_step FROM digests ORDER BY id DESC LIMIT 1")
    since = previous[0]["created_at"] if previous else None
    after_step = (previous[0]["last_step"] or 0) if previous else 0
    rows = store.query("SELECT * FROM steps WHERE step > ? ORDER BY step", (after_step,))
    summaries = [json.loads(r["summary"]) for r in rows]
    facts = DigestFacts(
        team=team.name, goal=team.goal,
        number=(store.scalar("SELECT COALESCE(MAX(id), 0) FROM digests") or 0) + 1,
        created_at=now, since=since,
        first_step=rows[0]["step"] if rows else None, last_step=rows[-1]["step"] if rows else None,
        total_steps=team.train.steps,
        curriculum=load_curriculum(store).model_dump(),
    )
    facts.solve_rates, facts.rewards, facts.valid_rate, facts.admitted_rate = _window_means(summaries)
    if rows:
        # Change against the same number of steps before this window.
        before = store.query("SELECT summary FROM steps WHERE step <= ? ORDER BY step DESC LIMIT ?",
                             (after_step, len(rows)))
        old_solve = _window_means([json.loads(r["summary"]) for r in before])[0]
        facts.solve_rate_change = {t: facts.solve_rates[t] - old_solve[t] for t in facts.solve_rates if t in old_solve}
        facts.seconds_per_step = _mean([r["finished_at"] - r["started_at"] for r in rows])
        facts.tokens_per_second = _mean([s.get("tokens_per_second") for s in summaries])
        facts.rejections = _rejections(store, after_step, summaries)
        facts.examples = _examples(store, after_step)
    facts.evaluation = _evaluation(store, after_step)
    facts.feedback = _feedback(store)
    facts.errors, facts.restarts, facts.unclean_stops = _health(store, since)
    facts.series = _series(store)
    return facts


def _rejections(store: Store, after_step: int, summaries: list[dict]) -> list[tuple[str, int]]:
    rows = store.query(
        "SELECT reason, COUNT(*) AS n FROM tasks WHERE step > ? AND status != 'admitted' AND reason IS NOT NULL "
        "GROUP BY reason ORDER BY n DESC, reason LIMIT 5", (after_step,))
    if rows:
        return [(r["reason"], r["n"]) for r in rows]
    counts: Counter[str] = Counter()
    for s in summaries:
        counts.update(s.get("rejections") or {})
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


def _evaluation(store: Store, after_step: int) -> dict[str, Any]:
    """The newest held-out score per suite, with its interval and where it stood at the start (step 0 or first)."""
    out: dict[str, Any] = {}
    last = store.get("last_eval")
    if not isinstance(last, dict) or "suite" in last:  # nothing yet, or an older run's single flat result
        return out
    for suite, r in sorted(last.items()):
        if not isinstance(r, dict) or not isinstance(r.get("score"), (int, float)):
            continue
        text = f"{r['score']:.3f} ± {r.get('ci95', 0):.3f} (n={r.get('problems')}, step {r.get('step')})"
        first = store.query("SELECT step, value FROM metrics WHERE name = ? ORDER BY step LIMIT 1", (f"eval/{suite}",))
        if first and first[0]["step"] != r.get("step"):
            text += f"; {first[0]['value']:.3f} at step {first[0]['step']}"
        out[suite] = text
    return out


def _feedback(store: Store) -> list[FeedbackNote]:
    rows = store.query("SELECT * FROM feedback WHERE reported_in IS NULL AND status != 'pending' ORDER BY id")
    return [FeedbackNote(id=r["id"], channel=r["channel"], sender=r["sender"], text=_clip(r["text"], 300),
                         status=r["status"], response=r["response"]) for r in rows]


def _health(store: Store, since: float | None) -> tuple[list[str], int, int]:
    """Latest errors, daemon restarts (every start but the run's first) and unclean stops since `since`."""
    since = since or 0
    errors = [r["message"] for r in store.query(
        "SELECT message FROM events WHERE level = 'error' AND at > ? ORDER BY id DESC LIMIT 3", (since,))]
    first_start = store.scalar("SELECT MIN(id) FROM events WHERE kind = 'start'") or 0
    restarts = store.scalar("SELECT COUNT(*) FROM events WHERE kind = 'start' AND at > ? AND id != ?",
                            (since, first_start))
    unclean = store.scalar("SELECT COUNT(*) FROM events WHERE kind IN ('restart', 'crash') AND at > ?", (since,))
    return errors, restarts or 0, unclean or 0


def _series(store: Store) -> dict[str, list[tuple[int, float]]]:
    rows = store.query(
        "SELECT step, name, value FROM metrics WHERE name LIKE 'solve_rate/%' OR name LIKE 'reward/%' "
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


# --- the chart ------------------------------------------------------------------------------------------------------


def render_chart(facts: DigestFacts) -> bytes | None:
    """Solve rates and rewards per task type over all steps, as a PNG; None before there is anything to draw."""
    if not facts.series:
        return None
    import matplotlib

    matplotlib.use("Agg")  # no display: render to memory
    from matplotlib.figure import Figure

    held_out = {n: p for n, p in facts.series.items() if n.startswith("eval/")}
    fig = Figure(figsize=(11 if held_out else 7.5, 4.2), dpi=100, layout="constrained")
    left, right, *rest = fig.subplots(1, 3 if held_out else 2)
    if held_out:
        _held_out_panel(rest[0], held_out, facts.series)
    types = sorted({name.rsplit("/", 1)[1] for name in facts.series if not name.startswith("eval")})
    color = {t: f"C{i}" for i, t in enumerate(types)}  # one colour per task type in both panels
    for name, points in sorted(facts.series.items()):
        if name.startswith("eval"):
            continue
        steps, values = zip(*points)
        task_type = name.rsplit("/", 1)[1]
        if name.startswith("solve_rate/"):
            left.plot(steps, values, color=color[task_type], label=task_type, marker="." if len(steps) < 30 else None)
        elif name.startswith("reward/"):
            solver = name.startswith("reward/solver/")
            right.plot(steps, values, color=color[task_type], linestyle="-" if solver else "--",
                       label=task_type if solver else None)
    left.set(title="solve rate", xlabel="step", ylim=(-0.02, 1.02))
    right.set(title="reward (solid: solver, dashed: proposer)", xlabel="step")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _held_out_panel(ax, scores: dict[str, list[tuple[int, float]]], series: dict) -> None:
    """Greedy pass@1 per held-out suite over steps, the 95% interval shaded: the run's learning curve."""
    for i, (name, points) in enumerate(sorted(scores.items())):
        suite = name.removeprefix("eval/")
        ci = dict(series.get(f"eval_ci95/{suite}", []))
        steps, values = zip(*points)
        low = [max(0.0, v - ci.get(s, 0.0)) for s, v in points]
        high = [min(1.0, v + ci.get(s, 0.0)) for s, v in points]
        ax.plot(steps, values, color=f"C{i + 3}", marker=".", label=suite)
        ax.fill_between(steps, low, high, color=f"C{i + 3}", alpha=0.15)
    ax.set(title="held-out pass@1 (95% interval)", xlabel="step", ylim=(-0.02, 1.02))
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


# --- the narrative fallback and the rendered forms ------------------------------------------------------------------


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.0%}"


def _num(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def template_narrative(facts: DigestFacts) -> str:
    """A deterministic paragraph from the facts: used when no model writes one, or the model's is unusable."""
    if not facts.steps:
        lines = [f"No self-play step finished since the last digest (team {facts.team})."]
    else:
        lines = [f"Steps {facts.first_step}-{facts.last_step} of {facts.total_steps} are done ({facts.steps} new)."]
        if facts.solve_rates:
            best = max(facts.solve_rates, key=facts.solve_rates.get)
            worst = min(facts.solve_rates, key=facts.solve_rates.get)
            lines.append(f"The solver does best on {best} ({_pct(facts.solve_rates[best])})"
                         + (f" and worst on {worst} ({_pct(facts.solve_rates[worst])})." if worst != best else "."))
        if facts.valid_rate is not None:
            lines.append(f"{_pct(facts.valid_rate)} of proposals were valid programs and "
                         f"{_pct(facts.admitted_rate)} were admitted by the reviewer.")
    if facts.feedback:
        lines.append(f"{len(facts.feedback)} message(s) of feedback arrived; what they changed is listed below.")
    if facts.curriculum.get("paused"):
        lines.append("Training is paused by feedback: reply /resume to continue.")
    if facts.errors:
        lines.append(f"{len(facts.errors)} error(s) were logged; the latest is shown under health.")
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
    headline = f"step {facts.last_step}/{facts.total_steps}" if facts.last_step else "no new steps"
    if facts.solve_rates:
        headline += f", solve {_pct(_mean(list(facts.solve_rates.values())))}"
    if facts.curriculum.get("paused"):
        headline += ", paused"
    subject = f"[botlab {facts.team}] digest #{facts.number}: {headline}"
    chart = render_chart(facts)
    return RenderedDigest(subject=subject, text=_text(facts, narrative), html=_html(facts, narrative, chart),
                          short=_short(facts, headline, narrative), chart_png=chart, narrative_source=narrative_source)


def _type_rows(facts: DigestFacts) -> list[tuple[str, str, str, str, str]]:
    rows = []
    for t in sorted(set(facts.solve_rates) | set(facts.rewards)):
        change = facts.solve_rate_change.get(t)
        rows.append((t, _pct(facts.solve_rates.get(t)), "" if change is None else f"{change:+.0%}",
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


def _health_line(facts: DigestFacts) -> str:
    parts = []
    if facts.seconds_per_step is not None:
        parts.append(f"{facts.seconds_per_step:.1f} s/step")
    if facts.tokens_per_second is not None:
        parts.append(f"{facts.tokens_per_second:.0f} tokens/s")
    parts.append(f"{len(facts.errors)} error(s)" + (f", latest: {facts.errors[0]}" if facts.errors else ""))
    parts.append(f"{facts.restarts} restart(s)" + (f" ({facts.unclean_stops} after a crash or kill)"
                                                   if facts.unclean_stops else ""))
    return "; ".join(parts)


def _how_to_reply(facts: DigestFacts) -> str:
    return f"Reply in plain words, or with commands: {HELP}."


def _text(facts: DigestFacts, narrative: str) -> str:
    out = [f"botlab team {facts.team} - digest #{facts.number}", "", narrative, ""]
    if facts.goal:
        out += [f"Goal: {facts.goal}", ""]
    rows = _type_rows(facts)
    if rows:
        out.append("Per task type (solve rate, change, proposer reward, solver reward):")
        out += [f"  {t:<10} solve {s:>4} {c:>5}  proposer {p:>5}  solver {v:>5}" for t, s, c, p, v in rows]
        out.append("")
    if facts.valid_rate is not None:
        out.append(f"Proposals: {_pct(facts.valid_rate)} valid, {_pct(facts.admitted_rate)} admitted.")
    if facts.rejections:
        out.append("Top rejection reasons: " + ", ".join(f"{r} ({n})" for r, n in facts.rejections))
    if facts.examples:
        out += ["", "Examples:"]
        for ex in facts.examples:
            out += [f"- {ex.task_type}, solver reward {ex.reward:+.2f}", _indent(ex.program),
                    *[f"  {call}" for call in _calls(ex)], f"  solver said: {_clip(' '.join(ex.answer.split()), 200)}"]
    if facts.evaluation:
        out += ["", "Evaluation: " + ", ".join(f"{k} {v}" for k, v in facts.evaluation.items())]
    out += ["", "Feedback since the last digest:"]
    out += [f"- {_feedback_line(n)}" for n in facts.feedback] or ["- none"]
    out += ["", f"Curriculum now: {_curriculum_line(facts)}", f"Health: {_health_line(facts)}", "",
            _how_to_reply(facts)]
    return "\n".join(out) + "\n"


def _calls(ex: Example) -> list[str]:
    """The task's input/output pairs as calls: f('abc') == 'cba'."""
    return [_clip(f"f({i}) == {o}", 200) for i, o in zip(ex.inputs, ex.outputs)]


def _indent(program: str) -> str:
    return "\n".join("    " + line for line in program.splitlines()[:12])


def _short(facts: DigestFacts, headline: str, narrative: str) -> str:
    out = [f"botlab {facts.team} #{facts.number}: {headline}"]
    rows = _type_rows(facts)
    if rows:
        out.append("; ".join(f"{t} solve {s} (P {p} / S {v})" for t, s, _, p, v in rows))
    if facts.valid_rate is not None:
        out.append(f"valid {_pct(facts.valid_rate)}, admitted {_pct(facts.admitted_rate)}")
    out += [f"feedback: {_feedback_line(n)}" for n in facts.feedback]
    out.append(_clip(narrative, 400))
    out.append("Reply: /focus abduction, /harder, /easier, /pause, /resume, /digest or plain words.")
    return "\n".join(out)


def _html(facts: DigestFacts, narrative: str, chart: bytes | None) -> str:
    e = html.escape
    parts = [f"<h2>botlab team {e(facts.team)} &ndash; digest #{facts.number}</h2>", f"<p>{e(narrative)}</p>"]
    if facts.goal:
        parts.append(f"<p><b>Goal:</b> {e(facts.goal)}</p>")
    if chart:
        parts.append(f'<p><img src="cid:{CHART_CID}" alt="solve rates and rewards over steps" width="750"></p>')
    rows = _type_rows(facts)
    if rows:
        head = "".join(f"<th>{h}</th>" for h in ("type", "solve", "change", "proposer reward", "solver reward"))
        body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in rows)
        parts.append(f'<table border="1" cellpadding="4" cellspacing="0"><tr>{head}</tr>{body}</table>')
    if facts.valid_rate is not None:
        parts.append(f"<p>Proposals: {_pct(facts.valid_rate)} valid, {_pct(facts.admitted_rate)} admitted.")
        if facts.rejections:
            parts.append("Top rejection reasons: " + e(", ".join(f"{r} ({n})" for r, n in facts.rejections)))
        parts.append("</p>")
    if facts.examples:
        parts.append("<h3>Examples</h3>")
        for ex in facts.examples:
            calls = "<br>".join(f"<code>{e(call)}</code>" for call in _calls(ex))
            parts.append(f"<p><b>{e(ex.task_type)}</b>, solver reward {ex.reward:+.2f}</p><pre>{e(ex.program)}</pre>"
                         f"<p>{calls}<br>solver said: <code>{e(_clip(' '.join(ex.answer.split()), 200))}</code></p>")
    if facts.evaluation:
        parts.append("<p><b>Evaluation:</b> " + e(", ".join(f"{k} {v}" for k, v in facts.evaluation.items())) + "</p>")
    items = "".join(f"<li>{e(_feedback_line(n))}</li>" for n in facts.feedback) or "<li>none</li>"
    parts.append(f"<h3>Feedback since the last digest</h3><ul>{items}</ul>")
    parts.append(f"<p><b>Curriculum now:</b> {e(_curriculum_line(facts))}<br><b>Health:</b> {e(_health_line(facts))}</p>")
    parts.append(f"<p><i>{e(_how_to_reply(facts))}</i></p>")
    return "<html><body>" + "\n".join(parts) + "</body></html>\n"


def standalone_html(digest: RenderedDigest) -> str:
    """The HTML with the chart embedded as a data: URI, for a file opened in a browser."""
    if not digest.chart_png:
        return digest.html
    data = base64.b64encode(digest.chart_png).decode()
    return digest.html.replace(f"cid:{CHART_CID}", f"data:image/png;base64,{data}")


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
