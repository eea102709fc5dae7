"""Run a grid: plan the stage DAG, execute missing stages on a backend, log each cell to MLflow.

MLflow is written only from published stage outputs, so logging is idempotent and a rerun after a
crash (even `kill -9`) converges to the same state as an uninterrupted run:
- a cell whose parent run is FINISHED is skipped (never duplicated, never overwritten);
- a cell whose parent run exists but is unfinished is resumed: finished stage runs are kept,
  unfinished ones are deleted and re-logged from the stage store;
- a stage that was published is never recomputed (the store is content-addressed).
"""

from __future__ import annotations

import json
import shutil
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import cache, tracking
from harness.checkpoints import HISTORY_FILE, history_keys
from harness.grid import Grid
from harness.stages import STAGE_TAGS_FILE, CellPlan, Stage, plan_cell, unique_stages

# Models bigger than this are not copied into the MLflow artifact store; a tag points at the stage cache.
MAX_MODEL_ARTIFACT_BYTES = 50 * 1024 * 1024


@dataclass
class RunSummary:
    experiment_id: str
    logged_cells: list[str] = field(default_factory=list)
    skipped_cells: list[str] = field(default_factory=list)
    executed_stages: list[str] = field(default_factory=list)
    cached_stages: list[str] = field(default_factory=list)
    cell_run_ids: dict[str, str] = field(default_factory=dict)
    # Under keep-going: stage id -> its error (one message), cell -> why it was not logged, and stage id ->
    # the full traceback (printed with `harness -v`).
    failed_stages: dict[str, str] = field(default_factory=dict)
    failed_cells: dict[str, str] = field(default_factory=dict)
    tracebacks: dict[str, str] = field(default_factory=dict)

    def failure_report(self) -> str:
        """What failed and why, one cell per line (empty when nothing failed)."""
        if not self.failed_cells:
            return ""
        lines = [f"FAILED: {len(self.failed_cells)} cell(s) not logged:"]
        lines += [f"  cell {name}: {why}" for name, why in self.failed_cells.items()]
        lines.append("Cells that did not depend on a failed stage ran and were logged; after fixing the cause, "
                     "rerun the same command (finished stages are cached, logged cells skipped).")
        return "\n".join(lines)


def plan_grid(grid: Grid) -> list[CellPlan]:
    return [plan_cell(cell) for cell in grid.cells]


def describe_plan(grid: Grid, plans: list[CellPlan]) -> str:
    """The `--dry-run` text: every cell, each of its stages, cached or to run (shared ones marked)."""
    users: dict[str, int] = {}
    for plan in plans:
        for stage in plan.stages:
            users[stage.id] = users.get(stage.id, 0) + 1
    lines = [f"experiment {grid.experiment}: {len(plans)} cells, "
             f"{len(unique_stages(plans))} distinct stages"]
    for plan in plans:
        lines.append(f"  cell {plan.cell.name}")
        for stage in plan.stages:
            status = "cached" if stage.complete else "will run"
            shared = f" (shared by {users[stage.id]} cells)" if users[stage.id] > 1 else ""
            lines.append(f"    {stage.label:<40} {stage.key}  {status}{shared}")
    todo = [s for s in unique_stages(plans) if not s.complete]
    lines.append(f"{len(todo)} stage(s) will run, {len(unique_stages(plans)) - len(todo)} cached")
    return "\n".join(lines)


def _cell_tags(grid: Grid, plan: CellPlan) -> dict[str, str]:
    tags = {
        "harness.run_type": "cell",
        "harness.grid": grid.experiment,
        "harness.cell": plan.cell.name,
        "harness.cell_key": plan.key,
        "harness.is_baseline": str(plan.cell.is_baseline).lower(),
        "harness.git_sha": tracking.git_sha(),
        "mlflow.runName": plan.cell.name,
    }
    if grid.source is not None:
        tags["harness.grid_file"] = str(grid.source)
    rm_stages = [s for s in plan.stages if s.kind == "train_reward_model"]
    for stage in plan.stages:
        suffix = f".{stage.config['name']}" if stage.kind == "prepare_data" else ""
        if stage.kind == "train_reward_model" and len(rm_stages) > 1:  # an ensemble: one tag per member
            suffix = f".{rm_stages.index(stage)}"
        tags[f"harness.stage.{stage.kind}" + suffix] = stage.key
    policy = plan.stage("train_policy")
    tags["harness.policy_path"] = str(policy.path / "model") if policy else plan.cell.config.model
    rm = plan.stage("train_reward_model")
    if len(rm_stages) > 1:
        tags["harness.reward_model_path"] = json.dumps([str(s.path / "model") for s in rm_stages])
    elif rm is not None:
        tags["harness.reward_model_path"] = str(rm.path / "model")
    elif plan.cell.config.reward_model and plan.cell.config.reward_model.path:
        tags["harness.reward_model_path"] = plan.cell.config.reward_model.path
    for stage in plan.stages:
        if stage.kind == "prepare_data" and stage.complete:
            tags[f"harness.data_fingerprint.{stage.config['name']}"] = (stage.path / "fingerprint.txt").read_text()
    return tags


def _dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _log_stage_run(experiment_id: str, parent_id: str, stage: Stage) -> dict[str, float]:
    client = tracking.client()
    metrics = json.loads((stage.path / "metrics.json").read_text())
    existing = tracking.find_runs(experiment_id, {"harness.run_type": "stage", "harness.stage_hash": stage.key},
                                  parent_run_id=parent_id)
    if any(r.info.status == "FINISHED" for r in existing):
        return metrics
    for run in existing:  # left unfinished by a crash: replace it
        client.delete_run(run.info.run_id)
    record = json.loads((stage.path / cache.RECORD).read_text())
    tags_file = stage.path / STAGE_TAGS_FILE  # what the stage itself has to say (e.g. an evaluation skipped)
    stage_tags = json.loads(tags_file.read_text()) if tags_file.exists() else {}
    run = client.create_run(experiment_id, run_name=stage.kind, tags={
        **{k: str(v)[:5000] for k, v in stage_tags.items()},
        "mlflow.parentRunId": parent_id, "harness.run_type": "stage", "harness.stage_kind": stage.kind,
        "harness.stage_hash": stage.key, "harness.stage_dir": str(stage.path),
        "harness.stage_seconds": f"{record.get('seconds', 0):.1f}",
        **({"harness.data_fingerprint": record["fingerprint"]} if record.get("fingerprint") else {}),
    })
    run_id = run.info.run_id
    tracking.log_params(run_id, tracking.flatten(stage.config))
    tracking.log_metric_history(run_id, stage.path / "history.jsonl")
    over_steps = _log_checkpoint_history(run_id, stage)
    final = {k: v for k, v in metrics.items() if k not in over_steps}
    tracking.log_metrics(run_id, {**final, "stage/seconds": float(record.get("seconds", 0.0))})
    client.log_artifact(run_id, str(stage.path / "config.json"))
    artifacts = stage.path / "artifacts"
    if artifacts.exists() and any(artifacts.iterdir()):
        client.log_artifacts(run_id, str(artifacts))
    adapter = stage.path / "adapter"  # a LoRA run's adapter alone (harness.lora): small, always logged
    if adapter.exists():
        client.log_artifacts(run_id, str(adapter), artifact_path="adapter")
        client.set_tag(run_id, "harness.adapter_path", str(adapter))
    model = stage.path / "model"
    if model.exists():
        if _dir_size(model) <= MAX_MODEL_ARTIFACT_BYTES:
            client.log_artifacts(run_id, str(model), artifact_path="model")
        client.set_tag(run_id, "harness.model_path", str(model))
    client.set_terminated(run_id, "FINISHED")
    return metrics


def _log_checkpoint_history(run_id: str, stage: Stage) -> set[str]:
    """Log an evaluate stage's checkpoint evaluations as metric histories; returns their names.

    Those names are then not logged again at step 0: their last point (the final step) already holds
    the final model's value, which stays the run's reported value, and a step-0 duplicate of it would
    read as a score before training on the curves.
    """
    path = stage.path / HISTORY_FILE
    tracking.log_metric_history(run_id, path)
    return history_keys(path)


def log_cell(grid: Grid, experiment_id: str, plan: CellPlan) -> str | None:
    """Log a cell whose stages are all published; returns its parent run id (None if already done)."""
    client = tracking.client()
    existing = tracking.find_runs(experiment_id, {"harness.run_type": "cell", "harness.cell": plan.cell.name,
                                                  "harness.cell_key": plan.key})
    if any(r.info.status == "FINISHED" for r in existing):
        return None
    if existing:
        parent_id = existing[0].info.run_id
        for extra in existing[1:]:
            client.delete_run(extra.info.run_id)
        client.update_run(parent_id, status="RUNNING")
    else:
        parent_id = client.create_run(experiment_id, run_name=plan.cell.name, tags=_cell_tags(grid, plan)).info.run_id
        tracking.log_params(parent_id, tracking.flatten(plan.cell.resolved()))
        client.log_dict(parent_id, {"cell": plan.cell.name, "overrides": plan.cell.overrides,
                                    "resolved_config": plan.cell.resolved(),
                                    "stages": [s.spec() for s in plan.stages]}, "resolved_config.json")
    summary: dict[str, float] = {}
    over_steps: set[str] = set()
    for stage in plan.stages:
        metrics = _log_stage_run(experiment_id, parent_id, stage)
        if stage.kind != "prepare_data":
            summary.update(metrics)
        if stage.kind == "evaluate":  # the figures read the cell run's `<task>/score` histories
            over_steps |= _log_checkpoint_history(parent_id, stage)
    tracking.log_metrics(parent_id, {k: v for k, v in summary.items() if k not in over_steps})
    client.set_tag(parent_id, "harness.overrides", json.dumps(plan.cell.overrides, default=str)[:5000])
    client.set_terminated(parent_id, "FINISHED")
    return parent_id


def run_grid(grid: Grid, backend: str = "local", echo: Callable[[str], None] = print,
             backend_options: dict[str, Any] | None = None, keep_going: bool = False) -> RunSummary:
    """Run the grid's missing stages, every `prepare_data` stage first (a data error shows before any
    training starts), and log each cell whose stages are all published.

    keep_going=False: the first failed stage raises (the Ray backend lets running tasks finish first).
    keep_going=True: a failed stage stops only the stages that depend on it; the others run and their cells
    are logged, and the summary's `failed_cells` / `failed_stages` say what failed and why.
    """
    from harness.backends import get_backend

    plans = plan_grid(grid)
    experiment_id = tracking.setup_experiment(grid.experiment)
    cache.sweep_stale_temps()
    summary = RunSummary(experiment_id)

    pending: list[CellPlan] = []
    for plan in plans:
        runs = tracking.find_runs(experiment_id, {"harness.run_type": "cell", "harness.cell": plan.cell.name,
                                                  "harness.cell_key": plan.key})
        if any(r.info.status == "FINISHED" for r in runs):
            summary.skipped_cells.append(plan.cell.name)
            echo(f"cell {plan.cell.name}: already logged (run {runs[0].info.run_id}), skipped")
        else:
            pending.append(plan)
    needed = [s for s in unique_stages(pending)]
    summary.cached_stages = [s.id for s in needed if s.complete]
    to_run = [s for s in needed if not s.complete]

    logged: set[str] = set()

    def on_stage_done(stage: Stage) -> None:
        summary.executed_stages.append(stage.id)
        echo(f"  done {stage.label} {stage.key}")
        flush_ready_cells()

    def on_stage_failed(stage: Stage, exc: BaseException) -> None:
        summary.failed_stages[stage.id] = failure_message(exc)
        summary.tracebacks[stage.id] = "".join(traceback.format_exception(exc))
        echo(f"  FAILED {stage.label} {stage.key}: {summary.failed_stages[stage.id]}")

    def flush_ready_cells() -> None:
        for plan in pending:
            if plan.cell.name in logged or not all(s.complete for s in plan.stages):
                continue
            run_id = log_cell(grid, experiment_id, plan)
            logged.add(plan.cell.name)
            if run_id:
                summary.logged_cells.append(plan.cell.name)
                summary.cell_run_ids[plan.cell.name] = run_id
                echo(f"cell {plan.cell.name}: logged to MLflow run {run_id}")

    echo(f"experiment {grid.experiment}: {len(pending)} cell(s) to do, {len(to_run)} stage(s) to run, "
         f"{len(summary.cached_stages)} cached")
    flush_ready_cells()
    if to_run:
        executor = get_backend(backend, **(backend_options or {}))
        with executor.session():
            for phase in data_first_phases(to_run):
                runnable = [s for s in phase if not _failed_input(s, summary.failed_stages)]
                if runnable:
                    executor.run(runnable, on_stage_done, echo, on_stage_failed if keep_going else None)
    flush_ready_cells()
    _record_failed_cells(summary, pending, logged)
    return summary


def data_first_phases(stages: list[Stage]) -> list[list[Stage]]:
    """Every `prepare_data` stage, then the rest (order kept): a broken data file fails the grid (or, under
    keep-going, its cells) before any model is trained, not after the cells listed before it have trained."""
    return [[s for s in stages if s.kind == "prepare_data"], [s for s in stages if s.kind != "prepare_data"]]


def _failed_input(stage: Stage, failed: dict[str, str]) -> Stage | None:
    """The failed stage `stage` depends on (directly or through its inputs), if any."""
    for dep in stage.inputs.values():
        if dep.id in failed:
            return dep
        upstream = _failed_input(dep, failed)
        if upstream is not None:
            return upstream
    return None


def _record_failed_cells(summary: RunSummary, pending: list[CellPlan], logged: set[str]) -> None:
    for plan in pending:
        if plan.cell.name in logged:
            continue
        for stage in plan.stages:
            root = stage if stage.id in summary.failed_stages else _failed_input(stage, summary.failed_stages)
            if root is not None:
                summary.failed_cells[plan.cell.name] = f"{root.label} failed: {summary.failed_stages[root.id]}"
                break


def failure_message(exc: BaseException) -> str:
    """A stage's error as one message (Ray wraps the stage's own exception in a RayTaskError)."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        exc = cause
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def clear_stage(stage: Stage) -> None:
    shutil.rmtree(stage.path, ignore_errors=True)
