"""The PPO ablation grids (Table 2, Table 10, Table 11) validate and expand to the intended cells; Table 10
also runs end to end at tiny scale (slow)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from harness import tracking
from harness.dotted_paths import set_dotted
from harness.grid import build_grid, load_grid
from harness.runner import run_grid

ABLATIONS = Path(__file__).resolve().parent.parent / "ablations"


def _algo(cell) -> dict:
    return cell.resolved()["algorithm"]


def test_table2_pairs_dpo_and_ppo_on_each_dataset_with_its_own_reward_model():
    grid = load_grid(ABLATIONS / "table2_dpo_vs_ppo.yaml")
    trained = [c for c in grid.cells if not c.is_baseline]
    assert len(trained) == 6 and any(c.is_baseline for c in grid.cells)
    by_dataset: dict[str, set[str]] = {}
    for cell in trained:
        cfg = cell.config
        assert cfg.reward_model.dataset.name == cfg.dataset.name  # the RM is trained on the cell's data
        by_dataset.setdefault(cfg.dataset.name, set()).add(cfg.algorithm.name)
    assert all(algos == {"dpo", "ppo"} for algos in by_dataset.values())
    ppo = next(c for c in trained if c.config.algorithm.name == "ppo")
    # Table 10 "Ours" is untouched by the scale-down
    algo = _algo(ppo)
    assert algo["value_init"] == "reward" and algo["eos_trick"] and algo["kl_coef"] == 0.05
    assert algo["advantage_whitening"] and not algo["reward_whitening"] and algo["forward_at_minibatch_level"]


def test_table10_flips_each_switch_once_from_the_paper_setting():
    grid = load_grid(ABLATIONS / "table10_ppo_switches.yaml")
    cells = {c.name: _algo(c) for c in grid.cells if not c.is_baseline}
    ours = cells["algorithm.value_init=reward"]
    switches = ("value_init", "eos_trick", "reward_normalization", "reward_whitening", "advantage_whitening",
                "adaptive_kl", "kl_clamp", "rollouts_per_prompt", "forward_at_minibatch_level",
                "logprobs_at_sampling_temperature")
    flipped = set()
    for algo in cells.values():
        diff = {k for k in switches if algo[k] != ours[k]}
        if len(diff) == 1:
            flipped |= diff
    assert flipped == set(switches)
    assert ours["logprobs_at_sampling_temperature"] is True  # the project's default; EasyLM's is the flipped cell
    # rollouts per prompt doubles while the rollouts per batch stay at 8
    multi = next(a for a in cells.values() if a["rollouts_per_prompt"] == 2 and a["value_init"] == "reward")
    assert multi["prompt_batch_size"] * 2 == ours["prompt_batch_size"]


def test_table11_keeps_the_number_of_gradient_updates_fixed():
    grid = load_grid(ABLATIONS / "table11_ppo_batch.yaml")
    n_prompts = 128
    steps = set()
    rows = set()
    for cell in grid.cells:
        if cell.is_baseline:
            continue
        a = _algo(cell)
        batches = n_prompts // a["prompt_batch_size"]
        per_batch = a["prompt_batch_size"] * a["rollouts_per_prompt"] // (a["minibatch_size"] * a["gradient_accumulation_steps"])
        steps.add(batches * per_batch)
        rows.add((a["prompt_batch_size"], a["minibatch_size"], a["rollouts_per_prompt"], a["gradient_accumulation_steps"]))
    assert steps == {16}
    assert rows == {(8, 8, 1, 1), (64, 8, 1, 1), (64, 8, 2, 2), (32, 8, 4, 4)}  # Table 11 / 8


# Table 10 at tiny scale: every field below replaces the base's; the switches and the batch sizes the
# include cells set (rollouts_per_prompt 2 with prompt_batch_size 4) stay as the grid has them. Eight
# rollouts per batch in every cell, in two minibatches of 4 (so forward passes at minibatch level differ
# from one pass per batch), two updates (so reward normalization and the adaptive KL act on a later batch).
TABLE10_TINY = {
    "model": "tiny-random-llama",
    "dataset": {"name": "smoke-lowercase", "max_rows": 16},
    "prompts": {"name": "smoke-lowercase", "max_rows": 16},
    "reward_model.base": "tiny-random-llama",
    "reward_model.dataset": {"name": "smoke-lowercase", "max_rows": 16},
    "reward_model.train.max_steps": 2,
    "reward_model.train.per_device_train_batch_size": 4,
    "reward_model.train.gradient_accumulation_steps": 1,
    "reward_model.train.max_length": 64,
    "algorithm.max_steps": 2,
    "algorithm.minibatch_size": 4,
    "algorithm.max_prompt_length": 128,
    "algorithm.max_new_tokens": 8,
    "eval.tasks": ["rm_reward", "policy_kl"],
    "eval.limit": 2,
    "eval.batch_size": 2,
}
PPO_STEP_METRICS = ("train/kl", "train/reward_mean", "train/policy_loss", "train/value_loss", "train/loss")


@pytest.mark.slow
def test_table10_grid_runs_every_switch_through_our_ppo_at_tiny_scale(tiny_model):
    """ablations/table10_ppo_switches.yaml, scaled down, through the runner: each cell trains our PPO
    with its switches (logged as params of the cell and of its train_policy stage) and finishes in MLflow
    with finite PPO metrics at every update."""
    path = ABLATIONS / "table10_ppo_switches.yaml"
    raw = yaml.safe_load(path.read_text())
    raw.pop("profiles", None)  # this test scales the file itself (TABLE10_TINY); profiles are load_grid's
    for key, value in TABLE10_TINY.items():
        set_dotted(raw["base"], key, value)
    grid = build_grid(raw, source=path)
    assert len(grid.cells) == len(load_grid(path).cells) == 16  # SFT baseline + 2 axis values + 13 includes

    summary = run_grid(grid, backend="local", echo=lambda _: None)
    assert sorted(summary.logged_cells) == sorted(c.name for c in grid.cells)

    client = tracking.client()
    experiment_id = client.get_experiment_by_name(grid.experiment).experiment_id
    runs = client.search_runs([experiment_id], max_results=1000)
    cell_runs = {r.data.tags["harness.cell"]: r for r in runs if r.data.tags.get("harness.run_type") == "cell"}
    assert set(cell_runs) == {c.name for c in grid.cells}
    for cell in grid.cells:
        if cell.is_baseline:
            continue
        run = cell_runs[cell.name]
        assert run.info.status == "FINISHED", cell.name
        (train,) = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == run.info.run_id
                    and r.data.tags.get("harness.stage_kind") == "train_policy"]
        assert train.info.status == "FINISHED" and train.data.params["algorithm.name"] == "ppo"
        # The switches that make the cell, as the YAML wrote them, in the cell's and the trained stage's params.
        for key, value in cell.overrides.items():
            assert run.data.params[key] == str(value), (cell.name, key)
            assert train.data.params[key] == str(value), (cell.name, key)
        algo = cell.resolved()["algorithm"]
        assert int(train.data.params["algorithm.prompt_batch_size"]) * algo["rollouts_per_prompt"] == 8
        # PPO's own step metrics: one finite value per update.
        for metric in PPO_STEP_METRICS:
            history = client.get_metric_history(train.info.run_id, metric)
            assert sorted(m.step for m in history) == [1, 2], (cell.name, metric)
            assert all(math.isfinite(m.value) for m in history), (cell.name, metric, history)
        # The KL controller is the one switch visible in a logged number whatever the samples: beta moves
        # after the first update only under the adaptive controller.
        betas = [m.value for m in sorted(client.get_metric_history(train.info.run_id, "train/kl_coef"),
                                         key=lambda m: m.step)]
        assert betas[0] == algo["kl_coef"] and (betas[1] != betas[0]) == algo["adaptive_kl"], (cell.name, betas)
        for metric in ("train/final_kl", "train/final_reward_mean", "train/final_loss"):
            assert math.isfinite(run.data.metrics[metric]), (cell.name, metric)
        assert run.data.metrics["train/steps"] == 2
