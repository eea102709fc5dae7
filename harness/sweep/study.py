"""A sweep's studies and their MLflow bookkeeping (all of it through `harness.mlflow_layout`): the process
that starts the sweep creates each Optuna study and its parent run and re-queues trials a stopped sweep
left running, before any worker starts; trial runs are nested under the parent run; the summary (best
trial or Pareto front) is logged on it at the end."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness import mlflow_layout as layout
from harness import tracking
from harness.grid import Cell
from harness.sweep.optuna_factories import redact
from harness.sweep.spec import SweepError, SweepFile, study_names


def ensure_study_run(spec: SweepFile, experiment_id: str, study: str, partition: dict[str, Any],
                     storage_url: str, source: Path | None) -> str:
    """The study's parent run, created on first use (call before workers start)."""
    params = {
        "sweep.search": json.dumps({k: v.model_dump(exclude_none=True) for k, v in spec.search.items()}),
        "sweep.objectives": json.dumps([o.model_dump() for o in spec.objective_list]),
        "sweep.sampler": json.dumps(spec.sampler.model_dump()),
        "sweep.pruner": json.dumps(spec.pruner.model_dump() if spec.pruner else None),
        **{f"sweep.axis.{k}": json.dumps(v, default=str) for k, v in partition.items()},
    }
    return layout.open_study_run(experiment_id, study, spec.experiment, redact(storage_url), params,
                                 str(source) if source is not None else None)


def find_study_run(experiment_id: str, study: str) -> str:
    run_id = layout.study_run_id(experiment_id, study)
    if run_id is None:
        raise SweepError(f"no MLflow parent run for study {study!r}: start the sweep without --join first "
                         "(it creates the study and its run before workers start)")
    return run_id


def logged_trial_run(experiment_id: str, cell: Cell, cell_key: str) -> Any:
    run = layout.logged_cell_run(experiment_id, cell.name, cell_key)
    if run is None:
        raise RuntimeError(f"cell {cell.name}: no FINISHED MLflow run after running it")
    return run


def kl_coefficient(cell: Cell) -> Any:
    from harness.algorithms import ALGORITHMS

    algo = cell.resolved().get("algorithm") or {}
    return ALGORITHMS.get(algo["name"]).kl_coefficient(algo) if algo else None


def nest_trial_run(run_id: str, study_run_id: str, study_name: str, trial_number: int, cell: Cell,
                   state: str) -> None:
    """Put a trial's cell run under the study's parent run, with the trial tags."""
    layout.nest_trial(run_id, study_run_id, study_name, trial_number, state, kl_coefficient(cell))


def log_pruned_trial(experiment_id: str, study_run_id: str, study_name: str, trial_number: int, cell: Cell,
                     cell_key: str, train_key: str, metric: str, reported: list[tuple[int, float]]) -> None:
    """A KILLED run under the study: the pruned trial's params and the values it reported (`reported`,
    in the pruner metric's own sign)."""
    layout.log_pruned_trial(experiment_id, study_run_id, study_name, trial_number, cell.name, cell_key, train_key,
                            tracking.flatten(cell.resolved()), f"pruner/{metric}", reported, kl_coefficient(cell))


def create_studies(spec: SweepFile, storage: Any, storage_url: str, source: Path | None,
                   echo: Callable[[str], None] = print) -> dict[str, int]:
    """Create (or load) every study and its MLflow parent run; re-queue trials a stopped sweep left
    RUNNING. Returns study name -> trials still to run. Call before any worker starts."""
    import optuna
    from optuna.trial import TrialState

    experiment_id = tracking.setup_experiment(spec.experiment)
    choice = spec._profile
    layout.describe_experiment(experiment_id, layout.ExperimentInfo(
        grid_file=str(source) if source is not None else None, profile=choice.name if choice else None,
        description=spec.description, device_profile=choice.device_profile if choice else None,
        command="harness sweep"))
    directions = [o.direction for o in spec.objective_list]
    remaining: dict[str, int] = {}
    for study_name, partition in study_names(spec):
        study = optuna.create_study(study_name=study_name, storage=storage, load_if_exists=True,
                                    directions=directions)
        if [d.name.lower() for d in study.directions] != directions:
            raise SweepError(f"study {study_name!r} exists with directions "
                             f"{[d.name.lower() for d in study.directions]}, the sweep file asks {directions}: "
                             "use another study_name (or --storage) for a different objective")
        study.set_user_attr("sweep", json.dumps({"search": sorted(spec.search), "objectives":
                                                 [o.metric for o in spec.objective_list]}))
        study_id = storage.get_study_id_from_name(study_name)
        for stale in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, stale.number)
            storage.set_trial_state_values(trial_id, TrialState.FAIL)
            study.enqueue_trial(stale.params, user_attrs={"requeued_from": stale.number})
            echo(f"study {study_name}: trial {stale.number} was left running by a stopped sweep: "
                 f"re-queued with the same parameters")
        ensure_study_run(spec, experiment_id, study_name, partition, storage_url, source)
        done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
        remaining[study_name] = max(0, spec.n_trials - done)
        echo(f"study {study_name}: {done} trial(s) done, {remaining[study_name]} to run "
             f"(storage {redact(storage_url)})")
    return remaining


def log_study_summary(spec: SweepFile, storage: Any, study_name: str) -> dict[str, Any]:
    """Best params / value (single objective) or the Pareto front (several), as tags, metrics and a
    `study.json` artifact on the parent run; cell runs on the front are flagged (`mlflow_layout.log_study_summary`)."""
    import optuna
    from optuna.trial import TrialState

    experiment_id = tracking.setup_experiment(spec.experiment)
    run_id = find_study_run(experiment_id, study_name)
    study = optuna.load_study(study_name=study_name, storage=storage)
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    summary: dict[str, Any] = {
        "study": study_name, "objectives": [o.model_dump() for o in spec.objective_list],
        "n_trials_target": spec.n_trials,
        "trials": [{"number": t.number, "state": t.state.name, "params": t.params, "values": t.values,
                    "cell": t.user_attrs.get("cell"), "mlflow_run_id": t.user_attrs.get("mlflow_run_id"),
                    "intermediate_values": t.intermediate_values} for t in trials],
    }
    logged = layout.StudySummary(metrics={
        "study/n_complete": float(len(complete)),
        "study/n_pruned": float(sum(t.state == TrialState.PRUNED for t in trials)),
        "study/n_failed": float(sum(t.state == TrialState.FAIL for t in trials)),
    }, document=summary)
    if complete and len(spec.objective_list) == 1:
        best = study.best_trial
        summary["best"] = {"number": best.number, "value": best.value, "params": best.params,
                           "cell": best.user_attrs.get("cell")}
        logged.best_trial, logged.best_cell, logged.best_params = best.number, best.user_attrs.get("cell"), best.params
        logged.metrics[f"best/{spec.objective_list[0].metric}"] = float(best.value)
    elif complete:
        front = study.best_trials
        front_numbers = {t.number for t in front}
        summary["pareto_front"] = [{"number": t.number, "values": t.values, "params": t.params,
                                    "cell": t.user_attrs.get("cell")} for t in front]
        logged.pareto_front_trials = sorted(front_numbers)
        logged.front_flags = {t.user_attrs["mlflow_run_id"]: t.number in front_numbers for t in complete
                              if t.user_attrs.get("mlflow_run_id")}
    finished = len([t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)])
    logged.finished = finished >= spec.n_trials
    layout.log_study_summary(run_id, logged)
    return summary

