"""What the smolagents role agents cost, and what one round for both roles saves, on a demo step's generation.

    botlab bench agents [--rounds N] [--json]

The demo team's proposer prompts (propose_batch per task type, primed) and solver prompts (solve_batch per task type,
times solver_samples) are generated both ways on the same engine, alternating, greedy (so both ways do the
same work token for token): straight through Generator.generate_batch, one call per role (the step before the
agents: "direct"); through one RoleAgent per prompt on the batching policy model, one round per role ("agents");
and both roles' agents in one round, one engine call per reply part (what the step does now: "together"). Prints
seconds per way and the ratios agents / direct and together / agents; the host is shared and noisy, so compare
ratios, with the load average beside them.
"""

from __future__ import annotations

import json
import random
import os
import tempfile
import time
from pathlib import Path

from botlab.teamfile import load_team

DEMO = Path(__file__).resolve().parents[1] / "teams" / "demo-cpu.yaml"


def run(rounds: int) -> dict:
    from botlab.curriculum import load_curriculum
    from botlab.engines import create_engine
    from botlab.models import resolve_model
    from botlab.sandbox import Executor
    from botlab.selfplay.generation import Ask
    from botlab.selfplay.step import SelfPlay
    from botlab.store import open_store

    team = load_team(DEMO)
    team.storage_dir = Path(tempfile.mkdtemp(prefix="botlab-bench-agents-"))
    proposer = team.roles.proposer.model_copy(update={"temperature": 0.0})
    solver = team.roles.solver.model_copy(update={"temperature": 0.0})
    engine, why = create_engine(team.model, resolve_model(team.model.name))
    cfg = team.selfplay
    with Executor(team.executor) as executor, open_store(team.run_dir) as store:
        selfplay = SelfPlay(team, store, engine, executor, learner=None)
        selfplay.ensure_zero_triplets()
        curriculum = load_curriculum(store)
        propose, solve = [], []
        for task_type in cfg.task_types:
            zero = selfplay.buffers.references(task_type, 1, random.Random(0))
            for _ in range(cfg.propose_batch):
                parts = selfplay.proposer.primed(task_type) if proposer.prime_answer else []
                propose.append((task_type, selfplay.proposer.messages(task_type, zero, curriculum), parts))
            # solver_samples answers per task as separate prompts: greedy sampling has one answer per prompt
            solve += [selfplay._solver_prompt(zero[0])] * (cfg.solve_batch * cfg.solver_samples)
        generator = selfplay.generator
        ways = {
            "direct": lambda: (generator.generate_batch("proposer", propose, proposer, 1),
                               generator.generate_batch("solver", solve, solver, 1)),
            "agents": lambda: (generator.generate("proposer", propose, proposer, 1),
                               generator.generate("solver", solve, solver, 1)),
            "together": lambda: generator.generate_together([Ask("proposer", propose, proposer),
                                                             Ask("solver", solve, solver)]),
        }
        ways["direct"]()  # warm-up: first-shape kernels and caches for both
        seconds = {way: 0.0 for way in ways}
        load_before = os.getloadavg()[0]
        for _ in range(rounds):
            for way, generate in ways.items():
                start = time.perf_counter()
                generate()
                seconds[way] += time.perf_counter() - start
    engine.close()
    return {"engine": why, "rounds": rounds, "prompts": {"proposer": len(propose), "solver": len(solve)},
            "seconds": seconds, "ratio_agents_to_direct": seconds["agents"] / seconds["direct"],
            "ratio_together_to_agents": seconds["together"] / seconds["agents"],
            "load_before": load_before, "load_after": os.getloadavg()[0], "cpus": os.cpu_count()}


def main(rounds: int = 5, as_json: bool = False) -> int:
    report = run(rounds)
    if as_json:
        print(json.dumps(report, indent=2))
        return 0
    s = report["seconds"]
    print(f"demo step generation ({report['prompts']['proposer']} proposer + {report['prompts']['solver']} solver "
          f"prompts, greedy, {report['rounds']} rounds each way, alternating; {report['engine']})")
    print(f"direct batched call  {s['direct']:.2f} s")
    print(f"through role agents  {s['agents']:.2f} s")
    print(f"both roles together  {s['together']:.2f} s")
    print(f"ratio agents / direct: {report['ratio_agents_to_direct']:.3f}; together / agents: "
          f"{report['ratio_together_to_agents']:.3f} (load average {report['load_before']:.1f} before, "
          f"{report['load_after']:.1f} after, {report['cpus']} CPUs)")
    return 0
