"""Optuna sweeps over any config field (the KL coefficient first), each trial a grid cell.

    harness sweep ablations/fig4_kl_sweep.yaml [--profile NAME] [--storage URL] [--workers N] [--n-trials N]
                  [--backend local|ray] [--set base.model=tiny-random-llama ...]

A sweep file is a grid file's `base` (and optional `axes`) plus a search block:

    experiment: kl_sweep
    base: {model: ..., algorithm: {name: ppo, ...}, reward_model: {...}, eval: {...}}
    axes: {reward_model.dataset.max_rows: [64, 1024]}   # optional: one study per combination
    search:
      algorithm.kl_coef: {type: float, low: 0.005, high: 0.5, log: true}
      algorithm.learning_rate: {type: float, low: 1.0e-6, high: 1.0e-4, log: true}
      algorithm.num_epochs: {type: int, low: 1, high: 3}
      algorithm.loss_type: {type: categorical, choices: [sigmoid, ipo]}
    objective: {metric: smoke_lowercase/clean_success_rate, direction: maximize}
    # or objectives: [{metric: rm_reward/mean, direction: maximize},
    #                 {metric: policy_kl/kl_mean, direction: minimize}]   -> Pareto front
    n_trials: 12                 # per study, counted over every run of the sweep (resumable)
    sampler: {name: tpe, seed: 0}            # tpe | random | grid | nsgaii | qmc (+ options)
    pruner: {name: median, metric: train/loss, direction: minimize,   # optional; median | percentile |
             options: {n_startup_trials: 2}}       # successive_halving | hyperband | threshold | none
    storage: null                # default: SQLite under results/optuna/
    baseline: true               # also log the SFT cell once (the "no training" reference)

How it maps onto the grid machinery (nothing of the runner is duplicated):
- a trial's parameters are set on `base` as single-valued axes, so `build_grid` validates the trial
  and names its cell like any grid cell (`algorithm.kl_coef=0.031`); its stages are planned by
  `plan_cell`, cached in the content-addressed store, executed by a backend and logged by `run_grid`
  / `log_cell`, i.e. the same MLflow cell run (with stage child runs) a grid would produce;
- that cell run is then nested under the study's parent run by setting `mlflow.parentRunId` and the
  trial tags. Both are plain tag writes, so a rerun after a crash at any point converges: the cell is
  found by (name, content key) and skipped or resumed by `log_cell`, the tags are written again;
- the study's parent run is created once per study, by the process that creates the Optuna study,
  before any worker starts (two workers racing to create either would duplicate it).

Resuming: rerunning the same command loads the study and runs only the trials still missing. Trials
left RUNNING by a stopped sweep are marked FAIL and their parameters queued again, so the same cell
is picked up (its finished stages are cached, its MLflow run is resumed). Only the process started
without `--join` does that, so never start one while `--join` workers still run on the study.

Pruning: when a `pruner` is set, the trial's train stage reports its steps while it trains
(`TrainingReporter`, the observer of `run_grid`'s live rows: the same values the driver logs to MLflow;
negated when `pruner.direction` differs from the study's, as Optuna compares in the study's direction).
When the pruner says prune, a stop request goes to the stage's working folder (`harness.resume`): the
trainer saves a resume checkpoint after the current step and ends, the stage is never published and the
evaluation never runs. A pruned trial is logged as a KILLED run under the study with its params and
reported values. Checkpoint evaluations (`eval.checkpoint_every`) come after training, in the evaluate
stage: they are not reported.

Several workers: `--workers N` starts N worker processes on the study after creating it (use a
JournalStorage file or PostgreSQL: `--storage journal:results/optuna/kl.journal` or
`--storage postgresql://...`); workers on other machines join with `--join --n-trials K`. Each worker's
sampler seed mixes the file's seed, the worker index and the study's trial count: identically seeded
workers (or a resumed sweep) would otherwise draw identical parameters. A trial whose parameters another trial already has waits for that one and reuses its
values instead of computing the same cell twice.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import math
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from harness import mlflow_layout as layout
from harness import tracking
from harness.cli_errors import print_error
from harness.config_fields import Seed
from harness.dotted_paths import set_dotted
from harness.grid import Cell, GridError, build_grid, cell_name, read_yaml

SUITE_AVERAGE = "suite_average"  # objective metric: mean of `<task>/score` over the cell's eval tasks


class SweepError(ValueError):
    """Invalid sweep file or sweep state; the message names the field."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SearchParam(Strict):
    type: Literal["float", "int", "categorical"]
    low: float | None = Field(default=None, allow_inf_nan=False)
    high: float | None = Field(default=None, allow_inf_nan=False)
    log: bool = False
    step: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> SearchParam:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical parameter needs a non-empty `choices` list")
            if self.low is not None or self.high is not None:
                raise ValueError("a categorical parameter takes `choices`, not `low`/`high`")
            return self
        if self.low is None or self.high is None:
            raise ValueError(f"a {self.type} parameter needs `low` and `high`")
        if self.choices is not None:
            raise ValueError(f"a {self.type} parameter takes `low`/`high`, not `choices` "
                             "(use type: categorical for a list of values)")
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) is greater than high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"log: true needs low > 0, got {self.low}")
        if self.log and self.step is not None:
            raise ValueError("`step` cannot be combined with log: true (Optuna does not support it)")
        if self.type == "int" and (self.low != int(self.low) or self.high != int(self.high)
                                   or (self.step is not None and self.step != int(self.step))):
            raise ValueError("an int parameter needs integer `low`, `high` and `step`")
        return self

    def probe_values(self) -> list[Any]:
        """Values that must all make a valid cell (checked before anything runs)."""
        if self.type == "categorical":
            return list(self.choices or [])
        cast = int if self.type == "int" else float
        return [cast(self.low), cast(self.high)]


class ObjectiveSpec(Strict):
    metric: str = Field(min_length=1)
    direction: Literal["maximize", "minimize"] = "maximize"


class SamplerSpec(Strict):
    name: Literal["tpe", "random", "grid", "nsgaii", "qmc"] = "tpe"
    seed: Seed | None = 0
    options: dict[str, Any] = Field(default_factory=dict)


class PrunerSpec(Strict):
    name: Literal["median", "percentile", "successive_halving", "hyperband", "threshold", "none"] = "median"
    metric: str = Field(default="train/loss", min_length=1)  # a key of the train stage's history.jsonl
    direction: Literal["maximize", "minimize"] = "minimize"
    options: dict[str, Any] = Field(default_factory=dict)


class SweepFile(Strict):
    experiment: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")
    description: str = ""
    base: dict[str, Any] = Field(default_factory=dict)
    axes: dict[str, list[Any]] = Field(default_factory=dict)
    search: dict[str, SearchParam]
    objective: ObjectiveSpec | None = None
    objectives: list[ObjectiveSpec] | None = None
    n_trials: int = Field(ge=1)
    sampler: SamplerSpec = Field(default_factory=SamplerSpec)
    pruner: PrunerSpec | None = None
    storage: str | None = None
    study_name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.\-]+$")
    baseline: bool = False
    _profile: Any = PrivateAttr(default=None)  # harness.profiles.ProfileChoice of the file as loaded

    @model_validator(mode="after")
    def _checks(self) -> SweepFile:
        if not self.search:
            raise ValueError("search: give at least one parameter")
        if (self.objective is None) == (self.objectives is None):
            raise ValueError("give exactly one of `objective` (one metric) or `objectives` (a list: Pareto front)")
        if self.objectives is not None and len(self.objectives) < 2:
            raise ValueError("objectives: give at least two (or use `objective` for one)")
        if self.objectives is not None and self.pruner is not None and self.pruner.name != "none":
            raise ValueError("pruner: Optuna prunes single-objective studies only; remove it or use `objective`")
        overlap = sorted(set(self.search) & set(self.axes))
        if overlap:
            raise ValueError(f"search and axes both set {overlap}: a field is either searched or an axis")
        if self.sampler.name == "grid":
            not_categorical = [k for k, p in self.search.items() if p.type != "categorical"]
            if not_categorical:
                raise ValueError(f"sampler grid: every searched parameter must be type: categorical with "
                                 f"`choices`; not: {not_categorical}")
        return self

    @property
    def objective_list(self) -> list[ObjectiveSpec]:
        return self.objectives if self.objectives is not None else [self.objective]  # type: ignore[list-item]


def _format_errors(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-"))
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"{loc}: {msg}" if loc else msg)
    return "\n  ".join(lines)


def parse_sweep(raw: dict[str, Any], where: str = "<sweep>") -> SweepFile:
    """Validate a sweep file, including every trial it can produce (with each parameter at its
    bounds / each choice), so a bad field fails before any compute."""
    try:
        spec = SweepFile.model_validate(raw)
    except ValidationError as exc:
        raise SweepError(f"{where}: invalid sweep file:\n  {_format_errors(exc)}") from None
    for partition in partitions(spec):
        for name, param in spec.search.items():
            for value in param.probe_values():
                try:
                    trial_grid(spec, partition, {name: value})
                except GridError as exc:
                    # The trial's parameters are single-valued axes of its grid: name them as search fields.
                    message = str(exc).split(":", 1)[-1].strip().removeprefix("invalid grid:").strip()
                    message = message.replace(f"axes.{name}[0]", f"search.{name}")
                    raise SweepError(f"{where}: search.{name} = {value!r} makes an invalid cell:\n  {message}") from None
    return spec


def load_sweep(path: str | Path, overrides: list[str] | None = None, profile: str | None = None) -> SweepFile:
    """Read a sweep YAML with profile `profile` applied (`harness.profiles`; None = the file as written),
    then `overrides`, `dotted.key=yaml_value` strings."""
    from harness.profiles import apply_profile, locate_errors

    path = Path(path)
    raw = read_yaml(path, "sweep", SweepError) or {}
    if isinstance(raw, dict) and "search" not in raw and "base" in raw:
        raise SweepError(f"{path} has no `search` block: a grid file is run with `harness run {path}`; "
                         "a sweep file adds `search` and `objective` (see ablations/fig4_kl_sweep.yaml)")
    raw, choice = apply_profile(raw, profile, str(path), set(SweepFile.model_fields) | {"profiles"}, SweepError)
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SweepError(f"--set {item!r}: expected KEY=VALUE (e.g. base.model=tiny-random-llama)")
        _override(raw, key, yaml.safe_load(value))
    try:
        spec = parse_sweep(raw, str(path))
    except SweepError as exc:
        raise SweepError(locate_errors(str(exc), choice)) from None
    spec._profile = choice
    return spec


def _override(raw: dict[str, Any], key: str, value: Any) -> None:
    """`set_dotted`, except that the keys of `search` and `axes` are themselves dotted config paths:
    `search.algorithm.kl_coef.high=0.5` sets `high` of the parameter `algorithm.kl_coef`."""
    for section in ("search", "axes"):
        if key.startswith(section + "."):
            rest = key[len(section) + 1:]
            block = raw.setdefault(section, {})
            for name in sorted(block, key=len, reverse=True):
                if rest.startswith(name + ".") and isinstance(block[name], dict):
                    set_dotted(block[name], rest[len(name) + 1:], value)
                    return
            block[rest] = value
            return
    set_dotted(raw, key, value)


def partitions(spec: SweepFile) -> list[dict[str, Any]]:
    """One dict of axis values per study (a single empty one when there are no axes)."""
    names = list(spec.axes)
    return [dict(zip(names, combo)) for combo in itertools.product(*(spec.axes[k] for k in names))]


def study_names(spec: SweepFile) -> list[tuple[str, dict[str, Any]]]:
    base = spec.study_name or spec.experiment
    return [(f"{base}[{cell_name(p)}]" if p else base, p) for p in partitions(spec)]


def trial_grid(spec: SweepFile, partition: dict[str, Any], params: dict[str, Any]):
    """The one-cell grid of a trial: base + axis values + parameters, each as a single-valued axis
    (so the cell is validated and named exactly as a grid cell with those overrides)."""
    axes = {key: [value] for key, value in {**partition, **params}.items()}
    return build_grid({"experiment": spec.experiment, "description": spec.description,
                       "base": copy.deepcopy(spec.base), "axes": axes, "baseline": False})


# ---------------------------------------------------------------------------------------------
# Optuna storage, samplers, pruners
# ---------------------------------------------------------------------------------------------

def default_storage() -> str:
    from harness.paths import results_dir

    folder = results_dir() / "optuna"
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'studies.db'}"


def redact(url: str) -> str:
    """A storage URL without its password (for logs, tags and messages)."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def open_storage(url: str):
    """`journal:PATH` (or a path ending in .journal/.log) -> JournalStorage on a file (safe for
    several processes, also on NFS with the symlink lock); anything else is an RDB URL
    (sqlite:///..., postgresql://user@host/db)."""
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    if url.startswith("journal:") or url.endswith((".journal", ".log")):
        path = Path(url.removeprefix("journal:")).expanduser().resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path))))
    if "://" not in url:
        raise SweepError(f"storage {redact(url)!r}: expected journal:PATH, sqlite:///PATH or postgresql://...")
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        Path(url.split(":///", 1)[1]).parent.mkdir(parents=True, exist_ok=True)
        # Several local processes on one SQLite file wait for the write lock instead of failing at once.
        engine_kwargs = {"connect_args": {"timeout": 120}}
    return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)


def make_sampler(spec: SamplerSpec, search: dict[str, SearchParam], worker_index: int = 0, n_existing: int = 0):
    """The study's sampler for one worker. Its seed mixes the file's seed with the worker index and
    the number of trials the study already has: a resumed sweep or a second worker seeded like the
    first would otherwise replay the same random draws, i.e. the same parameters."""
    import numpy as np
    import optuna

    seed = None
    if spec.seed is not None:
        seed = int(np.random.SeedSequence([spec.seed, worker_index, n_existing]).generate_state(1)[0] % 2**31)
    options = dict(spec.options)
    try:
        if spec.name == "tpe":
            return optuna.samplers.TPESampler(seed=seed, **options)
        if spec.name == "random":
            return optuna.samplers.RandomSampler(seed=seed, **options)
        if spec.name == "nsgaii":
            return optuna.samplers.NSGAIISampler(seed=seed, **options)
        if spec.name == "qmc":
            return optuna.samplers.QMCSampler(seed=spec.seed, **options)  # one shared sequence across workers
        return optuna.samplers.GridSampler({k: list(p.choices or []) for k, p in search.items()}, seed=seed,
                                           **options)
    except TypeError as exc:
        raise SweepError(f"sampler.options: {exc}") from None


def make_pruner(spec: PrunerSpec | None):
    import optuna

    if spec is None or spec.name == "none":
        return optuna.pruners.NopPruner()
    classes = {"median": optuna.pruners.MedianPruner, "percentile": optuna.pruners.PercentilePruner,
               "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
               "hyperband": optuna.pruners.HyperbandPruner, "threshold": optuna.pruners.ThresholdPruner}
    try:
        return classes[spec.name](**spec.options)
    except TypeError as exc:
        raise SweepError(f"pruner.options: {exc}") from None


def suggest(trial: Any, name: str, param: SearchParam) -> Any:
    if param.type == "categorical":
        return trial.suggest_categorical(name, param.choices)
    if param.type == "int":
        return trial.suggest_int(name, int(param.low), int(param.high), log=param.log,  # type: ignore[arg-type]
                                 step=int(param.step or 1))
    return trial.suggest_float(name, float(param.low), float(param.high), log=param.log,  # type: ignore[arg-type]
                               step=param.step)


# ---------------------------------------------------------------------------------------------
# MLflow: the study's parent run, trial nesting, summaries
# ---------------------------------------------------------------------------------------------

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


def _cell_run(experiment_id: str, cell: Cell, cell_key: str) -> Any:
    run = layout.logged_cell_run(experiment_id, cell.name, cell_key)
    if run is None:
        raise RuntimeError(f"cell {cell.name}: no FINISHED MLflow run after running it")
    return run


def _kl_coefficient(cell: Cell) -> Any:
    from harness.algorithms import ALGORITHMS

    algo = cell.resolved().get("algorithm") or {}
    return ALGORITHMS.get(algo["name"]).kl_coefficient(algo) if algo else None


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


# ---------------------------------------------------------------------------------------------
# Running trials
# ---------------------------------------------------------------------------------------------

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
                self._log_pruned(trial, cell, plan, reporter.reported)
                raise optuna.TrialPruned(f"pruned at step {reporter.pruned_at}")
        run = _cell_run(self.experiment_id, cell, plan.key)
        self._nest(run.info.run_id, trial, cell, "COMPLETE")
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

    def _nest(self, run_id: str, trial: Any, cell: Cell, state: str) -> None:
        layout.nest_trial(run_id, self.study_run_id, self.study_name, trial.number, state, _kl_coefficient(cell))

    def _log_pruned(self, trial: Any, cell: Cell, plan: Any, reported: list[tuple[int, float]]) -> None:
        """A KILLED run under the study: the pruned trial's params and the values it reported."""
        layout.log_pruned_trial(
            self.experiment_id, self.study_run_id, self.study_name, trial.number, cell.name, plan.key,
            plan.stage("train_policy").key, tracking.flatten(cell.resolved()),
            f"pruner/{self.spec.pruner.metric}",  # type: ignore[union-attr]
            [(s, self.sign * v) for s, v in reported], _kl_coefficient(cell))


# ---------------------------------------------------------------------------------------------
# Study setup, resume, summaries: done by the one process that starts the sweep
# ---------------------------------------------------------------------------------------------

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


def _log_baseline(spec: SweepFile, backend: str, backend_options: dict[str, Any], echo: Callable[[str], None]) -> None:
    from harness.runner import run_grid

    config = {k: copy.deepcopy(v) for k, v in spec.base.items() if k in ("model", "eval", "seed", "judge")}
    grid = build_grid({"experiment": spec.experiment, "base": config, "baseline": True}, only="sft")
    run_grid(grid, backend=backend, echo=echo, backend_options=backend_options)


def _split(total: int, workers: int) -> list[int]:
    return [total // workers + (1 if i < total % workers else 0) for i in range(workers)]


def run_sweep(spec: SweepFile, storage_url: str | None = None, workers: int = 1, join: bool = False,
              worker_index: int = 0, n_trials: int | None = None, backend: str = "local",
              backend_options: dict[str, Any] | None = None, source: Path | None = None,
              worker_argv: list[str] | None = None, quotas: dict[str, int] | None = None,
              echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or resume, or join) a sweep. Returns {study name: summary} (empty for a --join worker).

    Without `join`: creates the studies and their parent runs, re-queues stale trials, logs the SFT
    baseline if asked, runs the trials in this process (workers=1) or in `workers` subprocesses, then
    logs the summaries. With `join`: runs up to `n_trials` trials per study on existing studies
    (`quotas`: per-study counts, set by the starting process for its subprocesses).
    `worker_argv` is the sweep's command line for the subprocesses (file and --set options).
    """
    storage_url = storage_url or spec.storage or default_storage()
    storage = open_storage(storage_url)
    backend_options = dict(backend_options or {})
    studies = study_names(spec)
    if join:
        for study_name, partition in studies:
            worker = SweepWorker(spec, study_name, partition, storage, storage_url, backend, backend_options,
                                 worker_index, echo)
            if quotas is not None:
                quota = int(quotas.get(study_name, 0))
            else:
                quota = n_trials if n_trials is not None else _remaining(worker.study, spec.n_trials)
            worker.optimize(quota)
        return {}

    remaining = create_studies(spec, storage, storage_url, source, echo)
    if n_trials is not None:
        remaining = {name: min(left, n_trials) for name, left in remaining.items()}
    if spec.baseline:
        _log_baseline(spec, backend, backend_options, echo)
    if workers <= 1:
        for study_name, partition in studies:
            SweepWorker(spec, study_name, partition, storage, storage_url, backend, backend_options, worker_index,
                        echo).optimize(remaining[study_name])
    else:
        if worker_argv is None:
            raise SweepError("workers > 1 needs the sweep's command line (worker_argv) to start the workers")
        _run_worker_processes(worker_argv, storage_url, workers, remaining, backend, backend_options, echo)
    return {name: log_study_summary(spec, storage, name) for name, _ in studies}


def _remaining(study: Any, target: int) -> int:
    from optuna.trial import TrialState

    return max(0, target - len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))))


def _run_worker_processes(worker_argv: list[str], storage_url: str, workers: int, remaining: dict[str, int],
                          backend: str, backend_options: dict[str, Any], echo: Callable[[str], None]) -> None:
    """Start `workers` `python -m harness.sweep ... --join` processes, splitting each study's
    remaining trials between them (so the total is exact), and wait for all of them."""
    quotas = {name: _split(left, workers) for name, left in remaining.items()}
    procs: list[subprocess.Popen] = []
    try:
        for index in range(workers):
            # Studies run one after another in a worker; a worker's quota is the same for each study
            # only when the splits agree, so pass the per-study quotas explicitly.
            per_study = json.dumps({name: q[index] for name, q in quotas.items()})
            cmd = [sys.executable, "-m", "harness.sweep", *worker_argv, "--join", "--worker-index", str(index),
                   "--storage", storage_url, "--quotas", per_study, "--backend", backend]
            if backend_options.get("address"):
                cmd += ["--ray-address", str(backend_options["address"])]
            procs.append(subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}))
            echo(f"worker {index}: pid {procs[-1].pid}, trials {per_study}")
        codes = [p.wait() for p in procs]
    except BaseException:
        for p in procs:  # do not leave workers running on the study
            if p.poll() is None:
                p.terminate()
        for p in procs:
            p.wait()
        raise
    failed = [i for i, code in enumerate(codes) if code != 0]
    if failed:
        raise RuntimeError(f"sweep worker(s) {failed} exited with codes {[codes[i] for i in failed]}")


# ---------------------------------------------------------------------------------------------
# CLI: `harness sweep ...` (add "harness.sweep" to harness.cli.CLI_MODULES) or `python -m harness.sweep`
# ---------------------------------------------------------------------------------------------

def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sweep", help="sweep YAML (a grid's base + search/objective blocks)")
    parser.add_argument("--storage", default=None, help="Optuna storage: journal:PATH, sqlite:///PATH or "
                        "postgresql://... (default: the file's `storage`, else SQLite under results/optuna/)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes on the study (use a journal "
                        "or PostgreSQL storage for more than one)")
    parser.add_argument("--n-trials", type=int, default=None, help="run at most this many trials per study now "
                        "(the file's n_trials stays the study's target)")
    parser.add_argument("--join", action="store_true", help="join an existing sweep as an extra worker")
    parser.add_argument("--worker-index", type=int, default=0, help="offsets the sampler seed of this worker")
    parser.add_argument("--quotas", default=None, help=argparse.SUPPRESS)  # per-study trial counts (internal)
    parser.add_argument("--backend", default="local", choices=["local", "ray"])
    parser.add_argument("--ray-address", default=None, help="ray backend: cluster address (default: local Ray)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a field of the sweep file (YAML value), e.g. base.model=tiny-random-llama")
    parser.add_argument("--dry-run", action="store_true", help="validate and print the studies, run nothing")
    parser.add_argument("--profile", default=None, metavar="NAME",
                        help="apply the file's profile NAME (paper, gpu, cpu, tiny, ...) before --set")
    parser.add_argument("--device-profile", default=None, metavar="NAME",
                        help="device of the --dry-run cost estimate (default: the profile's, else cpu-2core)")
    parser.add_argument("--usd-per-hour", type=float, default=None, metavar="RATE",
                        help="price of one device-hour for the estimate (default: the device's list price)")


def _probe_plans(spec: SweepFile) -> tuple[dict[str, Any], list[Any]]:
    """(the probe parameters, the plans of one trial per study at them): each searched field at its first
    probe value (what a trial reads does not depend on the searched values)."""
    from harness.runner import plan_grid

    probe = {name: param.probe_values()[0] for name, param in spec.search.items()}
    return probe, [plan for _, partition in study_names(spec) for plan in plan_grid(trial_grid(spec, partition, probe))]


def unresolved_sweep_inputs(spec: SweepFile) -> list[str]:
    """Data and models the sweep's trials need that this machine cannot provide (harness.resolution)."""
    from harness.resolution import unresolved_inputs

    choice = spec._profile
    return unresolved_inputs(_probe_plans(spec)[1], full_data=bool(choice and choice.full_data))


def describe_sweep_plan(spec: SweepFile, device: str | None, usd_per_device_hour: float | None) -> str:
    """`--dry-run`'s plan of one trial per study (each searched field at its first probe value), the
    inputs this machine lacks, and the cost of the studies' trials on `device` (n_trials each)."""
    from harness.cost import CostInputError, total
    from harness.cost_plan import DEFAULT_DEVICE, grid_cost
    from harness.resolution import unresolved_inputs

    choice = spec._profile
    probe, plans = _probe_plans(spec)
    lines = [f"plan of one trial per study at {probe}: {sum(len(p.stages) for p in plans)} stages"]
    full = bool(choice and choice.full_data)
    missing = unresolved_inputs(plans, full_data=full)
    if missing:
        lines.append(f"inputs not available on this machine ({len(missing)}; the sweep cannot start):")
        lines += ["  " + m.replace("\n", "\n  ") for m in missing]
    device = device or (choice.device_profile if choice else None) or DEFAULT_DEVICE
    try:
        found = grid_cost(plans, device, choice.launch if choice else {}, usd_per_device_hour, full_data=full)
    except CostInputError as exc:
        return "\n".join([*lines, f"cost estimate on {device}: not available: {exc}"])
    per_trial = total([e for _, e in found.stages if _.kind != "prepare_data"], "one trial per study")
    usd = "n/a" if per_trial.usd is None else f"${per_trial.usd * spec.n_trials:,.2f}"
    lines.append(f"cost on {found.device}: one trial per study {per_trial.flops:.3g} FLOPs, {per_trial.hours:.3g} h; "
                 f"x {spec.n_trials} trials: {per_trial.flops * spec.n_trials:.3g} FLOPs, "
                 f"{per_trial.device_hours * spec.n_trials:.3g} device-hours, {usd} (shared stages, such as the "
                 "reward models and the baseline, counted once per trial: an upper bound)")
    return "\n".join(lines)


def cmd_sweep(args: argparse.Namespace) -> int:
    try:
        spec = load_sweep(args.sweep, args.overrides, profile=args.profile)
    except SweepError as exc:
        print_error(exc, args)
        return 2
    if args.workers < 1:
        print("error: --workers must be >= 1", file=sys.stderr)
        return 2
    if args.dry_run:
        for name, partition in study_names(spec):
            print(f"study {name}: axes {partition or '-'}, search {sorted(spec.search)}, "
                  f"{spec.n_trials} trial(s), objectives {[o.metric for o in spec.objective_list]}")
        print(describe_sweep_plan(spec, args.device_profile, args.usd_per_hour))
        return 0
    if not args.join:
        from harness.resolution import format_unresolved

        missing = unresolved_sweep_inputs(spec)
        if missing:
            print(f"error: {format_unresolved(missing)}", file=sys.stderr)
            return 2
    options: dict[str, Any] = {}
    if args.backend == "ray" and args.ray_address:
        options["address"] = args.ray_address
    worker_argv = [args.sweep, *([f"--profile={args.profile}"] if args.profile else []),
                   *(f"--set={o}" for o in args.overrides)]
    try:
        summaries = run_sweep(spec, storage_url=args.storage, workers=args.workers, join=args.join,
                              worker_index=args.worker_index, n_trials=args.n_trials, backend=args.backend,
                              backend_options=options, source=Path(args.sweep), worker_argv=worker_argv,
                              quotas=json.loads(args.quotas) if args.quotas else None)
    except SweepError as exc:
        print_error(exc, args)
        return 2
    for name, summary in summaries.items():
        if "best" in summary:
            print(f"study {name}: best trial {summary['best']['number']} value {summary['best']['value']:.4g} "
                  f"params {summary['best']['params']}")
        elif "pareto_front" in summary:
            print(f"study {name}: Pareto front of {len(summary['pareto_front'])} trial(s): "
                  + "; ".join(f"#{t['number']} {t['params']} -> {t['values']}" for t in summary["pareto_front"]))
    return 0


def add_commands(subparsers: Any) -> None:
    parser = subparsers.add_parser("sweep", help="Optuna sweep over config fields (each trial a grid cell)")
    _add_arguments(parser)
    parser.set_defaults(func=cmd_sweep)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
    parser = argparse.ArgumentParser(prog="harness sweep")
    _add_arguments(parser)
    return cmd_sweep(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
