"""What every rollout engine offers the self-play loop: sampling settings, completions, and the Engine interface."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

# model.dtype -> what from_pretrained takes (learner and transformers engine alike).
TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "auto": "auto"}


class EngineError(RuntimeError):
    """An engine cannot be created or used on this machine; the message says why and what to do."""


@dataclass(frozen=True)
class Sampling:
    """How to sample the completions of one prompt. temperature 0 means greedy."""

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 256
    stop: list[str] = field(default_factory=list)
    seed: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.n, int) or self.n < 1:
            raise ValueError(f"Sampling.n must be an integer >= 1, got {self.n!r}")
        if not _finite_number(self.temperature) or self.temperature < 0:
            raise ValueError(f"Sampling.temperature must be a number >= 0, got {self.temperature!r}")
        if not _finite_number(self.top_p) or not 0 < self.top_p <= 1:
            raise ValueError(f"Sampling.top_p must be in (0, 1], got {self.top_p!r}")
        if not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            raise ValueError(f"Sampling.max_tokens must be an integer >= 1, got {self.max_tokens!r}")
        if isinstance(self.stop, str) or not all(isinstance(s, str) and s for s in self.stop):
            raise ValueError(f"Sampling.stop must be a list of non-empty strings, got {self.stop!r}")
        if self.seed is not None and not isinstance(self.seed, int):
            raise ValueError(f"Sampling.seed must be an integer or None, got {self.seed!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def _finite_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class Completion:
    """One sampled continuation. `logprobs[i]` is the log-probability of `token_ids[i]` under the distribution it was
    sampled from (temperature and top_p applied; plain log-softmax when greedy). `token_ids` end with the EOS token
    when the model stopped by itself; a stop string is cut from `text` but its tokens stay in `token_ids`."""

    text: str
    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str  # "stop" (EOS or a stop string) or "length" (max_tokens or max_model_len reached)


class Engine(ABC):
    """Batched generation for the self-play loop, with live weight updates from the learner."""

    name: str
    can_sleep = False  # whether sleep() really releases accelerator memory
    # Generates with the learner's own module: every update is already in the engine, so there is nothing to sync
    # (no load_weights after an update or a resume, and no sleep while the learner trains).
    shares_learner = False

    def __init__(self, tokenizer, max_model_len: int, vocab_size: int) -> None:
        self.tokenizer = tokenizer
        self.max_model_len = max_model_len
        self.vocab_size = vocab_size
        self.weight_version = 0

    def stopped_at_string(self, completion: Completion) -> bool:
        """The completion ended at one of its stop strings (not at EOS, not at the length limit): a primed reply's
        part was closed by the model, so the loop may write the part's closing."""
        eos = self.tokenizer.eos_token_id
        return completion.finish_reason == "stop" and not (completion.token_ids and completion.token_ids[-1] == eos)

    def chat_prompt_ids(self, messages: list[dict]) -> list[int]:
        """Token ids of a chat, rendered with the model's chat template and ending with the assistant's turn opener."""
        if not isinstance(messages, list) or not messages:
            raise ValueError("messages must be a non-empty list of {'role': ..., 'content': ...} dicts")
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                raise ValueError(f"messages[{i}] must be a dict with a string 'role', got {message!r}")
            if not isinstance(message.get("content"), str):
                raise ValueError(f"messages[{i}]['content'] must be a string, got {message.get('content')!r}")
        if not self.tokenizer.chat_template:
            raise EngineError("the model's tokenizer has no chat template: give a chat (instruct) model")
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        # The template already wrote the special tokens; encoding must not add a second BOS.
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def generate(self, prompts: list[list[int]], sampling: Sampling | list[Sampling]) -> list[list[Completion]]:
        """One list of `n` completions per prompt, in the order of `prompts`."""
        per_prompt = self._per_prompt_sampling(prompts, sampling)
        self._check_prompts(prompts)
        if not prompts:
            return []
        return self._generate(prompts, per_prompt)

    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Take the learner's weights (Hugging Face parameter names; merge LoRA adapters first)."""
        self._load_weights(named_tensors)
        self.weight_version += 1

    def sleep(self) -> None:
        """Release accelerator memory while the learner trains (a no-op unless `can_sleep`). The weights may be
        dropped: the way back is `wake_up()` then `load_weights(...)`, as the self-play step does."""

    def wake_up(self) -> None:
        """Undo `sleep` before the `load_weights` that follows it (a no-op unless `can_sleep`)."""

    def close(self) -> None:
        """Free the engine's memory; the engine is unusable afterwards."""

    @abstractmethod
    def _generate(self, prompts: list[list[int]], sampling: list[Sampling]) -> list[list[Completion]]: ...

    @abstractmethod
    def _load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None: ...

    def _per_prompt_sampling(self, prompts: Sequence, sampling: Sampling | list[Sampling]) -> list[Sampling]:
        if isinstance(sampling, Sampling):
            return [sampling] * len(prompts)
        if not isinstance(sampling, list) or not all(isinstance(s, Sampling) for s in sampling):
            raise ValueError("sampling must be a Sampling or a list of Sampling, one per prompt")
        if len(sampling) != len(prompts):
            raise ValueError(f"sampling has {len(sampling)} entries but there are {len(prompts)} prompts")
        return sampling

    def _check_prompts(self, prompts: list[list[int]]) -> None:
        if not isinstance(prompts, list):
            raise ValueError("prompts must be a list of token-id lists (use chat_prompt_ids to make one)")
        for i, ids in enumerate(prompts):
            if not isinstance(ids, list) or not ids:
                raise ValueError(f"prompts[{i}] must be a non-empty list of token ids")
            if not all(isinstance(t, int) and 0 <= t < self.vocab_size for t in ids):
                raise ValueError(f"prompts[{i}] holds a token id outside 0..{self.vocab_size - 1}")
            if len(ids) >= self.max_model_len:
                raise ValueError(
                    f"prompts[{i}] has {len(ids)} tokens, leaving no room to generate within "
                    f"model.max_model_len={self.max_model_len}"
                )


def load_tokenizer(model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)
