"""The learner: one TRR++ policy-gradient update over a batch of rollouts, read top to bottom.

fp32 master weights, bf16 autocast for forward/backward, gradient accumulation over micro-batches so the batch size
never bounds memory, optional LoRA (peft), device placement by accelerate (CPU, one GPU, or a launched multi-GPU run).
Under a launch with `train.sharding: fsdp` the weights, gradients and AdamW state are sharded over the ranks with
torch's FSDP2 (`fully_shard`, the same on NCCL and gloo; accelerate's FSDP plugin does not run on CPU, where botlab
is tested). Whole weights are then gathered only for the engine, checkpoints and resume states, by every rank at once
(botlab/selfplay/distributed.py orders the other ranks to join).
"""

from __future__ import annotations

import copy
import importlib.util
import json
import logging
import random
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from accelerate import Accelerator
from transformers import AutoModelForCausalLM
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_optimizer_state_dict
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor, distribute_tensor

from botlab.config import ModelConfig, TrainConfig
from botlab.engines.base import TORCH_DTYPES
from botlab.selfplay.trr import clipped_policy_loss, token_logprobs

log = logging.getLogger(__name__)

class LearnerError(Exception):
    """A learner the team file asks for cannot be built here (said with the key to change)."""




@dataclass
class _Batch:
    ids: torch.Tensor  # (B, L) left-padded prompt + completion
    attention: torch.Tensor
    positions: torch.Tensor
    targets: torch.Tensor  # (B, tail) the last `tail` tokens of each row
    mask: torch.Tensor  # (B, tail) 1 on completion tokens
    old: torch.Tensor  # (B, tail) sampling-time log-probs of those tokens
    tail: int


@dataclass
class Rollout:
    """One trained sequence: the prompt, what the policy sampled, with the sampling-time log-probs."""

    prompt_ids: list[int]
    completion_ids: list[int]
    old_logprobs: list[float]
    advantage: float
    temperature: float
    train_mask: list[float] | None = None  # 0 for completion tokens the loop inserted (not sampled)


class Learner:
    def __init__(self, model_dir: Path, model_cfg: ModelConfig, train_cfg: TrainConfig):
        self.cfg = train_cfg
        self.accelerator = Accelerator(cpu=not torch.cuda.is_available())
        self.device = self.accelerator.device
        self.lora = model_cfg.lora.enabled
        # fp32 master weights; with LoRA the frozen base stays in model.dtype (peft keeps the adapters in fp32), or
        # in 4-bit NF4 with model.lora.quantize (QLoRA).
        self.base_dtype = TORCH_DTYPES[model_cfg.dtype] if model_cfg.dtype != "auto" else torch.bfloat16
        dtype = self.base_dtype if self.lora else torch.float32
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, **_quantization(model_cfg, dtype))
        model.config.use_cache = False
        if train_cfg.gradient_checkpointing:
            # Non-reentrant: works with frozen inputs (LoRA) and with the transformers engine sharing this module.
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if self.lora:
            from peft import LoraConfig as PeftLora, get_peft_model

            lora = model_cfg.lora
            model = get_peft_model(model, PeftLora(
                r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=lora.target_modules,
                task_type="CAUSAL_LM",
            ))
        # A frozen copy of the initial policy only when a KL penalty asks for it (LoRA: the base with adapters off).
        self.reference = None
        if train_cfg.kl_coef > 0 and not self.lora:
            self.reference = copy.deepcopy(model).eval().requires_grad_(False)
        # Sharded only under a launch of several ranks (`launch_problem` refuses fsdp with LoRA).
        self.sharded = train_cfg.sharding == "fsdp" and self.accelerator.num_processes > 1
        if self.sharded:
            model = _shard(model.to(self.device))
            if self.reference is not None:
                self.reference = _shard(self.reference.to(self.device))
        # The optimizer is built over the sharded parameters: each rank keeps AdamW state for its shard only.
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
        if self.sharded:
            self.model, self.optimizer = model, optimizer
        else:
            self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        if self.reference is not None:
            self.reference = self.reference.to(self.device)
        self.model.train()

    def shareable_model(self) -> torch.nn.Module | None:
        """The module an in-process transformers engine may generate with, or None when this rank holds a shard."""
        return None if self.sharded else self.accelerator.unwrap_model(self.model)

    def gradient_sync(self, enabled: bool):
        """Whether the next backward pass sums gradients across ranks (off while accumulating micro-batches)."""
        if self.sharded:
            self.model.set_requires_gradient_sync(enabled)
            return nullcontext()
        return nullcontext() if enabled else self.accelerator.no_sync(self.model)

    # --- the update -------------------------------------------------------------------------------------------------

    def train_step(self, rollouts: list[Rollout], batch_tokens: int | None = None) -> dict[str, float]:
        """One optimizer step over all rollouts; the loss is a token mean over the whole batch.

        `batch_tokens`: the batch's completion tokens when the caller left out rollouts that carry no gradient (zero
        advantage, no entropy or KL term), so the update is the one of the whole batch."""
        rollouts = [r for r in rollouts if r.completion_ids]
        if not rollouts:
            return {"trained_sequences": 0}
        total_tokens = batch_tokens or sum(len(r.completion_ids) for r in rollouts)
        totals = {"loss": 0.0, "entropy": 0.0, "kl": 0.0, "clip_fraction": 0.0, "ratio_mean": 0.0}
        self.optimizer.zero_grad(set_to_none=True)
        for chunk in self.micro_batches(rollouts):
            stats = self._accumulate(chunk, total_tokens)
            weight = sum(len(r.completion_ids) for r in chunk) / total_tokens
            for key, value in stats.items():
                totals[key] += value * (1.0 if key in ("loss", "entropy", "kl") else weight)
        grad_norm = self.accelerator.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return totals | {"grad_norm": float(grad_norm), "trained_sequences": len(rollouts), "trained_tokens": total_tokens}

    def micro_batches(self, rollouts: list[Rollout]) -> list[list[Rollout]]:
        """At most `micro_batch` sequences each; roles may sample at different temperatures: one temperature each."""
        micro = self.cfg.micro_batch
        rollouts = sorted(rollouts, key=lambda r: r.temperature)
        chunks = [rollouts[i:i + micro] for i in range(0, len(rollouts), micro)]
        return [part for chunk in chunks for part in _split_by_temperature(chunk)]

    def _accumulate(self, chunk: list[Rollout], total_tokens: float) -> dict[str, float]:
        batch = self._pack(chunk)
        # Sequences are left-padded so every completion ends at the last position: the vocabulary projection
        # (the biggest tensor by far with a 49k-152k vocabulary) is computed for the completion tail only.
        logits = self._tail_logits(self.model, batch)
        temperature = chunk[0].temperature
        with_entropy = self.cfg.entropy_coef > 0
        new_logprobs, entropy = token_logprobs(logits, batch.targets, temperature, with_entropy=with_entropy)
        mask = batch.mask
        advantages = torch.tensor([r.advantage for r in chunk], device=self.device)
        clip_high = self.cfg.clip_eps_high or self.cfg.clip_eps
        # A NaN sampling-time log-prob marks a token the loop wrote and trains (selfplay.solver_hints): its ratio is 1.
        old = torch.where(torch.isnan(batch.old), new_logprobs.detach(), batch.old)
        policy_loss, stats = clipped_policy_loss(new_logprobs, old, advantages, mask, self.cfg.clip_eps, clip_high)
        loss = policy_loss
        entropy_sum = torch.zeros((), device=self.device)
        if with_entropy:
            entropy_sum = (entropy * mask).sum()
            loss = loss - self.cfg.entropy_coef * entropy_sum
        kl_sum = torch.zeros((), device=self.device)
        if self.cfg.kl_coef > 0:
            kl_sum = self._kl(batch, new_logprobs, temperature)
            loss = loss + self.cfg.kl_coef * kl_sum
        self.accelerator.backward(loss / total_tokens)
        return {
            "loss": float(loss.detach()) / total_tokens,
            "entropy": float(entropy_sum.detach()) / total_tokens,
            "kl": float(kl_sum.detach()) / total_tokens,
            **stats,
        }

    def _tail_logits(self, model, batch: "_Batch") -> torch.Tensor:
        """Logits that predict the last `tail` tokens of every (left-padded) row."""
        with self._autocast():
            logits = model(input_ids=batch.ids, attention_mask=batch.attention, position_ids=batch.positions,
                           logits_to_keep=batch.tail + 1).logits
        return logits[:, :-1]  # the last position predicts past the end

    def _kl(self, batch: "_Batch", new_logprobs: torch.Tensor, temperature: float) -> torch.Tensor:
        """k3 estimate of KL(policy || initial policy), summed over the masked tokens."""
        with torch.no_grad():
            if self.reference is not None:
                ref_logits = self._tail_logits(self.reference, batch)
            else:
                with self.accelerator.unwrap_model(self.model).disable_adapter():
                    ref_logits = self._tail_logits(self.model, batch)
        ref_logprobs, _ = token_logprobs(ref_logits, batch.targets, temperature, with_entropy=False)
        delta = ref_logprobs - new_logprobs
        return ((torch.exp(delta) - delta - 1) * batch.mask).sum()

    def _pack(self, chunk: list[Rollout]) -> "_Batch":
        """Left-padded ids with positions counted from each row's first real token; the completion tail aligned."""
        # Widths rounded up to a few sizes: bf16 kernels on CPU are built and kept per input shape, and a new shape
        # every micro-batch made a run's memory grow by ~60 MB per step (bench/soak.py).
        width = _round_up(max(len(r.prompt_ids) + len(r.completion_ids) for r in chunk))
        tail = min(width - 1, _round_up(max(len(r.completion_ids) for r in chunk)))  # a target needs a token before it
        ids = torch.zeros((len(chunk), width), dtype=torch.long)
        attention = torch.zeros_like(ids)
        mask = torch.zeros((len(chunk), tail))
        old = torch.zeros((len(chunk), tail))
        for row, r in enumerate(chunk):
            seq = r.prompt_ids + r.completion_ids
            ids[row, width - len(seq):] = torch.tensor(seq)
            attention[row, width - len(seq):] = 1
            c = len(r.completion_ids)
            mask[row, tail - c:] = torch.tensor(r.train_mask, dtype=torch.float) if r.train_mask else 1
            logprobs = (r.old_logprobs + [0.0] * c)[:c]
            old[row, tail - c:] = torch.tensor(logprobs)
        positions = (attention.cumsum(1) - 1).clamp(min=0)
        to = self.device
        return _Batch(ids.to(to), attention.to(to), positions.to(to), ids[:, width - tail:].to(to), mask.to(to),
                      old.to(to), tail)

    def _autocast(self):
        if self.cfg.bf16_autocast:
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return torch.autocast(device_type=self.device.type, enabled=False)

    # --- weights out: engine sync and checkpoints -------------------------------------------------------------------

    def named_weights(self) -> Iterator[tuple[str, torch.Tensor]]:
        """The policy's weights under the base model's HF names (LoRA merged in), for the rollout engine."""
        if self.sharded:
            # A collective: every rank calls it; the whole weights land on rank 0's CPU, the others get nothing.
            yield from self._full_state().items()
            return
        model = self.accelerator.unwrap_model(self.model)
        if not self.lora:
            for name, param in model.state_dict().items():
                yield name, param.detach()
            return
        yield from _merged_lora_weights(model, self.base_dtype)

    def save_pretrained(self, folder: Path, tokenizer) -> None:
        """A plain HF folder (LoRA merged) that transformers and vLLM load directly, in bf16."""
        model = self.accelerator.unwrap_model(self.model)
        if self.lora:
            # The plain model the merged weights belong to, without allocating it (nor a 4-bit base's settings).
            config = copy.deepcopy(model.get_base_model().config)
            config.quantization_config = None
            with torch.device("meta"):
                model = AutoModelForCausalLM.from_config(config)
        # Copies: a bf16 tensor cast to bf16 is itself, and the tied head would be saved twice as one tensor.
        state = {k: v.to(torch.bfloat16, copy=True) for k, v in dict(self.named_weights()).items()}
        model.save_pretrained(folder, state_dict=state, safe_serialization=True)
        # The tensors are bf16: say so, so loaders do not upcast by default.
        config_file = folder / "config.json"
        config = json.loads(config_file.read_text())
        config["dtype"] = "bfloat16"
        config_file.write_text(json.dumps(config, indent=2))
        tokenizer.save_pretrained(folder)

    def state_dict(self) -> dict:
        """Everything exact resume needs besides the model weights. Sharded: a collective, whole on rank 0 only, the
        optimizer state keyed by parameter name."""
        if self.sharded:
            whole = StateDictOptions(full_state_dict=True, cpu_offload=True)
            optimizer = get_optimizer_state_dict(self.model, self.optimizer, options=whole)
        else:
            optimizer = self.optimizer.state_dict()
        return {
            "optimizer": optimizer,
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                "numpy": np.random.get_state(),
                "python": random.getstate(),
            },
        }

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(self._placed_optimizer_state(state["optimizer"]))
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        if rng.get("cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """fp32 weights that training changes (all, or only the LoRA adapters), for exact resume. Sharded: a
        collective, whole on rank 0 only."""
        model = self.accelerator.unwrap_model(self.model)
        trained = [n for n, p in model.named_parameters() if p.requires_grad]
        if self.sharded:
            whole = self._full_state()
            return {n: whole[n] for n in trained if n in whole}
        params = dict(model.named_parameters())
        return {n: params[n].detach() for n in trained}

    def load_trainable_state(self, tensors: dict[str, torch.Tensor]) -> None:
        """Whole weights in; a sharded rank keeps its own slice without asking the others (torch's loaders are
        collectives, and the other ranks load at a different moment)."""
        model = self.accelerator.unwrap_model(self.model)
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, value in tensors.items():
                param = params[name]
                if isinstance(param, DTensor):
                    param.to_local().copy_(_placed_like(value, param).to_local())
                else:
                    param.copy_(value)

    def _full_state(self) -> dict[str, torch.Tensor]:
        return get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    def _placed_optimizer_state(self, saved: dict) -> dict:
        """A saved optimizer state (by parameter name from a sharded run, else by index) for this optimizer, each
        moment tensor placed like its parameter: resume works across none, ddp and fsdp."""
        params = {n: p for n, p in self.accelerator.unwrap_model(self.model).named_parameters() if p.requires_grad}
        names = list(params)  # the optimizer's order
        by_index = all(isinstance(key, int) for key in saved["state"])
        if by_index and not self.sharded:
            return saved  # the form this optimizer writes itself
        by_name = {names[i]: value for i, value in saved["state"].items()} if by_index else saved["state"]
        state = {}
        for index, name in enumerate(names):
            if name in by_name:
                state[index] = {key: _placed_like(value, params[name]) if torch.is_tensor(value) and value.dim() else
                                value for key, value in by_name[name].items()}
        groups, start = [], 0
        for group, saved_group in zip(self.optimizer.param_groups, saved["param_groups"]):
            count = len(group["params"])
            groups.append({**saved_group, "params": list(range(start, start + count))})
            start += count
        return {"state": state, "param_groups": groups}


def _quantization(model_cfg: ModelConfig, dtype: torch.dtype) -> dict:
    """from_pretrained's settings for a QLoRA base (model.lora.quantize), else none."""
    if not model_cfg.lora.enabled or model_cfg.lora.quantize == "none":
        return {}
    if importlib.util.find_spec("bitsandbytes") is None:
        raise LearnerError("model.lora.quantize: 4bit needs bitsandbytes: pip install 'botlab[qlora]'")
    from transformers import BitsAndBytesConfig

    return {"quantization_config": BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                      bnb_4bit_compute_dtype=dtype)}


def _merged_lora_weights(model, dtype: torch.dtype) -> Iterator[tuple[str, torch.Tensor]]:
    """Each weight under the base model's HF name, adapters added in fp32 aside from the model. (peft's
    merge_adapter/unmerge_adapter would round a bf16 or 4-bit base at every sync, and the rounding adds up.)"""
    from peft.tuners.tuners_utils import BaseTunerLayer

    inside_adapted: list[str] = []
    for prefix, module in model.named_modules():
        if any(prefix.startswith(outer + ".") for outer in inside_adapted):
            continue  # the adapted layer's base_layer and lora_A/lora_B, already counted
        name = prefix.removeprefix("base_model.model.")
        if isinstance(module, BaseTunerLayer):
            inside_adapted.append(prefix)
            base = module.get_base_layer()
            yield f"{name}.weight", _merged(module, dtype)
            if base.bias is not None:
                yield f"{name}.bias", base.bias.detach()
            continue
        for key, param in module.named_parameters(recurse=False):
            yield f"{name}.{key}", _dense(param).to(dtype) if param.dtype == torch.uint8 else param.detach()


@torch.no_grad()
def _merged(layer, dtype: torch.dtype) -> torch.Tensor:
    """An adapted layer's weight with its active adapters' deltas added in fp32."""
    weight = _dense(layer.get_base_layer().weight).float()
    for adapter in layer.active_adapters:
        weight += layer.get_delta_weight(adapter).float()
    return weight.to(dtype)


def _dense(param: torch.Tensor) -> torch.Tensor:
    """A weight as a plain tensor: a 4-bit one (bitsandbytes) dequantized."""
    quant_state = getattr(param, "quant_state", None)
    if quant_state is None:
        return param.detach()
    from bitsandbytes.functional import dequantize_4bit

    return dequantize_4bit(param.data, quant_state)


def _shard(model: torch.nn.Module) -> torch.nn.Module:
    """FSDP2: each transformer block its own unit (gathered one at a time), the rest (embeddings, head) the root."""
    blocks = set(getattr(model, "_no_split_modules", None) or [])
    for module in model.modules():
        if type(module).__name__ in blocks:
            fully_shard(module)
    fully_shard(model)
    return model


def _placed_like(value: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """`value` (whole) as `param` holds it: this rank's slice of a sharded parameter, else on its device."""
    if isinstance(param, DTensor):
        # src_data_rank None: every rank has the whole tensor and cuts its own slice, with no communication.
        return distribute_tensor(value.to(param.device, param.dtype), param.device_mesh, param.placements,
                                 src_data_rank=None)
    return value.to(param.device)


def _split_by_temperature(chunk: list[Rollout]) -> list[list[Rollout]]:
    parts: dict[float, list[Rollout]] = {}
    for r in chunk:
        parts.setdefault(r.temperature, []).append(r)
    return list(parts.values())


SHAPE_STEP = 64


def _round_up(n: int) -> int:
    return -(-n // SHAPE_STEP) * SHAPE_STEP
