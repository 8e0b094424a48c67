"""Does the colocated GPU cycle hold? Self-play steps with vLLM sleeping while the learner trains, then proof that the
engine serves exactly the learner's weights after each sync.

    python -m botlab.bench.gpu_check TEAM.yaml [--steps 2] [--require-sleep] [--perturb 0.05] [--json]

scripts/gpu-check.sh writes a small team and runs this on one NVIDIA GPU. Exit 0: every check held; 1: a check failed
(logprob mismatch, or --require-sleep and the engine cannot sleep); the numbers are printed either way.

The proof: the engine samples at temperature 0.7 and the learner scores the same tokens with its own fp32 weights;
the logprobs must agree to bf16 precision (the tolerance of tests/test_engines.py). Then the learner's weights are
pushed off by noise and synced through a full sleep / wake-up / load cycle: the engine must follow them, and the old
logprobs must no longer fit, so the match cannot come from weights the engine already had.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

# bf16 engine weights and activations against the fp32 learner: mean and worst per-token logprob gap.
MEAN_TOL, MAX_TOL = 0.06, 0.6
CHECK_PROMPTS = ["Hi", "Write a Python function that reverses a list, with a docstring.",
                 "What does f(3) return if f(n) = n * 2 + 1?"]
CHECK_SAMPLING = dict(temperature=0.7, max_tokens=32, seed=3)


@dataclass
class Gap:
    """Per-token |engine logprob - learner logprob| over the check samples."""

    mean: float
    max: float
    tokens: int

    @property
    def ok(self) -> bool:
        return self.mean < MEAN_TOL and self.max < MAX_TOL


def learner_logprobs(model: torch.nn.Module, prompt: list[int], tokens: list[int], temperature: float) -> torch.Tensor:
    """The learner's own logprobs of `tokens` after `prompt` at the sampling temperature (fp32, eval mode)."""
    device = next(model.parameters()).device
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            logits = model(torch.tensor([prompt + tokens], device=device)).logits[0, len(prompt) - 1 : -1].float()
    finally:
        model.train(training)
    logprobs = torch.log_softmax(logits / temperature, dim=-1)
    return logprobs.gather(1, torch.tensor(tokens, device=device)[:, None]).squeeze(1).cpu()


def sample(engine) -> list[tuple[list[int], list[int], torch.Tensor]]:
    """(prompt, sampled tokens, the engine's logprobs) for each check prompt."""
    from botlab.engines import Sampling

    prompts = [engine.chat_prompt_ids([{"role": "user", "content": text}]) for text in CHECK_PROMPTS]
    outputs = engine.generate(prompts, Sampling(**CHECK_SAMPLING))
    return [(p, c.token_ids, torch.tensor(c.logprobs)) for p, (c,) in zip(prompts, outputs) if c.token_ids]


def logprob_gap(samples, model: torch.nn.Module) -> Gap:
    """How far `model` is from the weights that produced `samples` (see `sample`)."""
    temperature = CHECK_SAMPLING["temperature"]
    errors = torch.cat([(lp - learner_logprobs(model, p, t, temperature)).abs() for p, t, lp in samples])
    return Gap(float(errors.mean()), float(errors.max()), len(errors))


def check_engine_matches(engine, model: torch.nn.Module) -> Gap:
    """Sample from the engine and measure the gap to `model` (the learner's policy module)."""
    return logprob_gap(sample(engine), model)


def perturb(model: torch.nn.Module, scale: float = 0.05, seed: int = 0) -> None:
    """Noise on every weight, like a large optimizer step (in place)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_((torch.randn(p.shape, generator=generator) * p.float().std() * scale).to(p.device, p.dtype))


def sync_cycle(engine, learner) -> dict[str, float]:
    """sleep, wake up, load the learner's weights: seconds per part and the accelerator memory sleep released."""
    free = _free_accelerator_bytes()
    t0 = time.perf_counter()
    engine.sleep()
    t1 = time.perf_counter()
    freed = _free_accelerator_bytes() - free
    engine.wake_up()
    t2 = time.perf_counter()
    engine.load_weights(learner.named_weights())
    t3 = time.perf_counter()
    return {"sleep_s": t1 - t0, "wake_s": t2 - t1, "reload_s": t3 - t2, "sleep_freed_gib": freed / 2**30}


def _free_accelerator_bytes() -> int:
    if not torch.cuda.is_available():
        return 0
    torch.cuda.synchronize()
    return torch.cuda.mem_get_info()[0]


def run(team_file: Path, steps: int, require_sleep: bool, perturb_scale: float = 0.05) -> dict:
    from botlab.engines import create_engine
    from botlab.models import resolve_model
    from botlab.sandbox import Executor
    from botlab.selfplay.learner import Learner
    from botlab.selfplay.step import SelfPlay
    from botlab.store import open_store
    from botlab.teamfile import load_team

    team = load_team(team_file)
    result: dict = {"team": str(team_file), "cuda": torch.cuda.is_available(), "failures": []}
    if torch.cuda.is_available():
        result["gpu"] = torch.cuda.get_device_name()
    model_dir = resolve_model(team.model.name)
    learner = Learner(model_dir, team.model, team.train)
    started = time.perf_counter()
    engine, why = create_engine(team.model, model_dir)
    result |= {"engine": why, "engine_start_s": time.perf_counter() - started, "can_sleep": engine.can_sleep}
    if require_sleep and not engine.can_sleep:
        result["failures"].append("the engine cannot sleep (model.sleep_mode off, or no sleep mode here)")
    policy = learner.accelerator.unwrap_model(learner.model)
    try:
        with Executor(team.executor) as executor, open_store(team.run_dir) as store:
            selfplay = SelfPlay(team, store, engine, executor, learner)
            selfplay.ensure_zero_triplets()
            result["steps"] = []
            first = store.last_step() + 1
            for step in range(first, first + steps):
                started = time.time()
                report = selfplay.run_step(step)
                selfplay.commit(report, started)
                gap = check_engine_matches(engine, policy)
                result["steps"].append({"step": step, "step_s": time.time() - started,
                                        "learn_s": report.timings.get("learn"), "sync_s": report.timings.get("sync"),
                                        "gap": asdict(gap)})
                if not gap.ok:
                    result["failures"].append(f"step {step}: logprob gap {gap.mean:.3f} mean, {gap.max:.3f} max")
            before = sample(engine)
            perturb(policy, perturb_scale)
            result["cycle"] = sync_cycle(engine, learner)
            gap, stale = check_engine_matches(engine, policy), logprob_gap(before, policy)
            result["cycle"] |= {"gap": asdict(gap), "stale_gap_mean": stale.mean}
            if not gap.ok:
                result["failures"].append(f"after a sleep/wake/load cycle: logprob gap {gap.mean:.3f} mean, "
                                          f"{gap.max:.3f} max")
            if stale.mean <= 2 * MEAN_TOL:
                result["failures"].append("perturbed weights did not change the logprobs: the check cannot tell")
    finally:
        engine.close()
    return result


def _print(result: dict) -> None:
    print(f"engine: {result['engine']} (started in {result['engine_start_s']:.1f} s; can sleep: {result['can_sleep']})")
    for s in result.get("steps", []):
        print(f"step {s['step']}: {s['step_s']:.1f} s (learn {s['learn_s']:.2f} s, sync {s['sync_s']:.2f} s); "
              f"logprob gap {s['gap']['mean']:.4f} mean, {s['gap']['max']:.4f} max over {s['gap']['tokens']} tokens")
    if "cycle" in result:
        c = result["cycle"]
        print(f"sleep {c['sleep_s']:.2f} s (freed {c['sleep_freed_gib']:.2f} GiB), wake {c['wake_s']:.2f} s, "
              f"reload {c['reload_s']:.2f} s; logprob gap {c['gap']['mean']:.4f} mean, {c['gap']['max']:.4f} max "
              f"(stale weights: {c['stale_gap_mean']:.3f} mean)")
    for failure in result["failures"]:
        print(f"FAILED: {failure}")
    print("gpu check: " + ("FAILED" if result["failures"] else "ok"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m botlab.bench.gpu_check", description=__doc__.splitlines()[0])
    parser.add_argument("team", type=Path)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--require-sleep", action="store_true", help="fail unless the engine really sleeps")
    parser.add_argument("--perturb", type=float, default=0.05,
                        help="noise of the final cycle, relative to each weight's spread (a random model needs more)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = run(args.team, args.steps, args.require_sleep, args.perturb)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print(result)
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
