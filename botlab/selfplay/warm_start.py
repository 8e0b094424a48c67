"""The warm start: expert iteration on the seed set, once per run, before step 1 (`selfplay.warm_start`).

Each round, the solver answers every buffered task `samples_per_task` times with the step's own prompts and priming,
the sandbox checks every answer (checking.py), and the correct ones (at most `max_per_task` distinct replies per task)
are trained by supervised fine-tuning with TRL's SFTTrainer on the learner's own module: the same token ids, with the
same mask, that a step would train, so the solver learns its formats and the seed tasks it can already solve
sometimes. A wrong or unreadable answer never reaches the fine-tuning set. Only buffered tasks are answered: held-out
tasks never enter a buffer (heldout.py). The rollout engine then gets the new weights, as after a step.

What each round trained on is written to RUN_DIR/warm_start/round-N.jsonl, for inspection.
"""

from __future__ import annotations

import copy
import json
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from botlab.config import WarmStartConfig
from botlab.rundir import RESUME_KEY, WARM_START_DONE_KEY
from botlab.selfplay.checkpoints import save_checkpoint, save_resume_state
from botlab.selfplay.generation import Sample
from botlab.selfplay.learner import Learner


@dataclass
class RoundReport:
    round: int
    sampled: Counter = field(default_factory=Counter)  # per task type
    correct: Counter = field(default_factory=Counter)
    trained: list[Sample] = field(default_factory=list)  # verified and distinct: the fine-tuning set
    fine_tune: dict[str, float] = field(default_factory=dict)  # loss, token accuracy, updates
    seconds: float = 0.0

    def describe(self) -> str:
        rates = ", ".join(f"{t} {self.correct[t]}/{n}" for t, n in sorted(self.sampled.items()))
        loss = self.fine_tune.get("loss")
        trained = f"fine-tuned on {len(self.trained)}" + (f" (loss {loss:.3f})" if loss is not None else "")
        return f"warm start round {self.round}: correct {rates}; {trained}; {self.seconds:.0f} s"


def verified(samples: list[Sample], max_per_task: int) -> list[Sample]:
    """The correct samples, at most `max_per_task` distinct replies (by token ids) per task, in sampling order."""
    kept: list[Sample] = []
    seen: dict[int | None, set[tuple[int, ...]]] = {}
    for s in samples:
        if not (s.reward and s.reward.parts.get("correct")) or not s.completion.token_ids:
            continue
        replies = seen.setdefault(s.task.id, set())
        reply = tuple(s.completion.token_ids)
        if reply in replies or len(replies) >= max_per_task:
            continue
        replies.add(reply)
        kept.append(s)
    return kept


def sft_rows(samples: list[Sample]) -> list[dict]:
    """Pre-tokenized rows for SFTTrainer: the prompt (with the primed opening) and the loop-written openings inside
    the reply carry the label -100, so only what the solver sampled is learned."""
    rows = []
    for s in samples:
        mask = s.train_mask or [1.0] * len(s.completion.token_ids)
        labels = [-100] * len(s.prompt_ids) + [t if m else -100 for t, m in zip(s.completion.token_ids, mask)]
        rows.append({"input_ids": s.prompt_ids + s.completion.token_ids, "labels": labels})
    return rows


def fine_tune(learner: Learner, tokenizer, samples: list[Sample], cfg: WarmStartConfig, bf16: bool,
              seed: int) -> dict[str, float]:
    """Supervised fine-tuning of the learner's own module with TRL's SFTTrainer (its own AdamW: the learner's
    optimizer state is left as it was). Changes the weights in place."""
    from datasets import Dataset
    from transformers import PrinterCallback
    from trl import SFTConfig, SFTTrainer

    model = learner.shareable_model()
    with tempfile.TemporaryDirectory(prefix="botlab-warm-start-") as scratch:
        args = SFTConfig(
            output_dir=scratch, save_strategy="no", report_to="none", disable_tqdm=True, logging_steps=1,
            num_train_epochs=cfg.epochs, per_device_train_batch_size=cfg.batch_size, learning_rate=cfg.lr,
            lr_scheduler_type="constant", weight_decay=0.0, max_grad_norm=learner.cfg.grad_clip,
            bf16=bf16, use_cpu=learner.device.type == "cpu", seed=seed,
            # The learner set up checkpointing (or not) on this module already; the ids are already tokenized.
            gradient_checkpointing=False, max_length=None,
        )
        trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(sft_rows(samples)),
                             processing_class=copy.deepcopy(tokenizer))  # SFTTrainer may set its pad token
        trainer.remove_callback(PrinterCallback)  # the console gets one line per round instead
        output = trainer.train()
        logs = [entry for entry in trainer.state.log_history if "mean_token_accuracy" in entry]
    model.train()  # as the learner keeps it
    return {"loss": output.training_loss, "updates": output.global_step,
            "token_accuracy": logs[-1]["mean_token_accuracy"] if logs else float("nan")}


def run_round(selfplay, round_no: int, cfg: WarmStartConfig, on_phase: Callable[[str], None]) -> RoundReport:
    """Sample and check answers to every buffered task, fine-tune on the verified ones, give the engine the new
    weights."""
    started = time.perf_counter()
    report = RoundReport(round_no)
    solver_cfg = selfplay.team.roles.solver
    if cfg.temperature is not None:
        solver_cfg = solver_cfg.model_copy(update={"temperature": cfg.temperature})
    # Every buffered task (the held-out split is never in a buffer).
    tasks = {t: selfplay.buffers.tasks(t) for t in selfplay.cfg.task_types}
    on_phase("sample and check")
    samples = selfplay.solve(tasks, n=cfg.samples_per_task, role_cfg=solver_cfg)
    for s in samples:
        report.sampled[s.task_type] += 1
        report.correct[s.task_type] += bool(s.reward.parts.get("correct"))
    report.trained = verified(samples, cfg.max_per_task)
    write_round(selfplay.team.run_dir, report)
    if report.trained:
        engine, learner = selfplay.engine, selfplay.learner
        on_phase("fine-tune")
        if not engine.shares_learner:
            engine.sleep()
        report.fine_tune = fine_tune(learner, engine.tokenizer, report.trained, cfg,
                                     bf16=selfplay.team.train.bf16_autocast, seed=selfplay.team.train.seed + round_no)
        if not engine.shares_learner:
            on_phase("sync")
            engine.wake_up()
            engine.load_weights(learner.named_weights())
    report.seconds = time.perf_counter() - started
    return report


def write_round(run_dir: Path, report: RoundReport) -> None:
    """What the round fine-tuned on: the task, the reply as the solver's parser read it, and the parsed answer."""
    folder = run_dir / "warm_start"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"round-{report.round}.jsonl", "w", encoding="utf-8") as out:
        for s in report.trained:
            out.write(json.dumps({"task_id": s.task.id, "task_type": s.task_type, "prompt": s.prompt_text,
                                  "reply": s.text, "answer": s.answer.answer}) + "\n")


def metrics(rounds: list[RoundReport]) -> dict[str, float]:
    """warm_start/* metrics of the whole warm start (recorded at step 0)."""
    sampled = sum((r.sampled for r in rounds), Counter())
    correct = sum((r.correct for r in rounds), Counter())
    out = {"warm_start/rounds": len(rounds), "warm_start/sampled": sum(sampled.values()),
           "warm_start/correct": sum(correct.values()), "warm_start/trained": sum(len(r.trained) for r in rounds),
           "warm_start/seconds": sum(r.seconds for r in rounds)}
    out |= {f"warm_start/solve_rate/{t}": correct[t] / n for t, n in sampled.items() if n}
    tuned = [r.fine_tune for r in rounds if r.fine_tune]
    if tuned:
        out |= {"warm_start/loss": tuned[-1]["loss"], "warm_start/token_accuracy": tuned[-1]["token_accuracy"],
                "warm_start/updates": sum(f["updates"] for f in tuned)}
    return out


def save(selfplay, rounds: list[RoundReport]) -> dict[str, float]:
    """Make the warm start durable: its weights become step 0's resume state (a restart resumes from them and never
    warm-starts again) and checkpoint (`botlab eval --model RUN/checkpoints/step-000000` scores the warm start
    alone); when no round found a correct answer the weights are the base model's and nothing is written. Returns
    its metrics, recorded at step 0."""
    team, store = selfplay.team, selfplay.store
    state = None
    if any(r.trained for r in rounds):
        state = save_resume_state(team.run_dir, 0, selfplay.learner)
        save_checkpoint(team.run_dir, 0, selfplay.learner, selfplay.engine.tokenizer, state)
    values = metrics(rounds)
    with store.transaction():
        store.record_metrics(0, values)
        if state is not None:
            store.put(RESUME_KEY, store.relative(state))
        store.put(WARM_START_DONE_KEY, True)
    return values
