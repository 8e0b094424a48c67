"""Rollouts from vLLM servers elsewhere (other GPUs or machines), so generation and learning scale apart.

Each server is vLLM's own OpenAI-compatible server, started with:

    VLLM_SERVER_DEV_MODE=1 vllm serve MODEL --logprobs-mode processed_logprobs \
        --worker-extension-cls botlab.engines.server_worker.WeightPush

Generation: `/v1/completions` with the prompt as token ids, one request per prompt, spread over the servers (each
server takes the next prompt as soon as it has a free slot). `logprobs=0` returns the sampled tokens' logprobs, and
`--logprobs-mode processed_logprobs` makes them those of the distribution each token was sampled from.

Weight push: the learner writes a safetensors snapshot into `model.server_weights_dir`, then every server reloads it
through `/collective_rpc` (the `WeightPush` worker extension) and resets its prefix cache; the snapshot is then
deleted. Servers on other machines need that folder on a filesystem they share with the learner. (vLLM's NCCL weight-transfer routes need CUDA on both
sides; they are the way to skip the disk between GPU hosts.)
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import torch

from botlab.config import ModelConfig
from botlab.engines.base import Completion, Engine, EngineError, Sampling, load_tokenizer
from botlab.engines.vllm_engine import VLLMEngine, _checkpoint_shapes

log = logging.getLogger(__name__)

WORKER_EXTENSION = "botlab.engines.server_worker.WeightPush"
START_HINT = (
    "start each server with `VLLM_SERVER_DEV_MODE=1 vllm serve MODEL --logprobs-mode processed_logprobs "
    f"--worker-extension-cls {WORKER_EXTENSION}` (botlab importable in the server's Python)"
)
# Requests a server has in flight at once; vLLM batches them. More wait in this process, so a faster server
# simply takes more prompts.
SLOTS_PER_SERVER = 64
# A CPU server can take minutes over a big batch; a server that answers nothing for this long is stuck.
TIMEOUT = httpx.Timeout(1800.0, connect=10.0)


class ServerEngine(Engine):
    name = "server"

    def __init__(self, cfg: ModelConfig, model_dir: Path) -> None:
        if not cfg.server_urls:
            raise EngineError("model.engine is 'server' but model.server_urls is empty: list the vLLM servers' URLs")
        self.urls = list(cfg.server_urls)
        self.expected_shapes = _checkpoint_shapes(model_dir)
        if self.expected_shapes is None:
            raise EngineError(f"model.engine 'server' pushes weights as safetensors, and {model_dir} has none")
        config = json.loads((Path(model_dir) / "config.json").read_text())
        self.tied_head = bool(config.get("tie_word_embeddings", False))
        info = self._server_info(cfg.max_model_len)
        self.dtype = getattr(torch, info["dtype"])  # the snapshot is written in the servers' dtype: half the bytes
        self.prompts_by_server: Counter[str] = Counter()  # how the load spread, for anyone watching the servers
        self.push_seconds: float | None = None
        self._own_root = cfg.server_weights_dir is None
        root = Path(tempfile.mkdtemp(prefix="botlab-weights-")) if self._own_root else Path(cfg.server_weights_dir)
        root.mkdir(parents=True, exist_ok=True)
        self.weights_root = root
        super().__init__(load_tokenizer(model_dir), cfg.max_model_len, info["vocab_size"])
        # A long-lived server may still hold another run's weights: make it serve model_dir, as other engines do.
        try:
            self._push(_read_safetensors(model_dir))
        except BaseException:
            self.close()
            raise

    # --- generation -------------------------------------------------------------------------------------------------

    def _generate(self, prompts: list[list[int]], sampling: list[Sampling]) -> list[list[Completion]]:
        return _run(self._generate_all(prompts, sampling))

    async def _generate_all(self, prompts: list[list[int]], sampling: list[Sampling]) -> list[list[Completion]]:
        results: list[list[Completion]] = [[] for _ in prompts]
        todo = iter(range(len(prompts)))  # shared by every slot: a free slot takes the next prompt

        async def slot(client: httpx.AsyncClient, url: str) -> None:
            for i in todo:
                results[i] = await self._complete(client, url, prompts[i], sampling[i])
                self.prompts_by_server[url] += 1

        limits = httpx.Limits(max_connections=SLOTS_PER_SERVER * len(self.urls))
        async with httpx.AsyncClient(timeout=TIMEOUT, limits=limits) as client:
            # Slots alternate between servers, so even a small batch is shared.
            await asyncio.gather(*(slot(client, url) for _ in range(SLOTS_PER_SERVER) for url in self.urls))
        return results

    async def _complete(self, client: httpx.AsyncClient, url: str, prompt: list[int], s: Sampling) -> list[Completion]:
        body = {
            "prompt": prompt,
            "n": s.n,
            "temperature": s.temperature,
            "top_p": s.top_p,
            # The in-process engines end a completion at max_model_len; the server would refuse the request instead.
            "max_tokens": min(s.max_tokens, self.max_model_len - len(prompt)),
            "stop": list(s.stop),
            "seed": s.seed,
            "logprobs": 0,  # only the sampled token's logprob
            "return_token_ids": True,
            "return_tokens_as_token_ids": True,  # the logprobs list names tokens by id: no detokenizing each one
            # Neutral values, so a server's defaults (e.g. from the model's generation_config) cannot add sampling
            # rules the learner does not know of.
            "top_k": 0,
            "min_p": 0.0,
            "repetition_penalty": 1.0,
            "presence_penalty": 0.0,
            "frequency_penalty": 0.0,
        }
        reply = await _post(client, url, "/v1/completions", body)
        return [_completion(url, choice) for choice in sorted(reply["choices"], key=lambda c: c["index"])]

    # --- weights ----------------------------------------------------------------------------------------------------

    _check_names = VLLMEngine._check_names  # the same refusal, before any server sees a partial set of weights

    def _load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        named = list(named_tensors)
        self._check_names(named)
        self._push(named)

    def _push(self, named: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Write one snapshot, have every server reload it and drop its prefix cache, then delete the snapshot."""
        from safetensors.torch import save_file

        started = time.perf_counter()
        snapshot = Path(tempfile.mkdtemp(prefix="push-", dir=self.weights_root))  # unique, even in a shared folder
        try:
            tensors = {
                name: tensor.detach().to("cpu", self.dtype).contiguous()  # a GPU learner's tensors too
                for name, tensor in named
                if not (self.tied_head and name == "lm_head.weight")  # vLLM loads the tied head from the embeddings
            }
            save_file(tensors, str(snapshot / "model.safetensors"))
            del tensors
            _run(self._reload_all(snapshot))
        finally:
            shutil.rmtree(snapshot, ignore_errors=True)  # the servers hold the weights now; nothing reads it again
        self.push_seconds = time.perf_counter() - started
        log.info("weights pushed to %d server(s) in %.1f s", len(self.urls), self.push_seconds)

    async def _reload_all(self, snapshot: Path) -> None:
        async with httpx.AsyncClient(timeout=TIMEOUT) as client:
            await _all(self._reload(client, url, snapshot) for url in self.urls)

    async def _reload(self, client: httpx.AsyncClient, url: str, snapshot: Path) -> None:
        try:
            await _rpc(client, url, "botlab_load_weights", weights_path=str(snapshot))
        except EngineError as exc:
            raise EngineError(
                f"{exc}; the server's weights are now undefined until a complete load_weights succeeds "
                f"(it must read {snapshot}: across machines, set model.server_weights_dir to a shared folder)"
            ) from exc
        # Cached prompt prefixes were computed with the old weights.
        reply = await _post(client, url, "/reset_prefix_cache", None)
        if not reply.get("success"):
            raise EngineError(f"vLLM server {url} could not reset its prefix cache (requests still running?)")

    # --- servers ----------------------------------------------------------------------------------------------------

    def _server_info(self, max_model_len: int) -> dict:
        """Check every server is up, runs the worker extension and the right logprobs mode; their shared facts."""
        infos = _run(self._ask_all("botlab_server_info"))
        for url, info in zip(self.urls, infos):
            if info["logprobs_mode"] != "processed_logprobs":
                raise EngineError(
                    f"vLLM server {url} runs with --logprobs-mode {info['logprobs_mode']}: its logprobs would not "
                    f"reflect temperature and top_p; restart it with --logprobs-mode processed_logprobs"
                )
            if info["max_model_len"] < max_model_len:
                raise EngineError(
                    f"vLLM server {url} takes {info['max_model_len']} tokens but model.max_model_len is "
                    f"{max_model_len}: lower model.max_model_len or restart the server with a larger --max-model-len"
                )
        for url, info in zip(self.urls[1:], infos[1:]):
            if (info["vocab_size"], info["dtype"]) != (infos[0]["vocab_size"], infos[0]["dtype"]):
                raise EngineError(f"vLLM servers {self.urls[0]} and {url} serve different models or dtypes")
        return infos[0]

    async def _ask_all(self, method: str) -> list[dict]:
        async with httpx.AsyncClient(timeout=TIMEOUT) as client:
            return await _all(_rpc(client, url, method) for url in self.urls)

    def close(self) -> None:
        """Delete the temporary folder this engine made; the servers keep running (they are not this process's)."""
        if self._own_root:
            shutil.rmtree(self.weights_root, ignore_errors=True)


async def _rpc(client: httpx.AsyncClient, url: str, method: str, **kwargs: str):
    """Call a WeightPush method in the server's worker(s); the first worker's answer (they agree)."""
    try:
        reply = await _post(client, url, "/collective_rpc", {"method": method, "kwargs": kwargs})
    except _NotFound as exc:
        raise EngineError(f"vLLM server {url} has no /collective_rpc endpoint: {START_HINT}") from exc
    except EngineError as exc:
        if "has no attribute" in str(exc) and method in str(exc):
            raise EngineError(f"vLLM server {url} runs without botlab's worker extension: {START_HINT}") from exc
        raise
    return (reply or {}).get("results", [None])[0]


class _NotFound(EngineError):
    pass


async def _post(client: httpx.AsyncClient, url: str, path: str, body: dict | None):
    try:
        response = await client.post(url + path, json=body)
    except httpx.TransportError as exc:
        raise EngineError(
            f"vLLM server {url} is unreachable ({type(exc).__name__}: {exc or 'no answer'}); check model.server_urls "
            f"and that the server is running ({START_HINT})"
        ) from exc
    if response.status_code == 404:
        raise _NotFound(f"vLLM server {url} has no {path}")
    if response.is_error:
        raise EngineError(f"vLLM server {url} refused {path} (HTTP {response.status_code}): {_error_text(response)}")
    return response.json() if response.content else None


def _error_text(response: httpx.Response) -> str:
    try:
        return str(response.json().get("error", {}).get("message"))[:500]
    except (ValueError, AttributeError):
        return response.text[:500]


def _completion(url: str, choice: dict) -> Completion:
    token_ids, logprobs = choice.get("token_ids"), (choice.get("logprobs") or {}).get("token_logprobs")
    if token_ids is None or logprobs is None or len(token_ids) != len(logprobs):
        raise EngineError(f"vLLM server {url} returned no token ids or logprobs (a vLLM older than 0.10?)")
    if choice["finish_reason"] not in ("stop", "length"):
        raise EngineError(f"vLLM server {url} ended a completion with finish_reason {choice['finish_reason']!r}")
    return Completion(
        text=choice["text"], token_ids=token_ids, logprobs=logprobs, finish_reason=choice["finish_reason"]
    )


def _read_safetensors(model_dir: Path) -> Iterator[tuple[str, torch.Tensor]]:
    from safetensors import safe_open

    for file in sorted(Path(model_dir).glob("*.safetensors")):
        with safe_open(file, framework="pt") as f:
            for name in f.keys():
                yield name, f.get_tensor(name)


async def _all(coroutines: Iterable) -> list:
    """Every call to its end (a failed server must not cut the others' reloads short), then the first failure."""
    results = await asyncio.gather(*coroutines, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


def _run(coroutine):
    """Run `coroutine` on a private event loop in a helper thread: the caller may be inside an event loop itself."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()
