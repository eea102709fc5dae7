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
`axes.dataset[2]`, `include[0].reward_model`) and, for registry names, list the valid ones. Values are
checked against each config field's range (`harness.config_fields`); the grid's shape too: an empty or
repeated axis value, an exclude entry naming an unknown field or matching no cell, an include repeating a
cell, zero cells, and (in the file) a key repeated in one mapping are errors, not silent surprises.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import json
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from harness.config import CellConfig
from harness.dotted_paths import get_dotted, set_dotted


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
    # The profile the grid was loaded with (`harness.profiles`): its name, how each stage kind runs at
    # that size (`harness.launch`) and the device its cost is estimated on by default.
    profile: str | None = None
    launch: dict[str, Any] = dataclasses.field(default_factory=dict)
    device_profile: str | None = None
    full_data: bool = False  # the datasets are meant at full size (a local sample is not the profile's data)


def _fmt(value: Any) -> str:
    if isinstance(value, dict):
        named = value.get("name") or value.get("verifier")  # a registered name says what the block is
        return str(named or hashlib.sha1(json.dumps(value, sort_keys=True).encode()).hexdigest()[:6])
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


def _dataclass_field_errors(raw: dict[str, Any], label: str, axes_keys: dict[str, int]) -> list[str]:
    """Field-level checks of the config dataclasses (the algorithm block, `reward_model.train`), so errors
    carry `algorithm.<field>` / `reward_model.train.<field>` paths and the YAML that set them."""
    from harness.algorithms import ALGORITHMS

    def at(prefix: str, field: str) -> str:
        return _locate(f"{prefix}.{field}" if field else prefix, axes_keys, label)

    errors = []
    block = raw.get("algorithm")
    if isinstance(block, dict) and block.get("name") in ALGORITHMS:
        overrides = {k: v for k, v in block.items() if k != "name"}
        errors += [f"{at('algorithm', field)}: {msg}"
                   for field, msg in ALGORITHMS.get(block["name"]).check_fields(overrides)]
    rm = raw.get("reward_model")
    if isinstance(rm, dict) and isinstance(rm.get("train"), dict):
        from harness.config import RewardModelRef

        errors += [f"{at('reward_model.train', field)}: {msg}"
                   for field, msg in RewardModelRef.train_problems(rm["train"])]
    return errors


def _eval_settings_errors(raw: dict[str, Any], label: str, axes_keys: dict[str, int]) -> list[str]:
    """Field-level checks of `eval.settings`, so errors carry `eval.settings.<group>.<field>` paths."""
    from harness.evaluation.base import settings_errors

    block = raw.get("eval")
    settings = block.get("settings") if isinstance(block, dict) else None
    if not isinstance(settings, dict):
        return []
    return [f"{_locate('eval.settings.' + path, axes_keys, label)}: {msg}" for path, msg in settings_errors(settings)]


def _validate_cell(raw: dict[str, Any], label: str, axes_keys: dict[str, int]) -> tuple[CellConfig | None, list[str]]:
    settings_errors = _eval_settings_errors(raw, label, axes_keys)
    errors = _dataclass_field_errors(raw, label, axes_keys) + settings_errors
    try:
        cell = CellConfig.model_validate(raw)
    except ValidationError as exc:
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-"))
            if errors and loc in ("algorithm", "reward_model") or settings_errors and loc == "eval":
                continue  # the block's own check, already reported field by field above
            msg = err["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
            errors.append(f"{_locate(loc, axes_keys, label)}: {msg}")
        return None, errors
    return (None, errors) if errors else (cell, [])


def read_yaml(path: Path, what: str, error: type[Exception]) -> Any:
    """A YAML file's content; `error` (naming the file) for an unreadable or non-UTF-8 file, invalid YAML,
    or a key repeated in one mapping (YAML would keep only the last value, silently)."""
    from harness.text_files import read_text

    text = read_text(path, what, error)
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        duplicates = _duplicate_keys(node) if node is not None else []
        if duplicates:
            raise error(f"{path}: duplicate key(s):\n  " + "\n  ".join(duplicates))
        return loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        raise error(f"{path}: not valid YAML: {exc}") from None
    finally:
        loader.dispose()


def _duplicate_keys(node: yaml.Node, path: str = "", seen_nodes: set[int] | None = None) -> list[str]:
    """`<yaml path>: line N repeats the key of line M` for every key given twice in one mapping."""
    seen_nodes = set() if seen_nodes is None else seen_nodes
    if id(node) in seen_nodes:  # an alias: already checked where it was defined
        return []
    seen_nodes.add(id(node))
    found: list[str] = []
    if isinstance(node, yaml.MappingNode):
        first_line: dict[str, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                found += _duplicate_keys(value_node, path, seen_nodes)
                continue
            key, line = key_node.value, key_node.start_mark.line + 1
            child = f"{path}.{key}" if path else key
            if key in first_line:
                found.append(f"{child}: line {line} repeats the key of line {first_line[key]} "
                             "(YAML would keep only the last value): remove one")
            else:
                first_line[key] = line
            found += _duplicate_keys(value_node, child, seen_nodes)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            found += _duplicate_keys(item, f"{path}[{index}]", seen_nodes)
    return found


def load_grid(path: str | Path, only: str | None = None, profile: str | None = None) -> Grid:
    """A grid file, with profile `profile` applied (`harness.profiles`; None = the file as written)."""
    from harness.profiles import apply_profile, locate_errors

    path = Path(path)
    raw = read_yaml(path, "grid", GridError)
    if isinstance(raw, dict) and "search" in raw:
        raise GridError(f"{path} is an Optuna sweep file (it has a `search` block), not a grid: "
                        f"run it with `harness sweep {path}`")
    if raw is not None and not isinstance(raw, dict):
        raise GridError(f"{path}: expected a mapping (experiment, base, axes, ...), got {type(raw).__name__}")
    merged, choice = apply_profile(raw or {}, profile, str(path), set(GridFile.model_fields) | {"profiles"}, GridError)
    try:
        grid = build_grid(merged, source=path, only=only)
    except GridError as exc:
        if choice.name is None:
            raise
        raise GridError(locate_errors(str(exc), choice).replace(
            f"{path}: invalid grid", f"{path}: invalid grid (profile {choice.name})", 1)) from None
    grid.profile, grid.launch, grid.device_profile = choice.name, choice.launch, choice.device_profile
    grid.full_data = choice.full_data
    if choice.description:
        grid.description = f"{grid.description} [profile {choice.name}: {choice.description}]".strip()
    return grid


def build_grid(raw: dict[str, Any], source: Path | None = None, only: str | None = None) -> Grid:
    import fnmatch

    where = str(source) if source else "<grid>"
    try:
        spec = GridFile.model_validate(raw)
    except ValidationError as exc:
        raise GridError(f"{where}: invalid grid file:\n  " + "\n  ".join(_format_errors(exc, "")).replace(" .", " ")) from None

    structure = _axes_errors(spec)
    if structure:  # an empty axis expands to nothing: check only the names of the exclude entries
        structure += _exclude_errors(spec, [], None)
        raise GridError(f"{where}: invalid grid:\n  " + "\n  ".join(structure))

    errors: list[tuple[str, str]] = []
    # The base must be valid on its own only when there are no axes to complete it.
    candidates: list[tuple[str, dict[str, Any], dict[str, Any], dict[str, int]]] = []
    axis_names = list(spec.axes)
    expanded: list[dict[str, Any]] = []  # every cell config of the axes, excluded ones too
    exclude_hits = [0] * len(spec.exclude)
    for combo in itertools.product(*(list(enumerate(spec.axes[k])) for k in axis_names)):
        config = copy.deepcopy(spec.base)
        overrides: dict[str, Any] = {}
        axes_index: dict[str, int] = {}
        for key, (index, value) in zip(axis_names, combo):
            set_dotted(config, key, value)
            overrides[key] = value
            axes_index[key] = index
        expanded.append(config)
        matched = [i for i, entry in enumerate(spec.exclude) if _matches(config, entry)]
        for i in matched:
            exclude_hits[i] += 1
        if matched:
            continue
        candidates.append((cell_name(overrides), config, overrides, axes_index))
    structure = _exclude_errors(spec, expanded, exclude_hits)
    if expanded and not candidates and not spec.include and not structure:
        structure.append(f"exclude removes all {len(expanded)} cell(s) of the axes: nothing would be trained")
    if structure:
        raise GridError(f"{where}: invalid grid:\n  " + "\n  ".join(structure))
    for i, extra in enumerate(spec.include):
        config = copy.deepcopy(spec.base)
        for key, value in extra.items():
            set_dotted(config, key, value)
        name = cell_name(extra)
        candidates.append((name, config, dict(extra), {k: -1 for k in extra} | {"__include__": i}))
    if spec.baseline:
        config = {k: copy.deepcopy(v) for k, v in spec.base.items() if k in ("model", "eval", "seed", "judge",
                                                                             "engine")}
        # The baseline keeps a fully specified base reward model so that its samples can be scored by
        # it (rm_reward); one completed only by the axes varies per cell and has no baseline meaning.
        base_rm = spec.base.get("reward_model")
        if isinstance(base_rm, dict) and any(k in base_rm for k in ("dataset", "path", "verifier", "ensemble")):
            config["reward_model"] = copy.deepcopy(base_rm)
        elif isinstance(config.get("eval"), dict):
            # Best-of-N needs a reward model to pick with; without one the baseline is what it is for the
            # BoN tables anyway: the SFT model's own answers (Table 12's first row).
            config["eval"].pop("best_of_n", None)
        config["algorithm"] = None
        candidates.insert(0, ("sft", config, {"algorithm": None}, {}))

    cells: list[Cell] = []
    seen: dict[str, int] = {}
    content: dict[str, str] = {}  # resolved config -> the cell that has it
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
        key = json.dumps(Cell(name, cell, overrides).resolved(), sort_keys=True, default=str)
        if include_idx is not None and key in content:
            # It would run nothing new and log the same result twice under another name.
            errors.append((name, f"include[{include_idx}]: the same cell as {content[key]}: remove it"))
            continue
        content.setdefault(key, name)
        cells.append(Cell(name, cell, overrides))
    if errors:
        # One bad base field breaks every cell: report each message once, with the cells it hits.
        by_message: dict[str, list[str]] = {}
        for name, message in errors:
            by_message.setdefault(message, []).append(name)
        lines = [f"{msg} [cell{'s' if len(names) > 1 else ''}: {', '.join(names)}]" for msg, names in by_message.items()]
        raise GridError(f"{where}: invalid grid:\n  " + "\n  ".join(lines))
    if not cells:
        raise GridError(f"{where}: the grid has no cells: give `base` an algorithm, `axes`, `include`, "
                        "or `baseline: true`")
    if only:
        cells = [c for c in cells if fnmatch.fnmatch(c.name, only)]
        if not cells:
            raise GridError(f"--only {only!r} matches no cell of {where}")
    return Grid(spec.experiment, spec.description, cells, source)


def _matches(config: dict[str, Any], entry: dict[str, Any]) -> bool:
    """An exclude entry matches a cell when every field it gives has that value (a block by its name)."""
    return all(get_dotted(config, k) == v or _fmt(get_dotted(config, k)) == str(v) for k, v in entry.items())


def _axes_errors(spec: GridFile) -> list[str]:
    errors = []
    for key, values in spec.axes.items():
        if not values:
            errors.append(f"axes.{key}: empty list: an axis needs at least one value "
                          "(remove the axis to keep the base's value)")
        seen: dict[str, int] = {}
        for index, value in enumerate(values):
            text = json.dumps(value, sort_keys=True, default=str)
            if text in seen:
                errors.append(f"axes.{key}[{index}]: repeats axes.{key}[{seen[text]}] ({value!r}): "
                              "the cells would be identical")
            seen.setdefault(text, index)
    return errors


def _exclude_errors(spec: GridFile, expanded: list[dict[str, Any]], hits: list[int] | None) -> list[str]:
    """Exclude entries that name a field no cell config has, or (given the `hits` per entry over the
    `expanded` axes cells) match no cell of the axes."""
    algorithms = {get_dotted(c, "algorithm.name") for c in [*expanded, spec.base, *spec.include]}
    for value in [*spec.axes.get("algorithm", []), *spec.axes.get("algorithm.name", [])]:
        algorithms.add(value.get("name") if isinstance(value, dict) else value)
    algorithms = {name for name in algorithms if isinstance(name, str)}
    errors = []
    for i, entry in enumerate(spec.exclude):
        unknown = [(key, problem) for key in entry if (problem := _config_path_problem(key, algorithms))]
        errors += [f"exclude[{i}].{key}: {problem}" for key, problem in unknown]
        if not unknown and hits is not None and hits[i] == 0:
            values = {key: sorted({_fmt(get_dotted(c, key)) for c in expanded}) for key in entry}
            errors.append(f"exclude[{i}]: {entry} matches no cell of the axes (their values: "
                          + "; ".join(f"{k}: {', '.join(v)}" for k, v in values.items()) + ")")
    return errors


def _config_path_problem(dotted: str, algorithms: set[str]) -> str | None:
    """None when `dotted` names a field of a cell config, else why not (with the valid names).

    `algorithm.<field>` is checked against the config dataclasses of `algorithms` (every registered one when
    the grid names none), `reward_model.train.<field>` against the reward-model config."""
    from harness.algorithms import ALGORITHMS
    from harness.config import AlgorithmRef, RewardModelRef
    from harness.reward_model import RewardModelConfig

    parts = dotted.split(".")
    model: Any = CellConfig
    for depth, key in enumerate(parts):
        here = ".".join(parts[:depth])
        last = depth == len(parts) - 1
        if model is AlgorithmRef:
            names = sorted(algorithms & set(ALGORITHMS.names())) or ALGORITHMS.names()
            valid = {"name"} | {f.name for n in names for f in dataclasses.fields(ALGORITHMS.get(n).config_cls)}
            if key in valid and last:
                return None
            return f"unknown field {here}.{key} of algorithm {'/'.join(names)}; valid: {', '.join(sorted(valid))}"
        if model is RewardModelConfig:
            valid = {f.name for f in dataclasses.fields(RewardModelConfig)}
            return None if key in valid and last else \
                f"unknown field {here}.{key}; valid: {', '.join(sorted(valid))}"
        fields = getattr(model, "model_fields", None)
        if not fields or key not in fields:
            valid_here = ", ".join(sorted(fields)) if fields else "(none: a value, not a block)"
            return f"unknown field {'.'.join(parts[:depth + 1])}; valid{' in ' + here if here else ''}: {valid_here}"
        if model is RewardModelRef and key == "train":
            model = RewardModelConfig
        else:
            model = next((t for t in typing.get_args(fields[key].annotation) + (fields[key].annotation,)
                          if isinstance(t, type) and issubclass(t, BaseModel)), None)
    return None
