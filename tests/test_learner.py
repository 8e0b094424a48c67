"""The learner on a tiny random Llama saved as a local HF folder: updates, LoRA names, checkpoints, resume state."""

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from botlab.config import LoraConfig, ModelConfig, TrainConfig
from botlab.resources import folder_size
from botlab.selfplay.checkpoints import load_resume_state, prune, save_checkpoint, save_resume_state
from botlab.selfplay.learner import Learner, Rollout
from botlab.selfplay.trr import token_logprobs


class NoTokenizer:
    def save_pretrained(self, folder):
        (folder / "tokenizer_saved").write_text("ok")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         tie_word_embeddings=True)
    folder = tmp_path_factory.mktemp("tiny")
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def completion_logprob(learner: Learner, rollout: Rollout) -> float:
    model = learner.accelerator.unwrap_model(learner.model)
    ids = torch.tensor([rollout.prompt_ids + rollout.completion_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[:, :-1]
        lp, _ = token_logprobs(logits, ids[:, 1:], rollout.temperature)
    return float(lp[0, len(rollout.prompt_ids) - 1:].sum())


def rollout(learner, advantage: float) -> Rollout:
    r = Rollout([1, 2, 3], [10, 11, 12, 13], [], advantage, 1.0)
    model = learner.accelerator.unwrap_model(learner.model)
    ids = torch.tensor([r.prompt_ids + r.completion_ids])
    with torch.no_grad():
        lp, _ = token_logprobs(model(input_ids=ids).logits[:, :-1], ids[:, 1:], 1.0)
    r.old_logprobs = lp[0, 2:].tolist()
    return r


@pytest.mark.parametrize("advantage", [1.0, -1.0])
def test_update_follows_the_advantage(tiny_dir, advantage):
    learner = Learner(tiny_dir, ModelConfig(), TrainConfig(lr=1e-2, micro_batch=1, bf16_autocast=False))
    good = rollout(learner, advantage)
    filler = Rollout([4, 5], [20, 21], [], 0.0, 1.0)
    filler.old_logprobs = [0.0, 0.0]
    before = completion_logprob(learner, good)
    stats = learner.train_step([good, filler])  # two micro-batches: accumulation
    assert stats["trained_sequences"] == 2 and stats["trained_tokens"] == 6
    assert (completion_logprob(learner, good) - before) * advantage > 0


def test_lora_weights_carry_base_names(tiny_dir):
    cfg = ModelConfig(lora=LoraConfig(enabled=True, r=4, alpha=8, target_modules=["q_proj", "v_proj"]))
    learner = Learner(tiny_dir, cfg, TrainConfig(lr=1e-2))
    base = AutoModelForCausalLM.from_pretrained(tiny_dir)
    names = {n for n, _ in learner.named_weights()}
    assert names == set(base.state_dict())
    trainable = learner.trainable_state()
    assert trainable and all("lora_" in n for n in trainable)


def test_checkpoint_loads_in_transformers_and_resume_state_round_trips(tiny_dir, tmp_path):
    learner = Learner(tiny_dir, ModelConfig(), TrainConfig(lr=1e-2, bf16_autocast=False))
    learner.train_step([rollout(learner, 1.0)])
    state = save_resume_state(tmp_path, 1, learner)
    folder = save_checkpoint(tmp_path, 1, learner, NoTokenizer(), state)
    loaded = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    ids = torch.tensor([[1, 2, 3, 4]])
    ours = learner.accelerator.unwrap_model(learner.model)
    with torch.no_grad():
        assert torch.allclose(loaded(input_ids=ids).logits, ours(input_ids=ids).logits, atol=0.05)
    assert (folder / "botlab_state" / "learner.pt").is_file()
    # The checkpoint shares the resume state's files (hard links), and survives the state's pruning.
    assert (folder / "botlab_state" / "learner.pt").stat().st_ino == (state / "learner.pt").stat().st_ino
    assert folder_size(tmp_path) < folder_size(state) + folder_size(folder / "botlab_state")

    # A fresh learner with the resume state continues exactly: same weights, same next update.
    resumed = Learner(tiny_dir, ModelConfig(), TrainConfig(lr=1e-2, bf16_autocast=False))
    save_resume_state(tmp_path, 2, learner)  # the next step's: once step 2 is committed, step 1's state goes
    prune(tmp_path, committed_step=2, keep_checkpoints=1)
    assert not state.exists()
    load_resume_state(folder / "botlab_state", resumed)
    r = rollout(learner, 1.0)
    learner.train_step([r])
    resumed.train_step([r])
    for (name, a), (_, b) in zip(learner.trainable_state().items(), resumed.trainable_state().items()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("lora", [False, True])
def test_gradient_checkpointing_makes_the_same_update(tiny_dir, lora):
    model_cfg = ModelConfig(lora=LoraConfig(enabled=lora, r=4, alpha=8, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(0)  # the same LoRA initialisation in both
    plain = Learner(tiny_dir, model_cfg, TrainConfig(lr=1e-2, bf16_autocast=False))
    torch.manual_seed(0)
    recomputing = Learner(tiny_dir, model_cfg, TrainConfig(lr=1e-2, bf16_autocast=False, gradient_checkpointing=True))
    assert recomputing.accelerator.unwrap_model(recomputing.model).is_gradient_checkpointing
    r = rollout(plain, 1.0)
    plain.train_step([r])
    recomputing.train_step([r])
    for (name, a), (_, b) in zip(plain.trainable_state().items(), recomputing.trainable_state().items()):
        assert torch.allclose(a, b, atol=1e-6), name
    torch.manual_seed(0)
    untrained = Learner(tiny_dir, model_cfg, TrainConfig()).trainable_state()
    assert not torch.equal(plain.trainable_state()[name], untrained[name])  # the update did move the weights


def test_checkpoints_are_pruned(tiny_dir, tmp_path):
    learner = Learner(tiny_dir, ModelConfig(), TrainConfig())
    state = save_resume_state(tmp_path, 1, learner)
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, learner, NoTokenizer(), state)
        prune(tmp_path, committed_step=step, keep_checkpoints=2)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-000002", "step-000003"]


def test_left_padded_tail_scores_match_unpadded_sequences(tiny_dir):
    learner = Learner(tiny_dir, ModelConfig(), TrainConfig(bf16_autocast=False))
    short = Rollout([1, 2], [10, 11], [0.0, 0.0], 1.0, 1.0)
    long = Rollout([3, 4, 5, 6, 7], [20, 21, 22, 23], [0.0] * 4, 1.0, 1.0)
    batch = learner._pack([short, long])
    with torch.no_grad():
        packed, _ = token_logprobs(learner._tail_logits(learner.model, batch), batch.targets, 1.0)
    for row, r in enumerate([short, long]):
        expected = completion_logprob(learner, r)
        got = float((packed[row] * batch.mask[row]).sum())
        assert got == pytest.approx(expected, abs=1e-4)


def test_tokens_the_loop_inserted_are_not_trained(tiny_dir):
    learner = Learner(tiny_dir, ModelConfig(), TrainConfig(lr=1e-2, bf16_autocast=False))
    before = {n: p.clone() for n, p in learner.trainable_state().items()}
    inserted_only = rollout(learner, 1.0)
    inserted_only.train_mask = [0.0] * len(inserted_only.completion_ids)
    learner.train_step([inserted_only])
    assert all(torch.equal(before[n], p) for n, p in learner.trainable_state().items())
    partly = rollout(learner, 1.0)
    partly.train_mask = [1.0, 0.0, 0.0, 1.0]
    learner.train_step([partly])
    assert any(not torch.equal(before[n], p) for n, p in learner.trainable_state().items())


def test_batches_come_in_few_shapes(tiny_dir):
    """Every distinct input shape costs kernel memory that is never given back (bf16 on CPU): widths are rounded."""
    learner = Learner(tiny_dir, ModelConfig(), TrainConfig())
    shapes = set()
    for prompt, completion in [(5, 3), (40, 17), (61, 2), (100, 30), (90, 41)]:
        batch = learner._pack([Rollout([1] * prompt, [2] * completion, [0.0] * completion, 1.0, 1.0)])
        shapes.add((batch.ids.shape[1], batch.tail))
    assert shapes == {(64, 63), (192, 64)}
