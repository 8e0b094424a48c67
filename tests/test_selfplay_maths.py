"""The maths of an update, pinned: TRR++ on a hand-computed batch, the clipped loss, reward edge cases."""

import pytest
import torch

from botlab.selfplay.rewards import learnability, proposer_reward, solver_reward
from botlab.selfplay.trr import baseline_group, clipped_policy_loss, token_logprobs, trr_advantages


def test_trr_whitens_per_task_type_and_role_over_tokens():
    rewards = [1.0, -0.5, 0.5, 0.5, 0.2]
    groups = [("deduction", "solver"), ("deduction", "solver"), ("abduction", "solver"), ("abduction", "solver"),
              ("deduction", "proposer")]
    lengths = [1, 3, 2, 2, 5]
    adv = trr_advantages(rewards, groups, lengths)
    # deduction/solver tokens: [1, -0.5, -0.5, -0.5] -> mean -0.125, unbiased var 0.5625, std 0.75
    assert adv[0] == pytest.approx((1.0 + 0.125) / 0.75, rel=1e-6)
    assert adv[1] == pytest.approx((-0.5 + 0.125) / 0.75, rel=1e-6)
    # abduction/solver: all rewards equal -> zero advantage (no NaN)
    assert adv[2] == adv[3] == pytest.approx(0.0, abs=1e-3)
    # a lone proposer sequence: its tokens all carry the same reward -> 0
    assert adv[4] == pytest.approx(0.0, abs=1e-3)


def test_trr_groups_are_independent():
    base = trr_advantages([1.0, 0.0], [("d", "s"), ("d", "s")], [1, 1])
    mixed = trr_advantages([1.0, 0.0, 100.0, -100.0], [("d", "s"), ("d", "s"), ("a", "s"), ("a", "s")], [1, 1, 1, 1])
    assert mixed[:2] == pytest.approx(base)


def test_per_task_baseline_compares_answers_to_the_same_task():
    # Four answers to each of two deduction tasks: task A has one right answer, task B none.
    rewards = [1.0, -0.5, -0.5, -0.5] + [-0.5] * 4
    prompts = ["task A"] * 4 + ["task B"] * 4
    lengths = [2] * 8

    def advantages(solver_baseline: str) -> list[float]:
        groups = [baseline_group("solver", "deduction", p, solver_baseline) for p in prompts]
        return trr_advantages(rewards, groups, lengths)

    by_type, by_task = advantages("task_type"), advantages("task")
    # TRR++: task B's wrong answers are pushed down as hard as task A's, against the whole batch's mean.
    assert all(a < 0 for a in by_type[4:])
    assert by_type[1] == pytest.approx(by_type[4])
    # Per task: B's answers, all alike, teach nothing; A's right answer stands out from its own group only.
    assert by_task[4:] == pytest.approx([0.0] * 4, abs=1e-3)
    assert by_task[0] > 0 > by_task[1]
    assert by_task[1] == pytest.approx(by_task[2])
    # The proposer keeps TRR++'s group whatever the solver's baseline.
    assert baseline_group("proposer", "deduction", "p", "task") == ("deduction", "proposer")


def test_clipped_loss_values():
    old = torch.zeros(1, 3)
    new = torch.log(torch.tensor([[1.5, 1.0, 0.5]]))  # ratios 1.5, 1.0, 0.5
    mask = torch.tensor([[1.0, 1.0, 1.0]])
    loss, stats = clipped_policy_loss(new, old, torch.tensor([1.0]), mask, 0.2, 0.2)
    # positive advantage: min(r, clip(r)) = [1.2, 1.0, 0.5]
    assert float(loss) == pytest.approx(-(1.2 + 1.0 + 0.5))
    assert stats["clip_fraction"] == pytest.approx(2 / 3)
    loss, _ = clipped_policy_loss(new, old, torch.tensor([-1.0]), mask, 0.2, 0.2)
    # negative advantage: min(-r, -clip(r)) = [-1.5, -1.0, -0.8]
    assert float(loss) == pytest.approx(1.5 + 1.0 + 0.8)


def test_masked_tokens_do_not_count():
    old = torch.zeros(1, 2)
    new = torch.zeros(1, 2, requires_grad=True)
    loss, _ = clipped_policy_loss(new, old, torch.tensor([1.0]), torch.tensor([[1.0, 0.0]]), 0.2, 0.2)
    loss.backward()
    assert new.grad[0, 1] == 0 and new.grad[0, 0] != 0


def _tiny_model():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(config)


@pytest.mark.parametrize("advantage", [1.0, -1.0])
def test_gradient_step_moves_probability_with_the_advantage_sign(advantage):
    model = _tiny_model()
    ids = torch.tensor([[1, 5, 7, 9]])
    target_pos = slice(1, None)

    def completion_logprob():
        logits = model(input_ids=ids).logits[:, :-1]
        lp, _ = token_logprobs(logits, ids[:, 1:], temperature=1.0)
        return lp[:, target_pos]

    with torch.no_grad():
        before = completion_logprob().sum().item()
        old = completion_logprob()
    mask = torch.ones_like(old)
    loss, _ = clipped_policy_loss(completion_logprob(), old, torch.tensor([advantage]), mask, 0.2, 0.2)
    loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            p -= 0.05 * p.grad
        after = completion_logprob().sum().item()
    assert (after - before) * advantage > 0


def test_learnability_edges():
    assert learnability(0.0) == 0.0
    assert learnability(1.0) == 0.0
    assert learnability(0.25) == pytest.approx(0.75)


def test_proposer_reward_cases():
    kw = dict(format_penalty=-1.0, wrong_penalty=-0.5)
    assert proposer_reward(parsed=False, valid=False, admitted=False, solve_rate=None, **kw).value == -1.0
    invalid = proposer_reward(parsed=True, valid=False, admitted=False, solve_rate=None, reason="timeout", **kw)
    assert invalid.value == -1.0 and invalid.parts["reason"] == "timeout"
    assert proposer_reward(parsed=True, valid=True, admitted=False, solve_rate=None, **kw).value == -0.5
    assert proposer_reward(parsed=True, valid=True, admitted=True, solve_rate=1.0, **kw).value == -0.5
    assert proposer_reward(parsed=True, valid=True, admitted=True, solve_rate=0.0, **kw).value == -0.5
    learnable = proposer_reward(parsed=True, valid=True, admitted=True, solve_rate=0.25, **kw)
    assert learnable.value == pytest.approx(0.75) and learnable.parts["why"] == "learnability"
    # selfplay.rare_kind_bonus: added to admitted tasks only, learnable or not
    assert proposer_reward(parsed=True, valid=True, admitted=True, solve_rate=0.25, rarity_bonus=0.3,
                           **kw).value == pytest.approx(1.05)
    unsolved = proposer_reward(parsed=True, valid=True, admitted=True, solve_rate=0.0, rarity_bonus=0.3, **kw)
    assert unsolved.value == pytest.approx(-0.2) and unsolved.parts["rarity_bonus"] == 0.3
    assert proposer_reward(parsed=True, valid=True, admitted=False, solve_rate=None, rarity_bonus=0.3,
                           **kw).value == -0.5


def test_solver_reward_cases():
    kw = dict(format_penalty=-1.0, wrong_penalty=-0.5)
    assert solver_reward(parsed=False, correct=False, **kw).value == -1.0
    assert solver_reward(parsed=True, correct=False, **kw).value == -0.5
    assert solver_reward(parsed=True, correct=True, **kw).value == 1.0
