"""The MLflow layout: what the harness writes to MLflow and how it reads it back. This module is the
only one that names a `harness.*` tag or a run type; `harness.tracking` below it is the plain plumbing
(store, client, batching).

Layout, per MLflow experiment (one per grid):
- cell run (`harness.run_type=cell`), one per grid cell. Tags: `harness.cell` (name),
  `harness.cell_key` (content key of its final stage), `harness.grid`, `harness.grid_file`,
  `harness.is_baseline`, `harness.git_sha`, `harness.overrides` (the cell's grid overrides, JSON),
  `harness.policy_path`, `harness.reward_model_path` (a JSON list for an RM ensemble),
  `harness.stage.<kind>[.<dataset>]` (stage keys; `train_reward_model.<i>` per ensemble member),
  `harness.data_fingerprint.<dataset>`, the evaluation's `harness.eval.*` tags (below) and the
  over-optimisation monitor's verdicts `harness.monitor.*` (harness/monitor.py). Params: the flattened
  resolved config. Artifact `resolved_config.json`. Metrics: every non-data stage's metrics; checkpoint
  evaluations as histories; `cost/*` summed over its stages (a stage shared by cells counts in each).
  Inputs and outputs: its stages' datasets and its trained policy's logged model. It starts with its
  first stage (created when that stage starts, or at logging time from the stage records when all were
  cached) and ends with its last stage's end.
- stage run (`harness.run_type=stage`), nested (`mlflow.parentRunId`) under each cell run that uses the
  stage. Tags: `harness.stage_kind`, `harness.stage_hash`, `harness.stage_dir`, `harness.stage_attempt`
  (the working-folder claim whose curve a live run shows), `harness.stage_seconds`, `harness.device`,
  `harness.data_fingerprint`, `harness.model_path`, `harness.adapter_path` (LoRA), `harness.stage_error`
  (a FAILED run's error), plus the stage's own tags (e.g. `harness.rewardbench`; the evaluate stage's
  `harness.eval.missing` (comma list: tasks not run because an input was missing),
  `harness.eval.skipped.<task>` (why a task has no score), `harness.eval.reused` (comma list: tasks taken
  from the task store instead of rerun), and the same three under `harness.eval.bon.` for best-of-N;
  `harness.monitor.*`). Params: the stage config. Metrics: final values, step histories (training curves,
  logged live while the stage runs), checkpoint evaluations over steps, its cost (`cost/wall_seconds`,
  `cost/tokens_trained`, `cost/tokens_generated`, `cost/gpu_hours` on GPU). Inputs: its training data
  (context `training`), evaluation data (`evaluation`) or raw source (`source`) as MLflow datasets with
  their digests. Outputs: a trained policy or reward model as an MLflow logged model (one per stage key
  and experiment; it points at the stage folder, `harness.model_path`, weights are not copied).
  Artifacts: `config.json`, the stage's `artifacts/` folder (e.g. `samples/<task>.samples.jsonl`,
  `rm_scores.jsonl`), `model/` when small, `adapter/` (LoRA). Start and end times are the stage's own
  work's.
- study run (`harness.run_type=study`) per Optuna study; a trial's cell run is re-parented under it
  and tagged `harness.study`, `harness.trial_number`, `harness.trial_state`, `harness.kl_coefficient`;
  a pruned trial is its own KILLED run (`harness.run_type=trial`).
- judge: `judge/*` metrics appended (next free step) on cell runs, one `harness.run_type=judge` run.
- `harness eval`: one `harness.run_type=eval` run per invocation.
- report run (`harness.run_type=report`), one per `harness report`: the index, tables and figures it built
  as artifacts (`report/`), the built and skipped items as params and tags, the index as its description.
- the experiment itself: its description (`mlflow.note.content`) says which grid file and profile made it;
  tags `harness.grid_file`, `harness.profile`, `harness.device_profile` (the device the report's compute
  columns are estimated on by default), written by `describe_experiment` whenever a grid runs.

Reading: "the latest FINISHED run wins" (`latest_finished`) is the one rule by which a cell's run is
chosen, for the runner's resume and skip, the sweep, the judge and the reports alike.

Lifecycle (so that a run can be created when its work starts and finished when it ends): `open_*`
creates or resumes a run and writes what is known up front (identity tags, params), `log_steps`
appends step metrics, `finish_*` writes the results and terminates it; `start_time_ms`/`end_time_ms`
set the run's times to the work's. Every writer is idempotent: rerun after a crash at any point, it
converges to the state an uninterrupted run leaves.

Fault injection (tests only): with `HARNESS_KILL_AT=<point>` the process SIGKILLs itself at that
point, so a test can stop a real run exactly there. Points: `cell_run_created` (right after a cell
run is created, before its params, tags and artifacts are written), `history_step:<n>` (right after a
training stage wrote step n's row to its history.jsonl: `harness.algorithms.base.History`).
"""

from __future__ import annotations

import json
import math
import os
import signal
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import tracking

# -- names ------------------------------------------------------------------------------------------

RUN_TYPE_CELL = "cell"
RUN_TYPE_STAGE = "stage"
RUN_TYPE_STUDY = "study"
RUN_TYPE_TRIAL = "trial"
RUN_TYPE_JUDGE = "judge"
RUN_TYPE_EVAL = "eval"
RUN_TYPE_REPORT = "report"

TAG_PARENT = "mlflow.parentRunId"  # MLflow's own nesting tag
TAG_RUN_NAME = "mlflow.runName"
TAG_NOTE = "mlflow.note.content"
TAG_RUN_TYPE = "harness.run_type"
TAG_GIT_SHA = "harness.git_sha"
# cell runs
TAG_CELL = "harness.cell"
TAG_CELL_KEY = "harness.cell_key"
TAG_GRID = "harness.grid"
TAG_GRID_FILE = "harness.grid_file"
TAG_IS_BASELINE = "harness.is_baseline"
TAG_OVERRIDES = "harness.overrides"
TAG_POLICY_PATH = "harness.policy_path"
TAG_REWARD_MODEL_PATH = "harness.reward_model_path"
TAG_STAGE_KEY_PREFIX = "harness.stage."  # + <kind>[.<dataset>] = stage key
TAG_DATA_FINGERPRINT = "harness.data_fingerprint"  # on a stage run; + .<dataset> on a cell run
# stage runs
TAG_STAGE_KIND = "harness.stage_kind"
TAG_STAGE_HASH = "harness.stage_hash"
TAG_STAGE_DIR = "harness.stage_dir"
TAG_STAGE_SECONDS = "harness.stage_seconds"
TAG_STAGE_ATTEMPT = "harness.stage_attempt"
TAG_STAGE_ERROR = "harness.stage_error"
TAG_DEVICE = "harness.device"
TAG_MODEL_PATH = "harness.model_path"
TAG_ADAPTER_PATH = "harness.adapter_path"  # a LoRA run's adapter folder (harness.lora)
# the over-optimisation monitor's verdicts (harness.monitor), on the evaluate stage run and its cell run
TAG_MONITOR_PREFIX = "harness.monitor."
TAG_REWARDBENCH = "harness.rewardbench"  # written by the reward-model stage: scored, or skipped and why
# written by the evaluate stage (`evaluation_tags`), copied onto the cell run
TAG_EVAL_PREFIX = "harness.eval."
TAG_EVAL_BON_PREFIX = "harness.eval.bon."
# sweeps
TAG_STUDY = "harness.study"
TAG_OPTUNA_STORAGE = "harness.optuna_storage"
TAG_SWEEP_FILE = "harness.sweep_file"
TAG_TRIAL_NUMBER = "harness.trial_number"
TAG_TRIAL_STATE = "harness.trial_state"
TAG_KL_COEFFICIENT = "harness.kl_coefficient"
TAG_BEST_TRIAL = "harness.best_trial"
TAG_BEST_CELL = "harness.best_cell"
TAG_BEST_PARAM_PREFIX = "harness.best."  # + <searched field>
TAG_PARETO_FRONT_TRIALS = "harness.pareto_front_trials"
TAG_PARETO_FRONT = "harness.pareto_front"  # on a trial's cell run
# judge
TAG_JUDGE_REFERENCE = "harness.judge.reference"
# the grid's profile (cell runs and the experiment), and the experiment's grid file / default device
TAG_PROFILE = "harness.profile"
TAG_DEVICE_PROFILE = "harness.device_profile"
# report runs
TAG_REPORT_ITEMS = "harness.report.items"
TAG_REPORT_SKIPPED_PREFIX = "harness.report.skipped."  # + item name = why it was not built

RESOLVED_CONFIG_ARTIFACT = "resolved_config.json"
# Models bigger than this are not copied into the MLflow artifact store; `harness.model_path` points
# at the stage cache.
MAX_MODEL_ARTIFACT_BYTES = 50 * 1024 * 1024
_MAX_TAG_LEN = 5000
FAULT_ENV = "HARNESS_KILL_AT"


def fault_point(name: str) -> None:
    """SIGKILL this process here when `HARNESS_KILL_AT` names this point (tests of crash recovery)."""
    if os.environ.get(FAULT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def stage_key_tag(kind: str, dataset: str | None = None) -> str:
    return f"{TAG_STAGE_KEY_PREFIX}{kind}" + (f".{dataset}" if dataset else "")


def _now_ms() -> int:
    return int(time.time() * 1000)


def _clip(value: Any) -> str:
    return str(value)[:_MAX_TAG_LEN]


def latest_finished(runs: Iterable[Any]) -> Any | None:
    """The rule every reader uses to pick a cell's run: the latest FINISHED one (None if none is)."""
    finished = [r for r in runs if r.info.status == "FINISHED"]
    return max(finished, key=lambda r: (r.info.start_time or 0, r.info.run_id)) if finished else None


# -- stage runs -------------------------------------------------------------------------------------

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


# -- cell runs --------------------------------------------------------------------------------------

@dataclass
class CellRunInfo:
    """What a cell run says about itself (known when the cell is planned)."""

    grid: str  # the experiment
    name: str
    key: str  # content key of the cell's final stage: with `name`, the cell run's identity
    is_baseline: bool
    resolved_config: dict[str, Any]
    overrides: dict[str, Any] = field(default_factory=dict)
    # {"train_policy": key, "prepare_data.<dataset>": key, ...}: tagged `harness.stage.<entry>`
    stage_keys: dict[str, str] = field(default_factory=dict)
    policy_path: str | None = None  # a trained folder, or the zoo model of a baseline
    reward_model_path: str | None = None
    data_fingerprints: dict[str, str] = field(default_factory=dict)  # dataset -> fingerprint
    grid_file: str | None = None
    stage_specs: list[dict[str, Any]] = field(default_factory=list)  # for resolved_config.json
    profile: str | None = None  # the grid profile the cell was planned with

    def tags(self) -> dict[str, str]:
        tags = {
            TAG_RUN_TYPE: RUN_TYPE_CELL, TAG_GRID: self.grid, TAG_CELL: self.name, TAG_CELL_KEY: self.key,
            TAG_IS_BASELINE: str(self.is_baseline).lower(), TAG_GIT_SHA: tracking.git_sha(),
            TAG_RUN_NAME: self.name, TAG_OVERRIDES: _clip(json.dumps(self.overrides, default=str)),
        }
        if self.grid_file is not None:
            tags[TAG_GRID_FILE] = self.grid_file
        if self.profile is not None:
            tags[TAG_PROFILE] = self.profile
        tags.update({f"{TAG_STAGE_KEY_PREFIX}{entry}": key for entry, key in self.stage_keys.items()})
        if self.policy_path:
            tags[TAG_POLICY_PATH] = self.policy_path
        if self.reward_model_path:
            tags[TAG_REWARD_MODEL_PATH] = self.reward_model_path
        tags.update({f"{TAG_DATA_FINGERPRINT}.{name}": fp for name, fp in self.data_fingerprints.items()})
        return tags

    def params(self) -> dict[str, str]:
        return tracking.flatten(self.resolved_config)

    def resolved_config_document(self) -> dict[str, Any]:
        return {"cell": self.name, "overrides": self.overrides, "resolved_config": self.resolved_config,
                "stages": self.stage_specs}


def cell_runs(experiment_id: str, name: str, key: str) -> list[Any]:
    """Every active run of one cell (its name and content key), oldest first."""
    return tracking.find_runs(experiment_id, {TAG_RUN_TYPE: RUN_TYPE_CELL, TAG_CELL: name, TAG_CELL_KEY: key})


def logged_cell_run(experiment_id: str, name: str, key: str) -> Any | None:
    """The cell's FINISHED run (the latest wins), or None when the cell still has to be logged."""
    return latest_finished(cell_runs(experiment_id, name, key))


def open_cell_run(experiment_id: str, info: CellRunInfo, start_time_ms: int | None = None) -> str | None:
    """The cell's run, created or resumed, with its identity written (tags, params, resolved config);
    None when the cell already has a FINISHED run.

    A resumed run gets the whole identity written again: a crash can stop its first writing anywhere
    (right after `create_run` it has tags but no params and no resolved config), and a resumed cell
    must end as an uninterrupted one does. A leftover whose params contradict this cell's is not this
    cell's run (it holds nothing the stage store cannot give again): it is replaced. Called again on
    the cell's unfinished run (say, opened when the cell starts, then again once its data fingerprints
    are known), it rewrites the identity and returns the same run.
    """
    client = tracking.client()
    existing = cell_runs(experiment_id, info.name, info.key)
    if latest_finished(existing) is not None:
        return None
    params = info.params()
    resumable = [r for r in existing
                 if all(params.get(k, v) == v for k, v in r.data.params.items())]
    for run in existing:
        if not resumable or run.info.run_id != resumable[0].info.run_id:
            client.delete_run(run.info.run_id)
    tags = info.tags()
    if resumable:
        run_id = resumable[0].info.run_id
        client.update_run(run_id, status="RUNNING")
        tracking.set_tags(run_id, tags)
        missing = {k: v for k, v in params.items() if k not in resumable[0].data.params}
    else:
        run_id = client.create_run(experiment_id, start_time=start_time_ms, run_name=info.name, tags=tags).info.run_id
        fault_point("cell_run_created")
        missing = params
    tracking.log_params(run_id, missing)
    client.log_dict(run_id, info.resolved_config_document(), RESOLVED_CONFIG_ARTIFACT)
    return run_id


def finish_cell_run(run_id: str, metrics: dict[str, float], checkpoint_history: Iterable[dict[str, Any]] = (),
                    end_time_ms: int | None = None, tags: dict[str, str] | None = None,
                    inputs: Iterable[DataInput] = (), models: Iterable[str] = ()) -> None:
    """The cell's summary: its stages' metrics (checkpoint evaluations as histories, not again at
    step 0: their last point is the final model's value, and a step-0 duplicate would read as a score
    before training on the curves), `tags` (the evaluation's, `evaluation_tags_of`), its stages' datasets
    and logged models, then FINISHED."""
    over_steps = log_steps(run_id, checkpoint_history)
    tracking.log_metrics(run_id, {k: v for k, v in metrics.items() if k not in over_steps})
    if tags:
        tracking.set_tags(run_id, {k: _clip(v) for k, v in tags.items()})
    logged = {(i.dataset.name, i.dataset.digest) for i in (tracking.client().get_run(run_id).inputs.dataset_inputs or [])}
    log_data_inputs(run_id, [d for d in inputs if (d.name, d.digest[:36]) not in logged])
    link_models(run_id, models)
    tracking.client().set_terminated(run_id, "FINISHED", end_time=end_time_ms)


# -- evaluations: which tasks have no result, and why -----------------------------------------------

def evaluation_tags(results: dict[str, Any], best_of_n: bool = False) -> dict[str, str]:
    """The evaluate stage's tags from `run_tasks`' results.json: `missing` (comma list), `skipped.<task>`
    (the reason of every task without a score), `reused` (comma list), under `harness.eval.` (or
    `harness.eval.bon.` for the best-of-N tasks)."""
    prefix = TAG_EVAL_BON_PREFIX if best_of_n else TAG_EVAL_PREFIX
    tags = {f"{prefix}skipped.{task}": reason for task, reason in results["skipped"].items()}
    tags[f"{prefix}missing"] = ",".join(results["missing"])
    tags[f"{prefix}reused"] = ",".join(results["reused"])
    return tags


def evaluation_tags_of(tags: dict[str, str]) -> dict[str, str]:
    """The evaluation's tags among a stage run's (what the cell run carries too): which tasks have no result
    and why, and the over-optimisation monitor's verdicts."""
    return {k: v for k, v in tags.items() if k.startswith((TAG_EVAL_PREFIX, TAG_MONITOR_PREFIX))}


def tasks_without_result(tags: dict[str, str]) -> list[tuple[str, str, str]]:
    """(task, "not run (input missing)" | "no score", reason) from a cell or evaluate run's tags; a
    best-of-N task is named `best-of-N <task>`."""
    rows = []
    for prefix, label in ((TAG_EVAL_PREFIX, ""), (TAG_EVAL_BON_PREFIX, "best-of-N ")):
        missing = set(filter(None, tags.get(f"{prefix}missing", "").split(",")))
        for tag, reason in sorted(tags.items()):
            if tag.startswith(f"{prefix}skipped."):
                task = tag[len(f"{prefix}skipped."):]
                rows.append((label + task, "not run (input missing)" if task in missing else "no score", reason))
    return rows


# -- sweeps -----------------------------------------------------------------------------------------

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


# -- judge and `harness eval` -----------------------------------------------------------------------

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


# -- reading ----------------------------------------------------------------------------------------

@dataclass
class StageRun:
    run_id: str
    kind: str
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]


@dataclass
class CellRun:
    """A cell's chosen (latest FINISHED) run, with its FINISHED stage runs."""

    run_id: str
    cell: str
    is_baseline: bool
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]
    overrides: dict[str, Any]
    stages: list[StageRun] = field(default_factory=list)

    def param(self, key: str) -> str | None:
        value = self.params.get(key)
        return None if value in (None, "None", "null", "") else value

    def metric(self, key: str) -> float | None:
        value = self.metrics.get(key)
        return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)

    def stage(self, kind: str, name: str | None = None) -> StageRun | None:
        for stage in self.stages:
            if stage.kind == kind and (name is None or stage.params.get("name") == name):
                return stage
        return None

    def stage_key(self, kind: str, dataset: str | None = None) -> str | None:
        """The key of the cell's stage of that kind (tagged on the cell run)."""
        return self.tags.get(stage_key_tag(kind, dataset))

    @property
    def policy_path(self) -> str | None:
        return self.tags.get(TAG_POLICY_PATH)

    @property
    def algorithm(self) -> str | None:
        return self.param("algorithm.name")

    @property
    def seed(self) -> str:
        return self.params.get("seed", "")


@dataclass
class ExperimentRef:
    experiment_id: str
    name: str


def find_experiment(name_or_id: str) -> ExperimentRef:
    """An experiment by name (or id); a clear error listing the store's experiments otherwise."""
    client = tracking.client()
    exp = client.get_experiment_by_name(name_or_id)
    if exp is None and name_or_id.isdigit():
        try:
            exp = client.get_experiment(name_or_id)
        except Exception:  # MLflow raises for an unknown id: unknown is unknown
            exp = None
    if exp is None:
        names = [e.name for e in client.search_experiments()]
        raise ValueError(f"no MLflow experiment {name_or_id!r} at {tracking.tracking_uri()}; experiments: "
                         f"{', '.join(names) or '(none)'}")
    return ExperimentRef(exp.experiment_id, exp.name)


def _search(experiment_id: str, filter_string: str) -> list[Any]:
    client = tracking.client()
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string, max_results=5000,
                                  order_by=["attributes.start_time DESC"], page_token=token)
        runs.extend(page)
        token = getattr(page, "token", None)
        if not token:
            return runs


def read_cells(experiment_id: str, with_stages: bool = True) -> list[CellRun]:
    """Every cell of an experiment, by the latest FINISHED run of each cell name (an older run of a
    cell whose config changed since is superseded), with their FINISHED stage runs; the baseline
    first, then by name."""
    by_name: dict[str, list[Any]] = {}
    for run in _search(experiment_id, f"tags.`{TAG_RUN_TYPE}` = '{RUN_TYPE_CELL}' and attributes.status = 'FINISHED'"):
        by_name.setdefault(run.data.tags.get(TAG_CELL, run.info.run_id), []).append(run)
    stages: dict[str, list[StageRun]] = {}
    if with_stages:
        for run in _search(experiment_id,
                           f"tags.`{TAG_RUN_TYPE}` = '{RUN_TYPE_STAGE}' and attributes.status = 'FINISHED'"):
            parent = run.data.tags.get(TAG_PARENT)
            if parent:
                stages.setdefault(parent, []).append(StageRun(
                    run.info.run_id, run.data.tags.get(TAG_STAGE_KIND, ""), dict(run.data.params),
                    dict(run.data.metrics), dict(run.data.tags)))
    cells = []
    for name, runs in by_name.items():
        run = latest_finished(runs)
        try:
            overrides = json.loads(run.data.tags.get(TAG_OVERRIDES, "{}"))
        except json.JSONDecodeError:
            overrides = {}
        cells.append(CellRun(
            run.info.run_id, name, run.data.tags.get(TAG_IS_BASELINE, "").lower() in ("true", "1"),
            dict(run.data.params), dict(run.data.metrics), dict(run.data.tags),
            overrides if isinstance(overrides, dict) else {}, stages.get(run.info.run_id, [])))
    cells.sort(key=lambda c: (not c.is_baseline, c.cell))
    return cells


def fetch_artifact(run_id: str, path: str, dst: Path) -> Path | None:
    """Local copy of a run's artifact (file or folder) under `dst`, or None when the run has none."""
    try:
        return Path(tracking.client().download_artifacts(run_id, path, str(dst)))
    except Exception:  # MLflow raises various errors for a missing artifact: absent is absent
        return None


def metric_history(run_id: str, key: str) -> list[tuple[int, float]]:
    """(step, value) of a step metric, in step order (the last value logged for a step wins)."""
    points = {m.step: m.value for m in sorted(tracking.client().get_metric_history(run_id, key),
                                               key=lambda m: (m.step, m.timestamp))}
    return sorted(points.items())
