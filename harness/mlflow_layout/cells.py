"""Cell runs: one per grid cell, found by (name, content key), opened with the cell's first stage and
finished with its metrics; which evaluation tasks have no result and why (`harness.eval.*` tags)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from harness import tracking
from harness.mlflow_layout.names import (
    RESOLVED_CONFIG_ARTIFACT,
    RUN_TYPE_CELL,
    TAG_CELL,
    TAG_CELL_KEY,
    TAG_DATA_FINGERPRINT,
    TAG_EVAL_BON_PREFIX,
    TAG_EVAL_PREFIX,
    TAG_GIT_SHA,
    TAG_GRID,
    TAG_GRID_FILE,
    TAG_IS_BASELINE,
    TAG_MONITOR_PREFIX,
    TAG_OVERRIDES,
    TAG_POLICY_PATH,
    TAG_PROFILE,
    TAG_REWARD_MODEL_PATH,
    TAG_RUN_NAME,
    TAG_RUN_TYPE,
    TAG_STAGE_KEY_PREFIX,
    _clip,
    fault_point,
    latest_finished,
)
from harness.mlflow_layout.stage_runs import DataInput, link_models, log_data_inputs, log_steps


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
