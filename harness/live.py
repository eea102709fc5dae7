"""Logging a grid run to MLflow as it happens: the driver's one MLflow writer.

Only the driver writes MLflow (workers, pool processes and Ray tasks only write their stage's working
folder); during `run_grid` every write goes through one `LiveLogger` thread, which
- follows each stage the run executes: when its working folder is claimed (`harness.cache.work_state`:
  a live writer holds the lock) the cell runs of the cells using it are opened (a cell run starts with
  its first stage) and the stage's run is created under the first of them (the owner) with its tags and
  start time; the new lines of its `history.jsonl` are logged on it every `poll_seconds` (1 s), each
  point timestamped when it was produced, so the MLflow UI draws the curve while the stage trains;
- finishes that same run when the stage is published (the rest of its curve, final metrics, artifacts,
  inputs, logged model, end time), or marks it FAILED with the error;
- logs each cell once all its stages are published (`log_cell`): the cell's other stage runs are copies
  logged from the stage store with the times in their records, the cell run ends with its last stage.

A stage shared by several cells has one live run, under the first pending cell (in grid order) that uses
it; the other cells get a copy of the finished stage when they are logged, as every cached stage does.
A new attempt at a stage (a crash and rerun, a Ray retry, a reclaimed working folder) replaces its live
run by a fresh one that replays the attempt's `history.jsonl` from the start: no step twice, none missing.

The terminal view (`harness.console`) is fed from the same polling: one line per running stage.
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness import cache, progress, tracking
from harness import mlflow_layout as layout
from harness.checkpoints import HISTORY_FILE
from harness.executors import STAGE_TAGS_FILE
from harness.grid import Grid
from harness.planning import CellPlan, Stage

if TYPE_CHECKING:
    from harness.console import ProgressView, StageLine

logger = logging.getLogger(__name__)


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

STEP_HISTORY_FILE = "history.jsonl"
# Called (in the logger thread) with each batch of new step-metric rows of a running stage, in order, once
# they are on its MLflow run: (stage, attempt, rows). A new attempt replays its rows from its first step.
RowsObserver = Callable[[Stage, str, list[dict[str, Any]]], None]
# What each trained stage kind's model is, as an MLflow logged model.
MODEL_TYPES = {"train_policy": "policy", "train_reward_model": "reward_model"}


def _ms(seconds: float | None) -> int | None:
    return int(seconds * 1000) if seconds else None


# -- what the grid logs, read from the stage store ---------------------------------------------------

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


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def data_inputs(stage: Stage) -> list[layout.DataInput]:
    """The datasets a stage reads, as MLflow run inputs: a training stage's published `prepare_data` rows
    (digest: their fingerprint), an evaluate stage's task data (digest: the task's data files' and
    registry sources' hashes from its planned fingerprint), a `prepare_data` stage's raw source."""
    found = []
    for dep in stage.inputs.values():
        if dep.kind != "prepare_data" or not dep.complete:
            continue
        fingerprint = dep.path / "fingerprint.txt"
        metrics = json.loads((dep.path / "metrics.json").read_text())
        found.append(layout.DataInput(
            name=str(dep.config["name"]), digest=fingerprint.read_text().strip() if fingerprint.exists() else dep.key,
            source=str(dep.path / "rows.jsonl"), context="training",
            rows=int(metrics["data/kept_rows"]) if "data/kept_rows" in metrics else None))
    if stage.kind == "evaluate":
        blocks = [("", stage.config.get("tasks"))]
        if isinstance(stage.config.get("best_of_n"), dict):
            blocks.append(("bon/", stage.config["best_of_n"].get("tasks")))
        for prefix, tasks in blocks:
            for name, planned in (tasks.items() if isinstance(tasks, dict) else []):
                data = {"files": planned.get("data") or {}, "datasets": planned.get("datasets") or {}}
                source = ", ".join([*data["files"], *data["datasets"]]) or name
                found.append(layout.DataInput(name=f"{prefix}{name}", digest=_digest(data), source=source,
                                              context="evaluation"))
    if stage.kind == "prepare_data" and isinstance(stage.config.get("source"), dict):
        raw = stage.config["source"]
        found.append(layout.DataInput(name=str(stage.config["name"]), digest=_digest(raw.get("raw", raw)),
                                      source=str(raw.get("dataset", stage.config["name"])), context="source"))
    return found


def stage_run_info(stage: Stage, attempt: str | None = None) -> layout.StageRunInfo:
    return layout.StageRunInfo(stage.kind, stage.key, stage.config, str(stage.path), attempt, data_inputs(stage))


def stage_result(stage: Stage) -> layout.StageResult:
    """A published stage's outputs, read from the stage store, for its MLflow run."""
    record = cache.read_record(stage.kind, stage.key)
    tags_file = stage.path / STAGE_TAGS_FILE  # what the stage itself has to say (e.g. an evaluation skipped)
    metrics = json.loads((stage.path / "metrics.json").read_text())
    metrics.setdefault("cost/wall_seconds", float(record.get("seconds", 0.0)))  # stages published before costs
    return layout.StageResult(
        metrics=metrics,
        seconds=float(record.get("seconds", 0.0)),
        step_history=tracking.read_metric_rows(stage.path / STEP_HISTORY_FILE),
        checkpoint_history=tracking.read_metric_rows(stage.path / HISTORY_FILE),
        tags=json.loads(tags_file.read_text()) if tags_file.exists() else {},
        fingerprint=record.get("fingerprint"),
        files=[stage.path / "config.json"],
        artifacts_dir=stage.path / "artifacts",
        model_dir=stage.path / "model",
        adapter_dir=stage.path / "adapter",
        model_type=MODEL_TYPES.get(stage.kind),
        device=(record.get("usage") or {}).get("device"),
    )


def is_cost_metric(key: str) -> bool:
    return key.startswith("cost/")


def log_cell(grid: Grid, experiment_id: str, plan: CellPlan) -> str | None:
    """Log a cell whose stages are all published; returns its run id (None if it was already logged).

    A cell's run is the union of its stages' runs: every stage is logged under it (skipped when already
    there, e.g. finished live), and the cell run carries their metrics (`cost/*` summed over its stages);
    the evaluate stage's checkpoint evaluations are histories on the cell run too (the figures read
    `<task>/score` over steps there). It spans its stages' work: from the first one's start (kept when the
    run was opened live) to the last one's end.
    """
    times = [cache.record_times(cache.read_record(s.kind, s.key)) for s in plan.stages]
    run_id = layout.open_cell_run(experiment_id, cell_run_info(grid, plan), _ms(min(t[0] for t in times)))
    if run_id is None:
        return None
    summary: dict[str, float] = {}
    costs: dict[str, float] = {}
    checkpoints: list[dict[str, Any]] = []
    evaluation: dict[str, str] = {}
    inputs: list[layout.DataInput] = []
    models: list[str] = []
    for stage, (start, end) in zip(plan.stages, times):
        result = stage_result(stage)
        layout.log_stage_run(experiment_id, run_id, stage_run_info(stage), result, _ms(start), _ms(end))
        for key, value in result.metrics.items():
            if is_cost_metric(key):
                costs[key] = costs.get(key, 0.0) + value
            elif stage.kind != "prepare_data":
                summary[key] = value
        if stage.kind == "evaluate":
            checkpoints += result.checkpoint_history
            evaluation = layout.evaluation_tags_of(result.tags)  # which tasks have no result, and why
        inputs += [d for d in data_inputs(stage) if d.context != "source"]  # the raw source: on its stage run
        if stage.kind == "train_policy":
            model_id = layout.logged_model_of(experiment_id, stage.key)
            models += [model_id] if model_id else []
    layout.finish_cell_run(run_id, {**summary, **costs}, checkpoints, _ms(max(t[1] for t in times)),
                           tags=evaluation, inputs=inputs, models=models)
    return run_id


# -- the live logger ---------------------------------------------------------------------------------

@dataclass
class _LiveStage:
    """A stage this process saw running, and how far its curve has been logged."""

    stage: Stage
    owner: str  # the cell whose run holds the live stage run
    attempt: str
    started_at: float
    folder: Path
    run_id: str | None
    offset: int = 0  # bytes of history.jsonl logged
    last_row: dict[str, float] = field(default_factory=dict)
    samples: list[tuple[float, float, float]] = field(default_factory=list)  # (time, done, tokens)
    warned: bool = False


class LiveLogger:
    """The driver's MLflow writer for one `run_grid`: a thread that follows running stages, finishes their
    runs at publication and logs ready cells. The main thread only posts events (`published`, `failed`)
    and calls `close()`; an error writing MLflow is raised there."""

    def __init__(self, grid: Grid, experiment_id: str, plans: list[CellPlan], summary: RunSummary,
                 echo: Callable[[str], None], view: ProgressView | None = None, poll_seconds: float = 1.0,
                 on_rows: RowsObserver | None = None):
        self.grid = grid
        self.experiment_id = experiment_id
        self.plans = plans  # the cells still to log, in grid order
        self.summary = summary
        self.echo = echo
        self.view = view
        self.poll_seconds = poll_seconds
        self.on_rows = on_rows
        self.watched: dict[str, Stage] = {}  # stages this run executes, until published or failed
        self.ended: set[str] = set()  # stages whose run was finished or failed here
        self.live: dict[str, _LiveStage] = {}
        self.cell_runs: dict[str, str] = {}  # cell -> its run, opened by this process
        self.logged: set[str] = set()
        self.error: BaseException | None = None
        self._events: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="harness-live-logger", daemon=True)
        self._closing: str | None = None
        self._summarized: set[str] = set()  # stages whose `done` line was shown
        self._summary_lock = threading.Lock()

    # -- main thread ------------------------------------------------------------------------------
    def start(self, stages: list[Stage]) -> None:
        """Watch `stages` (the ones this run executes) and log the cells that are already complete."""
        self.watched = {s.id: s for s in stages}
        self._events.put(("flush",))
        self._thread.start()

    def published(self, stage: Stage) -> None:
        self._raise_error()
        # Shown here, before the executor starts the stages that wait on this one: from the logger thread
        # it came after their `run` lines whenever logging the finished run to MLflow took a moment.
        self._show_summary(stage)
        self._events.put(("published", stage))

    def _show_summary(self, stage: Stage) -> None:
        """The stage's `done` line, once (from the main thread at its event, or from the logger thread
        when a poll sees it published first, e.g. by another process)."""
        if self.view is None:
            return
        from harness.console import stage_summary

        with self._summary_lock:  # held while printing: no progress line of the stage after its done line
            if stage.id in self._summarized:
                return
            self._summarized.add(stage.id)
            start, end = cache.record_times(cache.read_record(stage.kind, stage.key))
            metrics = json.loads((stage.path / "metrics.json").read_text())
            cells = [p.cell.name for p in self._users(stage)]
            self.view.event(stage_summary(stage.label, stage.key, cells, end - start, stage.kind, metrics))

    def failed(self, stage: Stage, message: str) -> None:
        self._raise_error()
        self._events.put(("failed", stage, message))

    def close(self, outcome: str = "done") -> None:
        """Finish: log what is ready, end the runs opened for cells or stages that did not finish
        (`outcome` "done"/"failed": FAILED, "interrupted": KILLED), stop the thread; raise its error."""
        self._events.put(("close", outcome))
        if self._thread.is_alive():
            self._thread.join()
        self._raise_error()

    def _raise_error(self) -> None:
        if self.error is not None:
            error, self.error = self.error, None
            raise RuntimeError(f"logging to MLflow failed: {type(error).__name__}: {error}") from error

    # -- logger thread ----------------------------------------------------------------------------
    def _loop(self) -> None:
        next_poll = 0.0
        while True:
            try:
                event = self._events.get(timeout=max(0.0, next_poll - time.monotonic()))
            except queue.Empty:
                event = None
            try:
                if event is not None:
                    self._handle(event)
                    if self._closing is not None:
                        return
                    continue  # drain queued events before the next poll
                self._poll()
                self._render()
            except Exception as exc:  # noqa: BLE001 - surfaced in the main thread (close / next event)
                logger.exception("live logger")
                self.error = exc
                if event is not None and event[0] == "close":
                    return
            next_poll = time.monotonic() + self.poll_seconds

    def _handle(self, event: tuple[Any, ...]) -> None:
        name = event[0]
        if name == "flush":
            self._flush_cells()
        elif name == "published":
            self._published(event[1])
        elif name == "failed":
            self._failed(event[1], event[2])
        elif name == "close":
            try:
                self._flush_cells()
            finally:
                self._end_unfinished(event[1])
                self._closing = event[1]

    def _owner(self, stage: Stage) -> CellPlan | None:
        return next((p for p in self.plans if any(s.id == stage.id for s in p.stages)), None)

    def _users(self, stage: Stage) -> list[CellPlan]:
        return [p for p in self.plans if any(s.id == stage.id for s in p.stages)]

    def _open_cell(self, plan: CellPlan, started_at: float) -> str | None:
        name = plan.cell.name
        if name not in self.cell_runs and name not in self.logged:
            run_id = layout.open_cell_run(self.experiment_id, cell_run_info(self.grid, plan), _ms(started_at))
            if run_id is None:  # logged meanwhile by another process
                self.logged.add(name)
                return None
            self.cell_runs[name] = run_id
        return self.cell_runs.get(name)

    def _poll(self) -> None:
        for stage_id, stage in list(self.watched.items()):
            if stage.complete:  # published (by this run's executor, whose event may come later, or another process)
                self._published(stage)
                continue
            state = cache.work_state(stage.kind, stage.key)
            live = self.live.get(stage_id)
            if state is None or not state.running or not state.attempt:
                if live is not None and state is not None and state.failure is not None \
                        and state.failure.get("attempt") == live.attempt:
                    self._follow(live, live.folder)  # the rows it wrote before it stopped, then its end
                    self._fail_live(live, str(state.failure.get("error", "failed")))  # e.g. under --fail-fast
                continue
            if live is None or live.attempt != state.attempt:
                live = self._start_live(stage, state)
            if live is not None:
                self._follow(live, live.folder)

    def _start_live(self, stage: Stage, state: cache.WorkState) -> _LiveStage | None:
        owner = self._owner(stage)
        if owner is None:
            return None
        started = float((state.writer or {}).get("started_at") or time.time())
        for plan in self._users(stage):
            self._open_cell(plan, started)
        parent = self.cell_runs.get(owner.cell.name)
        run_id = None
        if parent is not None:
            run_id = layout.open_stage_run(self.experiment_id, parent, stage_run_info(stage, state.attempt),
                                           _ms(started))
        live = _LiveStage(stage, owner.cell.name, str(state.attempt), started, state.path, run_id)
        self.live[stage.id] = live
        return live

    def _follow(self, live: _LiveStage, folder: Path) -> None:
        """Log the complete lines of the stage's history.jsonl written since the last call."""
        path = folder / STEP_HISTORY_FILE
        try:
            with path.open("rb") as fh:
                fh.seek(live.offset)
                chunk = fh.read()
        except FileNotFoundError:
            chunk = b""
        complete = chunk[: chunk.rfind(b"\n") + 1]
        if complete:
            rows = [json.loads(line) for line in complete.splitlines() if line.strip()]
            if rows and live.run_id is not None:
                try:
                    layout.log_steps(live.run_id, rows)
                except Exception as exc:  # noqa: BLE001 - a busy store: retried at the next poll
                    if not live.warned:
                        logger.warning("live metrics of %s not logged yet (%s); retrying", live.stage.id, exc)
                        live.warned = True
                    return
            live.offset += len(complete)
            if rows and self.on_rows is not None:
                self.on_rows(live.stage, live.attempt, rows)
            for row in rows:
                live.last_row.update({k: v for k, v in row.items() if k not in ("step", tracking.WALL_TIME_KEY)})
                live.last_row["step"] = row.get("step", 0)

    def _published(self, stage: Stage) -> None:
        if stage.id in self.ended:
            return  # seen published at a poll before its event came
        self.watched.pop(stage.id, None)
        self.ended.add(stage.id)
        live = self.live.pop(stage.id, None)
        record = cache.read_record(stage.kind, stage.key)
        start, end = cache.record_times(record)
        owner = self._owner(stage)
        result = stage_result(stage)
        if owner is not None:
            for plan in self._users(stage):  # each cell using it spans its work, as when it is seen running
                self._open_cell(plan, start)
            parent = self.cell_runs.get(owner.cell.name)
            if live is not None and live.run_id is not None and live.attempt == record.get("attempt"):
                self._follow(live, stage.path)  # the rest of its curve, from the published folder
                result.step_history = []
                layout.finish_stage_run(live.run_id, result, _ms(end))
            elif parent is not None:
                # Never seen running (too quick), or the attempt that published is not the one followed.
                layout.log_stage_run(self.experiment_id, parent, stage_run_info(stage), result, _ms(start), _ms(end))
                if self.on_rows is not None and result.step_history:
                    self.on_rows(stage, str(record.get("attempt", "")), result.step_history)
        self._show_summary(stage)
        self._flush_cells()

    def _failed(self, stage: Stage, message: str) -> None:
        if stage.id in self.ended:
            return  # its run was already marked FAILED (seen in its working folder)
        self.watched.pop(stage.id, None)
        live = self.live.pop(stage.id, None)
        state = cache.work_state(stage.kind, stage.key)
        if state is not None and not state.running and state.failure is None:
            cache.record_failure(stage.kind, stage.key, message, attempt=state.attempt)  # e.g. its worker died
        if live is None:
            # Failed before it was seen running: a FAILED run under its owner cell says so in MLflow too.
            owner = self._owner(stage)
            started = float(((state and state.writer) or {}).get("started_at") or time.time())
            parent = self._open_cell(owner, started) if owner is not None else None
            if parent is None:
                return
            run_id = layout.open_stage_run(self.experiment_id, parent, stage_run_info(stage, state and state.attempt),
                                           _ms(started))
            live = _LiveStage(stage, owner.cell.name, (state and state.attempt) or "", started,  # type: ignore[union-attr]
                              cache.work_dir(stage.kind, stage.key), run_id)
        self._follow(live, live.folder)
        self._fail_live(live, message)

    def _fail_live(self, live: _LiveStage, message: str) -> None:
        self.live.pop(live.stage.id, None)
        self.watched.pop(live.stage.id, None)
        self.ended.add(live.stage.id)
        if live.run_id is not None:
            layout.fail_stage_run(live.run_id, message, _ms(time.time()))

    def _flush_cells(self) -> None:
        for plan in self.plans:
            name = plan.cell.name
            # Published, and its publication handled here (a live run is finished before its cell is logged).
            if name in self.logged or not all(s.complete and s.id not in self.watched for s in plan.stages):
                continue
            run_id = log_cell(self.grid, self.experiment_id, plan)
            self.logged.add(name)
            self.cell_runs.pop(name, None)
            if run_id:
                self.summary.logged_cells.append(name)
                self.summary.cell_run_ids[name] = run_id
                self.echo(f"cell {name}: logged to MLflow run {run_id}")

    def _end_unfinished(self, outcome: str) -> None:
        status = "KILLED" if outcome == "interrupted" else "FAILED"
        now = _ms(time.time())
        for live in list(self.live.values()):
            self._follow(live, live.folder)
            if live.run_id is not None:
                layout.fail_stage_run(live.run_id, "the run stopped before this stage finished", now) \
                    if status == "FAILED" else layout.end_unfinished_run(live.run_id, status, now)
        self.live.clear()
        for run_id in self.cell_runs.values():
            layout.end_unfinished_run(run_id, status, now)
        self.cell_runs.clear()

    # -- terminal ---------------------------------------------------------------------------------
    def _render(self) -> None:
        if self.view is None:
            return
        with self._summary_lock:  # a stage whose done line was shown is no longer running
            self.view.running([self._line(live) for live in self.live.values()
                               if live.stage.id in self.watched and live.stage.id not in self._summarized])

    def _line(self, live: _LiveStage) -> StageLine:
        from harness.console import StageLine

        now = time.time()
        state = progress.read(live.folder)
        done = state.get("done", live.last_row.get("step"))
        tokens = float(state.get("tokens_trained", 0) or 0) + float(state.get("tokens_generated", 0) or 0)
        if done is not None and state:
            if not live.samples or live.samples[-1][1] != done:
                live.samples.append((float(state.get("updated_at", now)), float(done), tokens))
            # The rate over the last two minutes, or over the last two steps when a step takes longer.
            recent = [s for s in live.samples if now - s[0] <= 120]
            live.samples = recent if len(recent) >= 2 else live.samples[-2:]
        rate = tok_rate = None
        if len(live.samples) >= 2:
            (t0, d0, k0), (t1, d1, k1) = live.samples[0], live.samples[-1]
            if t1 > t0:
                rate, tok_rate = (d1 - d0) / (t1 - t0), (k1 - k0) / (t1 - t0)
        total = state.get("total")
        eta = (float(total) - float(done)) / rate if rate and total and done is not None else None
        users = [p.cell.name for p in self._users(live.stage)]
        return StageLine(label=live.stage.label, key=live.stage.key, cells=users, done=done, total=total,
                         unit=state.get("unit", "step"), phase=state.get("phase"), metrics=dict(live.last_row),
                         rate=rate, tokens_rate=tok_rate or None, eta_seconds=eta, elapsed_seconds=now - live.started_at)
