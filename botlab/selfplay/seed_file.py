"""A seed file: tasks the untrained model proposed in earlier seed rounds, to start a run from (AZR ships one per
model, made the same way).

`botlab seed TEAM.yaml --out FILE --rounds N` runs N seed rounds of the team's untrained model in a scratch run dir
and writes the deduction/abduction tasks they admitted, one JSON object per line: {"program": ..., "input": ...}.
A run with `selfplay.seed_file: FILE` admits them before its own seed rounds, through the same sandbox, reviewer and
held-out split as any proposal (a seed file is model-written code, so nothing in it is trusted), into both program
buffers.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from rich.console import Console

from botlab.config import TeamConfig
from botlab.jsonl import read_text_rows
from botlab.tasks import Triplet, zero_triplet


class SeedFileError(Exception):
    """A seed file that cannot be read; the message names the file and the line."""


def read_seed_file(path: Path) -> list[Triplet]:
    """The file's tasks as deduction triplets without outputs (the sandbox gives those)."""
    return [Triplet(row["program"], [row["input"]], [], "", "deduction")
            for row in read_text_rows(path, ("program", "input"), SeedFileError, blank_ok=False)]


def write_seed_file(path: Path, tasks: list[Triplet]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text("".join(json.dumps({"program": t.program, "input": t.inputs[0]}) + "\n" for t in tasks),
                       encoding="utf-8")
    partial.replace(path)  # a stopped run never leaves half a file under the name


def generate(team: TeamConfig, out: Path, rounds: int, console: Console) -> int:
    """Seed rounds of the untrained model in a scratch run dir; their admitted deduction/abduction tasks go to `out`.
    Returns the number of tasks written."""
    from botlab.engines import create_engine
    from botlab.models import resolve_model
    from botlab.sandbox import Executor
    from botlab.selfplay.step import SelfPlay
    from botlab.store import open_store

    # Every round proposes for every program type however many tasks it has; no held-out split (a run makes its own).
    selfplay = team.selfplay.model_copy(update={"seed_size": 10**9, "heldout_size": 0, "seed_file": None,
                                                "task_types": ["deduction", "abduction"]})
    zero = zero_triplet("deduction").program
    with tempfile.TemporaryDirectory(prefix="botlab-seed-") as scratch:
        team = team.model_copy(update={"selfplay": selfplay, "storage_dir": Path(scratch)})
        console.print(f"loading {team.model.name}", highlight=False, soft_wrap=True)
        engine, _ = create_engine(team.model, resolve_model(team.model.name))
        try:
            with Executor(team.executor) as executor, open_store(team.run_dir) as store:
                play = SelfPlay(team, store, engine, executor, learner=None)
                play.ensure_zero_triplets()
                started = time.time()
                for round_no in range(1, rounds + 1):
                    sizes, outcomes = play.seed_round(round_no)
                    console.print(f"seed round {round_no}/{rounds} ({time.time() - started:.0f} s): "
                                  f"{sizes['deduction']} tasks; {outcomes.get('admitted', 0)} admitted",
                                  highlight=False, soft_wrap=True)
                # Every admitted seed task is in the deduction buffer (records.store_proposal: both buffers).
                tasks = [t for t in play.buffers.tasks("deduction") if t.program != zero]
        finally:
            engine.close()
    write_seed_file(out, tasks)
    console.print(f"wrote {len(tasks)} tasks to {out}", highlight=False, soft_wrap=True)
    return len(tasks)
