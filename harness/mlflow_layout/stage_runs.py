"""Stage runs: opened when a stage starts, its steps logged live, finished with its results (metrics,
data inputs, logged model, artifacts), nested under each cell run that uses the stage."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import tracking
from harness.mlflow_layout.names import (
    MAX_MODEL_ARTIFACT_BYTES,
    RUN_TYPE_STAGE,
    TAG_ADAPTER_PATH,
    TAG_DATA_FINGERPRINT,
    TAG_DEVICE,
    TAG_MODEL_PATH,
    TAG_PARENT,
    TAG_RUN_TYPE,
    TAG_STAGE_ATTEMPT,
    TAG_STAGE_DIR,
    TAG_STAGE_ERROR,
    TAG_STAGE_HASH,
    TAG_STAGE_KIND,
    TAG_STAGE_SECONDS,
    _clip,
    latest_finished,
)


@dataclass
class DataInput:
    """A dataset a run read, as an MLflow run input (the UI's Dataset column)."""

    name: str
    digest: str  # content fingerprint
    source: str  # where it is (a local path or a hub id)
    context: str  # "training" or "evaluation"
    rows: int | None = None


@dataclass
class StageRunInfo:
    """What a stage run says about itself before the stage has produced anything."""

    kind: str
    key: str
    config: dict[str, Any]
    stage_dir: str = ""  # where its outputs are (to be) published
    attempt: str | None = None  # the working-folder claim a live run follows
    inputs: list[DataInput] = field(default_factory=list)


@dataclass
class StageResult:
    """A finished stage's outputs, as logged on its run."""

    metrics: dict[str, float]
    seconds: float = 0.0
    step_history: list[dict[str, Any]] = field(default_factory=list)  # rows {"step": n, key: value}
    # Evaluations of intermediate checkpoints (rows as above); their keys are logged as histories only,
    # never again at step 0.
    checkpoint_history: list[dict[str, Any]] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)  # what the stage itself has to say
    fingerprint: str | None = None  # of the data a prepare_data stage read
    files: list[Path] = field(default_factory=list)  # logged at the artifact root (the stage's config.json)
    artifacts_dir: Path | None = None  # logged as-is at the artifact root
    model_dir: Path | None = None
    adapter_dir: Path | None = None  # LoRA: the adapter alone (small), always logged under `adapter/`
    model_type: str | None = None  # "policy" / "reward_model": the model is an MLflow logged model
    device: str | None = None  # where it ran ("cpu" or the GPU's name)

    @property
    def checkpoint_keys(self) -> set[str]:
        return {k for row in self.checkpoint_history for k in row if k != "step"}


def open_stage_run(experiment_id: str, parent_id: str, info: StageRunInfo,
                   start_time_ms: int | None = None) -> str | None:
    """The stage's run under `parent_id`, created (params and inputs logged) or None when a FINISHED one is
    already there. An unfinished one (left by a crash, or a live run of an earlier attempt) is deleted:
    the stage store, or the working folder of the attempt now running, holds everything it had, and its
    curve is logged again from there, so it has no step twice and none missing."""
    client = tracking.client()
    existing = tracking.find_runs(experiment_id, {TAG_RUN_TYPE: RUN_TYPE_STAGE, TAG_STAGE_HASH: info.key},
                                  parent_run_id=parent_id)
    if latest_finished(existing) is not None:
        return None
    for run in existing:
        client.delete_run(run.info.run_id)
    tags = {TAG_PARENT: parent_id, TAG_RUN_TYPE: RUN_TYPE_STAGE, TAG_STAGE_KIND: info.kind, TAG_STAGE_HASH: info.key}
    if info.stage_dir:
        tags[TAG_STAGE_DIR] = info.stage_dir
    if info.attempt:
        tags[TAG_STAGE_ATTEMPT] = info.attempt
    run = client.create_run(experiment_id, start_time=start_time_ms, run_name=info.kind, tags=tags)
    tracking.log_params(run.info.run_id, tracking.flatten(info.config))
    log_data_inputs(run.info.run_id, info.inputs)
    return run.info.run_id


def log_data_inputs(run_id: str, inputs: Iterable[DataInput]) -> None:
    """The datasets a run read, as MLflow run inputs (name, digest, source, context, row count)."""
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    batch = [DatasetInput(Dataset(name=d.name, digest=d.digest[:36], source_type="local",
                                  source=json.dumps({"uri": d.source}),
                                  profile=json.dumps({"num_rows": d.rows}) if d.rows is not None else None),
                          tags=[InputTag(MLFLOW_DATASET_CONTEXT, d.context)]) for d in inputs]
    if batch:
        tracking.client().log_inputs(run_id, datasets=batch)


def stage_attempt(run_id: str) -> str | None:
    """The working-folder attempt a live stage run follows (None for a run logged from the store)."""
    return tracking.client().get_run(run_id).data.tags.get(TAG_STAGE_ATTEMPT)


def fail_stage_run(run_id: str, error: str, end_time_ms: int | None = None) -> None:
    """A live stage run whose stage failed: FAILED, with the error (`harness.stage_error`)."""
    tracking.set_tags(run_id, {TAG_STAGE_ERROR: _clip(error)})
    tracking.client().set_terminated(run_id, "FAILED", end_time=end_time_ms)


def end_unfinished_run(run_id: str, status: str = "FAILED", end_time_ms: int | None = None) -> None:
    """A run the process stops before its work finished (a failed stage, Ctrl-C: `KILLED`); a rerun resumes
    a cell run (`open_cell_run`) and replaces a stage run (`open_stage_run`)."""
    tracking.client().set_terminated(run_id, status, end_time=end_time_ms)


def log_steps(run_id: str, rows: Iterable[dict[str, Any]]) -> set[str]:
    """Append step metrics (rows {"step": n, key: value, ...}) to a run; returns their keys."""
    return tracking.log_metric_rows(run_id, rows)


def _dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def finish_stage_run(run_id: str, result: StageResult, end_time_ms: int | None = None) -> str | None:
    """The stage's results on its run, then FINISHED; returns the id of its logged model, if it has one."""
    client = tracking.client()
    tags = {**{k: _clip(v) for k, v in result.tags.items()}, TAG_STAGE_SECONDS: f"{result.seconds:.1f}"}
    if result.fingerprint:
        tags[TAG_DATA_FINGERPRINT] = result.fingerprint
    if result.model_dir is not None and result.model_dir.exists():
        tags[TAG_MODEL_PATH] = str(result.model_dir)
    if result.adapter_dir is not None and result.adapter_dir.exists():
        tags[TAG_ADAPTER_PATH] = str(result.adapter_dir)
    if result.device:
        tags[TAG_DEVICE] = result.device
    tracking.set_tags(run_id, tags)
    log_steps(run_id, result.step_history)
    over_steps = log_steps(run_id, result.checkpoint_history)
    final = {k: v for k, v in result.metrics.items() if k not in over_steps}
    tracking.log_metrics(run_id, {**final, "stage/seconds": float(result.seconds)})
    for path in result.files:
        client.log_artifact(run_id, str(path))
    if result.artifacts_dir is not None and result.artifacts_dir.exists() and any(result.artifacts_dir.iterdir()):
        client.log_artifacts(run_id, str(result.artifacts_dir))
    if result.adapter_dir is not None and result.adapter_dir.exists():
        client.log_artifacts(run_id, str(result.adapter_dir), artifact_path="adapter")
    model_id = None
    if result.model_dir is not None and result.model_dir.exists():
        if _dir_size(result.model_dir) <= MAX_MODEL_ARTIFACT_BYTES:
            client.log_artifacts(run_id, str(result.model_dir), artifact_path="model")
        if result.model_type:
            model_id = _logged_model(run_id, result)
    client.set_terminated(run_id, "FINISHED", end_time=end_time_ms)
    return model_id


def _logged_model(run_id: str, result: StageResult) -> str:
    """The stage's model as an MLflow logged model (one per stage key in the experiment, shared by the
    runs that log the stage), listed as this run's output. It points at the stage folder: no weights
    are copied."""
    client = tracking.client()
    run = client.get_run(run_id)
    experiment_id, key = run.info.experiment_id, run.data.tags.get(TAG_STAGE_HASH, "")
    found = client.search_logged_models([experiment_id], filter_string=f"tags.`{TAG_STAGE_HASH}` = '{key}'",
                                        max_results=1)
    if found:
        model_id = found[0].model_id
    else:
        kind = run.data.tags.get(TAG_STAGE_KIND, "")
        name = f"{result.model_type.replace('_', '-')}-{key[:8]}"  # type: ignore[union-attr]
        model = client.create_logged_model(
            experiment_id, name=name, source_run_id=run_id, model_type=result.model_type,
            tags={TAG_STAGE_HASH: key, TAG_STAGE_KIND: kind, TAG_MODEL_PATH: str(result.model_dir)})
        client.finalize_logged_model(model.model_id, "READY")
        model_id = model.model_id
    link_models(run_id, [model_id])
    return model_id


def link_models(run_id: str, model_ids: Iterable[str]) -> None:
    """List logged models as a run's outputs (a cell run shows its trained policy this way); a model
    already listed is not listed twice (a resumed run)."""
    from mlflow.entities import LoggedModelOutput

    client = tracking.client()
    outputs = client.get_run(run_id).outputs
    listed = {o.model_id for o in (outputs.model_outputs if outputs else [])}
    new = [LoggedModelOutput(model_id, step=0) for model_id in dict.fromkeys(model_ids) if model_id not in listed]
    if new:
        client.log_outputs(run_id, new)


def log_stage_run(experiment_id: str, parent_id: str, info: StageRunInfo, result: StageResult,
                  start_time_ms: int | None = None, end_time_ms: int | None = None) -> str | None:
    """A finished stage logged whole under its cell run (None: it was already)."""
    run_id = open_stage_run(experiment_id, parent_id, info, start_time_ms)
    if run_id is not None:
        finish_stage_run(run_id, result, end_time_ms)
    return run_id


def stage_run_under(experiment_id: str, parent_id: str, key: str) -> Any | None:
    """The FINISHED run of stage `key` under a cell run, if there is one."""
    return latest_finished(tracking.find_runs(experiment_id, {TAG_RUN_TYPE: RUN_TYPE_STAGE, TAG_STAGE_HASH: key},
                                              parent_run_id=parent_id))


def logged_model_of(experiment_id: str, key: str) -> str | None:
    """The logged model of stage `key` in the experiment, if one was logged."""
    found = tracking.client().search_logged_models([experiment_id],
                                                   filter_string=f"tags.`{TAG_STAGE_HASH}` = '{key}'", max_results=1)
    return found[0].model_id if found else None
