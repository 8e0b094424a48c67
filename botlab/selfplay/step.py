"""One Absolute-Zero self-play step: propose, validate, review, learnability, solve, learn, then save and commit.

The phases read top to bottom in `SelfPlay.run_step`; `save_state` and `commit` make the step durable. Model-written
code never runs here: it goes to the sandbox. How replies are generated is in generation.py, what a step reports
in summary.py.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections import Counter, defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, Iterator

from botlab.agents.proposer import Proposer
from botlab.agents.reviewer import Reviewer, fingerprint
from botlab.agents.solver import Solver
from botlab.config import SamplingConfig, TeamConfig, TaskType
from botlab.curriculum import Curriculum, load_curriculum
from botlab.engines import Engine
from botlab.rundir import RESUME_KEY
from botlab.sandbox import Executor
from botlab.selfplay.buffers import PROGRAM_TYPES, Buffers, insert_task
from botlab.selfplay import heldout, seeding
from botlab.selfplay.checking import check_answers
from botlab.selfplay.checkpoints import save_checkpoint, save_resume_state
from botlab.selfplay.generation import Ask, Generator, Prompt, Sample
from botlab.selfplay.learner import Learner, Rollout
from botlab.selfplay.proposals import Proposal, read_proposal, revision_messages
from botlab.selfplay.records import insert_sample, store_proposal
from botlab.selfplay.rewards import proposer_reward, solver_reward
from botlab.selfplay.summary import StepSummary, summarise
from botlab.selfplay.trr import baseline_group, trr_advantages
from botlab.store import Store
from botlab.tasks import Triplet, output_kind, zero_triplet

log = logging.getLogger(__name__)

HINTED_KINDS = ("str", "list", "tuple", "dict", "set")  # a first character that names the kind, never the value

PhaseCallback = Callable[[str], None]


@dataclass
class StepReport:
    step: int
    timings: dict[str, float] = field(default_factory=dict)
    summary: StepSummary = field(default_factory=StepSummary)
    metrics: dict[str, float] = field(default_factory=dict)
    proposals: list[Proposal] = field(default_factory=list)  # what commit() writes
    solutions: list[Sample] = field(default_factory=list)
    resume_state: Path | None = None  # written by save_state(), named by commit()
    checkpoint: Path | None = None


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
        self.generator = Generator(engine)

    # --- seeding ----------------------------------------------------------------------------------------------------

    def ensure_zero_triplets(self) -> None:
        """Every buffer starts from AZR's zero triplet (identity on 'Hello world'), verified by the sandbox."""
        if self.store.scalar("SELECT COUNT(*) FROM buffers"):
            return
        with self.store.transaction() as db:
            for task_type in self.cfg.task_types:
                triplet = zero_triplet(task_type, self.cfg.induction_inputs)
                [check] = self.executor.validate_many([(triplet.program, triplet.inputs)])
                if not check.valid:
                    raise RuntimeError(f"the sandbox rejected the zero triplet: {check.reason} {check.detail}")
                triplet.outputs = check.outputs
                task_id = insert_task(db, -1, triplet, "admitted", None, fingerprint=fingerprint(triplet.program))
                self.buffers.add(db, task_type, task_id, -1)

    def needs_seeding(self) -> bool:
        return any(self.buffers.size(t) < self.cfg.seed_size for t in self.cfg.task_types)

    def seed_round(self, round_no: int, on_phase: PhaseCallback = lambda p: None) -> tuple[dict[str, int], Counter]:
        """Propose with the untrained model (no update) and admit what is valid, as AZR does before step 1. The
        proposer agents' tool runs (and, with roles.proposer.revise, revises) in the proposing round; inputs from the
        model's calls (selfplay.seed_call_inputs) then mend what still failed for its input."""
        rng = random.Random(f"{self.team.train.seed}-seed-{round_no}")
        curriculum = load_curriculum(self.store)
        on_phase("seed: propose")
        proposals, _ = self._propose(curriculum, rng, seeding=True, temperature=self.cfg.seed_temperature)
        if self.cfg.seed_call_inputs:
            on_phase("seed: inputs")
            seeding.inputs_from_calls(self.proposer, self.generator, self.executor, proposals,
                                      self._proposer_cfg(self.cfg.seed_temperature))
        on_phase("seed: review")
        self._review(proposals, curriculum)
        return self.buffers.sizes(), self._store_seed(proposals)

    def seed_from_file(self, tasks: list[Triplet]) -> Counter:
        """selfplay.seed_file's tasks (selfplay/seed_file.py), through the sandbox, the reviewer and the held-out
        split like a seed round's proposals; admitted ones join both program buffers. Returns the outcomes."""
        proposals = [seeding.file_proposal(t) for t in tasks]
        self._validate(proposals)
        self._review(proposals, load_curriculum(self.store))
        return self._store_seed(proposals)

    def _store_seed(self, proposals: list[Proposal]) -> Counter:
        """Seed proposals into the store (admitted ones into both program buffers, as AZR's seed set); the outcomes."""
        with self.store.transaction() as db:
            for p in proposals:
                store_proposal(db, self.buffers, -1, p, shared_seed=True)
        return Counter("heldout" if p.heldout else p.reason or "admitted" for p in proposals)

    # --- the step ---------------------------------------------------------------------------------------------------

    def run_step(self, step: int, on_phase: PhaseCallback = lambda p: None) -> StepReport:
        report = StepReport(step)
        rng = random.Random(f"{self.team.train.seed}-{step}")
        curriculum = load_curriculum(self.store)
        start_tokens = self.generator.generated_tokens
        clock = partial(_timed, report.timings, on_phase)

        # Solver tasks come from the buffers as they were before this step's proposals (as in AZR).
        solve_tasks = {t: self.buffers.solver_batch(t, self._share(t, self.cfg.solve_batch, curriculum), rng)
                       for t in self._active_types(curriculum)}

        # ... and their answers come from the proposals' round of the engine: one batch, the same weights.
        solve_prompts, owners = self._solver_prompts(solve_tasks)
        report.timings |= {"propose": 0.0, "validate": 0.0}  # the step's line shows them in this order
        with clock("propose"):
            proposals, solver_groups = self._propose(
                curriculum, rng, solver=Ask("solver", solve_prompts, self.team.roles.solver, self.cfg.solver_samples),
                timings=report.timings)
        report.timings["propose"] -= report.timings["validate"]  # the proposer's tool ran in the sandbox meanwhile
        with clock("review"):
            self._review(proposals, curriculum)
        with clock("learnability"):
            self._measure_learnability(proposals)
        shares = {t: self.buffers.kind_shares(t) for t in PROGRAM_TYPES} if self.cfg.rare_kind_bonus else {}
        for p in proposals:
            p.sample.reward = proposer_reward(
                parsed=p.parse_ok, valid=p.valid, admitted=p.admitted, solve_rate=p.solve_rate, reason=p.reason,
                format_penalty=self.team.train.format_penalty, wrong_penalty=self.team.train.wrong_penalty,
                rarity_bonus=self._rarity_bonus(p, shares),
            )
        with clock("solve"):
            solutions = self._solutions(solver_groups, owners)
        hinted = []
        if self.cfg.solver_hints:
            with clock("hints"):
                hinted = self._hinted_solutions(solutions)
        samples = [p.sample for p in proposals if not p.heldout] + solutions + hinted
        syncs = self.learner is not None and not self.engine.shares_learner
        with clock("learn"):
            if syncs:
                self.engine.sleep()  # frees the engine's accelerator memory for the learner (model.sleep_mode)
            train_stats = self._learn(samples)
        with clock("sync"):
            if syncs:
                self.engine.wake_up()
                self.engine.load_weights(self.learner.named_weights())

        report.summary, report.metrics = summarise(
            proposals, solutions, train_stats, report.timings, self.generator.generated_tokens - start_tokens,
            self.buffers.sizes(), heldout.counts(self.store))
        revised = [p for p in proposals if p.revision]
        if revised:
            report.metrics |= {"proposer/revisions": len(revised),
                               "proposer/revisions_valid": sum(p.valid for p in revised)}
        if self.cfg.solver_hints:  # hinted answers stay out of the solve rates: the model did not find them alone
            report.metrics["solver/hinted_right"] = len(hinted)
        report.proposals, report.solutions = proposals, solutions + hinted
        return report

    def save_state(self, report: StepReport, started_at: float, last: bool) -> None:
        """Before the commit: the learner's resume state (on disk, fsynced), and a Hugging Face checkpoint every
        schedules.checkpoint_every_steps and at the run's `last` step."""
        run_dir, schedules = self.team.run_dir, self.team.schedules
        report.resume_state = save_resume_state(run_dir, report.step, self.learner)
        if report.step % schedules.checkpoint_every_steps == 0 or last:
            report.checkpoint = save_checkpoint(run_dir, report.step, self.learner, self.engine.tokenizer,
                                                report.resume_state)
            report.timings["checkpoint"] = time.time() - started_at - sum(report.timings.values())

    def commit(self, report: StepReport, started_at: float) -> None:
        """Write the whole step in one transaction: tasks, buffers, samples (dropping those older than
        schedules.keep_samples_steps), metrics, the step row with its checkpoint, and the resume state that
        save_state wrote (if it ran). Older resume states and checkpoints go afterwards, in the daemon's prune job
        (checkpoints.prune)."""
        proposals, solutions = report.proposals, report.solutions
        now = time.time()
        checkpoint = self.store.relative(report.checkpoint) if report.checkpoint else None
        with self.store.transaction() as db:
            for p in proposals:
                store_proposal(db, self.buffers, report.step, p)
            for s in [p.sample for p in proposals if not p.heldout] + solutions:
                insert_sample(db, report.step, s)
            self.store.record_metrics(report.step, report.metrics, now)
            db.execute(
                "INSERT INTO steps(step, started_at, finished_at, weight_version, timings, summary, checkpoint) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (report.step, started_at, now, self.engine.weight_version, json.dumps(report.timings),
                 report.summary.to_json(), checkpoint),
            )
            keep = self.team.schedules.keep_samples_steps
            if keep:
                db.execute("DELETE FROM samples WHERE step <= ?", (report.step - keep,))
            if report.resume_state is not None:
                self.store.put(RESUME_KEY, self.store.relative(report.resume_state))

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
                 temperature: float | None = None, solver: Ask | None = None, timings: dict[str, float] | None = None
                 ) -> tuple[list[Proposal], list[list[Sample]]]:
        """The proposals, each run in the sandbox by its agent's tool (a failed one followed by its revision when the
        proposer revises), and the replies to `solver`'s prompts from the same round of the engine. The sandbox's
        seconds are added to timings["validate"]."""
        prompts: list[Prompt] = []
        programs: list[Triplet | None] = []
        role_cfg = self._proposer_cfg(temperature)
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
                    topic = ""
                else:
                    references = self.buffers.references(task_type, self.cfg.references, rng)
                    topic = rng.choice(self.cfg.topics) if self.cfg.topics else ""
                messages = self._fitting_messages(task_type, references, curriculum, role_cfg.max_new_tokens, topic)
                if messages is None:
                    continue
                parts = self.proposer.primed(task_type) if role_cfg.prime_answer else []
                prompts.append((task_type, messages, parts))
                programs.append(program)
        timings = {} if timings is None else timings

        def run_candidates(turns: list[tuple[int, list[dict], list[Sample], int]]) -> list:
            started = time.perf_counter()
            verdicts = self._run_candidates(prompts, programs, turns, role_cfg)
            timings["validate"] = timings.get("validate", 0.0) + time.perf_counter() - started
            return verdicts

        verdicts, solver_groups = self.generator.generate_together(
            [Ask("proposer", prompts, role_cfg, check=run_candidates),
             solver or Ask("solver", [], self.team.roles.solver)])
        return [p for turns in verdicts for p in turns], solver_groups

    def _run_candidates(self, prompts: list[Prompt], programs: list[Triplet | None],
                        turns: list[tuple[int, list[dict], list[Sample], int]], role_cfg: SamplingConfig
                        ) -> list[tuple[Proposal, list[dict] | None]]:
        """The proposer agents' RunCandidate tool, for a round of their turns: each reply read and run in one sandbox
        call; a failed first turn comes back with the conversation to revise it when roles.proposer.revise is on."""
        proposals = [read_proposal(self.proposer, (prompts[i][0], messages, prompts[i][2]), programs[i], sample,
                                   revision=turn > 1)
                     for i, messages, [sample], turn in turns]
        self._validate(proposals)
        revise = self.team.roles.proposer.revise
        return [(p, revision_messages(self.proposer, self.engine, p, role_cfg.max_new_tokens) if revise else None)
                for p in proposals]

    def _rarity_bonus(self, proposal: Proposal, shares: dict[TaskType, dict[str, float]]) -> float:
        """selfplay.rare_kind_bonus times the share of the buffer that is not of this task's kind of output (the
        buffer as the step found it)."""
        task_type = proposal.sample.task_type
        if not (proposal.admitted and task_type in shares):
            return 0.0
        kind = output_kind(proposal.triplet.outputs[0])
        return self.cfg.rare_kind_bonus * (1.0 - shares[task_type].get(kind, 0.0))

    def _proposer_cfg(self, temperature: float | None) -> SamplingConfig:
        """The proposer's sampling, at `temperature` when one is given (seed rounds)."""
        role_cfg = self.team.roles.proposer
        return role_cfg if temperature is None else role_cfg.model_copy(update={"temperature": temperature})

    def _fitting_messages(self, task_type: TaskType, references: list[Triplet], curriculum: Curriculum,
                          budget: int, topic: str = "") -> list[dict] | None:
        """The proposer's messages with as many references as leave room for the reply within max_model_len (the
        longest go first, as AZR resamples a prompt that is too long); None when even the bare prompt is too long
        (an induction program)."""
        references = list(references)
        while True:
            messages = self.proposer.messages(task_type, references, curriculum, topic)
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
                p.reason, p.detail = result.reason, result.detail

    def _review(self, proposals: list[Proposal], curriculum: Curriculum) -> None:
        by_type: dict[TaskType, list[Proposal]] = defaultdict(list)
        for p in proposals:
            if p.valid:
                by_type[p.triplet.task_type].append(p)
        taken = heldout.programs(self.store)  # held-out programs count as taken for every type
        splitter = heldout.Splitter(self.store, self.cfg)
        for task_type, group in by_type.items():
            verdicts = self.reviewer.review(task_type, [p.triplet for p in group],
                                            self.buffers.programs(task_type) + taken, curriculum.reviewer_rules,
                                            self.buffers.program_inputs(task_type))
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
        groups = self.generator.generate("solver", prompts, self.team.roles.solver, n=n)
        for p, group in zip(admitted, groups):
            for s in group:
                s.task = p.triplet
        correct = iter(self._check([s for group in groups for s in group]))  # one sandbox batch for every task
        for p, group in zip(admitted, groups):
            p.solve_rate = sum(next(correct) for _ in group) / len(group)

    def solve(self, tasks: dict[TaskType, list[Triplet]], n: int | None = None,
              role_cfg: SamplingConfig | None = None) -> list[Sample]:
        """`n` answers per task (default selfplay.solver_samples) with the solver's sampling (or `role_cfg`), checked
        in the sandbox and rewarded: the warm start's answers (a step generates its own with the proposals)."""
        n, role_cfg = n or self.cfg.solver_samples, role_cfg or self.team.roles.solver
        prompts, owners = self._solver_prompts(tasks)
        return self._solutions(self.generator.generate("solver", prompts, role_cfg, n=n), owners)

    def _solver_prompts(self, tasks: dict[TaskType, list[Triplet]]) -> tuple[list[Prompt], list[Triplet]]:
        owners = [task for batch in tasks.values() for task in batch]
        return [self._solver_prompt(task) for task in owners], owners

    def _solutions(self, groups: list[list[Sample]], owners: list[Triplet]) -> list[Sample]:
        """The solver's replies to `owners`, checked in the sandbox (one batch) and rewarded."""
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

    def _hinted_solutions(self, solutions: list[Sample]) -> list[Sample]:
        """selfplay.solver_hints: for each deduction task whose answers were all wrong and never of its output's
        kind (a string, list, tuple, dict or set), one answer started with the output's first character; the right
        ones, rewarded as any answer and grouped with their task's (the same prompt)."""
        groups: dict[str, list[Sample]] = {}
        for s in solutions:  # by prompt, as the learner's per-task baseline groups them (a task drawn twice is one)
            groups.setdefault(s.prompt_text, []).append(s)
        todo: list[tuple[Sample, str]] = []
        for group in groups.values():
            task = group[0].task
            kind = output_kind(task.outputs[0]) if task.task_type == "deduction" else None
            if kind not in HINTED_KINDS or any(s.reward.parts.get("correct") for s in group):
                continue
            if not any(s.answer.ok and output_kind(s.answer.answer) == kind for s in group):
                todo.append((group[0], task.outputs[0].lstrip()[0]))
        parts = [self.solver.primed("deduction", s.task)[0] for s, _ in todo]
        replies = self.generator.hinted([s for s, _ in todo], [hint for _, hint in todo], parts,
                                        self.team.roles.solver)
        checked = self._solutions([[r] for r in replies], [s.task for s, _ in todo])
        for r, (_, hint) in zip(checked, todo):
            r.reward.parts["hint"] = hint
        return [r for r in checked if r.reward.parts["correct"]]

    def _check(self, samples: list[Sample]) -> list[bool]:
        """Verify solver answers in the sandbox; unparseable answers are wrong."""
        for s in samples:
            s.answer = self.solver.parse(s.task_type, s.text)
        return check_answers(self.executor, self.cfg.induction_visible, [(s.task, s.answer) for s in samples])

    def _learn(self, samples: list[Sample]) -> dict[str, float]:
        if self.learner is None:
            return {}
        trained = [s for s in samples if s.completion.token_ids]
        solver_baseline = self.team.train.solver_baseline
        advantages = trr_advantages(
            [s.reward.value for s in trained],
            [baseline_group(s.role, s.task_type, s.prompt_text, solver_baseline) for s in trained],
            [len(s.completion.token_ids) for s in trained],
        )
        rollouts = [Rollout(s.prompt_ids, s.completion.token_ids, s.completion.logprobs, a, s.temperature,
                            s.train_mask) for s, a in zip(trained, advantages)]
        batch_tokens = sum(len(r.completion_ids) for r in rollouts)
        if self.team.train.entropy_coef == 0 and self.team.train.kl_coef == 0:
            # A zero advantage (a group whose rewards were all equal) adds nothing to the gradient:
            # no forward or backward pass for it; the token mean still counts the whole batch.
            rollouts = [r for r in rollouts if r.advantage != 0]
        stats = self.learner.train_step(rollouts, batch_tokens=batch_tokens) if rollouts else {}
        return stats | {"skipped_sequences": len(trained) - len(rollouts)}

    # --- helpers ----------------------------------------------------------------------------------------------------

    def _solver_prompt(self, task: Triplet) -> Prompt:
        primed = self.team.roles.solver.prime_answer
        parts = self.solver.primed(task.task_type, task) if primed else []
        return task.task_type, self.solver.messages(task.task_type, task), parts


@contextmanager
def _timed(timings: dict[str, float], on_phase: PhaseCallback, phase: str) -> Iterator[None]:
    """`with clock("propose"):` announces a phase and times it."""
    on_phase(phase)
    started = time.perf_counter()
    try:
        yield
    finally:
        timings[phase] = time.perf_counter() - started
