"""The sweep file (its schema is in `harness.sweep`'s docstring): validated with every trial it can produce
before any compute, loaded with a profile and `--set` overrides; the studies it makes and a trial's
one-cell grid."""

from __future__ import annotations

import copy
import itertools
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from harness.config_fields import Seed
from harness.dotted_paths import set_dotted
from harness.grid import GridError, build_grid, cell_name, read_yaml


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

