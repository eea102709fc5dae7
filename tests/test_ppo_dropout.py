"""Table 9's dropout 0.0 holds wherever a model applies dropout (issue #20, PPO): Llama-family attention
applies `config.attention_dropout` as a number in train mode, which zeroing `nn.Dropout` modules misses.
Tiny Llamas with attention_dropout = 0.3, real forwards, real PPO updates."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from harness.algorithms import ALGORITHMS, TrainContext
from harness.algorithms.ppo import PPOConfig, check_no_dropout, disable_dropout
from harness.rewards import REWARD_FUNCTIONS

IDS = torch.tensor([[5, 17, 42, 8, 99, 23, 61, 3, 12, 77]])


def _two_train_mode_forwards(model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    model.train()
    with torch.no_grad():
        return model(input_ids=IDS, use_cache=False).logits, model(input_ids=IDS, use_cache=False).logits


@pytest.mark.parametrize("auto_class", ["AutoModelForCausalLM", "AutoModelForSequenceClassification"])
def test_attention_dropout_is_disabled_for_policy_and_value_models(tiny_model: str, auto_class: str):
    import transformers

    model = getattr(transformers, auto_class).from_pretrained(tiny_model, attention_dropout=0.3, num_labels=1)
    # the model has no nn.Dropout module: what the old "disable dropout" zeroed cannot be the cause
    assert not any(isinstance(m, torch.nn.Dropout) for m in model.modules())
    first, second = _two_train_mode_forwards(model)
    assert float((first - second).abs().max()) > 1e-3  # attention dropout is live in train mode
    changed = disable_dropout(model)
    assert "config.attention_dropout=0.3" in changed
    assert any(item.endswith("self_attn.attention_dropout=0.3") for item in changed)
    assert model.config.attention_dropout == 0.0
    first, second = _two_train_mode_forwards(model)
    assert torch.equal(first, second)
    check_no_dropout(model, "policy")  # passes


def test_dropout_modules_are_still_zeroed_and_a_clean_model_reports_nothing(tiny_model: str):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    assert disable_dropout(model) == []  # attention_dropout 0.0 already: nothing to change
    model.model.layers[0].mlp.add_module("extra_dropout", torch.nn.Dropout(0.5))
    assert disable_dropout(model) == ["model.layers.0.mlp.extra_dropout.p=0.5"]
    assert model.model.layers[0].mlp.extra_dropout.p == 0.0


def test_dropout_that_cannot_be_zeroed_is_refused_before_training(tiny_model: str):
    """Dropout hard-coded in a forward (here a hook on one MLP) has no probability to zero: the check runs
    the model and refuses it."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    model.model.layers[0].mlp.register_forward_hook(
        lambda module, args, output: torch.nn.functional.dropout(output, 0.2, training=module.training))
    disable_dropout(model)
    with pytest.raises(ValueError, match="the value model applies dropout in train mode"):
        check_no_dropout(model, "value model")
    assert model.training is False  # the check restores the mode it found (from_pretrained: eval)


def test_ppo_old_and_new_logprobs_agree_with_attention_dropout_in_the_config(tiny_model: str, tmp_path: Path):
    """One minibatch per rollout batch with batch-level forward passes: pi_old comes from a separate
    train-mode forward of the very weights the minibatch then trains, so the policy ratio must be exactly 1
    (approx_kl 0, no clipping). With attention dropout active it was not (the issue measured 0.27 nats
    between two such forwards at 0.3)."""
    from datasets_registry import prepare

    model = tmp_path / "dropout-llama"
    shutil.copytree(tiny_model, model)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "attention_dropout": 0.3}))
    cfg = PPOConfig(prompt_batch_size=4, minibatch_size=4, max_new_tokens=6, max_steps=2, value_init="policy",
                    forward_at_minibatch_level=False, generation_batch_size=4, learning_rate=1e-3)
    logs: list[dict] = []
    ctx = TrainContext(policy_path=str(model), train_rows=prepare("smoke-lowercase-eval", seed=0).rows[:8],
                       config=cfg, out_dir=tmp_path / "out", seed=2, reward_function=REWARD_FUNCTIONS.get("lowercase"),
                       log=lambda metrics, step: logs.append(metrics))
    ALGORITHMS.get("ppo").train(ctx)
    assert len(logs) == 2
    for metrics in logs:
        assert metrics["train/approx_kl"] == 0.0 and metrics["train/ratio_mean"] == pytest.approx(1.0, abs=1e-6)
        assert metrics["train/clipfrac"] == 0.0
