"""`botlab run`: the long-running daemon around the self-play loop.

The main thread trains (vLLM and torch want it); a side thread runs an asyncio loop for the reporter's channels
(IMAP IDLE, Nostr subscriptions, SMTP) and the timed jobs (botlab/schedule.py: digests, reply polls, evaluations,
pruning), which run on time during a phase. Between phases the main thread runs what needs the engine: the
reporter's tick, and an evaluation a job found due.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from pathlib import Path

from botlab.agents.policy_model import PolicyModel
from botlab.config import TeamConfig
from botlab.curriculum import load_curriculum
from botlab.engines import create_engine
from botlab.evaluation import EvalError, describe, record, run_suite
from botlab.logs import setup_run_logging
from botlab.models import ModelNotFound, resolve_model
from botlab.reporting.service import Reporter
from botlab.observability import MetricsSink
from botlab.progress import RunProgress
from botlab.resources import release_free_memory, usage
from botlab.rundir import DAEMON_PAUSED_KEY, DAEMON_STATE_KEY, ENGINE_KEY, PHASE_KEY, RESUME_KEY, RUN_LAST_STEP_KEY
from botlab.rundir import SEEDING_DONE_KEY, STARTED_AT_KEY, WARM_START_DONE_KEY, AlreadyRunning, DaemonLock
from botlab.sandbox import Executor
from botlab.schedule import Schedule
from botlab.selfplay import heldout, seeding, warm_start
from botlab.selfplay.checkpoints import load_resume_state, prune
from botlab.selfplay.distributed import follow, launch_problem, launch_rank, lead, release_followers
from botlab.selfplay.learner import Learner
from botlab.selfplay.seed_file import SeedFileError, read_seed_file
from botlab.selfplay.step import SelfPlay
from botlab.store import Store, StoreError, open_store
from botlab.teamfile import TeamFileError, load_team

log = logging.getLogger("botlab.daemon")

EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 130
EVAL_AT_KEY = "schedule/eval_at"  # when the last evaluation of schedules.eval_every ran


class MissingState(Exception):
    """The store says training went on, but the learner state it names is gone."""


class StopRequest:
    """SIGTERM/SIGINT once: finish the current step, then stop. Twice: abandon the step now."""

    def __init__(self):
        self.count = 0
        self.reload = False  # SIGHUP: re-read the team file at the next safe point

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, self._handle)
        signal.signal(signal.SIGHUP, self._hangup)

    def _hangup(self, signum, frame) -> None:
        self.reload = True

    def _handle(self, signum, frame) -> None:
        self.count += 1
        if self.count == 1:
            log.warning("stop requested (%s): finishing the current step", signal.Signals(signum).name)
        else:
            raise KeyboardInterrupt

    @property
    def requested(self) -> bool:
        return self.count > 0


class SideLoop:
    """An asyncio loop in a daemon thread, for the reporter's network work."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="botlab-io", daemon=True)
        self.thread.start()

    def call(self, coro, timeout: float | None = None):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)


def run_team(team: TeamConfig, steps: int | None = None, minutes: float | None = None) -> int:
    """The daemon; `steps`: exit after that many steps, `minutes`: start no step after that much time (the step that
    ends past it is the last, and is checkpointed)."""
    if problem := launch_problem(team):
        print(f"error: {problem}")
        return EXIT_FAILED
    if launch_rank() > 0:  # torchrun / accelerate launch: rank 0 is the daemon, the others train their share
        return follow(team)
    run_dir = team.run_dir
    try:
        with DaemonLock(run_dir):
            setup_run_logging(run_dir)  # everything to logs/botlab.log; the console gets progress, warnings and errors
            with open_store(run_dir) as store:
                return release_followers(Daemon(team, store, steps, minutes).run())
    except AlreadyRunning as err:
        logging.getLogger("botlab").error("%s", err)
        print(f"error: {err}")
        return EXIT_FAILED
    except StoreError as err:
        print(f"error: {err}")
        return EXIT_FAILED


class Daemon:
    def __init__(self, team: TeamConfig, store: Store, steps: int | None, minutes: float | None = None):
        self.team = team
        self.store = store
        self.steps = steps
        self.deadline = time.time() + minutes * 60 if minutes else None
        self.stop = StopRequest()
        self.progress = RunProgress(team.name)
        self._prune_lock = threading.Lock()

    def run(self) -> int:
        previous = self.store.get(DAEMON_STATE_KEY, "new")
        self.stop.install()
        self.store.put(DAEMON_STATE_KEY, "running")
        self.store.put(PHASE_KEY, "start")  # not the phase a crashed run left behind
        self.store.put(STARTED_AT_KEY, time.time())
        if previous in ("running", "paused"):
            self.store.log_event("restart", "restarted after an unclean stop", level="warning")
        self.store.log_event("start", f"daemon started (pid {os.getpid()})")
        side = None
        try:
            side = SideLoop()
            self._build(side)
            return self._loop(side)
        except (ModelNotFound, MissingState, SeedFileError) as err:
            self.progress.note(f"error: {err}")
            self.store.log_event("error", str(err), level="error")
            return EXIT_FAILED
        except KeyboardInterrupt:
            self.progress.note("stopped: the step in flight was abandoned (the last committed step is kept)")
            self.store.log_event("stop", "abandoned the step in flight on a second signal", level="warning")
            return EXIT_INTERRUPTED
        except Exception as err:
            log.exception("the run failed")
            self.store.log_event("crash", f"{type(err).__name__}: {err}", level="error")
            self.progress.note(f"error: the run failed: {type(err).__name__}: {err} (details in {self._log_path()})")
            return EXIT_FAILED
        finally:
            self._shutdown(side)

    # --- set-up -----------------------------------------------------------------------------------------------------

    def _build(self, side: SideLoop) -> None:
        team = self.team
        self.progress.phase("start", "loading the model")
        model_dir = resolve_model(team.model.name)
        self.learner = Learner(model_dir, team.model, team.train)
        resume = self.store.resolve(self.store.get(RESUME_KEY))  # stored relative to the run dir (older: absolute)
        if resume and not resume.is_dir():
            # Training on from the base weights would silently throw away every update so far.
            raise MissingState(
                f"the resume state of step {self.store.last_step()} is missing ({resume}); put it back, or point "
                f"botlab at a new storage_dir (checkpoints/*/botlab_state hold older resume states)")
        if resume:
            load_resume_state(resume, self.learner)
            self.progress.note(f"resuming after step {self.store.last_step()} from {resume}")
        # The follower ranks of a launch, if any.
        self.learner = lead(self.learner, str(resume) if resume else None, self.store)
        self.progress.phase("start", "starting the rollout engine")
        self.engine, why = create_engine(team.model, model_dir, learner_model=self.learner.shareable_model())
        if resume and not self.engine.shares_learner:
            self.engine.load_weights(self.learner.named_weights())
        self.store.put(ENGINE_KEY, {"name": self.engine.name, "why": why})
        self.progress.note(f"engine: {why}")
        self.executor = Executor(team.executor)
        self.progress.note(f"sandbox: {self.executor.isolation}")
        policy_model = self._policy_model()
        self.selfplay = SelfPlay(team, self.store, self.engine, self.executor, self.learner,
                                 reviewer_model=policy_model if team.roles.reviewer.llm else None)
        self.reporter_model = policy_model
        self.reporter = Reporter(team, self.store, model=policy_model)
        side.call(self.reporter.start(live=True), timeout=60)
        self.metrics = MetricsSink(team.run_dir, team.name, team.observability.wandb_project)
        self.side = side
        self.schedule = Schedule(self.store, side.loop)
        self._add_jobs()
        self.schedule.start()

    def _policy_model(self) -> PolicyModel:
        return PolicyModel(self.engine)

    # --- the loop ---------------------------------------------------------------------------------------------------

    def _loop(self, side: SideLoop) -> int:
        team, store = self.team, self.store
        self.selfplay.ensure_zero_triplets()
        self._seed(side)
        self._warm_start(side)
        first = store.last_step() + 1
        last = first + self.steps - 1 if self.steps else team.train.steps
        store.put(RUN_LAST_STEP_KEY, last)  # digests count towards the same step as the console's "step N/last"
        if first > last:
            self.progress.note(f"nothing to do: step {first - 1} of {team.train.steps} is already done")
        for step in range(first, last + 1):
            if self._wait_while_paused(side) or self.stop.requested:
                break
            started = time.time()
            label = f"step {step}/{last}"
            report = self.selfplay.run_step(step, on_phase=lambda phase: self._phase(side, label, phase))
            self._phase(side, label, "save")
            out_of_time = self.deadline is not None and time.time() >= self.deadline
            self.selfplay.save_state(report, started, last=step == last or out_of_time)
            release_free_memory()  # what the update and the saves freed: the metric shows what the daemon holds
            report.metrics |= usage(team.run_dir)
            self.selfplay.commit(report, started)
            self._prune_soon()
            self.metrics.write(step, report.metrics)
            self.progress.step_done(step, last, report.summary, report.timings)
            self._evaluate_if_due(step, side)
            self._tick(side)
            if out_of_time:
                self.progress.note(f"time is up after step {step}")
                break
        if self.steps or self.deadline:
            self._phase(side, "end", "final digest")
            side.call(self.reporter.send_digest("run finished"), timeout=600)
        return EXIT_OK

    # --- timed jobs -------------------------------------------------------------------------------------------------

    def _add_jobs(self) -> None:
        """The reporter's digest and reply poll, the evaluation every schedules.eval_every (handed to the next pause
        between phases: it needs the engine) and one prune for what an earlier run left."""
        self.reporter.add_jobs(self.schedule)
        self.schedule.every("eval", self.team.schedules.seconds("eval_every"),
                            lambda: self.schedule.for_boundary("eval", self._timed_eval), EVAL_AT_KEY)
        self._prune_soon()

    def _timed_eval(self) -> None:
        self._evaluate(self.store.last_step(), self.side)
        self.store.put(EVAL_AT_KEY, time.time())

    def _prune_soon(self) -> None:
        """Older resume states and checkpoints go in a job on the side loop, after the commit: deleting a large
        model's checkpoint takes seconds the next step need not wait for."""
        self.schedule.at("prune", time.time(), self._prune, max_instances=2)

    def _prune(self) -> None:
        with self._prune_lock:
            prune(self.team.run_dir, self.store.last_step(), self.team.schedules.keep_checkpoints)

    def _evaluate_if_due(self, step: int, side: SideLoop) -> None:
        every = self.team.schedules.eval_every_steps
        if every and step % every == 0:
            self._evaluate(step, side)

    def _evaluate(self, step: int, side: SideLoop) -> None:
        """The periodic held-out evaluation, on the in-process engine; a bad eval setting never stops training."""
        schedules = self.team.schedules
        data = self.team.resolve_path(schedules.eval_data) if schedules.eval_data else None
        for suite in schedules.eval_suites:
            if suite == "heldout" and not heldout.counts(self.store):
                continue  # nothing admitted yet: the split fills as tasks are admitted
            self._phase(side, f"step {step}", f"eval {suite}")
            try:
                results = run_suite(self.engine, self.executor, self.team, suite, data=data,
                                    limit=schedules.eval_limit, store=self.store)
            except EvalError as err:
                self.store.log_event("error", f"periodic eval skipped: {err}", level="error")
                continue
            for result in results:
                record(self.store, result, step)
                self.metrics.write(step, {f"eval/{result.suite}": result.score,
                                          f"eval_ci95/{result.suite}": result.ci95})
                self.progress.note(f"eval at step {step}: {describe(result)}")

    def _seed(self, side: SideLoop) -> None:
        """Gather the seed set with the untrained policy, as AZR does, in bounded rounds; once per run (a resume
        never seeds again). The held-out split then gets its first score: the start of the learning curve."""
        if self.store.get(SEEDING_DONE_KEY) or self.store.last_step() > 0:
            return
        if self.team.selfplay.seed_file:
            path = self.team.resolve_path(self.team.selfplay.seed_file)
            self._phase(side, "seed file", str(path))
            outcomes = self.selfplay.seed_from_file(read_seed_file(path))
            outcome = ", ".join(f"{reason} {n}" for reason, n in outcomes.most_common())
            self.progress.note(f"seed file {path.name}: buffers {self.selfplay.buffers.sizes()}; tasks: {outcome}")
        budget = seeding.SeedBudget(self.team.selfplay)
        while self.selfplay.needs_seeding() and not self.stop.requested:
            why = budget.stop_reason()
            if why:
                self.progress.note(f"seeding stopped ({why}) with buffers {self.selfplay.buffers.sizes()}"
                                   f" (seed_size {self.team.selfplay.seed_size}); self-play starts with these")
                break
            rounds = budget.rounds + 1
            sizes, outcomes = self.selfplay.seed_round(
                rounds, on_phase=lambda p: self._phase(side, f"seed round {rounds}", p))
            budget.record(outcomes)
            outcome = ", ".join(f"{reason} {n}" for reason, n in outcomes.most_common())
            self.progress.note(f"seed round {rounds}: buffers {sizes}; proposals: {outcome}")
            self._tick(side)
        if self.stop.requested:
            return
        self.store.put(SEEDING_DONE_KEY, True)
        if self.team.schedules.eval_every_steps:
            self._evaluate(0, side)

    def _warm_start(self, side: SideLoop) -> None:
        """selfplay.warm_start: expert iteration on the seed set (selfplay/warm_start.py), once per run, after the
        start's held-out score. Stopped midway, nothing is kept and the next start runs it again."""
        cfg = self.team.selfplay.warm_start
        if not cfg.enabled or self.store.get(WARM_START_DONE_KEY) or self.store.last_step() > 0:
            return
        rounds = []
        for round_no in range(1, cfg.rounds + 1):
            if self.stop.requested:
                return
            report = warm_start.run_round(self.selfplay, round_no, cfg,
                                          on_phase=lambda p: self._phase(side, f"warm start round {round_no}", p))
            rounds.append(report)
            self.progress.note(report.describe())
            self._tick(side)
        self._phase(side, "warm start", "save")
        metrics = warm_start.save(self.selfplay, rounds)
        self.metrics.write(0, metrics)
        trained = metrics["warm_start/trained"]
        message = (f"warm start: {trained:.0f} verified answers of {metrics['warm_start/sampled']:.0f} trained in "
                   f"{len(rounds)} round(s), {metrics['warm_start/seconds']:.0f} s"
                   + ("; saved as checkpoints/step-000000" if trained else "; the weights are unchanged"))
        self.store.log_event("warm_start", message)
        self.progress.note(message)

    def _wait_while_paused(self, side: SideLoop) -> bool:
        """Hold while feedback paused the team; True if a stop arrived meanwhile."""
        announced = False
        while load_curriculum(self.store).paused and not self.stop.requested:
            if not announced:
                self.progress.note("paused by feedback; reply /resume to continue")
                self.store.put(DAEMON_PAUSED_KEY, True)
                announced = True
            self._tick(side)
            time.sleep(2)
        if announced:
            self.store.put(DAEMON_PAUSED_KEY, False)
        return self.stop.requested

    def _phase(self, side: SideLoop, label: str, phase: str) -> None:
        self.store.put(PHASE_KEY, f"{label}: {phase}")
        self.progress.phase(label, phase)
        self._tick(side)

    def _tick(self, side: SideLoop) -> None:
        if self.stop.reload:
            self.stop.reload = False
            self._reload(side)
        try:
            side.call(self.reporter.tick(time.time()), timeout=600)
        except Exception as err:  # a channel failure must never stop training; the outbox retries
            log.warning("reporter tick failed: %s", err)
            self.store.log_event("error", f"reporter: {type(err).__name__}: {err}", level="error")
        self.schedule.run_boundary()  # what the jobs found due and left for a pause (an evaluation)

    def _reload(self, side: SideLoop) -> None:
        """SIGHUP: take the reloadable parts of team.yaml (schedules, notifiers, reporter); refuse the rest."""
        try:
            new = load_team(self.team._source)
        except TeamFileError as err:
            self.progress.note(f"reload refused, the team file is not valid:\n{err}")
            self.store.log_event("reload", f"refused, the team file is not valid: {err}", level="warning")
            return
        ignored = [k for k in ("name", "storage_dir", "model", "selfplay", "train", "executor", "goal")
                   if getattr(new, k) != getattr(self.team, k)]
        ignored += [f"roles.{r}" for r in ("proposer", "solver", "reviewer")
                    if getattr(new.roles, r) != getattr(self.team.roles, r)]
        self.team.schedules, self.team.notifiers = new.schedules, new.notifiers
        self.team.roles.reporter = new.roles.reporter
        side.call(self.reporter.stop(), timeout=30)
        self.reporter = Reporter(self.team, self.store, model=self.reporter_model)
        side.call(self.reporter.start(live=True), timeout=60)
        self._add_jobs()  # the new schedules' intervals, counted from the same last runs
        message = "reloaded schedules, notifiers and reporter from the team file"
        if ignored:
            message += f"; not reloadable while running (restart to apply): {', '.join(ignored)}"
        self.store.log_event("reload", message)
        self.progress.note(message)

    # --- tear-down --------------------------------------------------------------------------------------------------

    def _shutdown(self, side: SideLoop | None) -> None:
        self.progress.close()
        if getattr(self, "schedule", None) is not None:
            self.schedule.stop()
            self._prune()  # the last commit's prune, in case its job had no time to run
        if side is not None and getattr(self, "reporter", None) is not None:
            try:
                side.call(self.reporter.flush_outbox(), timeout=60)
                side.call(self.reporter.stop(), timeout=30)
            except Exception as err:
                log.warning("reporter shutdown: %s", err)
        for part in ("executor", "engine", "metrics"):
            obj = getattr(self, part, None)
            if obj is not None:
                obj.close()
        if side is not None:
            side.close()
        self.store.put(DAEMON_STATE_KEY, "stopped")
        self.store.log_event("stop", "daemon stopped")

    def _log_path(self) -> Path:
        return self.team.run_dir / "logs" / "botlab.log"
