"""PPO maths on hand-computed tensors: Eq. 4 token rewards, EOS trick, GAE, whitening, clipped losses,
KL controllers, rollout packing and config validation. No models: milliseconds."""

from __future__ import annotations

import math
import random
from types import SimpleNamespace

import pytest
import torch

from harness.algorithms.ppo import (
    AdaptiveKLController,
    FixedKLController,
    PPOConfig,
    apply_eos_trick,
    gae,
    masked_mean,
    pack_rollouts,
    policy_loss,
    token_rewards,
    value_loss,
    whiten,
)

MASK = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])  # lengths 3 and 2


def test_token_rewards_eq4_kl_on_every_token_score_on_last():
    logprobs = torch.tensor([[-1.0, -2.0, -0.5], [-1.0, -1.0, -9.0]])
    ref = torch.tensor([[-1.5, -1.0, -0.5], [-2.0, -0.5, -1.0]])
    scores = torch.tensor([2.0, -1.0])
    rewards, kl = token_rewards(scores, logprobs, ref, MASK, kl_coef=0.1)
    # row 0: kl = [0.5, -1.0, 0.0] -> -0.1*kl = [-0.05, 0.1, 0.0]; score 2.0 on t=|y|=3
    # row 1: kl = [1.0, -0.5, (pad)] -> [-0.1, 0.05 + (-1.0)], padded position stays 0
    expected = torch.tensor([[-0.05, 0.1, 2.0], [-0.1, -0.95, 0.0]])
    assert torch.allclose(rewards, expected, atol=1e-6)
    assert torch.allclose(kl, torch.tensor([[0.5, -1.0, 0.0], [1.0, -0.5, 0.0]]))


def test_token_rewards_kl_clamp_floors_negative_token_kl():
    logprobs = torch.tensor([[-1.0, -2.0, -0.5]])
    ref = torch.tensor([[-1.5, -1.0, -0.5]])
    rewards, kl = token_rewards(torch.tensor([0.0]), logprobs, ref, MASK[:1], kl_coef=0.1, kl_clamp=True)
    assert torch.allclose(kl, torch.tensor([[0.5, 0.0, 0.0]]))
    assert torch.allclose(rewards, torch.tensor([[-0.05, 0.0, 0.0]]))


def test_eos_trick_replaces_score_of_truncated_completions_only():
    scores = torch.tensor([1.5, -0.3, 4.0])
    finished = torch.tensor([True, False, True])
    assert apply_eos_trick(scores, finished, -10.0).tolist() == pytest.approx([1.5, -10.0, 4.0])


def _gae_reference(rewards: list[float], values: list[float], gamma: float, lam: float) -> tuple[list[float], list[float]]:
    """Textbook GAE on one episode, a plain Python loop."""
    n = len(rewards)
    adv = [0.0] * n
    running = 0.0
    for t in reversed(range(n)):
        next_v = values[t + 1] if t + 1 < n else 0.0
        delta = rewards[t] + gamma * next_v - values[t]
        running = delta + gamma * lam * running
        adv[t] = running
    return adv, [a + v for a, v in zip(adv, values)]


def test_gae_hand_computed_lambda_one_is_return_minus_value():
    # gamma = lambda = 1: A_t = G_t - V_t with G_t = sum of future rewards (Eq. 4 text).
    rewards = torch.tensor([[0.0, 0.0, 1.0]])
    values = torch.tensor([[0.5, 0.25, 0.75]])
    adv, ret = gae(rewards, values, torch.ones(1, 3), gamma=1.0, lam=1.0)
    assert torch.allclose(adv, torch.tensor([[0.5, 0.75, 0.25]]))
    assert torch.allclose(ret, torch.tensor([[1.0, 1.0, 1.0]]))


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.9, 0.8), (1.0, 0.0)])
def test_gae_matches_reference_loop_with_ragged_lengths(gamma: float, lam: float):
    rng = random.Random(0)
    lengths = [5, 1, 3, 4]
    width = max(lengths)
    rewards = torch.zeros(len(lengths), width)
    values = torch.zeros(len(lengths), width)
    mask = torch.zeros(len(lengths), width)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
        rewards[i, :] = torch.tensor([rng.uniform(-1, 1) for _ in range(width)])  # junk past the end
        values[i, :] = torch.tensor([rng.uniform(-1, 1) for _ in range(width)])
    adv, ret = gae(rewards, values, mask, gamma, lam)
    for i, n in enumerate(lengths):
        ref_adv, ref_ret = _gae_reference(rewards[i, :n].tolist(), values[i, :n].tolist(), gamma, lam)
        assert adv[i, :n].tolist() == pytest.approx(ref_adv, abs=1e-5)
        assert ret[i, :n].tolist() == pytest.approx(ref_ret, abs=1e-5)
        assert adv[i, n:].abs().sum() == 0 and ret[i, n:].abs().sum() == 0


def test_whiten_standardises_masked_entries_only():
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 100.0]])
    out = whiten(x, MASK)
    valid = out[MASK.bool()]
    assert valid.mean().item() == pytest.approx(0.0, abs=1e-6)
    assert valid.std(unbiased=True).item() == pytest.approx(1.0, abs=1e-5)  # 100.0 was padding: ignored
    assert out[1, 2].item() == 0.0
    # hand check: values 1..5, mean 3, unbiased var 2.5
    assert out[0, 0].item() == pytest.approx((1 - 3) / math.sqrt(2.5), abs=1e-5)


def test_whiten_without_mean_shift_keeps_the_mean():
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 0.0]])
    out = whiten(x, MASK, shift_mean=False)
    assert masked_mean(out, MASK).item() == pytest.approx(3.0, abs=1e-5)
    assert out[0, 0].item() == pytest.approx((1 - 3) / math.sqrt(2.5) + 3, abs=1e-5)


def test_policy_loss_clips_the_ratio_pessimistically():
    # ratios 1.5, 0.5, 0.5, 1.0 with advantages +1, +1, -1, +2 (one token each, eps = 0.2)
    old = torch.zeros(4, 1)
    new = torch.log(torch.tensor([[1.5], [0.5], [0.5], [1.0]]))
    adv = torch.tensor([[1.0], [1.0], [-1.0], [2.0]])
    loss, stats = policy_loss(new, old, adv, torch.ones(4, 1), cliprange=0.2)
    # per token max(-A*ratio, -A*clip(ratio)): 1.5,+1 -> max(-1.5,-1.2) = -1.2 (clipped)
    # 0.5,+1 -> max(-0.5,-0.8) = -0.5 ; 0.5,-1 -> max(0.5,0.8) = 0.8 (clipped) ; 1.0,+2 -> -2.0
    assert loss.item() == pytest.approx((-1.2 - 0.5 + 0.8 - 2.0) / 4, abs=1e-6)
    assert stats["clipfrac"].item() == pytest.approx(0.5)
    expected_kl = 0.5 * (math.log(1.5) ** 2 + 2 * math.log(0.5) ** 2) / 4
    assert stats["approx_kl"].item() == pytest.approx(expected_kl, abs=1e-6)


def test_policy_loss_gradient_is_policy_gradient_when_ratio_is_one():
    logits = torch.zeros(2, 1, requires_grad=True)
    adv = torch.tensor([[1.0], [-1.0]])
    loss, _ = policy_loss(logits, logits.detach(), adv, torch.ones(2, 1), 0.2)
    loss.backward()
    assert logits.grad.squeeze().tolist() == pytest.approx([-0.5, 0.5])  # -A / n_tokens


def test_value_loss_clipped_around_old_values():
    old = torch.tensor([[0.0], [0.0]])
    new = torch.tensor([[1.0], [0.1]])
    returns = torch.tensor([[2.0], [1.0]])
    loss, stats = value_loss(new, old, returns, torch.ones(2, 1), cliprange_value=0.2)
    # row 0: unclipped (1-2)^2 = 1, clipped v=0.2 -> (0.2-2)^2 = 3.24 -> max 3.24
    # row 1: inside the clip range: (0.1-1)^2 = 0.81 both ways
    assert loss.item() == pytest.approx(0.5 * (3.24 + 0.81) / 2, abs=1e-6)
    assert stats["value_clipfrac"].item() == pytest.approx(0.5)


def test_adaptive_kl_controller_proportional_update():
    ctl = AdaptiveKLController(0.05, target=6.0, horizon=10000)
    ctl.update(current_kl=12.0, n_steps=64)  # error clipped to +0.2
    assert ctl.value == pytest.approx(0.05 * (1 + 0.2 * 64 / 10000))
    before = ctl.value
    ctl.update(current_kl=6.3, n_steps=100)  # error 0.05
    assert ctl.value == pytest.approx(before * (1 + 0.05 * 100 / 10000))
    ctl.update(current_kl=0.0, n_steps=10000)  # error clipped to -0.2 over a full horizon
    assert ctl.value == pytest.approx(before * (1 + 0.05 * 100 / 10000) * 0.8)
    fixed = FixedKLController(0.05)
    fixed.update(100.0, 64)
    assert fixed.value == 0.05


def test_pack_rollouts_left_pads_prompts_right_pads_responses():
    samples = [
        SimpleNamespace(prompt_ids=[5, 6, 7], completion_ids=[8, 2], finished=True, text="a"),
        SimpleNamespace(prompt_ids=[9], completion_ids=[10, 11, 12], finished=False, text="b"),
    ]
    batch = pack_rollouts(samples, [[{"role": "user", "content": "x"}]] * 2, pad_id=0)
    assert batch.prompt_width == 3
    assert batch.input_ids.tolist() == [[5, 6, 7, 8, 2, 0], [0, 0, 9, 10, 11, 12]]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1, 1, 0], [0, 0, 1, 1, 1, 1]]
    assert batch.response_mask.tolist() == [[1, 1, 0], [1, 1, 1]]
    assert batch.finished.tolist() == [True, False]


def test_config_defaults_are_table9():
    cfg = PPOConfig()
    assert (cfg.prompt_batch_size, cfg.rollouts_per_prompt, cfg.minibatch_size, cfg.gradient_accumulation_steps) == (64, 1, 64, 1)
    assert (cfg.num_epochs, cfg.inner_epochs, cfg.max_prompt_length, cfg.max_new_tokens) == (1.0, 1, 1024, 1024)
    assert (cfg.temperature, cfg.kl_coef, cfg.gamma, cfg.lam, cfg.cliprange, cfg.vf_coef) == (0.7, 0.05, 1.0, 0.95, 0.2, 0.1)
    assert (cfg.learning_rate, cfg.warmup_ratio, cfg.adam_beta1, cfg.adam_beta2, cfg.adam_eps) == (1e-6, 0.1, 0.9, 0.95, 1e-5)
    assert (cfg.weight_decay, cfg.max_grad_norm) == (0.0, 1.0)
    # Table 10 "Ours"
    assert cfg.value_init == "reward" and cfg.eos_trick and cfg.eos_penalty == -10.0
    assert not cfg.reward_normalization and not cfg.reward_whitening and cfg.advantage_whitening
    assert not cfg.adaptive_kl and not cfg.kl_clamp and cfg.forward_at_minibatch_level


@pytest.mark.parametrize("overrides,message", [
    ({"prompt_batch_size": 6, "minibatch_size": 4}, "multiple of minibatch_size"),
    ({"prompt_batch_size": 8, "minibatch_size": 4, "gradient_accumulation_steps": 3}, "gradient_accumulation_steps"),
    ({"value_init": "sft"}, "value_init"),
    ({"temperature": 0.0}, "temperature"),
    ({"lr_decay": "cosine"}, "lr_decay"),
])
def test_config_rejects_inconsistent_batches_and_unknown_choices(overrides, message):
    with pytest.raises(ValueError, match=message):
        PPOConfig(**overrides)


def test_registered_spec_checks_grid_fields():
    from harness.algorithms import ALGORITHMS

    spec = ALGORITHMS.get("ppo")
    assert spec.data == "prompts" and spec.needs_reference and spec.needs_reward
    problems = spec.check_fields({"kl_coeff": 0.1, "minibatch_size": "big"})
    fields = {f for f, _ in problems}
    assert "kl_coeff" in fields and "minibatch_size" in fields
    cfg = spec.make_config({"prompt_batch_size": 8, "minibatch_size": 4, "gradient_accumulation_steps": 2})
    assert cfg.prompt_batch_size == 8


def test_select_trims_all_padding_columns_and_store_gather_round_trip():
    from harness.algorithms.ppo import _gather, _store

    samples = [
        SimpleNamespace(prompt_ids=[5, 6, 7, 8], completion_ids=[9, 2], finished=True, text="a"),
        SimpleNamespace(prompt_ids=[1, 2], completion_ids=[3], finished=True, text="b"),
        SimpleNamespace(prompt_ids=[4], completion_ids=[10, 11, 12, 13], finished=False, text="c"),
    ]
    batch = pack_rollouts(samples, [[{"role": "user", "content": "x"}]] * 3, pad_id=0)
    mb = batch.select(torch.tensor([1, 2]))
    # rows 1 and 2: prompts of 2 and 1 tokens, responses of 1 and 4 tokens
    assert mb.prompt_width == 2 and mb.input_ids.tolist() == [[1, 2, 3, 0, 0, 0], [0, 4, 10, 11, 12, 13]]
    assert mb.response_mask.tolist() == [[1, 0, 0, 0], [1, 1, 1, 1]]
    full = batch.select(torch.tensor([1, 2]), trim=False)
    assert full.input_ids.shape == (2, batch.input_ids.shape[1])
    stats: dict = {}
    per_token = torch.arange(12, dtype=torch.float32).reshape(3, 4) * batch.response_mask
    _store(stats, torch.arange(3), {"adv": per_token, "kl_seq": torch.tensor([1.0, 2.0, 3.0])}, batch.response_mask)
    got = _gather(stats, torch.tensor([2, 0]), width=4)
    assert got["adv"].tolist() == [[8.0, 9.0, 10.0, 11.0], [0.0, 1.0, 0.0, 0.0]]
    assert got["kl_seq"].tolist() == [3.0, 1.0]
