"""The fallback engine: Hugging Face `generate`, batched with left padding, on the learner's own module when given."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
    TemperatureLogitsWarper,
    TopPLogitsWarper,
)

from botlab.config import ModelConfig
from botlab.engines.base import TORCH_DTYPES, Completion, Engine, Sampling, load_tokenizer

log = logging.getLogger(__name__)



class TransformersEngine(Engine):
    name = "transformers"

    def __init__(self, cfg: ModelConfig, model_dir: Path, learner_model: torch.nn.Module | None = None) -> None:
        self.shares_learner = learner_model is not None
        if learner_model is None:
            learner_model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=TORCH_DTYPES[cfg.dtype])
            learner_model.eval()
        self.model = learner_model
        self.batch_rows = cfg.transformers_batch_size
        tokenizer = load_tokenizer(model_dir)
        super().__init__(tokenizer, cfg.max_model_len, self.model.get_input_embeddings().weight.shape[0])
        eos = self.model.generation_config.eos_token_id
        eos = set(eos if isinstance(eos, list) else [eos]) | {tokenizer.eos_token_id}
        self.eos_ids = {e for e in eos if e is not None}
        pad = tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else min(self.eos_ids)

    def _generate(self, prompts: list[list[int]], sampling: list[Sampling]) -> list[list[Completion]]:
        # One row per completion; rows that sample alike share `generate` calls.
        rows = [(i, prompt) for i, prompt in enumerate(prompts) for _ in range(sampling[i].n)]
        groups: dict[tuple, list[tuple[int, list[int]]]] = {}
        for i, prompt in rows:
            groups.setdefault(_alike(sampling[i]), []).append((i, prompt))
        results: list[list[Completion]] = [[] for _ in prompts]
        with torch.no_grad(), _inference_mode_of(self.model):
            for group in groups.values():
                for i, completion in self._generate_group(group, sampling[group[0][0]]):
                    results[i].append(completion)
        return results

    def _generate_group(self, rows: list[tuple[int, list[int]]], params: Sampling) -> Iterator[tuple[int, Completion]]:
        # Similar lengths share a chunk, so little padding is computed; a seed makes the whole group reproducible.
        rows = sorted(rows, key=lambda row: len(row[1]))
        with torch.random.fork_rng(devices=[]) if params.seed is not None else contextlib.nullcontext():
            if params.seed is not None:
                torch.manual_seed(params.seed)
            for start in range(0, len(rows), self.batch_rows):
                chunk = rows[start : start + self.batch_rows]
                completions = self._generate_chunk([prompt for _, prompt in chunk], params)
                yield from zip((i for i, _ in chunk), completions)

    def _generate_chunk(self, prompts: list[list[int]], params: Sampling) -> list[Completion]:
        width = max(len(p) for p in prompts)
        device = self.model.get_input_embeddings().weight.device
        input_ids = torch.tensor([[self.pad_id] * (width - len(p)) + p for p in prompts], device=device)
        attention_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
        recorder = _SampledLogprobs(params)
        stops = _StopStrings(self.tokenizer, params.stop, width)
        # Temperature and top_p are applied by `recorder`, so the logprobs it keeps are those sampled from; generate's
        # own warpers stay off (top_k=0 overrides the library default of 50).
        sample = {"do_sample": True, "temperature": 1.0, "top_p": 1.0, "top_k": 0} if not params.greedy else {}
        config = GenerationConfig(
            max_new_tokens=min(params.max_tokens, self.max_model_len - width),
            **sample,
            num_return_sequences=1,
            eos_token_id=sorted(self.eos_ids),
            pad_token_id=self.pad_id,
            use_cache=True,
        )
        sequences = self.model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            generation_config=config,
            logits_processor=LogitsProcessorList([recorder]),
            stopping_criteria=StoppingCriteriaList([stops]) if params.stop else None,
        )
        new_tokens = sequences[:, width:].tolist()
        logprobs = recorder.finish(sequences).tolist()
        return [self._completion(t, lp, params) for t, lp in zip(new_tokens, logprobs)]

    def _completion(self, tokens: list[int], logprobs: list[float], params: Sampling) -> Completion:
        # After a row stops, generate pads it (the pad token may equal EOS): cut at the first end condition.
        end, reason = len(tokens), "length"
        for k, token in enumerate(tokens):
            if token in self.eos_ids:
                end, reason = k + 1, "stop"
                break
        text = self._decode(tokens[:end])
        hit = _first_stop(text, params.stop)
        if hit is not None:
            # Keep tokens up to the one that completed the stop string; the text ends before it.
            end = next(k + 1 for k in range(end) if _first_stop(self._decode(tokens[: k + 1]), params.stop) is not None)
            text, reason = text[:hit], "stop"
        return Completion(text=text, token_ids=tokens[:end], logprobs=logprobs[:end], finish_reason=reason)

    def _decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True)

    def _load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        # state_dict(keep_vars=True) also names tied weights (lm_head.weight), which named_parameters() hides.
        params = self.model.state_dict(keep_vars=True)
        with torch.no_grad():
            for name, tensor in named_tensors:
                target = params.get(name)
                if target is None:
                    raise ValueError(f"load_weights: the model has no parameter named {name!r}")
                if target.shape != tensor.shape:
                    shape, expected = tuple(tensor.shape), tuple(target.shape)
                    raise ValueError(f"load_weights: {name} has shape {shape}, expected {expected}")
                if target.data_ptr() != tensor.data_ptr():  # the learner's own tensor: nothing to copy
                    target.copy_(tensor)

    def close(self) -> None:
        self.model = None


def _alike(s: Sampling) -> tuple:
    """Everything but n: rows with equal keys can share a generate call."""
    return s.temperature, s.top_p, s.max_tokens, tuple(s.stop), s.seed


@contextlib.contextmanager
def _inference_mode_of(model: torch.nn.Module):
    """Eval mode for generation, then every submodule back to the train/eval flag it had (the learner's state)."""
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in flags:
            module.training = training


class _SampledLogprobs(LogitsProcessor):
    """Applies temperature and top_p (as the last processor) and keeps the logprob of each token then sampled."""

    def __init__(self, params: Sampling) -> None:
        self.warpers = [] if params.greedy else [TemperatureLogitsWarper(params.temperature)]
        if not params.greedy and params.top_p < 1:
            self.warpers.append(TopPLogitsWarper(params.top_p))
        self.picked: list[torch.Tensor] = []
        self.last: torch.Tensor | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        # The token sampled from the previous step's distribution is now the last column of input_ids.
        if self.last is not None:
            self.picked.append(self.last.gather(1, input_ids[:, -1:]).squeeze(1))
        for warper in self.warpers:
            scores = warper(input_ids, scores)
        self.last = torch.log_softmax(scores.float(), dim=-1)
        return scores

    def finish(self, sequences: torch.Tensor) -> torch.Tensor:
        """(rows, new tokens) logprobs, once generation is over."""
        if self.last is not None:
            self.picked.append(self.last.gather(1, sequences[:, -1:]).squeeze(1))
            self.last = None
        return torch.stack(self.picked, dim=1) if self.picked else torch.zeros(len(sequences), 0)


class _StopStrings(StoppingCriteria):
    """Ends a row once its generated text contains a stop string (looking only at its newest tokens)."""

    def __init__(self, tokenizer, stop: list[str], prompt_width: int) -> None:
        self.tokenizer = tokenizer
        self.stop = stop
        self.prompt_width = prompt_width
        # A stop string of m characters ends within the last m + 1 tokens when every token has a character; the
        # margin covers tokens that are only part of a UTF-8 character.
        self.window = max((len(s) for s in stop), default=0) + 8

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        start = max(self.prompt_width, input_ids.shape[1] - self.window)
        tails = self.tokenizer.batch_decode(input_ids[:, start:], skip_special_tokens=True)
        return torch.tensor([_first_stop(t, self.stop) is not None for t in tails], device=input_ids.device)


def _first_stop(text: str, stop: list[str]) -> int | None:
    """Index in `text` where the earliest stop string begins, or None."""
    hits = [k for k in (text.find(s) for s in stop) if k >= 0]
    return min(hits) if hits else None
