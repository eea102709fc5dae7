"""Grid profiles: one grid file, several scales. A profile is a named, validated partial override of the
file, chosen with `harness run GRID --profile NAME` (and `harness sweep FILE --profile NAME`):

    experiment: table1-datasets
    base: {model: smollm2-135m-instruct, algorithm: {name: dpo, max_steps: 16}, ...}
    axes: {dataset: [...]}
    profiles:
      paper:                                     # the paper's scale: validates and plans anywhere
        device_profile: tpu-v3-256               # the device `--dry-run` prices it on by default
        base:
          model: allenai/tulu-2-13b
          algorithm: {max_steps: -1}             # merged into base.algorithm (other fields kept)
          eval.limit: null                       # a dotted key sets one field
        axes: {dataset: [...]}                   # an axis is replaced as a whole (null removes it)
        launch: {...}                            # how each stage kind runs at that size (harness.launch)
      tiny:
        base: {model: tiny-random-llama, ...}

Merging: `base` is merged key by key (a block given as a mapping is merged into the base's block, any other
value replaces it; `a.b.c: v` keys set one field); `axes` and a sweep's `search` are replaced per entry;
every other key (`include`, `exclude`, `baseline`, `description`, `n_trials`, ...) is replaced. A profile
logs to its own MLflow experiment, `<experiment>-<profile>` unless it names one, so scales never mix in a
report. Profile-only keys: `launch` (see `harness.launch`), `device_profile` (a `harness/device_profiles.yaml`
name: the default device of the `--dry-run` cost estimate and of the report's compute columns), `full_data`
(true: the profile is meant for every dataset at its full curated size; the estimate counts those sizes
even where only a sample is local, and `harness run` refuses a dataset that resolves to a known local
sample, naming it; see `harness.resolution`).

Errors name where the bad value was written: a value the profile set is reported under its path in the
profile (`profiles.cpu.base.algorithm.beta: beta must be > 0`), a value of the file under its own path.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any

from harness.dotted_paths import set_dotted
from harness.launch import StageLaunch, parse_launch

PROFILE_ONLY_KEYS = ("launch", "device_profile", "full_data")
# Keys whose entries are themselves dotted config paths: replaced entry by entry, never merged into.
PER_ENTRY_KEYS = ("axes", "search")


@dataclass
class ProfileChoice:
    """What applying a profile gave: its name, the paths it set (for error messages), its launch block."""

    name: str | None = None
    set_paths: set[str] = field(default_factory=set)
    launch: dict[str, StageLaunch] = field(default_factory=dict)
    device_profile: str | None = None
    full_data: bool = False
    description: str = ""

    @property
    def label(self) -> str:
        return self.name or "(none: the file as written)"


def profile_names(raw: Any) -> list[str]:
    profiles = raw.get("profiles") if isinstance(raw, dict) else None
    return list(profiles) if isinstance(profiles, dict) else []


def _merge(into: dict[str, Any], update: dict[str, Any], prefix: str, paths: set[str]) -> None:
    """Deep-merge `update` into `into`; dotted keys set one field; records every leaf path set."""
    for key, value in update.items():
        path = f"{prefix}.{key}"
        if "." in key:
            set_dotted(into, key, value)
            paths.add(path)
            continue
        current = into.get(key)
        if isinstance(value, dict) and isinstance(current, dict) and value:
            _merge(current, value, path, paths)
        elif isinstance(value, dict) and isinstance(current, str) and value and "name" not in value:
            # `algorithm: dpo` in the base, a profile adding fields: the shorthand is the block {name: dpo}
            into[key] = {"name": current}
            _merge(into[key], value, path, paths)
        else:
            into[key] = copy.deepcopy(value)
            paths.update(_leaves(value, path))


def _leaves(value: Any, path: str) -> set[str]:
    if isinstance(value, dict) and value:
        return set().union(*(_leaves(v, f"{path}.{k}") for k, v in value.items()))
    return {path}


def apply_profile(raw: dict[str, Any], name: str | None, where: str, valid_keys: set[str],
                  error: type[Exception]) -> tuple[dict[str, Any], ProfileChoice]:
    """(the file with profile `name` applied and `profiles` removed, what was applied); `error` (naming
    `where` and `profiles.<name>...`) for a profile that is unknown or malformed. `valid_keys`: the keys
    the file itself may have (a profile may set any of them, plus PROFILE_ONLY_KEYS)."""
    profiles = raw.get("profiles", {}) if isinstance(raw, dict) else {}
    if profiles is None:
        profiles = {}
    if not isinstance(profiles, dict):
        raise error(f"{where}: profiles: expected a mapping of profile name -> overrides, got {profiles!r}")
    problems = []
    for pname, spec in profiles.items():
        if not isinstance(spec, dict):
            problems.append(f"profiles.{pname}: expected a mapping of overrides, got {spec!r}")
            continue
        for key in spec:
            if key == "profiles" or (key not in valid_keys and key not in PROFILE_ONLY_KEYS):
                problems.append(f"profiles.{pname}.{key}: not a key a profile can set; valid: "
                                f"{', '.join(sorted((valid_keys - {'profiles'}) | set(PROFILE_ONLY_KEYS)))}")
        for key in ("base", *PER_ENTRY_KEYS):
            if key in spec and spec[key] is not None and not isinstance(spec[key], dict):
                problems.append(f"profiles.{pname}.{key}: expected a mapping, got {spec[key]!r}")
    if problems:
        raise error(f"{where}: invalid profiles:\n  " + "\n  ".join(problems))
    merged = {k: copy.deepcopy(v) for k, v in raw.items() if k != "profiles"}
    if name is None:
        return merged, ProfileChoice()
    if name not in profiles:
        valid = ", ".join(profiles) or "(this file has no `profiles` block)"
        raise error(f"{where}: no profile {name!r}; profiles: {valid}")
    spec = profiles[name]
    choice = ProfileChoice(name=name, description=str(spec.get("description", "")))
    try:
        choice.launch = parse_launch(spec.get("launch"), f"profiles.{name}.launch")
    except ValueError as exc:
        raise error(f"{where}: invalid profile {name!r}:\n  {exc}") from None
    device = spec.get("device_profile")
    if device is not None:
        from harness.cost_profiles import CostInputError, device_profile

        try:
            device_profile(str(device))
        except CostInputError as exc:
            raise error(f"{where}: profiles.{name}.device_profile: {exc}") from None
        choice.device_profile = str(device)
    full = spec.get("full_data", False)
    if not isinstance(full, bool):
        raise error(f"{where}: profiles.{name}.full_data: expected true or false, got {full!r}")
    choice.full_data = full
    for key, value in spec.items():
        if key in PROFILE_ONLY_KEYS or key == "description":
            continue
        if key == "base":
            base = merged.setdefault("base", {})
            _merge(base, value or {}, f"profiles.{name}.base", choice.set_paths)
        elif key in PER_ENTRY_KEYS:
            block = merged.setdefault(key, {})
            for entry, entry_value in (value or {}).items():
                if entry_value is None:
                    block.pop(entry, None)
                else:
                    block[entry] = copy.deepcopy(entry_value)
                choice.set_paths.add(f"profiles.{name}.{key}.{entry}")
        else:
            merged[key] = copy.deepcopy(value)
            choice.set_paths.add(f"profiles.{name}.{key}")
    if "experiment" not in spec and "experiment" in merged:
        merged["experiment"] = f"{merged['experiment']}-{name}"
    return merged, choice


_PATH = re.compile(r"^(\s*)([A-Za-z_][\w.\[\]-]*)(: )")


def _ancestors(path: str) -> list[str]:
    """`a.b[2].c` -> [`a`, `a.b`, `a.b[2]`, `a.b[2].c`] (every prefix at a `.` or `[` boundary)."""
    cuts = [m.start() for m in re.finditer(r"[.\[]", path)] + [len(path)]
    return [path[:i] for i in cuts]


def locate_errors(message: str, choice: ProfileChoice) -> str:
    """A grid or sweep error message with each YAML path the profile set rewritten to the profile's
    own path (`base.algorithm.beta` -> `profiles.cpu.base.algorithm.beta`)."""
    if choice.name is None:
        return message
    prefix = f"profiles.{choice.name}."
    lines = []
    for line in message.splitlines():
        match = _PATH.match(line)
        if match and not match.group(2).startswith("profiles."):
            path = match.group(2)
            if any(prefix + candidate in choice.set_paths for candidate in _ancestors(path)):
                line = f"{match.group(1)}{prefix}{path}{match.group(3)}{line[match.end():]}"
        lines.append(line)
    return "\n".join(lines)
