"""MLflow plumbing: the default local store, experiments, run lookup by tags, flattening, batching.
What is written where (tag names, run types, nesting) is `harness.mlflow_layout`'s, built on this.

Default: a SQLite store at `results/mlflow.db` with artifacts under `results/mlartifacts/` (no server
needed). Set `MLFLOW_TRACKING_URI` to use a team server (e.g. `http://mlflow:5000` backed by
PostgreSQL): nothing else changes.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

from harness.paths import PROJECT_ROOT, results_dir

# MLflow's limits: param values up to 6000 characters; keep a margin.
_MAX_PARAM_LEN = 5000
# A step-metrics row's time of production (epoch seconds, `harness.algorithms.base.History`): the MLflow
# timestamp of the row's metrics, not a metric itself.
WALL_TIME_KEY = "wall_time"


# `mlflow.set_tracking_uri` exports MLFLOW_TRACKING_URI (for subprocesses). Remember the value we
# exported ourselves so that it is not mistaken later for the user's choice: otherwise the first
# results dir of a process would stick even after HARNESS_RESULTS_DIR changes.
_exported_default: str | None = None


def tracking_uri() -> str:
    """The user's MLFLOW_TRACKING_URI if set, else the local SQLite store under the results dir."""
    from_env = os.environ.get("MLFLOW_TRACKING_URI")
    if from_env and from_env != _exported_default:
        return from_env
    return f"sqlite:///{results_dir() / 'mlflow.db'}"


def ensure_sqlite_store(uri: str) -> None:
    """Create a missing SQLite store whole, or not at all.

    MLflow builds a new SQLite store by running its schema migrations in several transactions; a
    process killed in between leaves a half-built database that every later run rejects ("table ...
    already exists"). So the schema is built in a private file and then hard-linked into place:
    `link` is atomic and fails if the store appeared meanwhile (another worker won; keep theirs).
    """
    if not uri.startswith("sqlite:///"):
        return
    path = Path(uri.removeprefix("sqlite:///"))
    if path.exists() or str(path) == ":memory:":
        return
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.init-*"):  # left by a killed creator
        if time.time() - stale.stat().st_mtime > 600:
            stale.unlink(missing_ok=True)
    private = path.with_name(f".{path.name}.init-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        store = SqlAlchemyStore(f"sqlite:///{private}", (path.parent / "mlartifacts").as_uri())
        store.engine.dispose()
        os.link(private, path)
    except FileExistsError:
        pass
    finally:
        private.unlink(missing_ok=True)


def is_local_store(uri: str) -> bool:
    return uri.startswith(("sqlite:", "file:", "/")) or "://" not in uri


def client():
    import mlflow
    from mlflow.tracking import MlflowClient

    global _exported_default
    uri = tracking_uri()
    if os.environ.get("MLFLOW_TRACKING_URI") in (None, "", _exported_default):
        _exported_default = uri
    ensure_sqlite_store(uri)
    mlflow.set_tracking_uri(uri)
    return MlflowClient(tracking_uri=uri)


# MLflow 3's UI opens an experiment on the view its kind names (mlflow/server/js: ExperimentKind,
# "custom_model_development" is "Machine learning": the runs table); untagged, it may open the GenAI view.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"


def setup_experiment(name: str) -> str:
    """Experiment id for `name`, created on first use (artifacts under results/ for local stores), marked
    as a model-training experiment unless its kind was set otherwise."""
    mlflow_client = client()
    existing = mlflow_client.get_experiment_by_name(name)
    if existing is not None:
        if existing.lifecycle_stage == "deleted":
            mlflow_client.restore_experiment(existing.experiment_id)
        if EXPERIMENT_KIND_TAG not in existing.tags:
            mlflow_client.set_experiment_tag(existing.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)
        return existing.experiment_id
    artifact_location = None
    if is_local_store(tracking_uri()):
        artifact_location = (results_dir() / "mlartifacts" / name).as_uri()
    try:
        return mlflow_client.create_experiment(name, artifact_location=artifact_location,
                                               tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND})
    except Exception:  # created concurrently by another worker
        found = mlflow_client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def find_runs(experiment_id: str, tags: dict[str, str], parent_run_id: str | None = None) -> list[Any]:
    """Active (not deleted) runs carrying all `tags` (and under `parent_run_id` if given)."""
    clauses = [f"tags.`{k}` = '{v}'" for k, v in tags.items()]
    if parent_run_id:
        clauses.append(f"tags.`mlflow.parentRunId` = '{parent_run_id}'")
    return client().search_runs(
        [experiment_id], filter_string=" and ".join(clauses), max_results=1000,
        order_by=["attributes.start_time ASC"],
    )


def flatten(config: Any, prefix: str = "") -> dict[str, str]:
    """{'algorithm': {'beta': 0.1}} -> {'algorithm.beta': '0.1'}; lists as JSON."""
    out: dict[str, str] = {}
    if isinstance(config, dict):
        for key, value in config.items():
            out.update(flatten(value, f"{prefix}{key}."))
        if not config and prefix:
            out[prefix[:-1]] = "{}"
        return out
    value = json.dumps(config) if isinstance(config, list | tuple) else str(config)
    out[prefix[:-1]] = value[:_MAX_PARAM_LEN]
    return out


def git_sha() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                             timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=PROJECT_ROOT,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return f"{sha}{'-dirty' if dirty else ''}" if sha else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def read_metric_rows(path: Path) -> list[dict[str, Any]]:
    """Rows {"step": n, key: value, ...} of a stage's step-metrics file (`history.jsonl`); none if absent."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def log_metric_rows(run_id: str, rows: Any) -> set[str]:
    """Log step-metric rows {"step": n, key: value, ...} into a run, in batches; returns the keys. A row's
    `wall_time` (when it was produced) is its metrics' timestamp; rows without one get the time of logging."""
    from mlflow.entities import Metric

    metrics = []
    now = int(time.time() * 1000)
    for row in rows:
        row = dict(row)
        step = int(row.pop("step", 0))
        produced = row.pop(WALL_TIME_KEY, None)
        stamp = int(float(produced) * 1000) if produced is not None else now
        metrics.extend(Metric(key, float(value), stamp, step) for key, value in row.items())
    mlflow_client = client()
    for start in range(0, len(metrics), 900):
        mlflow_client.log_batch(run_id, metrics=metrics[start : start + 900], synchronous=True)
    return {m.key for m in metrics}


def log_metric_history(run_id: str, history_path: Path) -> None:
    """Replay a stage's step metrics (`history.jsonl`) into its run, in batches."""
    log_metric_rows(run_id, read_metric_rows(history_path))


def log_metrics(run_id: str, metrics: dict[str, float]) -> None:

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    batch = [Metric(k, float(v), now, 0) for k, v in metrics.items()]
    for start in range(0, len(batch), 900):
        client().log_batch(run_id, metrics=batch[start : start + 900], synchronous=True)


def log_params(run_id: str, params: dict[str, str]) -> None:
    from mlflow.entities import Param

    batch = [Param(k, v) for k, v in params.items()]
    for start in range(0, len(batch), 90):
        client().log_batch(run_id, params=batch[start : start + 90], synchronous=True)


def set_tags(run_id: str, tags: dict[str, str]) -> None:
    from mlflow.entities import RunTag

    batch = [RunTag(k, v) for k, v in tags.items()]
    for start in range(0, len(batch), 90):
        client().log_batch(run_id, tags=batch[start : start + 90], synchronous=True)
