"""Reading an experiment back: its cells' chosen runs with their stage runs (`read_cells`), artifacts and
metric histories, found by name or id."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import tracking
from harness.mlflow_layout.names import (
    RUN_TYPE_CELL,
    RUN_TYPE_STAGE,
    TAG_CELL,
    TAG_IS_BASELINE,
    TAG_OVERRIDES,
    TAG_PARENT,
    TAG_POLICY_PATH,
    TAG_RUN_TYPE,
    TAG_STAGE_KIND,
    latest_finished,
    stage_key_tag,
)


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
