"""Reports from a real MLflow store written by the runner: a tiny grid (SFT baseline, DPO, PPO with a
reward model trained by the grid) run once for the module, then every table it supports is checked
number by number against the metrics the runner logged, and the figures are rendered."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from conftest import run_grids_in, use_results

from harness import tracking

EXPERIMENT = "reports-tiny"
TINY_TRAIN = {"max_steps": 2, "learning_rate": 1e-4}
GRID = {
    "experiment": EXPERIMENT,
    "base": {
        "model": "tiny-random-llama",
        "dataset": {"name": "smoke-lowercase", "max_rows": 24},
        "reward_model": {"base": "tiny-random-llama", "dataset": {"name": "smoke-lowercase", "max_rows": 24},
                         "train": {"per_device_train_batch_size": 8, "gradient_accumulation_steps": 1,
                                   "max_length": 64, "max_steps": 2, "learning_rate": 1e-3, "heldout_fraction": 0.3}},
        # Checkpoints evaluated at step 1 of 2: Figs. 6-7 plot evaluations over training, not training curves.
        "eval": {"tasks": ["smoke_lowercase", "policy_kl", "rm_reward"], "limit": 4, "checkpoint_every": 1},
    },
    "axes": {"algorithm": [
        {"name": "dpo", **TINY_TRAIN, "max_length": 64, "per_device_train_batch_size": 4,
         "gradient_accumulation_steps": 1},
        {"name": "ppo", **TINY_TRAIN, "prompt_batch_size": 4, "minibatch_size": 2, "max_new_tokens": 8,
         "value_init": "policy", "generation_batch_size": 4},
    ]},
}
# (checkpoint evaluations bring the over-optimisation monitor: `overoptimisation`, `monitor`; evaluation
# answers and the DPO cell's preference pairs bring `length_control`)
EXPECTED_TABLES = {"table1", "table2", "table5", "table11", "rm_eval", "prompt_rewards", "overoptimisation",
                   "length_control"}
EXPECTED_FIGURES = {"fig1", "fig6", "fig7", "reward_boxplot", "reward_vs_kl", "rm_score_distributions",
                    "policy_reward_distributions", "monitor"}


@pytest.fixture(scope="module")
def store(tmp_path_factory, tiny_model) -> Path:
    results = tmp_path_factory.mktemp("tiny_grid_results")
    (summary,) = run_grids_in(results, GRID)
    assert sorted(summary.logged_cells) == ["algorithm=dpo", "algorithm=ppo", "sft"]
    return results


@pytest.fixture(autouse=True)
def isolated_results(store, monkeypatch) -> Path:
    """Overrides the per-test results dir: every test here reads the module's runner-made store."""
    return use_results(monkeypatch, store)


@pytest.fixture(scope="module")
def report(store, tmp_path_factory):
    from reports.build import build_report

    with pytest.MonkeyPatch.context() as mp:
        use_results(mp, store)
        return build_report(EXPERIMENT, tmp_path_factory.mktemp("tiny_report"), n_boot=300)


def cell_run(name: str):
    client = tracking.client()
    exp = client.get_experiment_by_name(EXPERIMENT)
    (run,) = client.search_runs([exp.experiment_id], f"tags.`harness.cell` = '{name}'")
    return run


def test_supported_items_built_and_the_rest_skipped_with_reasons(report):
    assert set(report.tables) == EXPECTED_TABLES
    assert set(report.figures) == EXPECTED_FIGURES
    index = report.index.read_text()
    for name, reason in report.skipped.items():
        assert reason and f"(`{name}`): {reason}" in index  # named in index.md with why, no numbers made up
    assert "table3" in report.skipped and "rewardbench" in report.skipped["table13"]
    from PIL import Image

    for name in EXPECTED_FIGURES:
        with Image.open(report.out_dir / "figures" / f"{name}.png") as img:
            assert img.width >= 400 and img.height >= 250


def test_every_number_equals_the_runners_logged_metric(report):
    from test_reports_synthetic import assert_traceable

    checked = {name: assert_traceable(table) for name, table in report.tables.items()}
    assert all(checked[n] > 0 for n in ("table1", "table2", "table5", "rm_eval", "prompt_rewards")), checked
    for name in report.tables:
        rows = list(csv.DictReader((report.out_dir / "tables" / f"{name}.csv").open()))
        assert all(r["mlflow_run_ids"] for r in rows if r["value"] != ""), name


def test_table1_shape_labels_and_baseline(report):
    table = report.tables["table1"]
    assert table.label_columns == ["Source", "Dataset"]
    # No paper categories in this grid: the per-task score columns, and a note saying so.
    # (then the compute columns of reports/compute.py: estimated training FLOPs and device-hours, measured wall)
    assert table.columns[:2] == ["# Samples", "smoke_lowercase"] and len(table.columns) == 5
    assert table.columns[2].startswith("Train FLOPs (est., ") and table.columns[4] == "Train wall h (measured)"
    assert any("category" in note for note in table.notes)
    assert [r.labels for r in table.rows] == [["—", "SFT baseline"], ["Built-in", "smoke-lowercase"]]
    assert table.rows[0].kind == "baseline"
    sft, dpo = cell_run("sft"), cell_run("algorithm=dpo")
    assert table.entry("SFT baseline", "smoke_lowercase").value == sft.data.metrics["smoke_lowercase/score"]
    entry = table.entry("smoke-lowercase", "smoke_lowercase")
    assert entry.value == dpo.data.metrics["smoke_lowercase/score"] and entry.run_ids == (dpo.info.run_id,)
    assert entry.ci is not None and entry.n_examples == 4
    samples = table.entry("smoke-lowercase", "# Samples")
    prep = tracking.client().get_run(samples.run_ids[0])
    assert prep.data.tags["harness.stage_kind"] == "prepare_data" and samples.value == prep.data.metrics["data/kept_rows"]


def test_table2_dpo_vs_ppo_with_paired_delta(report):
    table = report.tables["table2"]
    assert [r.labels for r in table.rows] == [["SFT baseline", "—"], ["smoke-lowercase", "DPO"],
                                              ["smoke-lowercase", "PPO"], ["smoke-lowercase", "Δ (PPO − DPO)"],
                                              ["Avg. Δ b/w PPO & DPO", ""]]
    ppo = cell_run("algorithm=ppo").data.metrics["smoke_lowercase/score"]
    dpo = cell_run("algorithm=dpo").data.metrics["smoke_lowercase/score"]
    delta = table.entry("smoke-lowercase / Δ (PPO − DPO)", "smoke_lowercase")
    assert delta.value == pytest.approx(ppo - dpo) and delta.p_value is not None and 0 < delta.p_value <= 1
    assert table.rows[-1].entries[0].value == pytest.approx(ppo - dpo)


def test_reward_model_and_per_prompt_tables(report):
    rm = report.tables["rm_eval"]
    (row,) = rm.rows
    accuracy = row.entries[0]
    stage = tracking.client().get_run(accuracy.run_ids[0])
    assert stage.data.tags["harness.stage_kind"] == "train_reward_model"
    assert accuracy.value == pytest.approx(stage.data.metrics["rm/accuracy"])
    assert accuracy.ci is not None  # from the stage's rm_scores.jsonl artifact
    prompts = report.tables["prompt_rewards"]
    assert {r.labels[0] for r in prompts.rows} == {"DPO", "PPO", "SFT (base)"}
    # The baseline cell keeps the grid's reward model, so its samples are scored too and "> base" (prompts
    # where a policy's sample out-scores the base's) is available for every trained policy.
    for row in prompts.rows:
        if row.labels[0] != "SFT (base)":
            assert row.entries[2].text != "—" and row.entries[2].value is not None


def test_harness_report_command_prints_summary_and_writes_index(tmp_path, capsys):
    from harness.cli import main

    assert main(["report", EXPERIMENT, "--out", str(tmp_path), "--figures", "fig6", "--no-ci"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("| cell |") and "| sft |" in out
    assert (tmp_path / "index.md").exists() and (tmp_path / "figures" / "fig6.png").exists()
    assert (tmp_path / "tables" / "table1.tex").exists() and (tmp_path / "summary.md").exists()
