"""Run a grid: plan the stage DAG, execute missing stages on a backend, log each cell to MLflow.

MLflow is written only from published stage outputs, through `harness.mlflow_layout`, so logging is
idempotent and a rerun after a crash (even `kill -9`) converges to the same state as an uninterrupted
run:
- a cell whose parent run is FINISHED is skipped (never duplicated, never overwritten);
- a cell whose parent run exists but is unfinished is resumed: its identity (tags, params, resolved
  config) is written again, finished stage runs are kept, unfinished ones are deleted and re-logged
  from the stage store;
- a stage that was published is never recomputed (the store is content-addressed).
"""

from __future__ import annotations

import json
import shutil
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from harness import cache, tracking
from harness import mlflow_layout as layout
from harness.checkpoints import HISTORY_FILE
from harness.grid import Grid
from harness.stages import STAGE_TAGS_FILE, CellPlan, Stage, plan_cell, unique_stages


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
            if stage.kind == "prepare_data" and stage.config["source"]["raw"].get("unavailable"):
                lines.append("      raw data not found locally and the hub is not used: this stage will fail")
            for reason in stage.missing.values():  # not run; retried once its input is there
                lines.append(f"      not run: {reason}")
    todo = [s for s in unique_stages(plans) if not s.complete]
    lines.append(f"{len(todo)} stage(s) will run, {len(unique_stages(plans)) - len(todo)} cached")
    return "\n".join(lines)


def cell_run_info(grid: Grid, plan: CellPlan) -> layout.CellRunInfo:
    """What the cell's MLflow run says about it: config, overrides, stage keys, model paths."""
    stage_keys, fingerprints = {}, {}
    rm_stages = [s for s in plan.stages if s.kind == "train_reward_model"]
    for stage in plan.stages:
        if stage.kind == "prepare_data":
            stage_keys[f"prepare_data.{stage.config['name']}"] = stage.key
            if stage.complete:
                fingerprints[stage.config["name"]] = (stage.path / "fingerprint.txt").read_text()
        elif stage.kind == "train_reward_model" and len(rm_stages) > 1:  # an ensemble: one entry per member
            stage_keys[f"train_reward_model.{rm_stages.index(stage)}"] = stage.key
        else:
            stage_keys[stage.kind] = stage.key
    policy = plan.stage("train_policy")
    rm = plan.stage("train_reward_model")
    rm_path = str(rm.path / "model") if rm is not None else (
        plan.cell.config.reward_model.path if plan.cell.config.reward_model else None)
    if len(rm_stages) > 1:
        rm_path = json.dumps([str(s.path / "model") for s in rm_stages])
    return layout.CellRunInfo(
        grid=grid.experiment, name=plan.cell.name, key=plan.key, is_baseline=plan.cell.is_baseline,
        resolved_config=plan.cell.resolved(), overrides=plan.cell.overrides, stage_keys=stage_keys,
        policy_path=str(policy.path / "model") if policy else plan.cell.config.model,
        reward_model_path=rm_path or None, data_fingerprints=fingerprints,
        grid_file=str(grid.source) if grid.source is not None else None,
        stage_specs=[s.spec() for s in plan.stages], profile=grid.profile)


def stage_run_info(stage: Stage) -> layout.StageRunInfo:
    return layout.StageRunInfo(stage.kind, stage.key, stage.config, str(stage.path))


def stage_result(stage: Stage) -> layout.StageResult:
    """A published stage's outputs, read from the stage store, for its MLflow run."""
    record = json.loads((stage.path / cache.RECORD).read_text())
    tags_file = stage.path / STAGE_TAGS_FILE  # what the stage itself has to say (e.g. an evaluation skipped)
    return layout.StageResult(
        metrics=json.loads((stage.path / "metrics.json").read_text()),
        seconds=float(record.get("seconds", 0.0)),
        step_history=tracking.read_metric_rows(stage.path / "history.jsonl"),
        checkpoint_history=tracking.read_metric_rows(stage.path / HISTORY_FILE),
        tags=json.loads(tags_file.read_text()) if tags_file.exists() else {},
        fingerprint=record.get("fingerprint"),
        files=[stage.path / "config.json"],
        artifacts_dir=stage.path / "artifacts",
        model_dir=stage.path / "model",
        adapter_dir=stage.path / "adapter",
    )


def log_cell(grid: Grid, experiment_id: str, plan: CellPlan) -> str | None:
    """Log a cell whose stages are all published; returns its run id (None if it was already logged).

    A cell's run is the union of its stages' runs: every stage is logged under it (skipped when already
    there), and the cell run carries their metrics; the evaluate stage's checkpoint evaluations are
    histories on the cell run too (the figures read `<task>/score` over steps there).
    """
    run_id = layout.open_cell_run(experiment_id, cell_run_info(grid, plan))
    if run_id is None:
        return None
    summary: dict[str, float] = {}
    checkpoints: list[dict[str, Any]] = []
    evaluation: dict[str, str] = {}
    for stage in plan.stages:
        result = stage_result(stage)
        layout.log_stage_run(experiment_id, run_id, stage_run_info(stage), result)
        if stage.kind != "prepare_data":
            summary.update(result.metrics)
        if stage.kind == "evaluate":
            checkpoints += result.checkpoint_history
            evaluation = layout.evaluation_tags_of(result.tags)  # which tasks have no result, and why
    layout.finish_cell_run(run_id, summary, checkpoints, tags=evaluation)
    return run_id


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
    describe_experiment(grid, experiment_id)
    cache.sweep_stale_temps()
    summary = RunSummary(experiment_id)

    pending: list[CellPlan] = []
    for plan in plans:
        logged_run = layout.logged_cell_run(experiment_id, plan.cell.name, plan.key)
        if logged_run is not None:
            summary.skipped_cells.append(plan.cell.name)
            echo(f"cell {plan.cell.name}: already logged (run {logged_run.info.run_id}), skipped")
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


def describe_experiment(grid: Grid, experiment_id: str) -> None:
    """The experiment's description and tags: the grid file and profile that made it (mlflow_layout). A grid
    built in code (a sweep's trial, a test) has no file: it leaves the experiment's description as it is."""
    if grid.source is None:
        return
    layout.describe_experiment(experiment_id, layout.ExperimentInfo(
        grid_file=str(grid.source) if grid.source is not None else None, profile=grid.profile,
        description=grid.description, device_profile=grid.device_profile))


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
