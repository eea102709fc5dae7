"""Every algorithm and reward-model config field has a valid range or set of values, checked when the grid
loads (no compute), with the YAML path in the message; the sets of names follow the installed TRL and
transformers."""

from __future__ import annotations

import dataclasses
import re
import typing

import pytest

from harness.algorithms import ALGORITHMS
from harness.grid import GridError, build_grid

# What the issue measured passing validation for DPO and KTO (and failing only after compute).
MEASURED_BAD = [("beta", -0.1), ("max_steps", -5), ("learning_rate", -1), ("per_device_train_batch_size", 0),
                ("loss_type", "sigmoidd"), ("lr_scheduler_type", "linearr")]

PAIRS = {"model": "tiny-random-llama", "dataset": {"name": "smoke-lowercase", "max_rows": 8},
         "eval": {"tasks": ["smoke_lowercase"], "limit": 2}}
PROMPTS = {**PAIRS, "reward_function": "lowercase"}


def base_for(algorithm: str, **fields) -> dict:
    online = ALGORITHMS.get(algorithm).needs_reward
    return {**(PROMPTS if online else PAIRS), "algorithm": {"name": algorithm, **fields}}


def grid_error(raw: dict) -> str:
    with pytest.raises(GridError) as info:
        build_grid({"experiment": "t", **raw})
    return str(info.value)


@pytest.mark.parametrize("algorithm", ["dpo", "kto"])
@pytest.mark.parametrize("field, value", MEASURED_BAD)
def test_measured_bad_values_fail_at_load_with_yaml_path(algorithm, field, value):
    message = grid_error({"base": base_for(algorithm, **{field: value})})
    assert f"base.algorithm.{field}: " in message, message
    if algorithm == "kto" and field == "loss_type":
        assert "unknown field" in message  # KTO's loss is fixed: no such field
    else:
        assert f"(got {value!r})" in message
    # The same value set by an axis points at the axis entry.
    message = grid_error({"base": base_for(algorithm), "axes": {f"algorithm.{field}": [1, value]}})
    assert f"axes.algorithm.{field}[1]: " in message, message


def test_seed_and_empty_eval_tasks_fail_at_load():
    assert "base.seed: " in grid_error({"base": {**base_for("dpo"), "seed": -7}})
    message = grid_error({"base": {**base_for("dpo"), "eval": {"tasks": []}}})
    assert "base.eval.tasks: no evaluation task" in message
    assert "base.dataset.seed: " in grid_error({"base": {**base_for("dpo"),
                                                         "dataset": {"name": "smoke-lowercase", "seed": -1}}})


# Per algorithm: a value of each kind of field that must be rejected (every algorithm has a learning rate, a
# step budget and a batch size; the rest where the field exists).
HOSTILE = {"learning_rate": -1e-6, "max_steps": 0, "beta": -0.1, "kl_coef": -0.1, "num_train_epochs": -1.0,
           "warmup_ratio": 1.0, "per_device_train_batch_size": 0, "minibatch_size": 0, "prompt_batch_size": 0,
           "gradient_accumulation_steps": 0, "max_length": 0, "max_completion_length": 0, "max_new_tokens": 0,
           "temperature": 0.0, "num_generations": 1, "num_iterations": 0, "epsilon": 0.0, "cliprange": 0.0,
           "loss_type": "sigmoidd", "lr_scheduler_type": "linearr", "lr_decay": "cosine", "eos_trick": "maybe",
           "scale_rewards": "std", "weight_decay": -0.01, "logging_steps": 0, "gamma": 1.5, "lam": -0.1,
           "eos_penalty_reward": float("nan"), "eos_penalty": float("inf"), "label_smoothing": 0.5,
           "sft_weight": -1.0, "desirable_weight": 0.0, "undesirable_weight": 0.0, "gamma_beta_ratio": -0.5,
           "warmup_steps": -1, "adam_beta1": 1.0, "adam_eps": 0.0, "max_grad_norm": 0.0,
           "value_init": "sft", "vf_coef": -0.1, "inner_epochs": 0, "generation_batch_size": 0,
           "precompute_ref_log_probs": "yes", "gradient_checkpointing": 1}


@pytest.mark.parametrize("algorithm", ALGORITHMS.names())
def test_every_algorithm_rejects_out_of_range_values_field_by_field(algorithm):
    spec = ALGORITHMS.get(algorithm)
    assert spec.check_fields({}) == []  # the paper's defaults are valid
    fields = {f.name for f in dataclasses.fields(spec.config_cls)}
    for always in ("learning_rate", "max_steps"):
        assert always in fields
    tried = 0
    for field, value in HOSTILE.items():
        if field not in fields:
            continue
        tried += 1
        problems = spec.check_fields({field: value})
        assert any(name == field and msg.startswith(field) for name, msg in problems), (field, value, problems)
    assert tried >= 10, f"{algorithm}: only {tried} hostile values apply"


def test_every_config_field_is_constrained_or_free_on_purpose():
    """A field annotated with a bare `float`/`int`/`str` has no range: each one is listed here with why."""
    unconstrained_on_purpose = {"eos_penalty_reward", "eos_penalty"}  # checked finite; any sign is a reward
    for name in ALGORITHMS.names():
        cls = ALGORITHMS.get(name).config_cls
        hints = typing.get_type_hints(cls, include_extras=True)
        for f in dataclasses.fields(cls):
            bare = hints[f.name] in (float, int, str)
            assert not bare or f.name in unconstrained_on_purpose, f"{name}.{f.name}: {hints[f.name]} has no range"


def test_strict_types_and_the_yaml_exponent_trap():
    spec = ALGORITHMS.get("dpo")
    (field, msg), = spec.check_fields({"learning_rate": "1e-6"})  # YAML 1.1 reads 1e-6 as a string
    assert field == "learning_rate" and "write e.g. 1.0e-6" in msg
    assert spec.check_fields({"beta": True}) and spec.check_fields({"max_steps": 2.0})
    assert spec.check_fields({"learning_rate": 1, "max_steps": 3}) == []  # an int is a valid float


def test_reward_model_train_fields_fail_at_load_with_yaml_path():
    base = {**base_for("dpo"), "reward_model": {"base": "tiny-random-llama",
                                                "dataset": {"name": "smoke-lowercase"}}}
    for field, value in [("learning_rate", -1), ("max_steps", -5), ("per_device_train_batch_size", 0),
                         ("overlong", "cut"), ("heldout_fraction", 1.0), ("warmup_ratio", 2.0)]:
        raw = {**base, "reward_model": {**base["reward_model"], "train": {field: value}}}
        message = grid_error({"base": raw})
        assert f"base.reward_model.train.{field}: {field} " in message, message
    raw = {**base, "reward_model": {**base["reward_model"], "train": {"lr": 1e-5}}}
    assert "base.reward_model.train.lr: unknown field" in grid_error({"base": raw})
    raw = {**base, "reward_model": {**base["reward_model"], "train": {"learning_rate": 1e-6, "min_learning_rate": 1e-5}}}
    assert "base.reward_model.train.min_learning_rate: min_learning_rate (1e-05) must be below" in grid_error({"base": raw})


def test_judge_block_values():
    message = grid_error({"base": {**base_for("dpo"), "judge": {"num_prompts": 0, "base_url": "localhost:8000",
                                                                 "api_key_env": "MY KEY"}}})
    for path in ("base.judge.num_prompts", "base.judge.base_url", "base.judge.api_key_env"):
        assert path in message


def _trl_names(text: str) -> list[str]:
    return re.findall(r"'(\w+)'", text)


def test_loss_type_literals_are_trls_lists():
    """Each `loss_type` Literal is the list of its TRL 1.16 trainer (read from the installed package)."""
    from trl import DPOConfig, GRPOConfig
    from trl.experimental.online_dpo import OnlineDPOConfig

    def metadata(cls, field):
        return next(f for f in dataclasses.fields(cls) if f.name == field).metadata

    from harness.algorithms.dpo import DPOLossType
    from harness.algorithms.grpo import GRPOLossType, ScaleRewards
    from harness.algorithms.online_dpo import OnlineDPOAlgoConfig

    dpo_help = metadata(DPOConfig, "loss_type")["help"].split("If multiple")[0]
    assert sorted(typing.get_args(DPOLossType)) == sorted(_trl_names(dpo_help))
    grpo_help = metadata(GRPOConfig, "loss_type")["help"].split("Supported values are")[1].split(". ")[0]
    assert sorted(typing.get_args(GRPOLossType)) == sorted(_trl_names(grpo_help))
    online = typing.get_type_hints(OnlineDPOAlgoConfig)["loss_type"]
    assert sorted(typing.get_args(online)) == sorted(metadata(OnlineDPOConfig, "loss_type")["choices"])
    # (TRL's help text quotes them as `True` or `group'`, `'batch'`, `False` or `'none'`.)
    scale_help = metadata(GRPOConfig, "scale_rewards")["help"]
    assert set(typing.get_args(ScaleRewards)) <= set(re.findall(r"`'?(\w+)'?`", scale_help))


def test_lr_scheduler_types_are_the_ones_that_run_with_the_harness_arguments(tmp_path):
    """Every allowed value is a transformers SchedulerType that builds a schedule from what the harness
    passes (warm-up and total steps, no lr_scheduler_kwargs, no evaluation); every SchedulerType left out
    fails there, so leaving it out only moves its error from mid-run to load time."""
    import torch
    from transformers import TrainingArguments, get_scheduler
    from transformers.trainer_utils import SchedulerType

    from harness.config_fields import LRSchedulerType

    def builds(name: str) -> bool:
        try:
            args = TrainingArguments(output_dir=str(tmp_path), lr_scheduler_type=name, use_cpu=True, report_to=[])
            optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
            get_scheduler(name, optimizer, num_warmup_steps=1, num_training_steps=10,
                          scheduler_specific_kwargs=args.lr_scheduler_kwargs)
        except (ValueError, TypeError):
            return False
        return True

    allowed = set(typing.get_args(LRSchedulerType))
    every = {s.value for s in SchedulerType}
    assert allowed <= every
    assert {name for name in every if builds(name)} == allowed
