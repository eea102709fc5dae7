"""Running one study's trials in this process (`SweepWorker`): each trial's parameters become a one-cell
grid run by `run_grid`; a pruned trial's training is stopped while it trains (`TrainingReporter`); the
objective values are read from the cell's MLflow run."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from harness import tracking
from harness.sweep.optuna_factories import make_pruner, make_sampler, redact, suggest
from harness.sweep.spec import SweepError, SweepFile, trial_grid
from harness.sweep.study import find_study_run, log_pruned_trial, logged_trial_run, nest_trial_run

SUITE_AVERAGE = "suite_average"  # objective metric: mean of `<task>/score` over the cell's eval tasks


@dataclass
class SweepWorker:
    """Runs trials of one study in this process."""

    spec: SweepFile
    study_name: str
    partition: dict[str, Any]
    storage: Any
    storage_url: str
    backend: str = "local"
    backend_options: dict[str, Any] = field(default_factory=dict)
    worker_index: int = 0
    echo: Callable[[str], None] = print

    def __post_init__(self) -> None:
        import optuna

        self.experiment_id = tracking.setup_experiment(self.spec.experiment)
        self.study_run_id = find_study_run(self.experiment_id, self.study_name)
        try:
            existing = len(optuna.load_study(study_name=self.study_name, storage=self.storage).trials)
        except KeyError:
            raise SweepError(f"study {self.study_name!r} does not exist in {redact(self.storage_url)}: start the "
                             "sweep without --join first (it creates the study before workers start)") from None
        sampler = make_sampler(self.spec.sampler, self.spec.search, self.worker_index, existing)
        self.study = optuna.load_study(study_name=self.study_name, storage=self.storage, sampler=sampler,
                                       pruner=make_pruner(self.spec.pruner))
        self.sign = 1.0
        pruner = self.spec.pruner
        if pruner is not None and pruner.direction != self.spec.objective_list[0].direction:
            self.sign = -1.0

    def optimize(self, n_trials: int) -> None:
        import optuna
        from optuna.trial import TrialState

        if n_trials <= 0:
            return
        guard = optuna.study.MaxTrialsCallback(self.spec.n_trials, states=(TrialState.COMPLETE, TrialState.PRUNED))
        self.study.optimize(self.objective, n_trials=n_trials, callbacks=[guard], gc_after_trial=True)

    # -- one trial ------------------------------------------------------------------------------
    def objective(self, trial: Any) -> float | list[float]:
        import optuna

        from harness.planning import plan_cell

        params = {name: suggest(trial, name, param) for name, param in self.spec.search.items()}
        twin = self._wait_for_twin(trial, params)
        grid = trial_grid(self.spec, self.partition, params)
        cell = grid.cells[0]
        plan = plan_cell(cell)
        trial.set_user_attr("cell", cell.name)
        trial.set_user_attr("cell_key", plan.key)
        trial.set_user_attr("worker", self.worker_index)
        if twin is not None:
            self.echo(f"trial {trial.number}: same parameters as trial {twin.number}, reusing its cell {cell.name}")
        else:
            self.echo(f"trial {trial.number}: {params} -> cell {cell.name}")
        from harness.runner import run_grid

        reporter = None
        if self.spec.pruner is not None and self.spec.pruner.name != "none" and plan.stage("train_policy"):
            reporter = TrainingReporter(trial, self.spec.pruner.metric, self.sign, plan.stage("train_policy"),
                                        f"pruned by study {self.study_name} trial {trial.number}", self.echo)
        train = plan.stage("train_policy")
        if reporter is not None and train.complete:  # trained before (a twin, a resumed sweep): its whole curve
            reporter(train, "", [json.loads(line) for line in (train.path / "history.jsonl").read_text().splitlines()
                                 if line.strip()] if (train.path / "history.jsonl").exists() else [])
        try:
            if reporter is None or reporter.pruned_at is None:
                run_grid(grid, backend=self.backend, echo=self.echo, backend_options=self.backend_options,
                         on_rows=reporter)
        except Exception:
            if reporter is None or reporter.pruned_at is None:
                raise
            # The train stage stopped on the pruner's request: kept as a checkpoint, never published.
        if reporter is not None:
            reporter.check_reported()
            if reporter.pruned_at is not None:
                # Logged in the pruner metric's own sign (the study sees it negated when directions differ).
                log_pruned_trial(self.experiment_id, self.study_run_id, self.study_name, trial.number, cell, plan.key,
                                 train.key, self.spec.pruner.metric,  # type: ignore[union-attr]
                                 [(s, self.sign * v) for s, v in reporter.reported])
                raise optuna.TrialPruned(f"pruned at step {reporter.pruned_at}")
        run = logged_trial_run(self.experiment_id, cell, plan.key)
        nest_trial_run(run.info.run_id, self.study_run_id, self.study_name, trial.number, cell, "COMPLETE")
        trial.set_user_attr("mlflow_run_id", run.info.run_id)
        values = [metric_value(run.data.metrics, o.metric, cell.config.eval.tasks, cell.name)
                  for o in self.spec.objective_list]
        self.echo(f"trial {trial.number}: {dict(zip([o.metric for o in self.spec.objective_list], values))}")
        return values[0] if len(values) == 1 else values

    def _wait_for_twin(self, trial: Any, params: dict[str, Any]) -> Any:
        """Another trial with the same parameters (a grid sampler in two workers, a re-queued trial):
        wait until it is no longer running so the cell is computed and logged once, then reuse it."""
        from optuna.trial import TrialState

        while True:
            twins = [t for t in self.study.get_trials(deepcopy=False)
                     if t.number != trial.number and t.params == params
                     and t.state in (TrialState.RUNNING, TrialState.COMPLETE)]
            running = [t for t in twins if t.state == TrialState.RUNNING]
            # The lower-numbered of two simultaneous twins computes; the other waits for it.
            if not any(t.number < trial.number for t in running):
                return next((t for t in twins if t.state == TrialState.COMPLETE), None)
            time.sleep(2.0)


@dataclass
class TrainingReporter:
    """The live channel's observer (`run_grid(on_rows=...)`, `harness.live`) of one trial: each new step of
    the trial's train_policy stage that has the pruner's metric is reported to Optuna as it is logged
    (negated when the pruner's direction differs from the study's); when the pruner says prune, a stop
    request goes to the stage's working folder (`harness.resume.request_stop`): its trainer saves a resume
    checkpoint after the current step and ends, and the stage is never published."""

    trial: Any
    metric: str
    sign: float
    stage: Any  # the trial's train_policy Stage
    reason: str
    echo: Callable[[str], None] = print
    reported: list[tuple[int, float]] = field(default_factory=list)
    pruned_at: int | None = None
    keys_seen: set[str] = field(default_factory=set)
    error: Exception | None = None

    def __call__(self, stage: Any, attempt: str, rows: list[dict[str, Any]]) -> None:
        if stage.id != self.stage.id or self.pruned_at is not None:
            return
        from harness import cache, resume

        done = {step for step, _ in self.reported}
        try:
            for row in rows:
                self.keys_seen.update(row)
                if self.metric not in row or int(row["step"]) in done:  # a resumed attempt replays its first steps
                    continue
                step, value = int(row["step"]), self.sign * float(row[self.metric])
                self.trial.report(value, step)
                self.reported.append((step, value))
                done.add(step)
                if self.trial.should_prune():
                    self.pruned_at = step
                    self.echo(f"trial {self.trial.number}: pruned at step {step} "
                              f"({self.metric} = {row[self.metric]:.4g})")
                    resume.request_stop(cache.work_dir(stage.kind, stage.key), f"{self.reason} at step {step}")
                    return
        except Exception as exc:  # noqa: BLE001 - called in the driver's logger thread: raised by check_reported
            self.error = exc

    def check_reported(self) -> None:
        if self.error is not None:
            raise SweepError(f"reporting {self.metric!r} to the study failed: {self.error}") from self.error
        if not self.reported:
            raise SweepError(f"pruner.metric {self.metric!r} is not in the train stage's history "
                             f"({self.stage.id}); history keys: {sorted(self.keys_seen - {'step', 'wall_time'})}")


def metric_value(metrics: dict[str, float], metric: str, tasks: list[str], cell: str) -> float:
    if metric == SUITE_AVERAGE:
        scores = [metrics[f"{task}/score"] for task in tasks if f"{task}/score" in metrics]
        if not scores:
            raise SweepError(f"objective {SUITE_AVERAGE}: cell {cell} has no `<task>/score` metric "
                             f"(tasks {tasks} produced none)")
        return sum(scores) / len(scores)
    if metric not in metrics:
        raise SweepError(f"objective metric {metric!r} was not logged for cell {cell}; logged metrics: "
                         f"{', '.join(sorted(metrics))}")
    value = float(metrics[metric])
    if not math.isfinite(value):
        raise SweepError(f"objective metric {metric!r} of cell {cell} is {value}")
    return value
