"""The MLflow layout's one home (`harness.mlflow_layout`): a cell killed right after its run was
created resumes to exactly what an uninterrupted run logs; every reader picks a cell's run by one rule
(the latest FINISHED); and no other module spells a `harness.*` tag."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import mlflow_layout as layout
from harness import tracking
from harness.paths import PROJECT_ROOT

TINY_DPO = {"name": "dpo", "beta": 0.1, "max_steps": 2, "per_device_train_batch_size": 4,
            "gradient_accumulation_steps": 1, "max_length": 64, "learning_rate": 1e-4}
RESUME_GRID = {
    "experiment": "resume-hole",
    "base": {"model": "tiny-random-llama", "dataset": {"name": "smoke-lowercase", "max_rows": 16},
             "algorithm": TINY_DPO, "eval": {"tasks": ["smoke_lowercase"], "limit": 2}},
    "baseline": False,
}
# Differ between two stores of the same grid by construction: the run's own timing and where it ran.
VOLATILE_TAGS = {layout.TAG_STAGE_SECONDS, layout.TAG_STAGE_ATTEMPT}  # differ between any two runs


def _run_cli(grid_file: Path, results: Path, **extra_env: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", layout.FAULT_ENV)}
    env.update({"HARNESS_RESULTS_DIR": str(results), "OMP_NUM_THREADS": "1", **extra_env})
    return subprocess.run([sys.executable, "-m", "harness.cli", "run", str(grid_file)], env=env,
                          capture_output=True, text=True, timeout=900)


def _artifacts(run_id: str, path: str | None = None) -> list[str]:
    out = []
    for item in tracking.client().list_artifacts(run_id, path):
        out += _artifacts(run_id, item.path) if item.is_dir else [item.path]
    return sorted(out)


def _store_state(results: Path, experiment: str, monkeypatch) -> dict[str, Any]:
    """Every run of the experiment as what it holds (params, tags, artifacts, resolved config, metric
    names, the eval scores), paths made relative to the store so that two stores compare."""
    monkeypatch.setenv("HARNESS_RESULTS_DIR", str(results))
    client = tracking.client()
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    by_id = {r.info.run_id: r for r in runs}

    def norm(text: str) -> str:
        return text.replace(str(results), "<results>")

    def describe(run: Any) -> dict[str, Any]:
        tags = {k: norm(v) for k, v in run.data.tags.items() if k not in VOLATILE_TAGS and k != layout.TAG_PARENT}
        parent = by_id.get(run.data.tags.get(layout.TAG_PARENT, ""))
        state = {"status": run.info.status, "params": dict(run.data.params), "tags": tags,
                 "parent": parent.data.tags.get(layout.TAG_CELL) if parent else None,
                 "artifacts": _artifacts(run.info.run_id), "metric_names": sorted(run.data.metrics),
                 "scores": {k: round(v, 6) for k, v in run.data.metrics.items()
                            if k.startswith("smoke_lowercase/") and not k.endswith("seconds")}}
        if layout.RESOLVED_CONFIG_ARTIFACT in state["artifacts"]:
            local = client.download_artifacts(run.info.run_id, layout.RESOLVED_CONFIG_ARTIFACT)
            state["resolved_config"] = json.loads(norm(Path(local).read_text()))
        return state

    described = [describe(r) for r in runs]
    return {"runs": sorted(described, key=lambda d: json.dumps(d, sort_keys=True)), "n_runs": len(runs)}


def test_kill_right_after_the_cell_run_is_created_resumes_to_the_uninterrupted_state(tmp_path, tiny_model,
                                                                                      monkeypatch):
    grid_file = tmp_path / "grid.yaml"
    grid_file.write_text(yaml.safe_dump(RESUME_GRID))
    killed, clean = tmp_path / "killed", tmp_path / "clean"

    died = _run_cli(grid_file, killed, **{layout.FAULT_ENV: "cell_run_created"})
    assert died.returncode == -9, died.stderr[-3000:]
    # The hole this test is about: the cell's run exists, unfinished, with its tags and nothing else.
    monkeypatch.setenv("HARNESS_RESULTS_DIR", str(killed))
    client = tracking.client()
    (left,) = client.search_runs([client.get_experiment_by_name("resume-hole").experiment_id], max_results=10)
    assert left.info.status == "RUNNING" and left.data.tags[layout.TAG_RUN_TYPE] == layout.RUN_TYPE_CELL
    assert left.data.params == {} and _artifacts(left.info.run_id) == []

    resumed = _run_cli(grid_file, killed)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert ": logged to MLflow run" in resumed.stdout, resumed.stdout  # resumed, not taken for a finished cell
    uninterrupted = _run_cli(grid_file, clean)
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-3000:]

    after_kill = _store_state(killed, "resume-hole", monkeypatch)
    reference = _store_state(clean, "resume-hole", monkeypatch)
    cell = next(r for r in after_kill["runs"] if r["tags"][layout.TAG_RUN_TYPE] == layout.RUN_TYPE_CELL)
    # What the report rows need is there: the algorithm and dataset, and the resolved config artifact.
    assert cell["params"]["algorithm.name"] == "dpo" and cell["params"]["dataset.name"] == "smoke-lowercase"
    assert cell["resolved_config"]["resolved_config"]["algorithm"]["beta"] == 0.1
    assert cell["status"] == "FINISHED" and cell["scores"]
    # the cell run and its 4 stage runs (prepare_data, reference_logps, train_policy, evaluate), once each
    assert after_kill["n_runs"] == reference["n_runs"] == 5
    assert _differences(after_kill["runs"], reference["runs"]) == []


def _differences(runs: list[dict[str, Any]], reference: list[dict[str, Any]]) -> list[str]:
    """Field by field (tag by tag, param by param): what a run holds that its counterpart does not."""
    out = []
    for run, ref in zip(runs, reference, strict=True):
        for field in sorted(set(run) | set(ref)):
            mine, theirs = run.get(field), ref.get(field)
            if isinstance(mine, dict) and isinstance(theirs, dict):
                out += [f"{field}.{k}: {mine.get(k)!r} != {theirs.get(k)!r}" for k in sorted(set(mine) | set(theirs))
                        if mine.get(k) != theirs.get(k)]
            elif mine != theirs:
                out.append(f"{field}: {mine!r} != {theirs!r}")
    return out


def _cell_info(name: str, key: str, **extra: Any) -> layout.CellRunInfo:
    return layout.CellRunInfo(grid="rule", name=name, key=key, is_baseline=False,
                              resolved_config={"algorithm": {"name": "dpo", "beta": extra.pop("beta", 0.1)}},
                              policy_path=f"/models/{name}-{key}", **extra)


def test_every_reader_takes_the_latest_finished_run_of_a_cell():
    """Old finished run, newer finished run (config changed: other key), newest unfinished one: the
    reports, the grid summary and the judge all read the newer finished run; the runner sees each key's
    own state."""
    from harness.judge.experiment import find_policies
    from reports.data import Experiment
    from reports.summary import cell_runs

    exp_id = tracking.setup_experiment("rule")
    old = layout.open_cell_run(exp_id, _cell_info("beta", "k1"), start_time_ms=1_000)
    layout.finish_cell_run(old, {"smoke_lowercase/score": 10.0})
    new = layout.open_cell_run(exp_id, _cell_info("beta", "k2", beta=0.2), start_time_ms=2_000)
    layout.finish_cell_run(new, {"smoke_lowercase/score": 20.0})
    unfinished = layout.open_cell_run(exp_id, _cell_info("beta", "k3", beta=0.3), start_time_ms=3_000)
    assert unfinished not in (None, old, new)

    with Experiment("rule") as exp:
        (cell,) = exp.cells
        assert cell.run_id == new and cell.metric("smoke_lowercase/score") == 20.0 and cell.param("algorithm.beta") == "0.2"
    assert cell_runs("rule")["run_id"].tolist() == [new]
    _, policies = find_policies("rule")
    assert [(p.run_id, p.policy_path) for p in policies] == [(new, "/models/beta-k2")]
    assert layout.logged_cell_run(exp_id, "beta", "k1").info.run_id == old
    assert layout.logged_cell_run(exp_id, "beta", "k3") is None  # still to be logged
    assert layout.open_cell_run(exp_id, _cell_info("beta", "k2", beta=0.2)) is None  # finished: never reopened


def test_a_resumed_run_whose_params_contradict_the_cell_is_replaced():
    exp_id = tracking.setup_experiment("contradict")
    stale = layout.open_cell_run(exp_id, _cell_info("c", "k", beta=0.1))
    resumed = layout.open_cell_run(exp_id, _cell_info("c", "k", beta=0.1))
    assert resumed == stale  # same identity: the same run, resumed
    replaced = layout.open_cell_run(exp_id, _cell_info("c", "k", beta=0.5))
    assert replaced != stale
    (run,) = layout.cell_runs(exp_id, "c", "k")
    assert run.info.run_id == replaced and run.data.params["algorithm.beta"] == "0.5"


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


_TAG_LITERAL = re.compile(r"""["'](harness\.[A-Za-z_][\w.]*)["'{]""")


def test_no_module_but_the_layout_spells_a_harness_tag():
    offenders = []
    layout_package = PROJECT_ROOT / "harness" / "mlflow_layout"
    for folder in ("harness", "reports", "benchmarks", "datasets_registry"):
        for path in (PROJECT_ROOT / folder).rglob("*.py"):
            if path.parent == layout_package:
                continue
            for lineno, line in enumerate(path.read_text().splitlines(), 1):
                for name in _TAG_LITERAL.findall(line):
                    if not _is_module(name.rstrip(".")):  # `harness.judge.cli` is a module, not a tag
                        offenders.append(f"{path.relative_to(PROJECT_ROOT)}:{lineno}: {name}")
    assert not offenders, offenders


@pytest.fixture(autouse=True)
def _no_fault_injection(monkeypatch):
    monkeypatch.delenv(layout.FAULT_ENV, raising=False)
