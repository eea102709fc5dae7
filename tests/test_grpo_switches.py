"""GRPO-family switches (ablations/grpo_switches.yaml): each one reaches TRL's GRPOConfig under TRL's own
name (checked on the config object the trainer is built with), or fails when the grid loads."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.algorithms import ALGORITHMS, TrainContext
from harness.algorithms.grpo import grpo_trl_config
from harness.grid import GridError, build_grid, load_grid
from harness.paths import PROJECT_ROOT

# grid field -> TRL GRPOConfig attribute (the same name: the harness passes switches through unrenamed)
SWITCHES = {"loss_type": "loss_type", "scale_rewards": "scale_rewards", "beta": "beta",
            "epsilon_high": "epsilon_high", "importance_sampling_level": "importance_sampling_level",
            "mask_truncated_completions": "mask_truncated_completions", "num_generations": "num_generations",
            "epsilon": "epsilon"}


def _trl_config(cell_config, tmp_path: Path):
    resolved = dict(cell_config.algorithm.resolved())
    spec = ALGORITHMS.get(resolved.pop("name"))
    cfg = spec.make_config(resolved)
    ctx = TrainContext(policy_path="unused", train_rows=[], config=cfg, out_dir=tmp_path, seed=1)
    return cfg, grpo_trl_config(ctx, cfg)


def test_every_cell_of_the_grid_reaches_trls_grpo_config(tmp_path):
    grid = load_grid(PROJECT_ROOT / "ablations" / "grpo_switches.yaml")
    policies = [c for c in grid.cells if not c.is_baseline]
    assert len(policies) == 15
    seen: dict[str, set] = {field: set() for field in SWITCHES}
    for cell in policies:
        cfg, trl = _trl_config(cell.config, tmp_path)
        for field, trl_name in SWITCHES.items():
            assert getattr(trl, trl_name) == getattr(cfg, field), (cell.name, field)
            seen[field].add(getattr(cfg, field))
        for key, value in cell.overrides.items():  # the cell's own switch is what TRL got
            assert getattr(trl, SWITCHES[key.removeprefix("algorithm.")]) == value, cell.name
    # the grid flips every switch away from GRPO's choice at least once
    assert seen["loss_type"] == {"grpo", "dr_grpo", "dapo", "bnpo"}
    assert seen["scale_rewards"] == {"group", "batch", "none"}
    assert seen["beta"] == {0.04, 0.0}
    assert seen["epsilon_high"] == {None, 0.28}
    assert seen["importance_sampling_level"] == {"token", "sequence"}
    assert seen["mask_truncated_completions"] == {False, True}
    assert seen["num_generations"] == {2, 4, 8}


def test_unset_epsilon_high_means_symmetric_clipping_in_trl(tmp_path):
    """TRL reads epsilon_high=None as epsilon: the base cell clips symmetrically, the clip-higher one does not."""
    from trl import GRPOTrainer  # noqa: F401  (the trainer's own rule is what the grid comment states)

    grid = build_grid({"experiment": "t", "baseline": False, "base": {
        "model": "tiny-random-llama", "prompts": "smoke-lowercase", "reward_model": {"verifier": "smoke_lowercase"},
        "algorithm": {"name": "grpo", "num_generations": 2, "per_device_train_batch_size": 2,
                      "gradient_accumulation_steps": 1}},
        "axes": {"algorithm.epsilon_high": [None, 0.28]}})
    base, higher = (_trl_config(c.config, tmp_path)[1] for c in grid.cells)
    assert (base.epsilon, base.epsilon_high) == (0.2, None)
    assert (higher.epsilon, higher.epsilon_high) == (0.2, 0.28)


def _load_error(algorithm: dict) -> str:
    raw = {"experiment": "t", "baseline": False, "base": {
        "model": "tiny-random-llama", "prompts": "smoke-lowercase", "reward_model": {"verifier": "smoke_lowercase"},
        "algorithm": {"name": "grpo", "num_generations": 2, "per_device_train_batch_size": 2,
                      "gradient_accumulation_steps": 1, **algorithm}}}
    with pytest.raises(GridError) as info:
        build_grid(raw)
    return str(info.value)


@pytest.mark.parametrize("switch, message", [
    ({"dynamic_sampling": True}, "base.algorithm.dynamic_sampling: dynamic_sampling is not supported: TRL 1.16's "
                                 "GRPOTrainer has no dynamic sampling"),
    ({"loss_type": "gspo"}, "base.algorithm.loss_type: loss_type must be one of 'grpo', 'dr_grpo', 'dapo', 'bnpo'"),
    ({"scale_rewards": "std"}, "base.algorithm.scale_rewards: scale_rewards must be one of 'group', 'batch' or 'none'"),
    ({"importance_sampling_level": "sample"}, "importance_sampling_level must be one of 'token' or 'sequence'"),
    ({"epsilon_high": 0.1}, "epsilon_high (0.1) must be >= epsilon (0.2)"),
    ({"beta": -0.1}, "base.algorithm.beta: beta must be >= 0"),
    ({"num_generations": 3}, "num_generations (3) must divide per_device_train_batch_size"),
])
def test_unsupported_or_bad_switch_fails_at_load(switch, message):
    assert message in _load_error(switch)


def test_switches_at_their_defaults_leave_grpo_stage_keys_unchanged():
    """The switches were added after GRPO cells were cached: at their defaults they are not in the resolved
    config (so not in the stage key); set, they are."""
    grid = build_grid({"experiment": "t", "baseline": False, "base": {
        "model": "tiny-random-llama", "prompts": "smoke-lowercase", "reward_model": {"verifier": "smoke_lowercase"},
        "algorithm": {"name": "grpo", "num_generations": 2, "per_device_train_batch_size": 2,
                      "gradient_accumulation_steps": 1}},
        "axes": {"algorithm.mask_truncated_completions": [False, True]}})
    default, masked = (c.config.algorithm.resolved() for c in grid.cells)
    new = {"epsilon_high", "importance_sampling_level", "mask_truncated_completions", "dynamic_sampling", "peft"}
    assert not new & set(default)
    assert masked["mask_truncated_completions"] is True
