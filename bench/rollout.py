"""Rollout throughput of the vLLM engine vs. the transformers engine on the embedded model, same run, same prompts.

    botlab bench rollout [--json]

Both engines get the same 64 chat prompts ("write a long story about ...") and sample at temperature 1.0 up to 128
new tokens, at batch 8 and 64; tokens/s counts the tokens actually generated. The transformers engine runs as the
loop uses it: on the learner's fp32 module. The vLLM engine is also compared with calling `vllm.LLM.generate`
directly on the same LLM and prompts (same sampling, sampled-token logprobs on), to show what the wrapper costs.
Weight reload: `load_weights` of the learner's fp32 parameters into the vLLM engine, median of a few runs.
The host is shared and noisy: compare the ratios, and see the load average printed with them.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import sys
import time

NEW_TOKENS = 128
BATCHES = (8, 64)
REPEATS = 2  # vLLM runs are cheap: best of two for the engine and the raw baseline alike
RELOADS = 3
KINDS = ("a brave", "a lonely", "a clever", "an old", "a tiny", "a noisy", "a lost", "a happy")
THINGS = ("dragon", "robot", "sailor", "baker", "river", "mountain", "violin", "lighthouse")
TOPICS = [f"{kind} {thing}" for kind in KINDS for thing in THINGS]  # 64 distinct prompts


def main(as_json: bool = False) -> int:
    with _stdout_to_stderr():
        report = run()
    if as_json:
        print(json.dumps(report, indent=2))
        return 0
    v, raw, hf = report["vllm"], report["raw_vllm"], report["transformers"]
    print(f"{report['model']}: {NEW_TOKENS} new tokens at temperature 1.0, batches {', '.join(map(str, BATCHES))}; "
          f"{report['cpus']} CPUs, load average {report['load_before']:.1f} before, {report['load_after']:.1f} after")
    print(f"vLLM engine started in {v['startup_s']:.1f} s ({report['why']})")
    for b in BATCHES:
        k = str(b)
        ours, theirs, base = v["tokens_per_s"][k], hf["tokens_per_s"][k], raw["tokens_per_s"][k]
        print(f"  batch {b:3d}: vLLM engine {ours:6.1f} tok/s, transformers {theirs:6.1f} tok/s, "
              f"ratio {report['ratio_vllm_vs_transformers'][k]:.2f}  |  raw vllm.LLM.generate {base:6.1f} tok/s, "
              f"engine/raw {report['ratio_engine_vs_raw'][k]:.2f}")
    r = report["reload_s"]
    print(f"weight reload (load_weights, {report['parameters_m']:.0f}M parameters): median {r['median']:.2f} s "
          f"(runs {', '.join(f'{x:.2f}' for x in r['runs'])})")
    return 0


def run() -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    from botlab.config import ModelConfig
    from botlab.engines import Sampling, create_engine
    from botlab.models import builtin_model_dir

    load_before = os.getloadavg()[0]
    model_dir = builtin_model_dir()
    learner = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    sampling = Sampling(temperature=1.0, max_tokens=NEW_TOKENS)

    started = time.perf_counter()
    engine, why = create_engine(ModelConfig(engine="vllm", max_model_len=1024, cpu_kv_cache_gib=2), model_dir)
    startup = time.perf_counter() - started
    prompts = [engine.chat_prompt_ids([{"role": "user", "content": f"Write a long story about {t}."}]) for t in TOPICS]
    # Warm-up at the largest batch: the CPU kernels are built per shape on first use.
    engine.generate(prompts, Sampling(max_tokens=4))

    vllm_rate, raw_rate = {}, {}
    raw_params = engine.sampling_params(sampling)
    for b in BATCHES:
        ours, theirs = [], []
        for _ in range(REPEATS):  # interleaved, so both see the same host load
            ours.append(_rate(lambda: [c for g in engine.generate(prompts[:b], sampling) for c in g]))
            theirs.append(_rate(lambda: _raw_generate(engine.llm, prompts[:b], raw_params)))
        vllm_rate[str(b)], raw_rate[str(b)] = max(ours), max(theirs)

    reloads = []
    for _ in range(RELOADS):
        started = time.perf_counter()
        engine.load_weights(learner.named_parameters())
        reloads.append(time.perf_counter() - started)

    hf_engine, _ = create_engine(ModelConfig(engine="transformers", max_model_len=1024), model_dir, learner)
    hf_engine.generate(prompts, Sampling(max_tokens=4))
    hf_rate = {}
    for b in BATCHES:
        hf_rate[str(b)] = _rate(lambda: [c for g in hf_engine.generate(prompts[:b], sampling) for c in g])
    engine.close()

    return {
        "model": "SmolLM2-135M-Instruct (builtin)",
        "new_tokens": NEW_TOKENS,
        "cpus": os.cpu_count(),
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
        "why": why,
        "parameters_m": sum(p.numel() for p in learner.parameters()) / 1e6,
        "vllm": {"startup_s": startup, "tokens_per_s": vllm_rate, "dtype": str(engine.dtype)},
        "raw_vllm": {"tokens_per_s": raw_rate},
        "transformers": {"tokens_per_s": hf_rate, "dtype": "float32 (the learner's module)"},
        "ratio_vllm_vs_transformers": {k: vllm_rate[k] / hf_rate[k] for k in vllm_rate},
        "ratio_engine_vs_raw": {k: vllm_rate[k] / raw_rate[k] for k in vllm_rate},
        "reload_s": {"median": statistics.median(reloads), "runs": reloads},
    }


def _rate(generate) -> float:
    """Tokens generated per second by one call of `generate` (which returns the completions)."""
    started = time.perf_counter()
    completions = generate()
    return sum(len(c.token_ids) for c in completions) / (time.perf_counter() - started)


def _raw_generate(llm, prompts: list[list[int]], params) -> list:
    outputs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
    return [c for out in outputs for c in out.outputs]


@contextlib.contextmanager
def _stdout_to_stderr():
    """Keep stdout for the results: vLLM logs (and C++ prints) write to file descriptor 1."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


if __name__ == "__main__":
    sys.exit(main(as_json="--json" in sys.argv[1:]))
