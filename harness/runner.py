"""Run a grid: plan the stage DAG, execute missing stages on a backend, log each cell to MLflow.

MLflow is written by the driver only, through `harness.mlflow_layout` (by `harness.live.LiveLogger`):
live curves from the running stages' working folders, everything else from published stage outputs, so
logging is idempotent and a rerun after a crash (even `kill -9`) converges to the same state as an
uninterrupted run:
- a cell whose parent run is FINISHED is skipped (never duplicated, never overwritten);
- a cell whose parent run exists but is unfinished is resumed: its identity (tags, params, resolved
  config) is written again, finished stage runs are kept, unfinished ones (a partly logged live run
  included) are deleted and logged again, from the stage store or, for a stage running again, from its
  working folder's history;
- a stage that was published is never recomputed (the store is content-addressed).
"""

from __future__ import annotations

import logging
import shutil
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from harness import cache, tracking
from harness import mlflow_layout as layout
from harness.grid import Grid
from harness.live import LiveLogger, RowsObserver, RunSummary
from harness.planning import CellPlan, Stage, plan_cell, unique_stages

if TYPE_CHECKING:
    from harness.console import ProgressView

logger = logging.getLogger(__name__)


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


def run_grid(grid: Grid, backend: str = "local", echo: Callable[[str], None] = print,
             backend_options: dict[str, Any] | None = None, keep_going: bool = False,
             view: ProgressView | None = None, on_rows: RowsObserver | None = None) -> RunSummary:
    """Run the grid's missing stages, every `prepare_data` stage first (a data error shows before any
    training starts), and log each cell whose stages are all published.

    keep_going=False: the first failed stage raises (the Ray backend lets running tasks finish first).
    keep_going=True: a failed stage stops only the stages that depend on it; the others run and their cells
    are logged, and the summary's `failed_cells` / `failed_stages` say what failed and why.

    MLflow is written while the stages run, by one `harness.live.LiveLogger` thread: live curves from the
    running stages' working folders, each stage run finished at its publication, each cell logged once
    complete. `view` (`harness.console`) shows the running stages in the terminal; `on_rows` sees each
    running stage's step metrics as they are logged (`harness.live.RowsObserver`).
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

    live = LiveLogger(grid, experiment_id, pending, summary, echo, view, on_rows=on_rows)

    def on_stage_done(stage: Stage) -> None:
        summary.executed_stages.append(stage.id)
        if view is None:
            echo(f"  done {stage.label} {stage.key}")
        live.published(stage)

    def on_stage_failed(stage: Stage, exc: BaseException) -> None:
        summary.failed_stages[stage.id] = failure_message(exc)
        summary.tracebacks[stage.id] = "".join(traceback.format_exception(exc))
        echo(f"  FAILED {stage.label} {stage.key}: {summary.failed_stages[stage.id]}")
        live.failed(stage, summary.failed_stages[stage.id])

    echo(f"experiment {grid.experiment}: {len(pending)} cell(s) to do, {len(to_run)} stage(s) to run, "
         f"{len(summary.cached_stages)} cached")
    live.start(to_run)
    outcome = "failed"
    try:
        if to_run:
            executor = get_backend(backend, **(backend_options or {}))
            with executor.session():
                for phase in data_first_phases(to_run):
                    runnable = [s for s in phase if not _failed_input(s, summary.failed_stages)]
                    if runnable:
                        executor.run(runnable, on_stage_done, echo, on_stage_failed if keep_going else None)
        outcome = "done"
    except KeyboardInterrupt:
        outcome = "interrupted"
        raise
    finally:
        try:
            live.close(outcome)
        except Exception:
            if outcome == "done":
                raise
            logger.exception("closing the MLflow logger after a failed run")
    _record_failed_cells(summary, pending, live.logged)
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
