"""LoRA and QLoRA learners on a tiny random Llama: the engine's weights are base + adapters, computed aside from the
model so that no sync rounds the frozen base, and a 4-bit base still gives whole weights and plain checkpoints."""

import pytest
import torch
from pydantic import ValidationError
from transformers import AutoModelForCausalLM

from botlab.config import LoraConfig, ModelConfig, TrainConfig
from botlab.selfplay.learner import Learner, Rollout

TARGETS = ["q_proj", "v_proj"]


class NoTokenizer:
    def save_pretrained(self, folder):
        pass


def lora_learner(folder, quantize: str = "none") -> Learner:
    cfg = ModelConfig(lora=LoraConfig(enabled=True, r=4, alpha=8, target_modules=TARGETS, quantize=quantize))
    return Learner(folder, cfg, TrainConfig(lr=1e-2))


def train(learner: Learner) -> None:
    """One update that moves the adapters (a random policy's tokens have log-probs near -log(vocab))."""
    stats = learner.train_step([Rollout([1, 2, 3, 4], [5, 6, 7], [-10.0] * 3, advantage=1.0, temperature=1.0)])
    assert stats["trained_sequences"] == 1


def test_lora_syncs_leave_the_bf16_base_untouched(tiny_llama_dir):
    learner = lora_learner(tiny_llama_dir)
    model = learner.accelerator.unwrap_model(learner.model)
    base = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}
    assert all(p.dtype == torch.bfloat16 for p in base.values())  # the frozen base in model.dtype
    train(learner)
    first = dict(learner.named_weights())
    for _ in range(5):
        again = dict(learner.named_weights())
    # merge_adapter/unmerge_adapter would round the bf16 base a little at every sync; nothing may change it.
    assert all(torch.equal(p, base[n]) for n, p in model.named_parameters() if "lora_" not in n)
    assert all(torch.equal(again[n], first[n]) for n in first)

    # The merged weight is base + (alpha / r) · B·A, summed in fp32.
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    delta = (layer.lora_B["default"].weight @ layer.lora_A["default"].weight) * (8 / 4)
    assert delta.abs().max() > 0, "the update did not reach the adapters: the test would prove nothing"
    expected = (layer.base_layer.weight.float() + delta.float()).to(torch.bfloat16)
    assert torch.equal(first["model.layers.0.self_attn.q_proj.weight"], expected)


def test_qlora_trains_adapters_over_a_4bit_base_and_saves_plain_weights(tiny_llama_dir, tmp_path):
    pytest.importorskip("bitsandbytes")
    learner = lora_learner(tiny_llama_dir, quantize="4bit")
    model = learner.accelerator.unwrap_model(learner.model)
    assert type(model.base_model.model.model.layers[0].mlp.down_proj).__name__ == "Linear4bit"
    before = dict(learner.named_weights())
    train(learner)
    after = dict(learner.named_weights())

    original = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).state_dict()
    assert set(after) == set(original)
    assert all(after[n].shape == original[n].shape for n in original)
    # The 4-bit base comes back dequantized: near the original (NF4 rounding), not equal, and not packed bytes.
    name = "model.layers.0.mlp.down_proj.weight"
    error = (after[name].float() - original[name]).abs().mean() / original[name].abs().mean()
    assert after[name].dtype == torch.bfloat16 and 0 < error < 0.2, error
    assert torch.equal(after[name], before[name])  # frozen
    adapted = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(after[adapted], before[adapted])

    # A checkpoint is a plain bf16 model (no quantization settings) that loads and holds exactly these weights.
    learner.save_pretrained(tmp_path, NoTokenizer())
    saved = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert getattr(saved.config, "quantization_config", None) is None
    state = saved.state_dict()
    assert all(torch.equal(state[n].to(torch.bfloat16), after[n]) for n in after)


def test_quantize_needs_lora():
    with pytest.raises(ValidationError, match="lora.quantize '4bit' quantizes a LoRA base"):
        ModelConfig(lora=LoraConfig(quantize="4bit"))
