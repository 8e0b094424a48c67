"""Data-parallel learning under `torchrun` / `accelerate launch`: rank 0 is the daemon, the other ranks follow.

Rank 0 does everything a single-process run does (lock, store, rollouts, sandbox, saves, notifiers). Every update it
sends the whole batch of rollouts to the followers; each rank trains on its own deterministic share and DDP (or FSDP,
`train.sharding: fsdp`) averages the gradients, scaled so that the update equals the single-process one. Followers
keep no state of their own: they load the resume state rank 0 names at start and then only ever apply the updates rank
0 orders, so killing any rank loses at most the step in flight, which rank 0 never committed. With FSDP no rank holds
the whole weights: when rank 0 needs them (engine sync, checkpoint, resume state) it orders the others to gather with
it.

The launch itself is torchrun's or accelerate's (MULTI_GPU / MULTI_CPU); accelerate's own FSDP and DeepSpeed modes are
refused: botlab shards with torch's FSDP2 itself, which runs on gloo too.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from accelerate.utils import DistributedType

from botlab.config import TeamConfig
from botlab.selfplay.learner import Learner, Rollout
from botlab.store import Store

log = logging.getLogger(__name__)

# Followers wait for rank 0 through seeding, rollouts and evals: far longer than torch's default 30 minutes.
ORDER_TIMEOUT = timedelta(days=7)
SUPPORTED = (DistributedType.MULTI_GPU, DistributedType.MULTI_CPU)
STAT_KEYS = ("loss", "entropy", "kl", "clip_fraction", "ratio_mean")
GATHERS = ("named_weights", "trainable_state", "state_dict")  # Learner methods that are collectives when sharded


class UnsupportedLaunch(Exception):
    pass


def launch_rank() -> int:
    """This process's rank in a torchrun / accelerate launch (0 when not launched)."""
    return int(os.environ.get("RANK", "0"))


def launch_problem(team: TeamConfig) -> str | None:
    """Why `team` cannot run (alone or under this launch), if it cannot: checked by every rank before it loads
    anything."""
    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if team.train.sharding == "fsdp":
        if team.model.lora.enabled:
            return ("train.sharding is fsdp with model.lora on: LoRA's adapters are small enough for every rank to "
                    "hold whole; set train.sharding: ddp (or none on one GPU)")
        if not launched:
            # One process would hold the whole learner that `botlab plan` sized in shards.
            return ("train.sharding is fsdp, which shards the learner over the ranks of a launch: start it with "
                    "`torchrun --nproc-per-node N -m botlab.cli run TEAM.yaml` (or `accelerate launch`), or set "
                    "train.sharding: none")
    if launched and team.selfplay.warm_start.enabled:
        # Its fine-tuning (TRL's SFTTrainer) runs in this process alone, outside the ranks' collectives.
        return "selfplay.warm_start runs in one process: turn it off under a torchrun / accelerate launch"
    return None


@dataclass
class Order:
    """What rank 0 tells the followers: start (from a resume state), train one update, or stop."""

    kind: str  # start | train | gather | stop
    step: int
    # Of rank 0's weights before the order (None when sharded): a follower whose own differs must not go on.
    fingerprint: float | None
    resume: str | None = None
    gather: str | None = None  # the Learner method whose collective rank 0 is about to enter
    rollouts: list[Rollout] | None = None
    batch_tokens: int | None = None


class _Orders:
    """Rank 0 -> followers, over a gloo group of its own (pickles travel on the CPU whatever the DDP backend)."""

    def __init__(self, learner: Learner):
        kind = learner.accelerator.distributed_type
        if kind not in SUPPORTED:
            raise UnsupportedLaunch(f"the launch uses {kind.value}; botlab's multi-process learning supports DDP "
                                    "only (accelerate config distributed_type MULTI_GPU or MULTI_CPU)")
        self.group = dist.new_group(backend="gloo", timeout=ORDER_TIMEOUT)

    def send(self, order: Order) -> None:
        dist.broadcast_object_list([order], src=0, group=self.group)

    def receive(self) -> Order:
        box = [None]
        dist.broadcast_object_list(box, src=0, group=self.group)
        return box[0]


# --- the update, split across ranks ---------------------------------------------------------------------------------


def train_share(learner: Learner, rollouts: list[Rollout], batch_tokens: int | None = None) -> dict[str, float]:
    """This rank's part of one update over the whole batch `rollouts` (every rank gets the same list).

    The same update as Learner.train_step (`batch_tokens` too): every loss is still divided by the whole batch's token
    count, and multiplied by the number of ranks because DDP averages the ranks' gradients where one process would
    sum them.
    """
    accelerator = learner.accelerator
    rank, world = accelerator.process_index, accelerator.num_processes
    rollouts = [r for r in rollouts if r.completion_ids]
    if not rollouts:
        return {"trained_sequences": 0}
    total_tokens = batch_tokens or sum(len(r.completion_ids) for r in rollouts)
    shares = [_share_of(rollouts, r, world) for r in range(world)]
    plans = [learner.micro_batches(share) for share in shares]
    # Every rank runs as many forward/backward passes as the busiest one: DDP's collectives must pair up.
    passes = max(len(plan) for plan in plans)
    mine = plans[rank] + [[_idle(rollouts[0])]] * (passes - len(plans[rank]))
    totals = dict.fromkeys(STAT_KEYS, 0.0)
    learner.optimizer.zero_grad(set_to_none=True)
    for i, chunk in enumerate(mine):
        # Gradients accumulate locally; the last pass sums them across ranks.
        with learner.gradient_sync(i == passes - 1):
            stats = learner._accumulate(chunk, total_tokens / world)
        idle = i >= len(plans[rank])
        weight = 0.0 if idle else sum(len(r.completion_ids) for r in chunk) / total_tokens
        for key, value in stats.items():
            totals[key] += value / world if key in ("loss", "entropy", "kl") else value * weight
    summed = accelerator.reduce(torch.tensor([totals[k] for k in STAT_KEYS], dtype=torch.float64,
                                             device=learner.device), reduction="sum")
    grad_norm = accelerator.clip_grad_norm_(learner.model.parameters(), learner.cfg.grad_clip)
    learner.optimizer.step()
    learner.optimizer.zero_grad(set_to_none=True)
    return dict(zip(STAT_KEYS, summed.tolist())) | {
        "grad_norm": float(grad_norm), "trained_sequences": len(rollouts), "trained_tokens": total_tokens}


def _share_of(rollouts: list[Rollout], rank: int, world: int) -> list[Rollout]:
    """Rank `rank`'s share: dealt in turn after the learner's own temperature order, so it is the same on every rank
    and the micro-batches stay at one temperature."""
    ordered = sorted(rollouts, key=lambda r: r.temperature)
    return ordered[rank::world]


def fingerprint(learner: Learner) -> float | None:
    """The squared norm of the trained weights: equal on every rank while they hold the same weights. None when
    sharded: each rank holds a different slice, placed from the same resume state by every rank."""
    if learner.sharded:
        return None
    return sum(float(t.double().pow(2).sum()) for t in learner.trainable_state().values())


def _idle(rollout: Rollout) -> Rollout:
    """A pass that trains nothing (every token masked out), for a rank with fewer micro-batches than the others."""
    return replace(rollout, train_mask=[0.0] * len(rollout.completion_ids))


# --- rank 0 ---------------------------------------------------------------------------------------------------------


class LeadingLearner:
    """Rank 0's learner: each update goes to the followers too and every rank trains its share. Everything else
    (weights for the engine, saves, resume state) is the wrapped Learner's: all ranks hold the same weights."""

    def __init__(self, learner: Learner, resume: str | None, store: Store):
        self.learner = learner
        self.store = store  # the step in flight is the one after the last committed
        self.orders = _Orders(learner)
        self.orders.send(Order("start", store.last_step(), fingerprint(learner), resume=resume))

    def train_step(self, rollouts: list[Rollout], batch_tokens: int | None = None) -> dict[str, float]:
        self.orders.send(Order("train", self.store.last_step() + 1, fingerprint(self.learner), rollouts=rollouts,
                               batch_tokens=batch_tokens))
        return train_share(self.learner, rollouts, batch_tokens)

    # With FSDP these gather the whole weights, which every rank must enter together.

    def named_weights(self):
        self._gathering("named_weights")
        return self.learner.named_weights()

    def trainable_state(self) -> dict:
        self._gathering("trainable_state")
        return self.learner.trainable_state()

    def state_dict(self) -> dict:
        self._gathering("state_dict")
        return self.learner.state_dict()

    def save_pretrained(self, folder: Path, tokenizer) -> None:
        self._gathering("named_weights")  # the one collective inside
        self.learner.save_pretrained(folder, tokenizer)

    def _gathering(self, method: str) -> None:
        if self.learner.sharded:
            self.orders.send(Order("gather", self.store.last_step(), None, gather=method))

    def stop_followers(self) -> None:
        self.orders.send(Order("stop", self.store.last_step(), fingerprint(self.learner)))

    def __getattr__(self, name):
        return getattr(self.learner, name)


_leader: LeadingLearner | None = None


def lead(learner: Learner, resume: str | None, store: Store) -> Learner | LeadingLearner:
    """The learner rank 0's daemon trains with: `learner` itself unless this process was launched with others."""
    global _leader
    if learner.accelerator.num_processes == 1:
        return learner
    _leader = LeadingLearner(learner, resume, store)
    return _leader


def release_followers(exit_code: int) -> int:
    """After a clean end, tell the followers to stop. After a failure they may be inside a collective with rank 0,
    so they are left to the launcher, which ends every rank when one exits with an error."""
    if _leader is not None and exit_code == 0:
        try:
            _leader.stop_followers()
        except Exception as err:  # a follower already gone: nothing left to tell it
            log.warning("could not stop the follower ranks: %s", err)
    return exit_code


# --- ranks 1.. ------------------------------------------------------------------------------------------------------


def follow(team: TeamConfig) -> int:
    """A follower rank's whole life: the same model as rank 0, then rank 0's orders until it says stop."""
    from botlab.models import ModelNotFound, resolve_model
    from botlab.selfplay.checkpoints import load_resume_state

    rank = launch_rank()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s rank {rank} %(levelname)s %(name)s: %(message)s")
    try:
        learner = Learner(resolve_model(team.model.name), team.model, team.train)
        orders = _Orders(learner)
    except (ModelNotFound, UnsupportedLaunch) as err:
        print(f"error (rank {rank}): {err}", file=sys.stderr)
        return 1
    while True:
        order = orders.receive()
        if order.kind == "start" and order.resume:
            load_resume_state(Path(order.resume), learner)
        mine = fingerprint(learner)
        if mine is not None and order.fingerprint is not None and not math.isclose(mine, order.fingerprint,
                                                                                   rel_tol=1e-9):
            print(f"error (rank {rank}): my weights differ from rank 0's before its {order.kind} order for step "
                  f"{order.step} (fingerprints {mine!r} and {order.fingerprint!r}); stopping", file=sys.stderr)
            return 1
        if order.kind == "start":
            log.info("following rank 0 after step %d%s", order.step,
                     f" from {order.resume}" if order.resume else " from the base weights")
        elif order.kind == "train":
            stats = train_share(learner, order.rollouts, order.batch_tokens)
            log.info("step %d: trained this rank's share of %d sequences", order.step, stats["trained_sequences"])
        elif order.kind == "gather" and order.gather in GATHERS:
            result = getattr(learner, order.gather)()
            for _ in result if order.gather == "named_weights" else ():  # a generator runs its collective when read
                pass
        elif order.kind == "stop":
            log.info("rank 0 stopped after step %d", order.step)
            return 0
