"""`harness status [GRID.yaml | EXPERIMENT] [--only GLOB]`: where a grid stands, read from the stage store
and MLflow, safe to run while `harness run` works in another shell (it only reads).

Per cell: `logged` (its MLflow run is FINISHED), `running`, `failed`, `pending`; per stage: `done` (published,
with its time), `running` (its working folder's lock is held: progress from `progress.json`, the last
step metrics from `history.jsonl`, the writer's host and pid), `failed` (the last line of the error its
writer recorded), `interrupted` (a working folder whose writer died: the next run starts it over),
`blocked` (an input failed) or `pending`. Given an EXPERIMENT, the grid file is the one its cell runs
name (`harness.grid_file`); without an argument, every working folder of the store is listed.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import cache, progress, tracking
from harness import mlflow_layout as layout
from harness.console import LIVE_METRICS, format_duration, key_metric
from harness.planning import CellPlan, Stage

STATE_ORDER = ("failed", "running", "interrupted", "blocked", "pending", "done")


@dataclass
class StageStatus:
    stage: Stage
    state: str  # done, running, failed, interrupted, blocked, pending
    detail: str = ""


@dataclass
class CellStatus:
    name: str
    state: str  # logged, running, failed, pending
    run_id: str | None
    stages: list[StageStatus] = field(default_factory=list)


def _last_row(folder: Path) -> dict[str, Any]:
    path = folder / "history.jsonl"
    try:
        with path.open("rb") as fh:
            fh.seek(max(0, path.stat().st_size - 65536))
            lines = [line for line in fh.read().splitlines() if line.strip()]
    except OSError:
        return {}
    for line in reversed(lines):
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            continue  # a line being written
    return {}


def _writer(state: cache.WorkState) -> str:
    writer = state.writer or {}
    return f"{writer.get('host', '?')}:{writer.get('pid', '?')}"


def stage_status(stage: Stage, failed: set[str]) -> StageStatus:
    if stage.complete:
        record = cache.read_record(stage.kind, stage.key)
        start, end = cache.record_times(record)
        found = key_metric(stage.kind, json.loads((stage.path / "metrics.json").read_text()))
        detail = f"in {format_duration(end - start)}" + (f", {found[0]} {found[1]:.4g}" if found else "")
        return StageStatus(stage, "done", detail)
    state = cache.work_state(stage.kind, stage.key)
    if state is not None and state.running:
        now = progress.read(state.path)
        parts = []
        if now.get("total"):
            parts.append(f"{now.get('unit', 'step')} {int(now.get('done', 0))}/{int(now['total'])}")
        elif now.get("phase"):
            parts.append(str(now["phase"]))
        row = _last_row(state.path)
        parts += [f"{k} {row[k]:.4g}" for k in LIVE_METRICS if k in row][:2]
        started = float((state.writer or {}).get("started_at") or time.time())
        parts.append(f"for {format_duration(time.time() - started)} by {_writer(state)}")
        return StageStatus(stage, "running", ", ".join(parts))
    if state is not None and state.failure is not None:
        error = str(state.failure.get("error", "")).strip().splitlines()
        return StageStatus(stage, "failed", error[-1] if error else "failed")
    if state is not None:
        return StageStatus(stage, "interrupted", f"its writer {_writer(state)} stopped; the next run starts it over")
    blocked = [dep for dep in stage.inputs.values() if dep.id in failed]
    if blocked:
        return StageStatus(stage, "blocked", f"{blocked[0].label} failed")
    return StageStatus(stage, "pending")


def grid_status(experiment: str, plans: list[CellPlan]) -> list[CellStatus]:
    """Every cell of a planned grid, with its stages, as the store and MLflow say now."""
    exp = tracking.client().get_experiment_by_name(experiment)
    seen: dict[str, StageStatus] = {}
    failed: set[str] = set()
    cells = []
    for plan in plans:
        stages = []
        for stage in plan.stages:  # topological order: an input's state is known before its users'
            if stage.id not in seen:
                seen[stage.id] = stage_status(stage, failed)
                if seen[stage.id].state in ("failed", "blocked"):
                    failed.add(stage.id)
            stages.append(seen[stage.id])
        runs = layout.cell_runs(exp.experiment_id, plan.cell.name, plan.key) if exp is not None else []
        finished = layout.latest_finished(runs)
        states = {s.state for s in stages}
        if finished is not None:
            state, run_id = "logged", finished.info.run_id
        else:
            run_id = runs[-1].info.run_id if runs else None
            state = ("failed" if states & {"failed", "blocked"} else
                     "running" if "running" in states else "pending")
        cells.append(CellStatus(plan.cell.name, state, run_id, stages))
    return cells


def format_status(experiment: str, cells: list[CellStatus], source: str = "") -> str:
    counts = {s: sum(c.state == s for c in cells) for s in ("logged", "running", "failed", "pending")}
    head = f"experiment {experiment}" + (f" ({source})" if source else "") + f": {len(cells)} cell(s), " + \
        ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    lines = [head]
    for cell in cells:
        run = f" (run {cell.run_id})" if cell.run_id else ""
        lines.append(f"  cell {cell.name}: {cell.state}{run}")
        for status in cell.stages:
            text = f"    {status.stage.label:<36} {status.stage.key[:8]}  {status.state}"
            lines.append(text + (f": {status.detail}" if status.detail else ""))
    return "\n".join(lines)


def store_status() -> str:
    """Every working folder of the stage store: running, failed, or left by a dead writer."""
    states = cache.running_work()
    if not states:
        return "no stage is running, failed or interrupted in this store (give a GRID or EXPERIMENT for more)"
    lines = []
    for state in states:
        label = f"{state.kind} {state.key}"
        if state.running:
            now = progress.read(state.path)
            done = f" {now.get('unit', 'step')} {int(now.get('done', 0))}/{int(now['total'])}" if now.get("total") else ""
            lines.append(f"  {label}  running{done} by {_writer(state)}")
        elif state.failure is not None:
            error = str(state.failure.get("error", "")).strip().splitlines()
            lines.append(f"  {label}  failed: {error[-1] if error else ''}")
        else:
            lines.append(f"  {label}  interrupted (writer {_writer(state)} gone)")
    return "\n".join(lines)


def _grid_of(name: str, only: str | None) -> tuple[Any, str]:
    """The grid named by a file, or by the experiment whose cell runs name their grid file."""
    from harness.grid import load_grid

    if Path(name).is_file() or name.endswith((".yaml", ".yml")):
        return load_grid(name, only=only), str(name)
    ref = layout.find_experiment(name)
    files = {r.data.tags.get(layout.TAG_GRID_FILE) for r in tracking.find_runs(
        ref.experiment_id, {layout.TAG_RUN_TYPE: layout.RUN_TYPE_CELL})} - {None}
    existing = sorted(f for f in files if Path(f).is_file())
    if not existing:
        raise ValueError(f"experiment {name!r}: its cell runs name no grid file that exists here "
                         f"({', '.join(sorted(files)) or 'none'}); give the grid file instead")
    return load_grid(existing[-1], only=only), existing[-1]


def cmd_status(args: argparse.Namespace) -> int:
    from harness.cli_errors import print_error

    if not args.target:
        print(store_status())
        return 0
    try:
        grid, source = _grid_of(args.target, args.only)
    except ValueError as exc:
        print_error(exc, args)
        return 2
    from harness.runner import plan_grid

    print(format_status(grid.experiment, grid_status(grid.experiment, plan_grid(grid)), f"grid {source}"))
    return 0


def add_commands(subparsers: Any) -> None:
    parser = subparsers.add_parser("status", help="which cells and stages are done, running, failed or pending")
    parser.add_argument("target", nargs="?", help="a grid file or an experiment name (none: the store's "
                                                  "running, failed and interrupted stages)")
    parser.add_argument("--only", metavar="CELL_GLOB", help="only cells whose name matches this glob")
    parser.set_defaults(func=cmd_status)

