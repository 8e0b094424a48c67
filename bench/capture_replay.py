"""Builds bench/replay.jsonl, the real-work mix of `botlab bench executor`, from the SQLite stores of self-play runs.

    python -m botlab.bench.capture_replay OUT.jsonl RUN_DIR_OR_SQLITE...

Every proposal the executor validated (table `tasks`: admitted, rejected and invalid alike, duplicates included,
as they were all validated) and every solver answer it checked (table `samples`, role solver, answers parsed with
the solver's own parser; unparseable ones never reach the executor and are left out). Stores are opened
read-only. Each entry's `batch` names the run and step it came from, so the replay calls the executor the way a
step does: one validate_many per step, then one check_all for its answers. Its `category` is the outcome the
sandbox gives it now (under the benchmark's limits), for the per-category table; an answer's `correct` too.
"""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

from botlab.agents.solver import Solver
from botlab.config import ExecutorConfig, SelfPlayConfig
from botlab.rundir import STORE_NAME
from botlab.sandbox import Executor

VISIBLE = 3  # induction_visible of teams/demo-cpu.yaml, where the data comes from: the rest are hidden tests
GATE_REASONS = {"syntax_error", "bad_input", "forbidden_import", "forbidden_call", "forbidden_attribute",
                "forbidden_name", "program_too_large", "input_too_large", "no_inputs"}


def read_store(path: Path, label: str) -> list[dict]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    entries = []
    tasks = {}
    for row in db.execute("SELECT * FROM tasks ORDER BY step, id"):
        tasks[row["id"]] = row
        entries.append({"batch": f"{label}:{row['step']}", "kind": "validate", "task_type": row["task_type"],
                        "program": row["program"], "inputs": json.loads(row["inputs"])})
    solver = Solver(SelfPlayConfig())
    for row in db.execute("SELECT * FROM samples WHERE role = 'solver' AND task_id IS NOT NULL ORDER BY step, id"):
        task = tasks.get(row["task_id"])
        parsed = solver.parse(row["task_type"], row["completion"])
        if task is None or not parsed.ok:
            continue
        outputs, inputs = json.loads(task["outputs"]), json.loads(task["inputs"])
        entry: dict = {"batch": f"{label}:{row['step']}", "task_type": row["task_type"]}
        if row["task_type"] == "deduction":
            entry |= {"kind": "check_output", "gold": outputs[0], "answer": parsed.answer}
        elif row["task_type"] == "abduction":
            entry |= {"kind": "check_input", "program": task["program"], "gold": outputs[0], "answer": parsed.answer}
        else:
            pairs = [list(p) for p in zip(inputs[VISIBLE:], outputs[VISIBLE:])]
            if not pairs:
                continue
            entry |= {"kind": "check_program", "program": parsed.answer, "pairs": pairs}
        entries.append(entry)
    db.close()
    return entries


def categorize(entries: list[dict], timeout_s: float) -> None:
    """Set each entry's `category` (and an answer's `correct`) from what the sandbox makes of it now."""
    from botlab.bench.executor import replay_ours

    with Executor(ExecutorConfig(timeout_s=timeout_s)) as ex:
        validations = [e for e in entries if e["kind"] == "validate"]
        for e, v in zip(validations, ex.validate_many([(e["program"], e["inputs"]) for e in validations])):
            if v.valid:
                e["category"] = "valid"
            elif v.reason in GATE_REASONS:
                e["category"] = "rejected"
            else:
                e["category"] = "timeout" if v.reason == "timeout" else "erroring"
        for e in entries:
            if e["kind"] != "validate":
                e["category"] = f"answer-{e['task_type']}"
                [e["correct"]] = replay_ours(ex, [e])


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    from botlab.bench.executor import TIMEOUT_S

    out, sources = Path(argv[0]), [Path(a) for a in argv[1:]]
    entries = []
    for i, source in enumerate(sources):
        path = source / STORE_NAME if source.is_dir() else source
        entries += read_store(path, f"run{i}")
    categorize(entries, TIMEOUT_S)
    with out.open("w", encoding="utf-8") as fh:
        for e in entries:
            fh.write(json.dumps(e, ensure_ascii=False) + "\n")
    counts: dict[str, int] = {}
    for e in entries:
        counts[e["category"]] = counts.get(e["category"], 0) + 1
    print(f"{len(entries)} entries written to {out}: {counts}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
