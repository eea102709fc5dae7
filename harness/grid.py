"""Grid files: a `base` cell config plus `axes` expanded as a cartesian product, with include/exclude.

    experiment: smoke                 # MLflow experiment name (one per grid)
    base: {model: ..., dataset: ..., algorithm: {name: dpo, beta: 0.1}, eval: {...}}
    axes:                             # any config field, dotted for nested ones
      algorithm.beta: [0.1, 0.3]
      dataset: [hh-rlhf, ultrafeedback-fg]
    include: [{algorithm: {name: ppo}, reward_model: {...}}]   # extra cells (base + these fields)
    exclude: [{algorithm.beta: 0.3, dataset: hh-rlhf}]         # drop cells matching all given fields
    baseline: true                    # add the SFT baseline cell "sft" (evaluate the starting model)

A string given for a block (`algorithm: ppo`) replaces the whole block with `{name: ppo}`.
Everything is validated before anything runs; errors name the YAML path (`base.algorithm.betta`,
`axes.dataset[2]`, `include[0].reward_model`) and, for registry names, list the valid ones.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from harness.config import CellConfig


class GridError(ValueError):
    """Invalid grid file; the message lists every problem with its YAML path."""


class GridFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    experiment: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")
    description: str = ""
    base: dict[str, Any] = Field(default_factory=dict)
    axes: dict[str, list[Any]] = Field(default_factory=dict)
    include: list[dict[str, Any]] = Field(default_factory=list)
    exclude: list[dict[str, Any]] = Field(default_factory=list)
    baseline: bool = True


@dataclass
class Cell:
    name: str  # human-readable, unique within the grid (used by --only)
    config: CellConfig
    overrides: dict[str, Any]  # what distinguishes it from base (for display and reports)

    @property
    def is_baseline(self) -> bool:
        return self.config.algorithm is None

    def resolved(self) -> dict[str, Any]:
        data = self.config.model_dump(mode="json")
        if self.config.algorithm is not None:
            data["algorithm"] = self.config.algorithm.resolved()
        return data


@dataclass
class Grid:
    experiment: str
    description: str
    cells: list[Cell]
    source: Path | None = None


def set_dotted(config: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = config
    for key in keys[:-1]:
        child = node.get(key)
        if isinstance(child, str):  # `algorithm: dpo` shorthand, then `algorithm.beta` set
            child = {"name": child}
        if not isinstance(child, dict):
            child = {}
        node[key] = child
        node = child
    node[keys[-1]] = copy.deepcopy(value)


def get_dotted(config: dict[str, Any], dotted: str) -> Any:
    node: Any = config
    for key in dotted.split("."):
        if isinstance(node, str) and key == "name":
            return node
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def _fmt(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("name", hashlib.sha1(json.dumps(value, sort_keys=True).encode()).hexdigest()[:6]))
    return str(value)


def cell_name(overrides: dict[str, Any]) -> str:
    if not overrides:
        return "base"
    parts = [f"{k}={_fmt(v)}" for k, v in overrides.items()]
    return re.sub(r"[^A-Za-z0-9_.=,+\-]", "_", ",".join(parts))


def _format_errors(exc: ValidationError, where: str) -> list[str]:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-"))
        loc = re.sub(r"\.(\d+)(?=\.|$)", r"[\1]", loc)
        path = f"{where}.{loc}" if loc else where
        msg = err["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
        lines.append(f"{path}: {msg}")
    return lines


def _locate(loc: str, axes_keys: dict[str, int], label: str) -> str:
    """Map an error at dotted config path `loc` of an expanded cell back to the YAML that set it."""
    for key, index in axes_keys.items():
        if loc == key or loc.startswith(key + "."):
            return f"axes.{key}[{index}]" + loc[len(key):]
    return f"{label}.{loc}" if loc else label


def _algorithm_errors(raw: dict[str, Any], label: str, axes_keys: dict[str, int]) -> list[str]:
    """Field-level checks of the algorithm block, so errors carry `algorithm.<field>` paths."""
    from harness.algorithms import ALGORITHMS

    block = raw.get("algorithm")
    if not isinstance(block, dict) or block.get("name") not in ALGORITHMS:
        return []
    overrides = {k: v for k, v in block.items() if k != "name"}
    return [f"{_locate('algorithm.' + field, axes_keys, label)}: {msg}"
            for field, msg in ALGORITHMS.get(block["name"]).check_fields(overrides)]


def _eval_settings_errors(raw: dict[str, Any], label: str, axes_keys: dict[str, int]) -> list[str]:
    """Field-level checks of `eval.settings`, so errors carry `eval.settings.<group>.<field>` paths."""
    from harness.evaluation.base import settings_errors

    block = raw.get("eval")
    settings = block.get("settings") if isinstance(block, dict) else None
    if not isinstance(settings, dict):
        return []
    return [f"{_locate('eval.settings.' + path, axes_keys, label)}: {msg}" for path, msg in settings_errors(settings)]


def _validate_cell(raw: dict[str, Any], label: str, axes_keys: dict[str, int]) -> tuple[CellConfig | None, list[str]]:
    errors = _algorithm_errors(raw, label, axes_keys) + _eval_settings_errors(raw, label, axes_keys)
    if errors:
        return None, errors
    try:
        return CellConfig.model_validate(raw), []
    except ValidationError as exc:
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-"))
            msg = err["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
            errors.append(f"{_locate(loc, axes_keys, label)}: {msg}")
        return None, errors


def load_grid(path: str | Path, only: str | None = None) -> Grid:
    path = Path(path)
    if not path.exists():
        raise GridError(f"grid file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise GridError(f"{path}: not valid YAML: {exc}") from None
    return build_grid(raw, source=path, only=only)


def build_grid(raw: dict[str, Any], source: Path | None = None, only: str | None = None) -> Grid:
    import fnmatch

    where = str(source) if source else "<grid>"
    try:
        spec = GridFile.model_validate(raw)
    except ValidationError as exc:
        raise GridError(f"{where}: invalid grid file:\n  " + "\n  ".join(_format_errors(exc, "")).replace(" .", " ")) from None

    errors: list[tuple[str, str]] = []
    # The base must be valid on its own only when there are no axes to complete it.
    candidates: list[tuple[str, dict[str, Any], dict[str, Any], dict[str, int]]] = []
    axis_names = list(spec.axes)
    for combo in itertools.product(*(list(enumerate(spec.axes[k])) for k in axis_names)):
        config = copy.deepcopy(spec.base)
        overrides: dict[str, Any] = {}
        axes_index: dict[str, int] = {}
        for key, (index, value) in zip(axis_names, combo):
            set_dotted(config, key, value)
            overrides[key] = value
            axes_index[key] = index
        if any(all(get_dotted(config, k) == v or _fmt(get_dotted(config, k)) == str(v) for k, v in ex.items())
               for ex in spec.exclude):
            continue
        candidates.append((cell_name(overrides), config, overrides, axes_index))
    for i, extra in enumerate(spec.include):
        config = copy.deepcopy(spec.base)
        for key, value in extra.items():
            set_dotted(config, key, value)
        name = cell_name(extra)
        candidates.append((name, config, dict(extra), {k: -1 for k in extra} | {"__include__": i}))
    if spec.baseline:
        config = {k: copy.deepcopy(v) for k, v in spec.base.items() if k in ("model", "eval", "seed", "judge")}
        # The baseline keeps a fully specified base reward model so that its samples can be scored by
        # it (rm_reward); one completed only by the axes varies per cell and has no baseline meaning.
        base_rm = spec.base.get("reward_model")
        if isinstance(base_rm, dict) and ("dataset" in base_rm or "path" in base_rm):
            config["reward_model"] = copy.deepcopy(base_rm)
        elif isinstance(config.get("eval"), dict):
            # Best-of-N needs a reward model to pick with; without one the baseline is what it is for the
            # BoN tables anyway: the SFT model's own answers (Table 12's first row).
            config["eval"].pop("best_of_n", None)
        config["algorithm"] = None
        candidates.insert(0, ("sft", config, {"algorithm": None}, {}))

    cells: list[Cell] = []
    seen: dict[str, int] = {}
    for name, config, overrides, axes_index in candidates:
        include_idx = axes_index.pop("__include__", None)
        label = f"include[{include_idx}]" if include_idx is not None else "base"
        index_map = {k: v for k, v in axes_index.items() if v >= 0}
        if include_idx is not None:
            index_map = {}
        cell, cell_errors = _validate_cell(config, label, index_map)
        if cell_errors:
            errors.extend((name, e) for e in cell_errors)
            continue
        if name in seen:
            seen[name] += 1
            name = f"{name}#{seen[name]}"
        else:
            seen[name] = 0
        cells.append(Cell(name, cell, overrides))
    if errors:
        # One bad base field breaks every cell: report each message once, with the cells it hits.
        by_message: dict[str, list[str]] = {}
        for name, message in errors:
            by_message.setdefault(message, []).append(name)
        lines = [f"{msg} [cell{'s' if len(names) > 1 else ''}: {', '.join(names)}]" for msg, names in by_message.items()]
        raise GridError(f"{where}: invalid grid:\n  " + "\n  ".join(lines))
    if only:
        cells = [c for c in cells if fnmatch.fnmatch(c.name, only)]
        if not cells:
            raise GridError(f"--only {only!r} matches no cell of {where}")
    return Grid(spec.experiment, spec.description, cells, source)
