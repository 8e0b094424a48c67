"""Rollout engines for the self-play loop: vLLM in this process where it imports, else Hugging Face transformers.

    engine, why = create_engine(team.model, model_dir, learner_model)
    ids = engine.chat_prompt_ids([{"role": "user", "content": "..."}])
    [[completion, ...]] = engine.generate([ids], Sampling(n=4, temperature=1.0, max_tokens=256))
    engine.load_weights(learner.named_parameters())   # after each optimizer step
"""

import os

# vLLM must run inside this process so load_weights can pass tensors to its worker directly. Set before anything
# imports vllm: its engine reads the variable when it starts, and a second process would also break `collective_rpc`
# with a weights iterator. (Scripts that start an engine still need `if __name__ == "__main__":`.)
os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
# vLLM's records go through botlab's logging (the run's log file, botlab.logs) instead of a handler of its own that
# prints its config dump and per-sync warnings on stdout. Read once, when vllm is imported.
os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "0")

from botlab.engines.base import Completion, Engine, EngineError, Sampling  # noqa: E402
from botlab.engines.choose import create_engine  # noqa: E402

__all__ = ["Completion", "Engine", "EngineError", "Sampling", "create_engine"]
