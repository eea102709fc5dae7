"""End-to-end PPO on the tiny random Llama: real rollouts, real reward model / reward function, real
updates. Checks that losses are finite, the logs and artifacts exist, the Table 10/11 switches run
and behave as specified, and bad inputs fail before any model is loaded."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from datasets_registry import prepare
from harness.algorithms import ALGORITHMS, TrainContext
from harness.algorithms.ppo import PPOConfig
from harness.reward_model import RewardModelConfig, train_reward_model
from harness.rewards import REWARD_FUNCTIONS

REQUIRED_METRICS = (
    "train/reward_mean", "train/kl", "train/response_length", "train/loss", "train/policy_loss",
    "train/value_loss", "train/clipfrac", "train/approx_kl", "train/entropy", "train/reward_with_kl",
    "train/truncated_frac", "train/value_clipfrac", "train/learning_rate", "train/kl_coef",
)


@pytest.fixture(scope="module")
def tiny_rm(tiny_model: str, tmp_path_factory) -> str:
    """A tiny Bradley-Terry RM on the smoke pairs (same tokenizer as the tiny policy)."""
    rows = prepare("smoke-lowercase", seed=0, max_rows=32).rows
    out = tmp_path_factory.mktemp("tiny_rm")
    cfg = RewardModelConfig(per_device_train_batch_size=8, gradient_accumulation_steps=1, max_length=128,
                            learning_rate=1e-3, min_learning_rate=1e-4, max_steps=4)
    train_reward_model(rows, tiny_model, cfg, out, seed=0)
    return str(out / "model")


def _prompts(n: int = 16) -> list[dict]:
    return prepare("smoke-lowercase-eval", seed=0).rows[:n]


def _run(tiny_model: str, out: Path, config: PPOConfig, **reward) -> tuple[dict, list[tuple[int, dict]]]:
    logs: list[tuple[int, dict]] = []
    ctx = TrainContext(policy_path=tiny_model, train_rows=_prompts(), config=config, out_dir=out, seed=3,
                       log=lambda metrics, step: logs.append((step, metrics)), **reward)
    return ALGORITHMS.get("ppo").train(ctx), logs


def test_ppo_end_to_end_with_reward_function(tiny_model: str, tmp_path: Path):
    # Preference rows are accepted too: PPO uses their prompts.
    cfg = PPOConfig(prompt_batch_size=4, minibatch_size=2, max_new_tokens=8, max_steps=3, value_init="policy",
                    learning_rate=1e-4, generation_batch_size=4)
    result, logs = _run(tiny_model, tmp_path, cfg, reward_function=REWARD_FUNCTIONS.get("lowercase"))
    assert [step for step, _ in logs] == [1, 2, 3]
    for _, metrics in logs:
        missing = [k for k in REQUIRED_METRICS if k not in metrics]
        assert not missing, missing
        assert all(math.isfinite(v) for v in metrics.values())
        assert 1 <= metrics["train/response_length"] <= 8
        assert metrics["train/clipfrac"] == 0.0  # App. G: minibatch-level forward, 1 inner epoch -> ratio 1
        assert metrics["train/ratio_mean"] == pytest.approx(1.0, abs=1e-5)
    # 2 minibatches per batch, g = 1 -> 2 optimizer steps per rollout batch
    assert result["train/optimizer_steps"] == 6.0 and result["train/episodes"] == 12.0
    rows = [json.loads(line) for line in (tmp_path / "artifacts" / "ppo_samples.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and {"step", "prompt", "completion", "score", "finished", "kl"} <= set(rows[0])
    # The EOS trick: an 8-token budget truncates the random model's completions -> score_used = -10.
    truncated = [r for r in rows if not r["finished"]]
    assert truncated and all(r["score_used"] == -10.0 for r in truncated)
    assert (tmp_path / "model" / "config.json").exists()


def test_ppo_with_reward_model_and_table10_switches(tiny_model: str, tiny_rm: str, tmp_path: Path):
    """Value from the RM, batch-level forward passes, adaptive KL, reward normalisation and whitening,
    KL clamping, r = 2 rollouts per prompt, g = 2, e = 2: every non-default path in one run."""
    cfg = PPOConfig(prompt_batch_size=2, rollouts_per_prompt=2, minibatch_size=2, gradient_accumulation_steps=2,
                    inner_epochs=2, max_new_tokens=6, max_steps=2, learning_rate=1e-3, value_init="reward",
                    forward_at_minibatch_level=False, adaptive_kl=True, adaptive_kl_target=0.01,
                    adaptive_kl_horizon=10, reward_normalization=True, reward_whitening=True, kl_clamp=True,
                    eos_trick=False, generation_batch_size=2)
    result, logs = _run(tiny_model, tmp_path, cfg, reward_model_path=tiny_rm)
    assert len(logs) == 2
    # 4 rollouts / b = 2 -> 2 minibatches, x 2 inner epochs, / g = 2 -> 2 optimizer steps per batch
    assert result["train/optimizer_steps"] == 4.0 and result["train/episodes"] == 8.0
    for _, metrics in logs:
        assert all(math.isfinite(v) for v in metrics.values())
    # With stale (batch-level) log-probs and a second inner epoch, the ratio moves away from 1.
    assert any(m["train/approx_kl"] > 0 for _, m in logs)
    # The adaptive controller moved beta (fixed would stay at 0.05).
    assert logs[1][1]["train/kl_coef"] != pytest.approx(0.05)
    # Reward normalisation with gain/bias from batch 1: the first batch's used scores have mean 0.
    assert logs[0][1]["train/reward_penalized_mean"] == pytest.approx(0.0, abs=1e-5)


def test_logprob_temperature_switch_rescores_the_same_rollouts(tiny_model: str, tmp_path: Path):
    """logprobs_at_sampling_temperature changes the log-probs, not the sampling: with one minibatch per
    batch, update 1 scores the very same rollouts with the very same weights, at tau = 0.7 (True) or at
    tau = 1 as the authors' EasyLM (False), and the policy entropy at tau = 1 is the larger one."""
    runs = {}
    for at_tau in (True, False):
        cfg = PPOConfig(prompt_batch_size=4, minibatch_size=4, max_new_tokens=8, max_steps=1, value_init="policy",
                        generation_batch_size=4, logprobs_at_sampling_temperature=at_tau)
        _, logs = _run(tiny_model, tmp_path / str(at_tau), cfg, reward_function=REWARD_FUNCTIONS.get("lowercase"))
        samples = (tmp_path / str(at_tau) / "artifacts" / "ppo_samples.jsonl").read_text().splitlines()
        runs[at_tau] = ([json.loads(line)["completion"] for line in samples], logs[0][1])
    assert runs[True][0] == runs[False][0]
    assert runs[False][1]["train/entropy"] > runs[True][1]["train/entropy"]
    assert runs[False][1]["train/grad_norm_policy"] != pytest.approx(runs[True][1]["train/grad_norm_policy"], rel=1e-3)


def test_ppo_scores_with_a_reward_model_that_has_another_tokenizer(tiny_model: str, smollm2: str, tmp_path: Path):
    """The RM (SmolLM2 vocabulary) scores decoded text from the tiny policy (its own 512-token BPE)."""
    cfg = PPOConfig(prompt_batch_size=2, minibatch_size=2, max_new_tokens=4, max_steps=1, value_init="policy",
                    generation_batch_size=2)
    _, logs = _run(tiny_model, tmp_path, cfg, reward_model_path=smollm2)
    assert math.isfinite(logs[0][1]["train/reward_mean"])
    with pytest.raises(ValueError, match="share the policy's tokenizer"):
        _run(tiny_model, tmp_path, PPOConfig(value_init="reward"), reward_model_path=smollm2)


def test_ppo_rejects_bad_inputs_before_compute(tiny_model: str, tmp_path: Path):
    fn = REWARD_FUNCTIONS.get("lowercase")
    with pytest.raises(ValueError, match="exactly one reward source"):
        _run(tiny_model, tmp_path, PPOConfig(value_init="policy"))
    with pytest.raises(ValueError, match="exactly one reward source"):
        _run(tiny_model, tmp_path, PPOConfig(value_init="policy"), reward_function=fn, reward_model_path=tiny_model)
    with pytest.raises(ValueError, match="set value_init='policy'"):
        _run(tiny_model, tmp_path, PPOConfig(), reward_function=fn)
    ctx = TrainContext(policy_path=tiny_model, train_rows=[{"id": "x", "prompt": "not messages"}],
                       config=PPOConfig(value_init="policy"), out_dir=tmp_path, reward_function=fn)
    with pytest.raises(ValueError, match=r"train_rows\[0\].*list of messages"):
        ALGORITHMS.get("ppo").train(ctx)
    too_short = PPOConfig(value_init="policy", max_prompt_length=2)
    with pytest.raises(ValueError, match="longer than max_prompt_length"):
        _run(tiny_model, tmp_path, too_short, reward_function=fn)


def test_trimmed_minibatch_gives_the_same_logprobs_and_values(tiny_model: str):
    """Left-padding columns are dropped per minibatch; positions come from the attention mask, so the
    numbers must not change."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from harness.algorithms.ppo import (
        gather_logprobs,
        pack_rollouts,
        response_logits,
        response_tokens,
        response_values,
    )
    from harness.generation import SamplingParams
    from harness.hf_engine import HFGenerator
    from harness.models import load_tokenizer

    torch.manual_seed(0)
    tok = load_tokenizer(tiny_model)
    policy = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    value = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=1).eval()
    prompts = [[{"role": "user", "content": "hi"}], [{"role": "user", "content": "The quick brown fox jumps over"}]]
    samples = [s for row in HFGenerator(policy, tok).generate_samples(
        prompts, SamplingParams(max_new_tokens=6, temperature=0.7)) for s in row]
    batch = pack_rollouts(samples, prompts, tok.pad_token_id)
    idx = torch.tensor([0])  # the short prompt: its minibatch drops the long prompt's padding
    mb_full, mb_trim = batch.select(idx, trim=False), batch.select(idx)
    assert mb_trim.input_ids.shape[1] < mb_full.input_ids.shape[1]
    width, mask = mb_trim.response_mask.shape[1], mb_trim.response_mask
    with torch.no_grad():
        lp_full = gather_logprobs(response_logits(policy, mb_full, 0.7), response_tokens(mb_full))[:, :width]
        lp_trim = gather_logprobs(response_logits(policy, mb_trim, 0.7), response_tokens(mb_trim))
        v_full = response_values(value, mb_full)[:, :width]
        v_trim = response_values(value, mb_trim)
    assert torch.allclose(lp_full * mask, lp_trim * mask, atol=1e-5)
    assert torch.allclose(v_full * mask, v_trim * mask, atol=1e-5)


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs CUDA (the cuDNN attention kernel)")
def test_cuda_forwards_give_finite_gradients_with_left_padding(tiny_model: str):
    """PPO's CUDA forward context trains with finite gradients on a left-padded batch.

    Background (seen on an H100, torch 2.11): under plain bf16 autocast, anomaly detection caught
    cuDNN's attention backward returning NaN in the SmolLM2 value model on HH-RLHF prompts (128-token
    left padding), and PPO's first update made every weight NaN; `harness.models.cuda_bf16_forward` keeps cuDNN out. This
    synthetic batch did not reproduce the NaN under plain autocast either, so it guards the CUDA path
    (autocast + kernel choice + backward) rather than reproducing that exact failure."""
    import torch
    from transformers import AutoModelForCausalLM

    from harness.models import cuda_bf16_forward

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).cuda()
    ids = torch.randint(5, 400, (8, 96), device="cuda")
    mask = torch.ones_like(ids)
    mask[:4, :40] = 0
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    with cuda_bf16_forward():
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False).logits
    logits[:, -20:].float().log_softmax(-1).mean().backward()
    bad = [name for name, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert bad == []
