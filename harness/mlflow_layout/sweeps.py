"""Sweep runs: the study's parent run, trials nested under it, pruned trials as KILLED runs, the study's
summary (best trial or Pareto front)."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import tracking
from harness.mlflow_layout.names import (
    _MAX_TAG_LEN,
    RUN_TYPE_STUDY,
    RUN_TYPE_TRIAL,
    TAG_BEST_CELL,
    TAG_BEST_PARAM_PREFIX,
    TAG_BEST_TRIAL,
    TAG_CELL,
    TAG_CELL_KEY,
    TAG_GIT_SHA,
    TAG_GRID,
    TAG_KL_COEFFICIENT,
    TAG_OPTUNA_STORAGE,
    TAG_PARENT,
    TAG_PARETO_FRONT,
    TAG_PARETO_FRONT_TRIALS,
    TAG_RUN_NAME,
    TAG_RUN_TYPE,
    TAG_STUDY,
    TAG_SWEEP_FILE,
    TAG_TRIAL_NUMBER,
    TAG_TRIAL_STATE,
    stage_key_tag,
)
from harness.mlflow_layout.stage_runs import log_steps


def study_runs(experiment_id: str, study: str) -> list[Any]:
    return tracking.find_runs(experiment_id, {TAG_RUN_TYPE: RUN_TYPE_STUDY, TAG_STUDY: study})


def open_study_run(experiment_id: str, study: str, grid: str, storage: str, params: dict[str, str],
                   sweep_file: str | None = None) -> str:
    """The study's parent run: created on first use, set RUNNING again when the study is resumed or
    extended. `storage` must already be redacted (no password)."""
    client = tracking.client()
    existing = study_runs(experiment_id, study)
    if existing:
        run_id = existing[0].info.run_id
        if existing[0].info.status != "RUNNING":
            client.update_run(run_id, status="RUNNING")
        return run_id
    tags = {TAG_RUN_TYPE: RUN_TYPE_STUDY, TAG_STUDY: study, TAG_GRID: grid, TAG_OPTUNA_STORAGE: storage,
            TAG_GIT_SHA: tracking.git_sha(), TAG_RUN_NAME: study}
    if sweep_file is not None:
        tags[TAG_SWEEP_FILE] = sweep_file
    run_id = client.create_run(experiment_id, run_name=study, tags=tags).info.run_id
    tracking.log_params(run_id, {k: v[:_MAX_TAG_LEN] for k, v in params.items()})
    return run_id


def study_run_id(experiment_id: str, study: str) -> str | None:
    runs = study_runs(experiment_id, study)
    return runs[0].info.run_id if runs else None


def nest_trial(run_id: str, study_run: str, study: str, trial_number: int, state: str,
               kl_coefficient: Any = None) -> None:
    """Put a run (a trial's cell run, or a pruned trial's run) under its study's run."""
    tags = {TAG_PARENT: study_run, TAG_STUDY: study, TAG_TRIAL_NUMBER: str(trial_number), TAG_TRIAL_STATE: state}
    if kl_coefficient is not None:
        tags[TAG_KL_COEFFICIENT] = str(kl_coefficient)
    tracking.set_tags(run_id, tags)


def log_pruned_trial(experiment_id: str, study_run: str, study: str, trial_number: int, cell: str,
                     cell_key: str, train_policy_key: str, params: dict[str, str], metric: str,
                     reported: list[tuple[int, float]], kl_coefficient: Any = None) -> None:
    """A KILLED run under the study: the pruned trial's params and the values it reported."""
    client = tracking.client()
    found = tracking.find_runs(experiment_id, {TAG_RUN_TYPE: RUN_TYPE_TRIAL, TAG_STUDY: study,
                                               TAG_TRIAL_NUMBER: str(trial_number)})
    if any(r.info.status == "KILLED" for r in found):
        return
    for run in found:  # half-written by a crash: replace
        client.delete_run(run.info.run_id)
    run_id = client.create_run(experiment_id, run_name=f"{cell} (pruned)", tags={
        TAG_RUN_TYPE: RUN_TYPE_TRIAL, TAG_CELL: cell, TAG_CELL_KEY: cell_key,
        stage_key_tag("train_policy"): train_policy_key,
    }).info.run_id
    nest_trial(run_id, study_run, study, trial_number, "PRUNED", kl_coefficient)
    tracking.log_params(run_id, params)
    log_steps(run_id, [{"step": step, metric: value} for step, value in reported])
    client.set_terminated(run_id, "KILLED")


@dataclass
class StudySummary:
    metrics: dict[str, float]
    document: dict[str, Any]  # logged as `study.json`
    best_trial: int | None = None
    best_cell: str | None = None
    best_params: dict[str, Any] = field(default_factory=dict)
    pareto_front_trials: list[int] | None = None
    front_flags: dict[str, bool] = field(default_factory=dict)  # trial cell run id -> on the front
    finished: bool = False


def log_study_summary(run_id: str, summary: StudySummary) -> None:
    client = tracking.client()
    tags: dict[str, str] = {}
    if summary.best_trial is not None:
        tags[TAG_BEST_TRIAL] = str(summary.best_trial)
        tags[TAG_BEST_CELL] = str(summary.best_cell)
        tags.update({f"{TAG_BEST_PARAM_PREFIX}{k}": str(v) for k, v in summary.best_params.items()})
    if summary.pareto_front_trials is not None:
        tags[TAG_PARETO_FRONT_TRIALS] = ",".join(str(n) for n in sorted(summary.pareto_front_trials))
    tracking.set_tags(run_id, tags)
    for cell_run, on_front in summary.front_flags.items():
        client.set_tag(cell_run, TAG_PARETO_FRONT, str(on_front).lower())
    tracking.log_metrics(run_id, summary.metrics)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "study.json"
        path.write_text(json.dumps(summary.document, indent=2, default=str))
        client.log_artifact(run_id, str(path))
    if summary.finished:
        client.set_terminated(run_id, "FINISHED")
