"""One Absolute-Zero self-play step: propose, validate, review, learnability, solve, learn, commit.

The phases read top to bottom in `SelfPlay.run_step`. Model-written code never runs here: it goes to the sandbox.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Callable

from botlab.agents.priming import Segment
from botlab.agents.proposer import Proposer
from botlab.agents.reviewer import Reviewer, fingerprint
from botlab.agents.solver import Solver
from botlab.config import TeamConfig, TaskType
from botlab.curriculum import Curriculum, load_curriculum
from botlab.engines import Completion, Engine, Sampling
from botlab.sandbox import Executor
from botlab.selfplay.buffers import Buffers, insert_task
from botlab.selfplay import heldout
from botlab.selfplay.checking import check_answers
from botlab.selfplay.learner import Learner, Rollout
from botlab.selfplay.rewards import Reward, proposer_reward, solver_reward
from botlab.selfplay.trr import trr_advantages
from botlab.store import Store
from botlab.tasks import Triplet, zero_triplet

log = logging.getLogger(__name__)

PhaseCallback = Callable[[str], None]
# A generation request: the task type, the chat messages, and the primed reply's parts ([] when not primed).
Prompt = tuple[TaskType, list[dict], list[Segment]]


@dataclass
class Sample:
    """A generated turn with its reward: what gets trained and stored."""

    role: str
    task_type: TaskType
    prompt_ids: list[int]
    prompt_text: str
    completion: Completion
    temperature: float
    reward: Reward | None = None
    task: Triplet | None = None
    answer: object = None  # the solver's parsed answer, once checked
    prefix: str = ""  # the primed opening of the reply (part of the prompt, not of the sampled tokens)
    train_mask: list[float] | None = None  # 0 on completion tokens the loop inserted
    suffix: str = ""  # the closing of the reply's last part, when the model reached its stop string

    @property
    def text(self) -> str:
        """The reply as the role's parser reads it."""
        return self.prefix + self.completion.text + self.suffix


@dataclass
class Proposal:
    sample: Sample
    parse_ok: bool
    reason: str | None
    triplet: Triplet | None = None
    valid: bool = False
    admitted: bool = False
    heldout: bool = False  # admitted, but set aside for the held-out split (selfplay/heldout.py): never trained on
    solve_rate: float | None = None


@dataclass
class StepReport:
    step: int
    timings: dict[str, float] = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    proposals: list[Proposal] = field(default_factory=list)  # what commit() writes
    solutions: list[Sample] = field(default_factory=list)


class SelfPlay:
    def __init__(self, team: TeamConfig, store: Store, engine: Engine, executor: Executor,
                 learner: Learner | None, reviewer_model=None):
        self.team = team
        self.cfg = team.selfplay
        self.store = store
        self.engine = engine
        self.executor = executor
        self.learner = learner
        self.buffers = Buffers(store, team.selfplay)
        self.proposer = Proposer(team.selfplay, team.goal)
        self.solver = Solver(team.selfplay)
        self.reviewer = Reviewer(team.roles.reviewer, executor, team.goal, model=reviewer_model)
        self.generated_tokens = 0

    # --- seeding ----------------------------------------------------------------------------------------------------

    def ensure_zero_triplets(self) -> None:
        """Every buffer starts from AZR's zero triplet (identity on 'Hello world'), verified by the sandbox."""
        if self.store.scalar("SELECT COUNT(*) FROM buffers"):
            return
        with self.store.transaction() as db:
            for task_type in self.cfg.task_types:
                triplet = zero_triplet(task_type)
                if task_type == "induction":
                    triplet.inputs = ["'Hello world'", "[1, 2]", "7", "'abc'", "(3, 'x')", "{'k': 1}",
                                      "-2", "''", "[[0]]", "True"][: self.cfg.induction_inputs]
                    triplet.message = "The function gives back exactly what it receives."
                [check] = self.executor.validate_many([(triplet.program, triplet.inputs)])
                if not check.valid:
                    raise RuntimeError(f"the sandbox rejected the zero triplet: {check.reason} {check.detail}")
                triplet.outputs = check.outputs
                task_id = insert_task(db, -1, triplet, "admitted", None, fingerprint=fingerprint(triplet.program))
                self.buffers.add(db, task_type, task_id, -1)

    def needs_seeding(self) -> bool:
        return any(self.buffers.size(t) < self.cfg.seed_size for t in self.cfg.task_types)

    def seed_round(self, round_no: int, on_phase: PhaseCallback = lambda p: None) -> tuple[dict[str, int], Counter]:
        """Propose with the untrained model (no update) and admit what is valid, as AZR does before step 1."""
        rng = random.Random(f"{self.team.train.seed}-seed-{round_no}")
        curriculum = load_curriculum(self.store)
        on_phase("seed: propose")
        proposals = self._propose(curriculum, rng, seeding=True, temperature=self.cfg.seed_temperature)
        on_phase("seed: validate")
        self._validate(proposals)
        on_phase("seed: review")
        self._review(proposals, curriculum)
        with self.store.transaction() as db:
            for p in proposals:
                self._store_proposal(db, -1, p)
        return self.buffers.sizes(), Counter("heldout" if p.heldout else p.reason or "admitted" for p in proposals)

    # --- the step ---------------------------------------------------------------------------------------------------

    def run_step(self, step: int, on_phase: PhaseCallback = lambda p: None) -> StepReport:
        report = StepReport(step)
        rng = random.Random(f"{self.team.train.seed}-{step}")
        curriculum = load_curriculum(self.store)
        start_tokens = self.generated_tokens
        clock = _PhaseClock(report.timings, on_phase)

        # Solver tasks come from the buffers as they were before this step's proposals (as in AZR).
        solve_tasks = {t: self.buffers.solver_batch(t, self._share(t, self.cfg.solve_batch, curriculum), rng)
                       for t in self._active_types(curriculum)}

        with clock("propose"):
            proposals = self._propose(curriculum, rng)
        with clock("validate"):
            self._validate(proposals)
        with clock("review"):
            self._review(proposals, curriculum)
        with clock("learnability"):
            self._measure_learnability(proposals)
        for p in proposals:
            p.sample.reward = proposer_reward(
                parsed=p.parse_ok, valid=p.valid, admitted=p.admitted, solve_rate=p.solve_rate, reason=p.reason,
                format_penalty=self.team.train.format_penalty, wrong_penalty=self.team.train.wrong_penalty,
            )
        with clock("solve"):
            solutions = self._solve(solve_tasks)
        samples = [p.sample for p in proposals if not p.heldout] + solutions
        syncs = self.learner is not None and not self.engine.shares_learner
        with clock("learn"):
            if syncs:
                self.engine.sleep()  # frees the engine's accelerator memory for the learner (model.sleep_mode)
            train_stats = self._learn(samples)
        with clock("sync"):
            if syncs:
                self.engine.wake_up()
                self.engine.load_weights(self.learner.named_weights())

        report.summary, report.metrics = self._summarise(proposals, solutions, train_stats, report.timings,
                                                         self.generated_tokens - start_tokens)
        report.proposals, report.solutions = proposals, solutions
        return report

    def commit(self, report: StepReport, started_at: float, extra_writes: Callable | None = None) -> None:
        """Write the whole step in one transaction: tasks, buffers, samples (dropping those older than
        schedules.keep_samples_steps), metrics and the step row."""
        proposals, solutions = report.proposals, report.solutions
        now = time.time()
        with self.store.transaction() as db:
            for p in proposals:
                self._store_proposal(db, report.step, p)
            for s in [p.sample for p in proposals if not p.heldout] + solutions:
                db.execute(
                    "INSERT INTO samples(step, role, task_type, task_id, prompt, completion, reward, parts) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (report.step, s.role, s.task_type, s.task.id if s.task else None, s.prompt_text[-4000:],
                     s.text, s.reward.value, json.dumps(s.reward.parts, default=str)),
                )
            for name, value in report.metrics.items():
                db.execute("INSERT OR REPLACE INTO metrics(step, name, value, at) VALUES (?, ?, ?, ?)",
                           (report.step, name, float(value), now))
            db.execute(
                "INSERT INTO steps(step, started_at, finished_at, weight_version, timings, summary) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (report.step, started_at, now, self.engine.weight_version, json.dumps(report.timings),
                 json.dumps(report.summary)),
            )
            keep = self.team.schedules.keep_samples_steps
            if keep:
                db.execute("DELETE FROM samples WHERE step <= ?", (report.step - keep,))
            if extra_writes is not None:
                extra_writes(db)

    # --- phases -----------------------------------------------------------------------------------------------------

    def _active_types(self, curriculum: Curriculum) -> list[TaskType]:
        return [t for t in self.cfg.task_types if curriculum.task_weights.get(t, 1.0) > 0]

    def _share(self, task_type: TaskType, batch: int, curriculum: Curriculum) -> int:
        """Per-type count: the curriculum's weights move the batch between types, keeping the total."""
        active = self._active_types(curriculum)
        weights = {t: curriculum.task_weights.get(t, 1.0) for t in active}
        total = sum(weights.values())
        return max(1, round(batch * len(active) * weights[task_type] / total)) if total else 0

    def _propose(self, curriculum: Curriculum, rng: random.Random, seeding: bool = False,
                 temperature: float | None = None) -> list[Proposal]:
        prompts: list[Prompt] = []
        programs: list[Triplet | None] = []
        role_cfg = self.team.roles.proposer
        if temperature is not None:
            role_cfg = role_cfg.model_copy(update={"temperature": temperature})
        for task_type in self._active_types(curriculum):
            if seeding and self.buffers.size(task_type) >= self.cfg.seed_size:
                continue
            for _ in range(self._share(task_type, self.cfg.propose_batch, curriculum)):
                program = None
                if task_type == "induction":
                    program = self.buffers.program_for_induction(rng)
                    if program is None:
                        continue
                    references = [program]
                else:
                    references = self.buffers.references(task_type, self.cfg.references, rng)
                messages = self._fitting_messages(task_type, references, curriculum, role_cfg.max_new_tokens)
                if messages is None:
                    continue
                parts = self.proposer.primed(task_type) if role_cfg.prime_answer else []
                prompts.append((task_type, messages, parts))
                programs.append(program)
        samples = self._generate("proposer", prompts, role_cfg, n=1)
        proposals = []
        for (task_type, _, _), program, [sample] in zip(prompts, programs, samples):
            parsed = self.proposer.parse(task_type, sample.text, program=program and program.program)
            proposal = Proposal(sample, parsed.ok, parsed.reason)
            if parsed.ok:
                if task_type == "induction":
                    proposal.triplet = Triplet(program.program, parsed.inputs, [], parsed.message, task_type)
                else:
                    proposal.triplet = Triplet(parsed.program, parsed.inputs[:1], [], "", task_type)
            proposals.append(proposal)
        return proposals

    def _fitting_messages(self, task_type: TaskType, references: list[Triplet], curriculum: Curriculum,
                          budget: int) -> list[dict] | None:
        """The proposer's messages with as many references as leave room for the reply within max_model_len (the
        longest go first, as AZR resamples a prompt that is too long); None when even the bare prompt is too long
        (an induction program)."""
        references = list(references)
        while True:
            messages = self.proposer.messages(task_type, references, curriculum)
            if len(self.engine.chat_prompt_ids(messages)) + budget < self.engine.max_model_len:
                return messages
            if task_type == "induction" or not references:
                log.warning("a %s proposer prompt is too long for model.max_model_len even without references",
                            task_type)
                return None
            references.remove(max(references, key=lambda r: len(r.program) + len(r.inputs[0]) + len(r.outputs[0])))

    def _validate(self, proposals: list[Proposal]) -> None:
        todo = [p for p in proposals if p.triplet is not None]
        results = self.executor.validate_many([(p.triplet.program, p.triplet.inputs) for p in todo])
        for p, result in zip(todo, results):
            p.valid = result.valid
            if result.valid:
                p.triplet.outputs = result.outputs
            else:
                p.reason = result.reason

    def _review(self, proposals: list[Proposal], curriculum: Curriculum) -> None:
        by_type: dict[TaskType, list[Proposal]] = defaultdict(list)
        for p in proposals:
            if p.valid:
                by_type[p.triplet.task_type].append(p)
        taken = heldout.programs(self.store)  # held-out programs count as taken for every type
        splitter = heldout.Splitter(self.store, self.cfg)
        for task_type, group in by_type.items():
            verdicts = self.reviewer.review(task_type, [p.triplet for p in group],
                                            self.buffers.programs(task_type) + taken, curriculum.reviewer_rules)
            for p, verdict in zip(group, verdicts):
                p.admitted = verdict.admit
                if not verdict.admit:
                    p.reason = verdict.reason
                elif splitter.take(p.triplet, fingerprint(p.triplet.program)):
                    p.admitted, p.heldout = False, True

    def _measure_learnability(self, proposals: list[Proposal]) -> None:
        """n solver samples per admitted task at the training temperature; used for the reward only."""
        admitted = [p for p in proposals if p.admitted]
        if not admitted:
            return
        n = self.cfg.learnability_rollouts
        prompts = [self._solver_prompt(p.triplet) for p in admitted]
        groups = self._generate("solver", prompts, self.team.roles.solver, n=n)
        for p, group in zip(admitted, groups):
            for s in group:
                s.task = p.triplet
            correct = self._check(group)
            p.solve_rate = sum(correct) / len(correct)

    def _solve(self, tasks: dict[TaskType, list[Triplet]]) -> list[Sample]:
        prompts, owners = [], []
        for task_type, batch in tasks.items():
            for task in batch:
                prompts.append(self._solver_prompt(task))
                owners.append(task)
        groups = self._generate("solver", prompts, self.team.roles.solver, n=self.cfg.solver_samples)
        samples = []
        for group, task in zip(groups, owners):
            for sample in group:
                sample.task = task
                samples.append(sample)
        correct = self._check(samples)
        for sample, ok in zip(samples, correct):
            parsed = sample.answer
            sample.reward = solver_reward(parsed=parsed.ok, correct=ok, reason=parsed.reason,
                                          format_penalty=self.team.train.format_penalty,
                                          wrong_penalty=self.team.train.wrong_penalty)
        return samples

    def _check(self, samples: list[Sample]) -> list[bool]:
        """Verify solver answers in the sandbox; unparseable answers are wrong."""
        for s in samples:
            s.answer = self.solver.parse(s.task_type, s.text)
        return check_answers(self.executor, self.cfg.induction_visible, [(s.task, s.answer) for s in samples])

    def _learn(self, samples: list[Sample]) -> dict[str, float]:
        if self.learner is None:
            return {}
        trained = [s for s in samples if s.completion.token_ids]
        advantages = trr_advantages(
            [s.reward.value for s in trained], [(s.task_type, s.role) for s in trained],
            [len(s.completion.token_ids) for s in trained],
        )
        rollouts = [Rollout(s.prompt_ids, s.completion.token_ids, s.completion.logprobs, a, s.temperature,
                            s.train_mask) for s, a in zip(trained, advantages)]
        batch_tokens = sum(len(r.completion_ids) for r in rollouts)
        if self.team.train.entropy_coef == 0 and self.team.train.kl_coef == 0:
            # A zero advantage (a task type and role whose rewards were all equal) adds nothing to the gradient:
            # no forward or backward pass for it; the token mean still counts the whole batch.
            rollouts = [r for r in rollouts if r.advantage != 0]
        stats = self.learner.train_step(rollouts, batch_tokens=batch_tokens) if rollouts else {}
        return stats | {"skipped_sequences": len(trained) - len(rollouts)}

    # --- helpers ----------------------------------------------------------------------------------------------------

    def _solver_prompt(self, task: Triplet) -> Prompt:
        primed = self.team.roles.solver.prime_answer
        parts = self.solver.primed(task.task_type, task) if primed else []
        return task.task_type, self.solver.messages(task.task_type, task), parts

    def _generate(self, role: str, prompts: list[Prompt], role_cfg, n: int) -> list[list[Sample]]:
        """Batched engine calls, one per reply part. A primed reply (agents/priming.py) starts inside its first
        block; the loop opens each later part once the model closed the one before."""
        if not prompts:
            return []
        ids, samplings = [], []
        for _, messages, parts in prompts:
            opening = self._encode(parts[0].opening) if parts else []
            ids.append(self.engine.chat_prompt_ids(messages) + opening)
            samplings.append(Sampling(n=n, temperature=role_cfg.temperature, top_p=role_cfg.top_p,
                                      max_tokens=_budget(parts[0] if parts else None, role_cfg),
                                      stop=[parts[0].stop] if parts else []))
        outputs = self.engine.generate(ids, samplings)
        groups = []
        for (task_type, messages, parts), prompt_ids, completions in zip(prompts, ids, outputs):
            self.generated_tokens += sum(len(c.token_ids) for c in completions)
            closed = parts[0].parsed_closing if parts else ""
            groups.append([
                Sample(role, task_type, prompt_ids, messages[-1]["content"], c, role_cfg.temperature,
                       prefix=parts[0].opening if parts else "",
                       suffix=closed if self.engine.stopped_at_string(c) else "")
                for c in completions
            ])
        for k in range(1, max(len(parts) for _, _, parts in prompts)):
            # A non-empty suffix says the previous part reached its stop string; the others stay as they ended.
            todo = [(s, parts[k]) for (_, _, parts), group in zip(prompts, groups) if len(parts) > k
                    for s in group if s.suffix]
            self._continue(todo, role_cfg)
        return groups

    def _continue(self, todo: list[tuple[Sample, Segment]], role_cfg) -> None:
        """Open the next part of each reply and let the model write it.

        The opening's tokens are part of the trained sequence with a zero mask: the policy is trained on what it
        sampled, never on what the loop wrote for it.
        """
        if not todo:
            return
        ids, samplings, openings = [], [], []
        for s, part in todo:
            openings.append(self._encode(part.opening))
            ids.append(s.prompt_ids + s.completion.token_ids + openings[-1])
            samplings.append(Sampling(n=1, temperature=role_cfg.temperature, top_p=role_cfg.top_p,
                                      max_tokens=_budget(part, role_cfg), stop=[part.stop]))
        outputs = self.engine.generate(ids, samplings)
        for (s, part), opening, [tail] in zip(todo, openings, outputs):
            head = s.completion
            self.generated_tokens += len(tail.token_ids)
            s.completion = Completion(
                text=head.text + s.suffix + part.opening + tail.text,
                token_ids=head.token_ids + opening + tail.token_ids,
                logprobs=head.logprobs + [0.0] * len(opening) + tail.logprobs,
                finish_reason=tail.finish_reason,
            )
            mask = s.train_mask or [1.0] * len(head.token_ids)
            s.train_mask = mask + [0.0] * len(opening) + [1.0] * len(tail.token_ids)
            s.suffix = part.parsed_closing if self.engine.stopped_at_string(tail) else ""

    def _encode(self, text: str) -> list[int]:
        return self.engine.tokenizer.encode(text, add_special_tokens=False)

    def _store_proposal(self, db, step: int, p: Proposal) -> None:
        if p.triplet is None:
            p.sample.task = None
            return
        status = "admitted" if p.admitted else heldout.STATUS if p.heldout else "rejected" if p.valid else "invalid"
        learn = None if p.solve_rate is None else 1.0 - p.solve_rate
        task_id = insert_task(db, step, p.triplet, status, p.reason, learn, fingerprint(p.triplet.program))
        p.triplet.id = task_id
        p.sample.task = p.triplet
        if p.admitted:
            self.buffers.add(db, p.triplet.task_type, task_id, step)

    def _summarise(self, proposals: list[Proposal], solutions: list[Sample], train_stats: dict,
                   timings: dict[str, float], tokens: int) -> tuple[dict, dict[str, float]]:
        types = sorted({p.sample.task_type for p in proposals} | {s.task_type for s in solutions})
        rewards, solve_rates, metrics = {}, {}, {}
        for t in types:
            prop = [p.sample.reward.value for p in proposals if p.sample.task_type == t and not p.heldout]
            sol = [s for s in solutions if s.task_type == t]
            rewards[t] = {"proposer": _mean(prop), "solver": _mean([s.reward.value for s in sol])}
            solve_rates[t] = _mean([1.0 if s.reward.parts.get("correct") else 0.0 for s in sol])
            for role, value in rewards[t].items():
                if value is not None:
                    metrics[f"reward/{role}/{t}"] = value
            if solve_rates[t] is not None:
                metrics[f"solve_rate/{t}"] = solve_rates[t]
            metrics[f"buffer_size/{t}"] = self.buffers.size(t)
        for t, n in heldout.counts(self.store).items():
            metrics[f"heldout_size/{t}"] = n
        n = len(proposals) or 1
        valid_rate = sum(p.valid for p in proposals) / n
        admitted_rate = sum(p.admitted for p in proposals) / n
        format_rate = {
            "proposer": sum(p.parse_ok for p in proposals) / n,
            "solver": _mean([1.0 if s.reward.parts.get("parsed") else 0.0 for s in solutions]),
        }
        rejections = Counter(p.reason for p in proposals if p.reason and not p.admitted)
        seconds = sum(timings.get(k, 0.0) for k in ("propose", "learnability", "solve"))
        tps = tokens / seconds if seconds > 0 else None
        metrics |= {"valid_rate": valid_rate, "admitted_rate": admitted_rate, "generated_tokens": tokens,
                    "format_rate/proposer": format_rate["proposer"]}
        if format_rate["solver"] is not None:
            metrics["format_rate/solver"] = format_rate["solver"]
        if tps:
            metrics["tokens_per_second"] = tps
        metrics |= {f"train/{k}": v for k, v in train_stats.items() if isinstance(v, (int, float)) and math.isfinite(v)}
        metrics |= {f"time/{k}": v for k, v in timings.items()}
        summary = {
            "rewards": rewards, "solve_rates": solve_rates, "valid_rate": valid_rate, "admitted_rate": admitted_rate,
            "format_rate": format_rate, "rejections": dict(rejections.most_common(10)), "tokens_per_second": tps,
            "proposals": len(proposals), "heldout": sum(p.heldout for p in proposals), "solved": len(solutions),
        }
        return summary, metrics


def _budget(part: Segment | None, role_cfg) -> int:
    """A part's token budget: its own limit when it has one, never more than the role's max_new_tokens."""
    if part is None or part.max_tokens is None:
        return role_cfg.max_new_tokens
    return min(part.max_tokens, role_cfg.max_new_tokens)


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


class _PhaseClock:
    """`with clock("propose"):` times a phase and announces it."""

    def __init__(self, timings: dict[str, float], on_phase: PhaseCallback):
        self.timings = timings
        self.on_phase = on_phase

    def __call__(self, phase: str) -> "_PhaseClock":
        self.phase = phase
        return self

    def __enter__(self) -> None:
        self.on_phase(self.phase)
        self.started = time.perf_counter()

    def __exit__(self, *exc) -> None:
        self.timings[self.phase] = time.perf_counter() - self.started
