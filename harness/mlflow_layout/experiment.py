"""The rest of an experiment: judge verdicts appended to cell runs and the judge's run, `harness eval`
runs, report runs, the experiment's description and tags, the model a run carries."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import tracking
from harness.mlflow_layout.names import (
    RUN_TYPE_EVAL,
    RUN_TYPE_JUDGE,
    RUN_TYPE_REPORT,
    TAG_DEVICE_PROFILE,
    TAG_GIT_SHA,
    TAG_GRID_FILE,
    TAG_JUDGE_REFERENCE,
    TAG_MODEL_PATH,
    TAG_NOTE,
    TAG_POLICY_PATH,
    TAG_PROFILE,
    TAG_REPORT_ITEMS,
    TAG_REPORT_SKIPPED_PREFIX,
    TAG_RUN_TYPE,
    _clip,
    _now_ms,
)


def append_metrics(run_id: str, metrics: dict[str, float]) -> None:
    """Log each metric at the next free step of its key: nothing already logged is replaced (the
    judge adds its verdicts to finished cell runs this way, run after run)."""
    from mlflow.entities import Metric

    client = tracking.client()
    now = _now_ms()
    batch = [Metric(k, float(v), now, len(client.get_metric_history(run_id, k))) for k, v in metrics.items()
             if v is not None and not (isinstance(v, float) and math.isnan(v))]
    for start in range(0, len(batch), 900):
        client.log_batch(run_id, metrics=batch[start : start + 900], synchronous=True)


def log_judge_run(experiment_id: str, reference: str, note: str, params: dict[str, str],
                  metrics: dict[str, float], artifacts_dir: Path) -> str:
    """The judge's summary run: its settings, per-cell win rates and ranking, files under `judge/`."""
    client = tracking.client()
    run_id = client.create_run(experiment_id, run_name="judge", tags={
        TAG_RUN_TYPE: RUN_TYPE_JUDGE, TAG_JUDGE_REFERENCE: reference, TAG_NOTE: note}).info.run_id
    tracking.log_params(run_id, params)
    append_metrics(run_id, metrics)
    client.log_artifacts(run_id, str(artifacts_dir), artifact_path="judge")
    client.set_terminated(run_id, "FINISHED")
    return run_id


def log_eval_run(experiment_id: str, run_name: str, model_path: str, params: dict[str, str],
                 metrics: dict[str, float], artifacts_dir: Path) -> str:
    """One `harness eval` invocation: the evaluated model, settings, metrics, outputs under `eval/`."""
    client = tracking.client()
    run_id = client.create_run(experiment_id, run_name=run_name, tags={
        TAG_RUN_TYPE: RUN_TYPE_EVAL, TAG_MODEL_PATH: model_path, TAG_GIT_SHA: tracking.git_sha()}).info.run_id
    tracking.log_params(run_id, params)
    tracking.log_metrics(run_id, metrics)
    client.log_artifacts(run_id, str(artifacts_dir), artifact_path="eval")
    client.set_terminated(run_id, "FINISHED")
    return run_id


@dataclass
class ExperimentInfo:
    """What made an experiment: the grid file, its profile, the grid's description, the default device."""

    grid_file: str | None
    profile: str | None
    description: str = ""
    device_profile: str | None = None
    command: str = "harness run"  # or "harness sweep"


def describe_experiment(experiment_id: str, info: ExperimentInfo) -> None:
    """The experiment's description (the MLflow UI shows it) and tags: which grid file and profile made it."""
    command = f"{info.command} {info.grid_file or '<grid>'}" + (f" --profile {info.profile}" if info.profile else "")
    text = f"Made by `{command}`" + (f": {info.description}" if info.description else ".")
    tags = {TAG_NOTE: _clip(text), TAG_PROFILE: info.profile or "", TAG_GRID_FILE: info.grid_file or ""}
    if info.device_profile:
        tags[TAG_DEVICE_PROFILE] = info.device_profile
    client = tracking.client()
    for key, value in tags.items():
        client.set_experiment_tag(experiment_id, key, value)


def experiment_tags(experiment_id: str) -> dict[str, str]:
    return dict(tracking.client().get_experiment(experiment_id).tags)


def log_report_run(experiment_id: str, report_dir: Path, built: dict[str, list[str]], skipped: dict[str, str],
                   index_text: str, params: dict[str, str]) -> str:
    """One `harness report`: every file it wrote under `report/`, the items built (tag and params) and the
    skipped ones with why, the index as the run's description. A new run each time: earlier reports stay."""
    client = tracking.client()
    tags = {TAG_RUN_TYPE: RUN_TYPE_REPORT, TAG_GIT_SHA: tracking.git_sha(), TAG_NOTE: _clip(index_text),
            TAG_REPORT_ITEMS: _clip(",".join(built))}
    tags.update({f"{TAG_REPORT_SKIPPED_PREFIX}{name}": _clip(why) for name, why in skipped.items()})
    run_id = client.create_run(experiment_id, run_name="report", tags=tags).info.run_id
    tracking.log_params(run_id, {**params, **{f"report.files.{name}": ",".join(files) for name, files in built.items()}})
    client.log_artifacts(run_id, str(report_dir), artifact_path="report")
    client.set_terminated(run_id, "FINISHED")
    return run_id


def report_runs(experiment_id: str) -> list[Any]:
    """The experiment's report runs, oldest first."""
    return tracking.find_runs(experiment_id, {TAG_RUN_TYPE: RUN_TYPE_REPORT})


def model_path_of_run(run_id: str) -> str:
    """The model folder a run carries: a stage run's or eval run's model, else a cell's policy."""
    tags = tracking.client().get_run(run_id).data.tags
    for tag in (TAG_MODEL_PATH, TAG_POLICY_PATH):
        if tags.get(tag):
            return tags[tag]
    raise ValueError(f"MLflow run {run_id} has no {TAG_MODEL_PATH} / {TAG_POLICY_PATH} tag")
