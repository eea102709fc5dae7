"""A broken data file on a real grid run (tiny-random-llama, real TRL training, real MLflow): the error
names the file and the line before any training starts, no stage of that cell trains, the other cells
complete under keep-going (the CLI default), and the summary says what failed (exit code 1)."""

from __future__ import annotations

import pytest
import yaml

from harness import tracking
from harness.grid import build_grid
from harness.runner import run_grid

TINY_DPO = {"name": "dpo", "max_steps": 1, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1,
            "max_length": 64, "learning_rate": 1e-4}
SMOKE = {"name": "smoke-lowercase", "max_rows": 8}
HELPSTEER = {"name": "helpsteer", "max_rows": 8}


def grid_spec(datasets: list[dict], experiment: str = "keep_going") -> dict:
    return {"experiment": experiment,
            "base": {"model": "tiny-random-llama", "dataset": SMOKE, "algorithm": TINY_DPO,
                     "eval": {"tasks": ["smoke_lowercase"], "limit": 2}},
            "axes": {"dataset": datasets}}


def finished_cells(experiment: str) -> set[str]:
    client = tracking.client()
    exp = client.get_experiment_by_name(experiment)
    return {r.data.tags["harness.cell"] for r in client.search_runs([exp.experiment_id])
            if r.data.tags.get("harness.run_type") == "cell" and r.info.status == "FINISHED"}


def test_broken_data_file_fails_its_cell_before_training_and_the_others_complete(
        broken_helpsteer, tmp_path, capsys, isolated_results, tiny_model):
    from harness.cli import main

    path = tmp_path / "grid.yaml"
    # HelpSteer listed last: without the data-first order, the smoke cell would train before it is read.
    path.write_text(yaml.safe_dump(grid_spec([SMOKE, HELPSTEER])))
    assert main(["run", str(path)]) == 1
    out, err = capsys.readouterr()
    lines = out.splitlines()
    ran = [line.split()[1] for line in lines if line.startswith("  run  ")]
    assert ran.count("train_policy[dpo]") == 1  # the smoke cell's; HelpSteer's never started
    failed_at = next(i for i, line in enumerate(lines) if line.startswith("  FAILED prepare_data[helpsteer]"))
    first_training = next(i for i, line in enumerate(lines) if line.startswith("  run  train_policy"))
    assert failed_at < first_training
    assert f"{broken_helpsteer}:3: not UTF-8 text (byte 0xe9" in lines[failed_at]

    assert "FAILED: 1 cell(s) not logged:" in err
    assert (f"cell dataset=helpsteer: prepare_data[helpsteer] failed: DataFormatError: {broken_helpsteer}:3: "
            "not UTF-8 text") in err
    assert "Traceback" not in err
    assert finished_cells("keep_going") == {"sft", "dataset=smoke-lowercase"}
    assert len(list((isolated_results / "stages" / "train_policy").iterdir())) == 1
    assert not list((isolated_results / "stages" / ".work").glob("train_policy/*"))  # no training left behind


def test_fail_fast_stops_at_the_data_error_before_any_training(broken_helpsteer, isolated_results, tiny_model):
    from datasets_registry import DataFormatError

    grid = build_grid(grid_spec([SMOKE, HELPSTEER]))
    with pytest.raises(DataFormatError, match=r"train\.jsonl\.gz:3: not UTF-8"):
        run_grid(grid, echo=lambda _: None, keep_going=False)
    assert not (isolated_results / "stages" / "train_policy").exists()


def test_keep_going_with_a_worker_pool(broken_helpsteer, tiny_model):
    """workers=2: the failed data stage's cell is reported, the baseline (independent of it) is logged."""
    lines: list[str] = []
    summary = run_grid(build_grid(grid_spec([HELPSTEER])), echo=lines.append, keep_going=True,
                       backend_options={"workers": 2})
    assert summary.logged_cells == ["sft"]
    assert list(summary.failed_cells) == ["dataset=helpsteer"]
    assert "train.jsonl.gz:3: not UTF-8" in summary.failed_cells["dataset=helpsteer"]
    assert not any("train_policy" in line for line in lines if line.startswith("  run  "))
    assert "DataFormatError" in summary.tracebacks[next(iter(summary.failed_stages))]
