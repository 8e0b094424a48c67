"""The `botlab` command. Each command loads what it needs lazily, so `botlab --help` and `validate` stay fast."""

from __future__ import annotations

import datetime as dt
import json
import os
import sys

# Idle OpenMP threads sleep instead of spinning: on a busy 2-core machine spinning made torch up to 6x slower.
# Set before torch is imported anywhere; a user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from botlab.teamfile import TeamFileError, load_team, role_model_problems, secret_problems, unset_secrets

app = typer.Typer(
    help=(
        "botlab: long-lived agent teams that teach a language model to reason by Absolute-Zero self-play.\n\n"
        "Start with `botlab validate teams/demo-cpu.yaml`, then `botlab run teams/demo-cpu.yaml --steps 3`."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
bench_app = typer.Typer(help="Benchmarks that print a ratio against a baseline measured in the same run.")
sandbox_app = typer.Typer(help="Run model-style programs through the sandboxed executor by hand.")
team_app = typer.Typer(help="Look at a team file.")
app.add_typer(bench_app, name="bench")
app.add_typer(sandbox_app, name="sandbox")
app.add_typer(team_app, name="team")

console = Console()
errors = Console(stderr=True)

TeamArg = Annotated[Path, typer.Argument(help="the team file (team.yaml)", show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable output")]

EXIT_USAGE = 2  # bad input: the team file, an argument


def _team(path: Path):
    try:
        return load_team(path)
    except TeamFileError as err:
        errors.print(f"[red]{err.file} is not a valid team file:[/red]", highlight=False)
        for problem in err.problems:
            errors.print(f"  {problem.render(str(err.file))}", highlight=False, markup=False)
        raise typer.Exit(EXIT_USAGE) from None


@app.command()
def validate(
    team_file: Annotated[Optional[Path], typer.Argument(help="the team file (team.yaml)", show_default=False)] = None,
    explain: Annotated[Optional[str], typer.Option(
        "--explain", metavar="KEY", help="print what a team-file key means, its type and default (e.g. "
        "selfplay.solver_samples); no team file needed", show_default=False)] = None,
) -> None:
    """Check a team file; exit 0 if it is valid, else 2 with every error's field path and line. With --explain KEY,
    describe one option instead (exit 2 for a key the team file does not have)."""
    if explain is not None:
        _explain(explain)
        return
    if team_file is None:
        errors.print("give a team file to check, or --explain KEY", highlight=False)
        raise typer.Exit(EXIT_USAGE)
    team = _team(team_file)
    bad_secrets = secret_problems(team)
    if bad_secrets:
        errors.print(f"[red]{team_file}: a secret it names is set but not usable:[/red]", highlight=False)
        for problem in bad_secrets:
            errors.print(f"  {problem.render(str(team_file))}", highlight=False, markup=False)
        raise typer.Exit(EXIT_USAGE)
    _refuse_unusable_role_models(team, team_file)
    console.print(f"[green]{team_file}: valid[/green] (team {team.name!r}, model {team.model.name})", highlight=False)
    for name in unset_secrets(team):
        console.print(f"  note: environment variable {name} is not set here; the run will need it", highlight=False)


def _explain(key: str) -> None:
    from botlab.explain import UnknownKey, explain

    try:
        print(explain(key).render())
    except UnknownKey as err:
        errors.print(f"error: {err}", highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(EXIT_USAGE) from None


@app.command()
def run(
    team_file: TeamArg,
    steps: Annotated[Optional[int], typer.Option(help="exit after this many completed steps (digests flushed)")] = None,
    ignore_plan: Annotated[bool, typer.Option(
        "--ignore-plan", help="start even when `botlab plan` says the run does not fit (the plan is an estimate)")
    ] = False,
) -> None:
    """Run the team: self-play, training, digests and feedback, until stopped (or --steps are done)."""
    team = _team(team_file)
    if steps is not None and steps < 1:
        errors.print("--steps must be at least 1")
        raise typer.Exit(EXIT_USAGE)
    _refuse_unusable_role_models(team, team_file, need_keys=True)
    if not ignore_plan:
        _refuse_what_cannot_fit(team)
    from botlab.daemon import run_team

    raise typer.Exit(run_team(team, steps=steps))


def _refuse_unusable_role_models(team, team_file: Path, need_keys: bool = False) -> None:
    """A reviewer or reporter on a litellm model that cannot work here (litellm missing, a provider litellm does not
    know; with `need_keys`, its api_key_env unset)."""
    bad = role_model_problems(team, need_keys)
    if bad:
        errors.print(f"[red]{team_file}: a role's model cannot be used here:[/red]", highlight=False)
        for problem in bad:
            errors.print(f"  {problem.render(str(team_file))}", highlight=False, markup=False)
        raise typer.Exit(EXIT_USAGE)


def _refuse_what_cannot_fit(team) -> None:
    """Before loading anything: a run whose memory plan does not fit would only fail later, out of memory."""
    from botlab.plan import PlanError, make_plan, render

    try:
        plan = make_plan(team)
    except PlanError as err:  # the model loader gives its own error, or the model is one the plan cannot count
        errors.print(f"note: no memory plan ({err})", highlight=False, markup=False, soft_wrap=True)
        return
    if not plan.fits:
        print(render(plan), file=sys.stderr)
        print("botlab run refuses a plan that does not fit: change the team file as above, or pass --ignore-plan to "
              "start anyway", file=sys.stderr)
        raise typer.Exit(EXIT_USAGE)


@app.command()
def plan(
    team_file: TeamArg,
    gpus: Annotated[Optional[str], typer.Option(
        help="plan for these GPUs instead of model.gpus: COUNTxSIZE, e.g. 4x80GB", show_default=False)] = None,
    as_json: JsonOpt = False,
) -> None:
    """Memory per device of each part of the run (rollout engine, learner); exit 0 if it fits, 2 if not."""
    from botlab.plan import PlanError, make_plan, render

    team = _team(team_file)
    try:
        result = make_plan(team, gpus)
    except PlanError as err:
        errors.print(f"error: {err}", highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(EXIT_USAGE) from None
    if as_json:
        print(json.dumps(result.as_dict(), indent=2))
    else:
        print(render(result))  # plain print: a table that rich would wrap at the terminal's width
    raise typer.Exit(0 if result.fits else EXIT_USAGE)


@app.command()
def status(team_file: TeamArg, as_json: JsonOpt = False) -> None:
    """Show the run's state, step, rewards, solve rates, buffers, digests and pending feedback."""
    from botlab.status import run_status
    from botlab.store import StoreError

    team = _team(team_file)
    try:
        info = run_status(team)
    except StoreError as err:
        errors.print(str(err), highlight=False)
        raise typer.Exit(1) from None
    if as_json:
        print(json.dumps(info, indent=2, default=str))
        return
    _print_status(info)


def _print_status(info: dict) -> None:
    from botlab.reporting.digest import eval_text

    table = Table(title=f"botlab team {info['team']}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()

    def when(ts: float | None) -> str:
        return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"

    def per_type(values: dict) -> str:
        """'deduction 0.25, ...'; nested per-role values print as 'deduction proposer 0.10 solver -0.50'."""
        def fmt(v) -> str:
            if isinstance(v, dict):
                return " ".join(f"{role} {fmt(x)}" for role, x in v.items())
            return "-" if v is None else f"{v:.2f}" if isinstance(v, float) else str(v)

        return ", ".join(f"{k} {fmt(v)}" for k, v in sorted(values.items())) or "-"

    table.add_row("state", info["state"])
    table.add_row("step", f"{info['step']} of {info['total_steps']}")
    if "phase" in info:
        table.add_row("phase", info.get("phase") or "-")
        table.add_row("last step", when(info["last_step_at"]))
        sps = info["seconds_per_step"]
        table.add_row("throughput", f"{sps:.1f} s/step" if sps else "-")
        table.add_row("rewards", per_type(info["rewards"]))
        table.add_row("solve rates", per_type(info["solve_rates"]))
        table.add_row("buffers", per_type(info["buffer_sizes"]))
        digest = info["last_digest"]
        table.add_row("last digest", f"#{digest['id']} at {when(digest['created_at'])}" if digest else "-")
        table.add_row("next digest", when(info["next_digest_at"]))
        table.add_row("pending feedback", str(info["pending_feedback"]))
        table.add_row("unsent messages", str(info["unsent_messages"]))
        for entry in info["nostr_dm_relays"].values():
            table.add_row("nostr DMs", f"to {_clip(entry['npub'], 20)}: " + (
                ", ".join(entry["relays"]) or "none sent, no DM relay list (kind 10050) published"))
        table.add_row("held-out split", per_type(info["heldout_sizes"]))
        table.add_row("held-out scores", "\n".join(f"{suite} {eval_text(e)}" for suite, e in info["held_out"].items())
                      or "-")
        engine = info["engine"] or {}
        table.add_row("engine", engine.get("why") or engine.get("name") or "-")
        table.add_row("errors since start", str(info["errors_since_start"]))
        for key, label in (("resume_state", "resume state"), ("last_checkpoint", "last checkpoint")):
            found = info[key]
            table.add_row(label, "-" if not found else found["path"] + ("" if found["present"] else " (MISSING)"))
        table.add_row("curriculum", _curriculum_text(info["curriculum"]))
        for note in info["recent_feedback"]:
            table.add_row(f"feedback #{note['id']}", f"{when(note['received_at'])} {note['channel']} {note['sender']}: "
                          f"\"{_clip(note['text'])}\" -> {note['response'] or note['status']}")
    table.add_row("run dir", info["run_dir"])
    console.print(table)


def _curriculum_text(c: dict) -> str:
    parts = ["weights " + ", ".join(f"{t} {w:g}" for t, w in c["task_weights"].items()),
             f"difficulty {c['difficulty']:+d}"]
    parts += [f"{t} difficulty {max(-3, min(3, c['difficulty'] + d)):+d}" for t, d in c["type_difficulty"].items() if d]
    parts += ["focus " + ", ".join(c["focus"])] if c["focus"] else []
    parts += [f"reviewer rules: {'; '.join(c['reviewer_rules'])}"] if c["reviewer_rules"] else []
    return "; ".join(parts + (["PAUSED"] if c["paused"] else []))


def _clip(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


@app.command()
def digest(
    team_file: TeamArg,
    send: Annotated[bool, typer.Option("--send", help="also send it through the team's notifiers")] = False,
) -> None:
    """Render the progress digest now (and send it with --send)."""
    team = _team(team_file)
    from botlab.reporting.cli import digest_now

    raise typer.Exit(digest_now(team, send=send, console=console))


@app.command()
def feedback(team_file: TeamArg, text: Annotated[str, typer.Argument(help="what you want the team to change")]) -> None:
    """Steer the team from the terminal: the same path as a reply to a digest by email or Nostr."""
    team = _team(team_file)
    from botlab.reporting.cli import local_feedback

    raise typer.Exit(local_feedback(team, text, console=console))


@app.command()
def inbox(team_file: TeamArg) -> None:
    """Read replies on every channel once, apply them and answer them, without loading a model or training."""
    team = _team(team_file)
    from botlab.reporting.cli import read_inbox

    raise typer.Exit(read_inbox(team, console=console))


@app.command("eval")
def evaluate(
    team_file: TeamArg,
    suite: Annotated[list[str], typer.Option(
        help="heldout (the run's own held-out split), humaneval (shipped), cruxeval-o or cruxeval-i (with --data); "
        "repeat to run several on one loaded model")
    ] = ["heldout"],
    data: Annotated[Optional[Path], typer.Option(help="JSONL file with code/input/output (CRUXEval suites)")] = None,
    limit: Annotated[Optional[int], typer.Option(help="evaluate at most N problems (per task type for heldout)")] = None,
    model: Annotated[Optional[Path], typer.Option(
        help="a model folder to evaluate instead of the run's newest checkpoint (not recorded in the run)")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Held-out evaluation of the team's current model, executed in the sandbox."""
    team = _team(team_file)
    from botlab.evaluation import run_eval_command

    raise typer.Exit(run_eval_command(team, suites=suite, data=data, limit=limit, as_json=as_json, console=console,
                                      model=model))


@app.command()
def seed(
    team_file: TeamArg,
    out: Annotated[Path, typer.Option(help="the seed file to write (JSONL: program, input)")],
    rounds: Annotated[int, typer.Option(min=1, help="seed rounds of the untrained model")] = 20,
) -> None:
    """Write a seed file: the tasks the team's untrained model admits in ROUNDS seed rounds (selfplay.seed_file)."""
    team = _team(team_file)
    from botlab.selfplay.seed_file import generate

    generate(team, out, rounds, console)


@team_app.command("show")
def team_show(team_file: TeamArg) -> None:
    """Each role of the team: its model, tools, prompts file and whether it trains (a table; plain text in a pipe)."""
    team = _team(team_file)
    from botlab.team_show import print_roles

    print_roles(team, console)


@bench_app.command("executor")
def bench_executor(as_json: JsonOpt = False) -> None:
    """Validations/s of the sandbox vs. an unisolated AZR-style executor, on a fixed mixed workload."""
    from botlab.bench.executor import main as bench_main

    raise typer.Exit(bench_main(as_json=as_json))


@bench_app.command("rollout")
def bench_rollout(as_json: JsonOpt = False) -> None:
    """Tokens/s of the vLLM engine vs. the transformers engine on the embedded model, and reload time."""
    from botlab.bench.rollout import main as bench_main

    raise typer.Exit(bench_main(as_json=as_json))


@bench_app.command("agents")
def bench_agents(
    rounds: Annotated[int, typer.Option(min=1, help="generations each way, alternating")] = 5,
    as_json: JsonOpt = False,
) -> None:
    """A demo step's generation through the smolagents role agents vs. the direct batched call (ratio)."""
    from botlab.bench.agents import main as bench_main

    raise typer.Exit(bench_main(rounds=rounds, as_json=as_json))


@bench_app.command("learning")
def bench_learning(
    team_file: TeamArg,
    minutes: Annotated[Optional[float], typer.Option(help="run this long (start no step after it)")] = None,
    steps: Annotated[Optional[int], typer.Option(help="run this many steps")] = None,
    data: Annotated[Optional[Path], typer.Option(help="a CRUXEval-format JSONL file: also score CRUX-O and CRUX-I")] = None,
    window: Annotated[int, typer.Option(help="steps at the start and at the end compared for self-play rates")] = 5,
    humaneval_limit: Annotated[int, typer.Option(help="HumanEval problems scored (0: skip HumanEval)")] = 164,
    run_dir: Annotated[Optional[Path], typer.Option(help="a fresh folder for the run (default: a new temp dir)")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Run TEAM from a fresh run dir, then score the base and the trained model on held-out problems."""
    if (minutes is None) == (steps is None):
        errors.print("give exactly one of --minutes and --steps", soft_wrap=True)
        raise typer.Exit(EXIT_USAGE)
    if (minutes is not None and minutes <= 0) or (steps is not None and steps < 1) or window < 1:
        errors.print("--minutes, --steps and --window must be positive", soft_wrap=True)
        raise typer.Exit(EXIT_USAGE)
    if data is not None and not data.is_file():
        errors.print(f"--data {data}: no such file", soft_wrap=True)
        raise typer.Exit(EXIT_USAGE)
    _team(team_file)  # a bad team file is reported before anything runs
    from botlab.bench.learning import main as bench_main

    raise typer.Exit(bench_main(team_file, steps=steps, minutes=minutes, window=window, data=data,
                                humaneval_limit=humaneval_limit, run_dir=run_dir, as_json=as_json))


@sandbox_app.command("check")
def sandbox_check(
    program: Annotated[Path, typer.Argument(help="a Python file defining f")],
    input_expr: Annotated[str, typer.Option("--input", help="the input as a Python expression, e.g. '[1, 2]'")],
    as_json: JsonOpt = False,
) -> None:
    """Is PROGRAM with INPUT a valid deduction task? Prints the gold output or the rejection reason."""
    from botlab.sandbox.cli import check_command

    raise typer.Exit(check_command(program, input_expr, as_json=as_json, console=console))


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        errors.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
