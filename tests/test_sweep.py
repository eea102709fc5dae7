"""Optuna sweeps on the tiny model with real Optuna storages (SQLite, JournalStorage) and the real
MLflow store: trials are grid cells nested under the study's run, resumable, prunable, and two
workers in parallel on one study never duplicate a trial."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from harness import tracking
from harness.sweep.optuna_factories import open_storage
from harness.sweep.spec import SweepError, load_sweep, parse_sweep
from harness.sweep.workers import run_sweep

TINY_DPO = {"name": "dpo", "max_steps": 1, "per_device_train_batch_size": 4, "gradient_accumulation_steps": 1,
            "max_length": 64, "learning_rate": 1e-4}


def tiny_sweep(experiment: str, n_trials: int = 2, **extra) -> dict:
    return {
        "experiment": experiment,
        "base": {"model": "tiny-random-llama", "dataset": {"name": "smoke-lowercase", "max_rows": 8},
                 "algorithm": dict(TINY_DPO), "eval": {"tasks": ["smoke_lowercase"], "limit": 2}},
        "search": {"algorithm.beta": {"type": "float", "low": 0.01, "high": 1.0, "log": True}},
        "objective": {"metric": "smoke_lowercase/clean_success_rate", "direction": "maximize"},
        "n_trials": n_trials,
        "sampler": {"name": "random", "seed": 0},
        **extra,
    }


@pytest.fixture
def shared_mlflow(tmp_path_factory, monkeypatch) -> str:
    """One MLflow SQLite store for the module (creating one costs seconds); experiments differ per test."""
    uri = f"sqlite:///{tmp_path_factory.getbasetemp() / 'sweep_mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


def runs_of(experiment: str) -> list:
    client = tracking.client()
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], max_results=1000)


def quiet(_: str) -> None:
    pass


def test_sweep_file_errors_name_the_field():
    with pytest.raises(SweepError, match="search.algorithm.beta: Value error, a float parameter needs `low` and `high`"
                       "|search.algorithm.beta: a float parameter needs `low` and `high`"):
        parse_sweep(tiny_sweep("bad", search={"algorithm.beta": {"type": "float", "low": 0.1}}))
    with pytest.raises(SweepError, match="exactly one of `objective`"):
        parse_sweep({**tiny_sweep("bad"), "objectives": [{"metric": "a"}, {"metric": "b"}]})
    with pytest.raises(SweepError, match="pruner: Optuna prunes single-objective studies only"):
        spec = tiny_sweep("bad", pruner={"name": "median"})
        spec.pop("objective")
        parse_sweep({**spec, "objectives": [{"metric": "a"}, {"metric": "b", "direction": "minimize"}]})
    with pytest.raises(SweepError, match=r"search.algorithm.betta: unknown field for algorithm 'dpo'"):
        parse_sweep(tiny_sweep("bad", search={"algorithm.betta": {"type": "float", "low": 0.1, "high": 1.0}}))
    with pytest.raises(SweepError, match="sampler grid: every searched parameter must be type: categorical"):
        parse_sweep(tiny_sweep("bad", sampler={"name": "grid"}))
    with pytest.raises(SweepError, match="log: true needs low > 0"):
        parse_sweep(tiny_sweep("bad", search={"algorithm.beta": {"type": "float", "low": 0.0, "high": 1.0,
                                                                 "log": True}}))
    with pytest.raises(SweepError, match="search and axes both set"):
        parse_sweep(tiny_sweep("bad", axes={"algorithm.beta": [0.1]}))


def test_sweep_values_out_of_range_and_unreadable_files_fail_at_load(tmp_path):
    # A bound outside the field's range makes an invalid trial: found before any trial runs.
    with pytest.raises(SweepError, match=r"search.algorithm.beta = -0.5 makes an invalid cell:\n"
                                         r"  search.algorithm.beta: beta must be > 0 \(got -0.5\)"):
        parse_sweep(tiny_sweep("bad", search={"algorithm.beta": {"type": "float", "low": -0.5, "high": 1.0}}))
    with pytest.raises(SweepError, match=r"search.algorithm.beta.step: Input should be greater than 0"):
        parse_sweep(tiny_sweep("bad", search={"algorithm.beta": {"type": "float", "low": 0.1, "high": 1.0,
                                                                 "step": -0.1}}))
    with pytest.raises(SweepError, match=r"sampler.seed: Input should be greater than or equal to 0"):
        parse_sweep(tiny_sweep("bad", sampler={"name": "random", "seed": -1}))
    dup = tmp_path / "dup.yaml"
    dup.write_text(yaml.safe_dump(tiny_sweep("bad")) + "n_trials: 3\n")
    with pytest.raises(SweepError, match=r"n_trials: line \d+ repeats the key of line \d+"):
        load_sweep(dup)
    grid_file = tmp_path / "grid.yaml"
    grid_file.write_text(yaml.safe_dump({k: v for k, v in tiny_sweep("g").items() if k in ("experiment", "base")}))
    with pytest.raises(SweepError, match=r"has no `search` block: a grid file is run with `harness run "):
        load_sweep(grid_file)
    with pytest.raises(SweepError, match=r"is a directory, not a sweep file"):
        load_sweep(tmp_path)


def test_kl_sweep_yaml_is_valid_with_two_reward_model_studies():
    from harness.paths import PROJECT_ROOT
    from harness.sweep.spec import study_names

    spec = load_sweep(PROJECT_ROOT / "ablations" / "fig4_kl_sweep.yaml")
    assert [p for _, p in study_names(spec)] == [{"reward_model.dataset.max_rows": 32},
                                                 {"reward_model.dataset.max_rows": 255}]
    assert list(spec.search) == ["algorithm.kl_coef"] and spec.baseline
    tiny = load_sweep(PROJECT_ROOT / "ablations" / "fig4_kl_sweep.yaml",
                      ["base.model=tiny-random-llama", "search.algorithm.kl_coef.choices=[0.1, 0.2]"])
    assert tiny.base["model"] == "tiny-random-llama" and tiny.search["algorithm.kl_coef"].choices == [0.1, 0.2]


def test_trials_are_cells_nested_under_the_study_and_rerun_resumes(tiny_model, shared_mlflow):
    spec = parse_sweep(tiny_sweep("sweep_nest", n_trials=2))
    first = run_sweep(spec, n_trials=1, echo=quiet)["sweep_nest"]
    assert [t["state"] for t in first["trials"]] == ["COMPLETE"]
    storage_url = f"sqlite:///{Path(os.environ['HARNESS_RESULTS_DIR']) / 'optuna' / 'studies.db'}"
    study = optuna.load_study(study_name="sweep_nest", storage=storage_url)
    parent = [r for r in runs_of("sweep_nest") if r.data.tags.get("harness.run_type") == "study"]
    assert len(parent) == 1 and parent[0].info.status == "RUNNING"  # 1 of 2 trials: not finished

    # Rerunning the same sweep continues the same study: trial 0 is not redone, trial 1 is added.
    lines: list[str] = []
    summary = run_sweep(spec, echo=lines.append)["sweep_nest"]
    assert "study sweep_nest: 1 trial(s) done, 1 to run" in lines[0]
    study = optuna.load_study(study_name="sweep_nest", storage=storage_url)
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.COMPLETE]
    assert trials[0].params != trials[1].params

    runs = runs_of("sweep_nest")
    parent = [r for r in runs if r.data.tags.get("harness.run_type") == "study"]
    assert len(parent) == 1 and parent[0].info.status == "FINISHED"
    parent_id = parent[0].info.run_id
    cells = [r for r in runs if r.data.tags.get("harness.run_type") == "cell"]
    assert len(cells) == 2
    for trial in trials:
        cell = next(r for r in cells if r.info.run_id == trial.user_attrs["mlflow_run_id"])
        assert cell.data.tags["mlflow.parentRunId"] == parent_id
        assert cell.data.tags["harness.trial_number"] == str(trial.number)
        assert float(cell.data.params["algorithm.beta"]) == pytest.approx(trial.params["algorithm.beta"])
        assert float(cell.data.tags["harness.kl_coefficient"]) == pytest.approx(trial.params["algorithm.beta"])
        assert cell.data.metrics["smoke_lowercase/clean_success_rate"] == trial.value
        stage_runs = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == cell.info.run_id]
        assert sorted(r.data.tags["harness.stage_kind"] for r in stage_runs) == ["evaluate", "prepare_data",
                                                                                  "reference_logps", "train_policy"]
    best = summary["best"]
    assert best["value"] == max(t.value for t in trials)
    tags = parent[0].data.tags
    assert tags["harness.best_trial"] == str(best["number"])
    assert float(tags["harness.best.algorithm.beta"]) == pytest.approx(best["params"]["algorithm.beta"])
    assert parent[0].data.metrics["best/smoke_lowercase/clean_success_rate"] == best["value"]
    artifacts = [a.path for a in tracking.client().list_artifacts(parent_id)]
    assert "study.json" in artifacts

    # A third run has nothing left to do and creates no run.
    n_runs = len(runs)
    run_sweep(spec, echo=quiet)
    assert len(runs_of("sweep_nest")) == n_runs
    assert len(optuna.load_study(study_name="sweep_nest", storage=storage_url).trials) == 2


def test_pruner_stops_the_training_it_prunes_and_skips_evaluation(tiny_model, shared_mlflow, isolated_results):
    # The study maximises, the pruned-on loss is minimised: the loss is reported negated (Optuna
    # compares intermediate values in the study's direction). ThresholdPruner(lower=0) then prunes
    # any positive DPO loss at the first reported step, while the stage trains (a budget of 400 steps).
    from harness import cache, resume

    budget = 400
    spec = parse_sweep(tiny_sweep("sweep_prune", n_trials=1, pruner={
        "name": "threshold", "metric": "train/loss", "direction": "minimize", "options": {"lower": 0.0}}))
    spec.base["algorithm"]["max_steps"] = budget
    summary = run_sweep(spec, echo=quiet)["sweep_prune"]
    (trial,) = summary["trials"]
    assert trial["state"] == "PRUNED"
    # Stopped, not published: its partial work stays in its working folder as a resume checkpoint.
    assert not (isolated_results / "stages" / "train_policy").exists(), "a pruned stage is never published"
    (left,) = [s for s in cache.running_work() if s.kind == "train_policy"]
    assert not left.running and "pruned by study sweep_prune trial 0 at step 1" in left.failure["error"]
    work = cache.work_dir("train_policy", left.key)
    history = [json.loads(line) for line in (work / "history.jsonl").read_text().splitlines()]
    trained = max(int(row["step"]) for row in history)
    checkpoint_step, _ = resume.latest(work)
    assert checkpoint_step == trained < budget / 4, (trained, budget)
    print(f"\npruned trial trained {trained} of its {budget} steps")
    # Reported values are the train stage's history: step 1's loss (pruned right there).
    assert trial["intermediate_values"] == {history[0]["step"]: -history[0]["train/loss"]}
    assert not (isolated_results / "stages" / "evaluate").exists(), "a pruned trial is not evaluated"
    runs = runs_of("sweep_prune")
    pruned = [r for r in runs if r.data.tags.get("harness.run_type") == "trial"]
    parent = next(r for r in runs if r.data.tags.get("harness.run_type") == "study")
    assert len(pruned) == 1 and pruned[0].info.status == "KILLED"
    assert pruned[0].data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert pruned[0].data.tags["harness.trial_state"] == "PRUNED"
    assert "algorithm.beta" in pruned[0].data.params
    assert pruned[0].data.metrics["pruner/train/loss"] == pytest.approx(history[0]["train/loss"])
    assert parent.info.status == "FINISHED" and parent.data.metrics["study/n_pruned"] == 1.0
    # The stopped training's live curve stays in MLflow (its run ended as unfinished: FAILED).
    (train_run,) = [r for r in runs if r.data.tags.get("harness.stage_kind") == "train_policy"]
    assert train_run.info.status == "FAILED"
    assert sorted(m.step for m in tracking.client().get_metric_history(train_run.info.run_id, "train/loss")) \
        == list(range(1, trained + 1))


def _write(tmp_path: Path, spec: dict) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_two_workers_in_parallel_on_one_journal_study(tiny_model, shared_mlflow, tmp_path):
    """Two worker processes share a JournalStorage study (created once, before they start): 4 trials,
    2 per worker, no trial or cell run duplicated; two objectives give a Pareto front."""
    raw = tiny_sweep("sweep_parallel", n_trials=4)
    raw.pop("objective")
    raw["base"]["eval"]["tasks"] = ["smoke_lowercase", "policy_kl"]
    raw["objectives"] = [{"metric": "smoke_lowercase/constraint_rate", "direction": "maximize"},
                         {"metric": "policy_kl/kl_mean", "direction": "minimize"}]
    path = _write(tmp_path, raw)
    storage_url = f"journal:{tmp_path / 'study.journal'}"
    spec = load_sweep(path)
    lines: list[str] = []
    summary = run_sweep(spec, storage_url=storage_url, workers=2, worker_argv=[str(path)], source=path,
                        echo=lines.append)["sweep_parallel"]
    assert sum(line.startswith("worker ") for line in lines) == 2

    study = optuna.load_study(study_name="sweep_parallel", storage=open_storage(storage_url))
    trials = study.get_trials()
    assert len(trials) == 4 and all(t.state == TrialState.COMPLETE for t in trials)
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]
    assert len({t.params["algorithm.beta"] for t in trials}) == 4, "a parameter set was tried twice"
    assert sorted(t.user_attrs["worker"] for t in trials) == [0, 0, 1, 1]

    runs = runs_of("sweep_parallel")
    parents = [r for r in runs if r.data.tags.get("harness.run_type") == "study"]
    cells = [r for r in runs if r.data.tags.get("harness.run_type") == "cell"]
    assert len(parents) == 1, "the study's parent run was created twice"
    assert len(cells) == 4 and len({r.data.tags["harness.cell"] for r in cells}) == 4
    assert all(r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for r in cells)
    assert {r.info.run_id for r in cells} == {t.user_attrs["mlflow_run_id"] for t in trials}

    # Pareto front: exactly the non-dominated trials, flagged on their cell runs.
    def dominates(a, b) -> bool:
        better_or_equal = a.values[0] >= b.values[0] and a.values[1] <= b.values[1]
        return better_or_equal and (a.values[0] > b.values[0] or a.values[1] < b.values[1])

    expected = {t.number for t in trials if not any(dominates(o, t) for o in trials)}
    assert {t["number"] for t in summary["pareto_front"]} == expected
    flags = {r.data.tags["harness.trial_number"]: r.data.tags.get("harness.pareto_front") for r in runs_of(
        "sweep_parallel") if r.data.tags.get("harness.run_type") == "cell"}
    assert {int(n) for n, flag in flags.items() if flag == "true"} == expected


def _training_started(results: Path) -> bool:
    for folder in (results / "stages" / ".work").glob("train_policy/*/"):
        history = folder / "history.jsonl"
        if history.exists() and history.read_text().strip():
            return True
    return False


@pytest.mark.slow
def test_sweep_killed_mid_trial_resumes_with_the_same_parameters(tiny_model, shared_mlflow, tmp_path,
                                                                  isolated_results):
    raw = tiny_sweep("sweep_killed", n_trials=2)
    raw["base"]["algorithm"]["max_steps"] = 60
    path = _write(tmp_path, raw)
    storage_url = f"journal:{tmp_path / 'study.journal'}"
    proc = subprocess.Popen([sys.executable, "-m", "harness.sweep", str(path), "--storage", storage_url],
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 900
    while not _training_started(isolated_results):
        assert proc.poll() is None, "the sweep ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    storage = open_storage(storage_url)
    (stale,) = optuna.load_study(study_name="sweep_killed", storage=storage).get_trials()
    assert stale.state == TrialState.RUNNING

    lines: list[str] = []
    run_sweep(load_sweep(path), storage_url=storage_url, echo=lines.append)
    assert any("trial 0 was left running by a stopped sweep: re-queued" in line for line in lines)
    trials = optuna.load_study(study_name="sweep_killed", storage=storage).get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    assert trials[1].params == stale.params  # the interrupted cell is finished, not abandoned
    cells = [r for r in runs_of("sweep_killed") if r.data.tags.get("harness.run_type") == "cell"]
    assert len(cells) == 2 and all(r.info.status == "FINISHED" for r in cells)


@pytest.mark.slow
def test_kl_sweep_yaml_at_tiny_scale_gives_fig4_per_reward_model(tiny_model, shared_mlflow, tmp_path):
    """ablations/fig4_kl_sweep.yaml with the tiny model and two βs per RM study: every trial run carries what
    Fig. 4 needs (the RM axis, β, the suite metric, KL, RM reward), and `harness report` draws Fig. 4
    from MLflow alone: one line per RM, one point per β, each equal to that trial's logged metric."""
    from harness.paths import PROJECT_ROOT
    from reports.build import build_report

    betas = [0.05, 0.2]
    spec = load_sweep(PROJECT_ROOT / "ablations" / "fig4_kl_sweep.yaml", [
        "base.model=tiny-random-llama", "base.reward_model.base=tiny-random-llama",
        "base.algorithm.max_steps=1", "base.reward_model.train.max_steps=2", "base.eval.limit=2",
        f"search.algorithm.kl_coef.choices={betas}"])
    summaries = run_sweep(spec, n_trials=2, echo=quiet)
    assert len(summaries) == 2
    runs = runs_of("kl_sweep")
    trials = [r for r in runs if r.data.tags.get("harness.run_type") == "cell" and "harness.study" in r.data.tags]
    table = sorted((int(r.data.params["reward_model.dataset.max_rows"]), float(r.data.params["algorithm.kl_coef"]),
                    r.data.metrics["smoke_lowercase/clean_success_rate"], r.data.metrics["policy_kl/kl_mean"],
                    r.data.metrics["rm_reward/mean"]) for r in trials)
    assert [row[:2] for row in table] == [(32, 0.05), (32, 0.2), (255, 0.05), (255, 0.2)]
    assert all(float(r.data.tags["harness.kl_coefficient"]) == float(r.data.params["algorithm.kl_coef"])
               for r in trials)
    assert any(r.data.tags.get("harness.cell") == "sft" for r in runs), "baseline: true logs the SFT cell"

    result = build_report("kl_sweep", tmp_path / "report", tables=[], figures=["fig4"], n_boot=50)
    assert "fig4" not in result.skipped, result.skipped
    (png,) = [p for p in result.written["fig4"] if p.suffix == ".png"]
    assert png.stat().st_size > 10_000
    points = result.figures["fig4"].data
    by_id = {r.info.run_id: r for r in trials}
    for metric in ("smoke_lowercase/score", "rm_reward/mean", "policy_kl/kl_mean"):
        rows = [p for p in points if p["metric"] == metric]
        series = sorted({p["series"] for p in rows})
        assert len(series) == 2 and "32 pairs" in series[0] + series[1] and "255 pairs" in series[0] + series[1]
        for row in rows:
            (run_id,) = row["mlflow_run_ids"].split(";")
            run = by_id[run_id]
            assert float(run.data.params["algorithm.kl_coef"]) == row["x"]
            assert f"{run.data.params['reward_model.dataset.max_rows']} pairs" in row["series"]
            assert row["value"] == pytest.approx(run.data.metrics[metric])
        assert sorted((p["series"], p["x"]) for p in rows) == sorted((s, b) for s in series for b in betas)
