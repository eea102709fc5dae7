"""`eval.checkpoint_every`: a tiny DPO grid saves its policy every 2 of 4 steps, the evaluate stage scores
each checkpoint with the cell's tasks, the runner logs them as metric histories over steps, and the
report's Figs. 6-7 plot those benchmark curves (not the training-loss fallback)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from harness import tracking
from harness.grid import GridError, build_grid
from harness.runner import plan_grid, run_grid

EXPERIMENT = "checkpoint-eval-tiny"
DPO = {"name": "dpo", "max_steps": 4, "max_length": 64, "per_device_train_batch_size": 2,
       "gradient_accumulation_steps": 1, "learning_rate": 1e-4}


def grid_spec(**eval_extra: object) -> dict:
    return {"experiment": EXPERIMENT,
            "base": {"model": "tiny-random-llama", "dataset": {"name": "smoke-lowercase", "max_rows": 16},
                     "eval": {"tasks": ["smoke_lowercase"], "limit": 2, **eval_extra}},
            "axes": {"algorithm": [DPO]}}


def dpo_plan(spec: dict):
    return next(p for p in plan_grid(build_grid(spec)) if p.cell.name == "algorithm=dpo")


def test_keys_without_the_option_are_unchanged() -> None:
    # Without the option no stage config mentions it, so those keys are what they would be without the
    # feature (the keys themselves hash the loaders' and tasks' code, so they are not pinned literally).
    plan = dpo_plan(grid_spec())
    assert not any("checkpoint_every" in s.config for s in plan.stages)
    with_ckpt = dpo_plan(grid_spec(checkpoint_every=2))
    assert with_ckpt.stage("prepare_data").key == plan.stage("prepare_data").key
    assert with_ckpt.stage("train_policy").key != plan.stage("train_policy").key
    assert with_ckpt.stage("train_policy").config == {**plan.stage("train_policy").config, "checkpoint_every": 2}
    # Checkpoint evaluations bring the over-optimisation monitor (harness/monitor.py), measured at each one ...
    monitor = with_ckpt.stage("evaluate").config["monitor"]
    assert with_ckpt.stage("evaluate").config == {**plan.stage("evaluate").config, "checkpoint_every": 2,
                                                  "monitor": monitor}
    assert monitor["proxy"] is None and monitor["gold"] is None  # DPO trains on no reward; no gold signal set
    # ... and with it switched off, only the option itself is added.
    off = grid_spec(checkpoint_every=2)
    off["base"]["monitor"] = {"enabled": False}
    assert dpo_plan(off).stage("evaluate").config == {**plan.stage("evaluate").config, "checkpoint_every": 2}
    # Its step-0 point reads the baseline cell's own evaluate stage (shared, not a second SFT evaluation).
    sft = next(p for p in plan_grid(build_grid(grid_spec(checkpoint_every=2))) if p.cell.is_baseline)
    plain_sft = next(p for p in plan_grid(build_grid(grid_spec())) if p.cell.is_baseline)
    assert with_ckpt.stage("evaluate").inputs["sft"].key == sft.stages[-1].key == plain_sft.stages[-1].key


@pytest.mark.parametrize("bad", [0, -1])
def test_checkpoint_every_below_one_fails_at_plan_time_with_its_yaml_path(bad: int) -> None:
    with pytest.raises(GridError, match=r"eval\.checkpoint_every"):
        build_grid(grid_spec(checkpoint_every=bad))


def test_checkpoint_evals_logged_over_steps_and_plotted(tiny_model: str, tmp_path: Path, monkeypatch) -> None:
    from harness.evaluation import EvalContext, run_tasks
    from reports.build import build_report

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    summary = run_grid(build_grid(grid_spec(checkpoint_every=2)), echo=lambda _: None)
    assert sorted(summary.logged_cells) == ["algorithm=dpo", "sft"]
    plan = dpo_plan(grid_spec(checkpoint_every=2))
    policy, evaluate = plan.stage("train_policy"), plan.stage("evaluate")

    # Train stage: step 2 saved; step 4 is model/ itself (no duplicate folder); TRL's trainer/ is gone.
    assert (policy.path / "checkpoints" / "step-2" / "config.json").exists()
    assert not (policy.path / "checkpoints" / "step-4").exists() and not (policy.path / "trainer").exists()
    assert json.loads((policy.path / "checkpoints" / "index.json").read_text())["final_step"] == 4

    client = tracking.client()
    cell = client.get_run(summary.cell_run_ids["algorithm=dpo"])
    (eval_run,) = [r for r in client.search_runs([summary.experiment_id],
                                                  f"tags.`mlflow.parentRunId` = '{cell.info.run_id}'")
                   if r.data.tags["harness.stage_kind"] == "evaluate"]
    key = "smoke_lowercase/score"
    # Step 2 recomputed independently from the checkpoint folder with the cell's settings.
    fresh = run_tasks(EvalContext(model_path=str(policy.path / "checkpoints" / "step-2"), out_dir=tmp_path / "re",
                                  limit=2, seed=1, batch_size=16), ["smoke_lowercase"])
    saved = json.loads((evaluate.path / "artifacts" / "checkpoints" / "step-2" / "results.json").read_text())
    sft = client.get_run(summary.cell_run_ids["sft"])
    for run in (cell, eval_run):
        history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, key)}
        assert sorted(history) == [0, 2, 4], history  # one value per step: no step-0 copy of the final value
        assert history[0] == sft.data.metrics[key]  # step 0 = the SFT baseline cell's (shared) evaluation
        assert history[2] == pytest.approx(fresh[key])
        # The last point is the final model's number, which stays the run's reported value.
        assert history[4] == run.data.metrics[key]
    assert saved["metrics"][key] == pytest.approx(fresh[key])  # the stage's own record of that checkpoint
    assert cell.data.metrics[key] == json.loads((evaluate.path / "metrics.json").read_text())[key]

    report = build_report(EXPERIMENT, tmp_path / "report", tables=[], figures=["fig6", "fig7"], ci=False)
    assert "fig6" in report.figures and "fig6" not in report.skipped
    assert "checkpoint evaluations" in report.figures["fig6"].caption
    rows = list(csv.DictReader((report.out_dir / "figures" / "fig6.csv").open()))
    plotted = {(int(float(r["x"])), r["mlflow_run_ids"]) for r in rows if r["metric"] == key}
    assert plotted == {(0, cell.info.run_id), (2, cell.info.run_id), (4, cell.info.run_id)}


def test_ppo_saves_a_checkpoint_every_n_updates(tiny_model: str, tmp_path: Path, monkeypatch) -> None:
    from datasets_registry import prepare
    from harness.algorithms import ALGORITHMS, TrainContext
    from harness.algorithms.ppo import PPOConfig
    from harness.checkpoints import finalize, list_checkpoints
    from harness.rewards import REWARD_FUNCTIONS

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    cfg = PPOConfig(prompt_batch_size=2, minibatch_size=2, max_new_tokens=4, max_steps=3, value_init="policy",
                    learning_rate=1e-4, generation_batch_size=2)
    ctx = TrainContext(policy_path=tiny_model, train_rows=prepare("smoke-lowercase-eval", seed=0).rows[:8],
                       config=cfg, out_dir=tmp_path, seed=3, reward_function=REWARD_FUNCTIONS.get("lowercase"),
                       checkpoint_every=1)
    result = ALGORITHMS.get("ppo").train(ctx)
    # Numbered like PPO's history (updates); update 3 is the final model/, not a checkpoint.
    assert finalize(tmp_path, 1, int(result["train/steps"])) == [1, 2]
    for _, folder in list_checkpoints(tmp_path):
        assert (folder / "config.json").exists() and (folder / "tokenizer_config.json").exists()
