"""Tables 4 and 7 and Fig. 3 from MLflow stores the real runner wrote (not a synthetic store).

Two tiny grids on the tiny random model, run once for the module:
- `reports-prompts-tiny`: PPO on two policy-training prompt sets (UltraFeedback prompts, GSM8K train
  questions) x two reward models (UltraFeedback fine-grained vs overall-score pairs), evaluated on GSM8K,
  plus the SFT baseline: Table 4's rows and Fig. 3's bars (grouped by reward model).
- `reports-uf-tiny`: DPO on UltraFeedback and two of its prompt-source subsets, plus the SFT baseline:
  Table 7's rows.
Every number of the built items is checked against the metric the runner logged for that cell's run.
"""

from __future__ import annotations

import csv
import functools
from pathlib import Path
from typing import Any

import pytest
from conftest import use_results

from harness import tracking
from harness.grid import build_grid
from harness.paths import shared_data_dir
from harness.runner import run_grid

PROMPTS_EXPERIMENT = "reports-prompts-tiny"
UF_EXPERIMENT = "reports-uf-tiny"
# Real offline files these grids read (from ../shared/data): skip with the missing one named, not fail.
NEEDED_FILES = ("benchmarks/gsm8k/test.jsonl", "benchmarks/gsm8k/train.jsonl",
                "preferences/ultrafeedback/argilla_cleaned_sample_1k.jsonl",
                "preferences/ultrafeedback/binarized_sample_train_1k.jsonl")

RM_TRAIN = {"per_device_train_batch_size": 8, "gradient_accumulation_steps": 1, "max_length": 64, "max_steps": 1,
            "learning_rate": 1e-3, "heldout_fraction": 0.3}
RM_DATASETS = ("ultrafeedback-fg", "ultrafeedback-overall")
PROMPT_SETS = ("prompts-gsm8k-train", "prompts-ultrafeedback")
PROMPTS_GRID: dict[str, Any] = {
    "experiment": PROMPTS_EXPERIMENT,
    "base": {
        "model": "tiny-random-llama",
        "algorithm": {"name": "ppo", "max_steps": 1, "learning_rate": 1e-4, "prompt_batch_size": 2,
                      "minibatch_size": 2, "max_new_tokens": 8, "value_init": "policy", "generation_batch_size": 2},
        "eval": {"tasks": ["gsm8k"], "limit": 2},
    },
    "axes": {
        "reward_model": [{"base": "tiny-random-llama", "dataset": {"name": d, "max_rows": 16}, "train": RM_TRAIN}
                         for d in RM_DATASETS],
        "prompts": [{"name": p, "max_rows": 4} for p in PROMPT_SETS],
    },
    # A third RM on the same pairs as the first, trained longer: its data label is the first one's, so
    # Table 4 and Fig. 3 must keep the two apart (a shared label once merged them into one bar).
    "include": [{"reward_model": {"base": "tiny-random-llama", "dataset": {"name": RM_DATASETS[0], "max_rows": 16},
                                  "train": {**RM_TRAIN, "max_steps": 2}},
                 "prompts": {"name": PROMPT_SETS[0], "max_rows": 4}}],
}
UF_DATASETS = ("ultrafeedback-fg", "ultrafeedback-src-flan-v2", "ultrafeedback-src-sharegpt")
UF_GRID: dict[str, Any] = {
    "experiment": UF_EXPERIMENT,
    "base": {
        "model": "tiny-random-llama",
        "algorithm": {"name": "dpo", "max_steps": 1, "learning_rate": 1e-4, "max_length": 512,
                      "per_device_train_batch_size": 4, "gradient_accumulation_steps": 1},
        "eval": {"tasks": ["smoke_lowercase"], "limit": 2},
    },
    "axes": {"dataset": [{"name": d, "max_rows": 8} for d in UF_DATASETS]},
}


@pytest.fixture(scope="module")
def store(tmp_path_factory, tiny_model) -> Path:
    shared = shared_data_dir()
    missing = [f for f in NEEDED_FILES if shared is None or not (shared / f).is_file()]
    if missing:
        pytest.skip(f"real data not present: ../shared/data/{missing[0]}")
    results = tmp_path_factory.mktemp("grid_reports_results")
    with pytest.MonkeyPatch.context() as mp:
        use_results(mp, results)
        mp.setenv("OMP_NUM_THREADS", "1")
        # GSM8K as registered (real test questions, 8-shot prompt, scoring) but with a short completion
        # budget, as its own fast tests run it: the random model never stops, so 512 tokens per question
        # would be most of this module's time, and no number checked here depends on the length. The
        # stage cache is this module's own tmp dir, so the shortened outputs are never reused elsewhere.
        from harness.evaluation import TASKS, gsm8k

        mp.setattr(TASKS.get("gsm8k"), "run", functools.partial(gsm8k.run, max_new_tokens=32))
        for spec in (PROMPTS_GRID, UF_GRID):
            grid = build_grid(spec)
            summary = run_grid(grid, echo=lambda _: None)
            assert sorted(summary.logged_cells) == sorted(c.name for c in grid.cells)
    return results


@pytest.fixture(autouse=True)
def isolated_results(store, monkeypatch) -> Path:
    """Overrides the per-test results dir: every test here reads the module's runner-made stores."""
    return use_results(monkeypatch, store)


def _build(store: Path, out: Path, experiment: str, tables: list[str], figures: list[str]):
    from reports.build import build_report

    with pytest.MonkeyPatch.context() as mp:
        use_results(mp, store)
        return build_report(experiment, out, tables=tables, figures=figures, n_boot=200)


@pytest.fixture(scope="module")
def prompts_report(store, tmp_path_factory):
    return _build(store, tmp_path_factory.mktemp("prompts_report"), PROMPTS_EXPERIMENT, ["table4", "table7"], ["fig3"])


@pytest.fixture(scope="module")
def uf_report(store, tmp_path_factory):
    return _build(store, tmp_path_factory.mktemp("uf_report"), UF_EXPERIMENT, ["table4", "table7"], ["fig3"])


def cell_runs(experiment: str) -> dict[str, Any]:
    """Cell name -> its FINISHED parent run, straight from the store."""
    client = tracking.client()
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], "tags.`harness.run_type` = 'cell'")
    return {r.data.tags["harness.cell"]: r for r in runs if r.info.status == "FINISHED"}


def ppo_runs() -> dict[tuple[str, str], Any]:
    """(expected RM label, prompt set) -> PPO cell run, the label derived from what the run logged: its
    RM's data, and the RM stage's hash where two RMs share that data (as `reports.tables.rm_groups`)."""
    runs = [r for r in cell_runs(PROMPTS_EXPERIMENT).values() if r.data.tags["harness.is_baseline"] == "false"]
    datasets = [r.data.params["reward_model.dataset.name"] for r in runs]
    rm_keys = {(d, r.data.tags["harness.stage.train_reward_model"]) for d, r in zip(datasets, runs)}
    out = {}
    for data, run in zip(datasets, runs):
        label = f"tiny-random-llama RM ({data}, 16 pairs)"
        if sum(d == data for d, _ in rm_keys) > 1:
            label += f" [{run.data.tags['harness.stage.train_reward_model'][:6]}]"
        out[(label, run.data.params["prompts.name"])] = run
    assert len(out) == len(runs) == 5 and len(rm_keys) == 3  # every PPO cell its own (RM, prompts) pair
    return out


# ------------------------------------------------------------------------------------------------
# Tests
# ------------------------------------------------------------------------------------------------

def test_items_built_on_their_grid_and_skipped_on_the_other(prompts_report, uf_report):
    assert set(prompts_report.tables) == {"table4"} and set(prompts_report.figures) == {"fig3"}
    assert set(prompts_report.skipped) == {"table7"}
    assert set(uf_report.tables) == {"table7"} and not uf_report.figures
    assert set(uf_report.skipped) == {"table4", "fig3"}


def test_table4_rows_are_the_grids_configurations(prompts_report):
    from test_reports_synthetic import assert_traceable

    table = prompts_report.tables["table4"]
    runs, sft = ppo_runs(), cell_runs(PROMPTS_EXPERIMENT)["sft"]
    assert table.label_columns == ["Reward Model", "Prompts"]
    # (then the compute columns of reports/compute.py: estimated training FLOPs and device-hours, measured wall)
    assert table.columns[:3] == ["GSM %", "Coding", "Avg. Across All Evals"] and len(table.columns) == 6
    ours = [r for r in table.rows if r.kind != "paper"]  # the paper's printed rows: reports/paper_beside.py
    assert ours[0].kind == "baseline" and ours[0].labels == ["SFT baseline", "—"]
    data = ours[1:]
    # One row per PPO cell, none merged, each labelled by its own RM and prompt set, sorted by them.
    assert [tuple(r.labels) for r in data] == sorted(runs) and all(r.kind == "data" for r in data)
    gsm = table.columns.index("GSM %")
    for row in data:
        run = runs[tuple(row.labels)]
        entry = row.entries[gsm]
        assert entry.run_ids == (run.info.run_id,) and entry.value == run.data.metrics["gsm8k/score"]
        assert entry.ci is not None and entry.n_examples == 2  # from the evaluate run's GSM samples
        # This grid evaluates GSM only: no coding category and no all-category average, shown as "—".
        assert [e.is_number for e in row.entries[:3]] == [True, False, False]
    base = ours[0].entries[gsm]
    assert base.run_ids == (sft.info.run_id,) and base.value == sft.data.metrics["gsm8k/score"]
    assert assert_traceable(table) == len(runs) + 1
    rows = list(csv.DictReader((prompts_report.out_dir / "tables" / "table4.csv").open()))
    assert all(r["mlflow_run_ids"] for r in rows if r["value"] != "" and r["row_kind"] != "paper")


def test_fig3_one_bar_per_reward_model_and_prompt_set(prompts_report):
    from PIL import Image

    fig = prompts_report.figures["fig3"]
    runs, sft = ppo_runs(), cell_runs(PROMPTS_EXPERIMENT)["sft"]
    bars = [row for row in fig.data if row["series"] != "SFT"]
    # Groups (x) are the RMs, bars within a group the prompt sets; the longer-trained RM has no
    # UltraFeedback-prompts cell, so its group has one bar.
    assert sorted((row["x"], row["series"]) for row in bars) == sorted(runs)
    for row in bars:
        run = runs[(row["x"], row["series"])]
        assert row["mlflow_run_ids"] == run.info.run_id and row["value"] == run.data.metrics["gsm8k/score"]
    (base,) = [row for row in fig.data if row["series"] == "SFT"]
    assert base["mlflow_run_ids"] == sft.info.run_id and base["value"] == sft.data.metrics["gsm8k/score"]
    assert fig.notes == []  # no bar averages several configurations
    written = list(csv.DictReader((prompts_report.out_dir / "figures" / "fig3.csv").open()))
    assert len(written) == len(fig.data)
    with Image.open(prompts_report.out_dir / "figures" / "fig3.png") as img:
        assert 500 <= img.width <= 2000 and 300 <= img.height <= 1200
        assert len(set(img.convert("L").getdata())) > 10  # drawn, not a blank canvas


def test_table7_rows_are_the_ultrafeedback_subsets(uf_report):
    from test_reports_synthetic import assert_traceable

    table = uf_report.tables["table7"]
    runs = cell_runs(UF_EXPERIMENT)
    assert table.label_columns == ["Subset"]
    # No paper category is evaluated by this grid: the per-task score column, and a note saying so.
    assert table.columns == ["smoke_lowercase"]
    assert [r.labels for r in table.rows] == [["SFT baseline"], *([d] for d in sorted(UF_DATASETS))]
    assert table.rows[0].kind == "baseline" and all(r.kind == "data" for r in table.rows[1:])
    for row in table.rows:
        run = runs["sft"] if row.kind == "baseline" else runs[f"dataset={row.labels[0]}"]
        (entry,) = row.entries
        assert entry.run_ids == (run.info.run_id,) and entry.value == run.data.metrics["smoke_lowercase/score"]
        assert entry.ci is not None and entry.n_examples == 2  # intervals from the evaluate run's samples
    assert assert_traceable(table) == len(runs)
