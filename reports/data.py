"""Everything a report reads, read from MLflow only: cell runs, their stage runs, step histories and
the per-example artifacts (downloaded through the MLflow client into a temporary folder).

The layout and the rule choosing each cell's run (the latest FINISHED one) are
`harness.mlflow_layout`'s: this module reads through its reader and writes nothing to MLflow.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from harness import mlflow_layout as layout
from harness import tracking
from harness.mlflow_layout import CellRun, StageRun

__all__ = ["CellRun", "StageRun", "Experiment", "compact_labels", "describe_overrides", "group_by_identity"]

# Parameters that identify *what* a cell trains (used to label rows); seeds are averaged over instead.
SEED_KEYS = ("seed",)


def identity(cell: CellRun) -> str:
    """What the cell is, minus its seed: cells equal here are seeds of one configuration."""
    return json.dumps({k: v for k, v in cell.overrides.items() if k not in SEED_KEYS}, sort_keys=True, default=str)


class Experiment:
    """One MLflow experiment's cells; artifacts are fetched lazily and cached for the report's life."""

    def __init__(self, name: str):
        self.name = name
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        self.experiment_id: str = layout.find_experiment(name).experiment_id
        self.cells: list[CellRun] = layout.read_cells(self.experiment_id)
        if not self.cells:
            raise ValueError(f"experiment {name!r} has no finished cell runs yet")
        self._tmp = Path(tempfile.mkdtemp(prefix="harness-report-"))
        self._jsonl_cache: dict[tuple[str, str], list[dict[str, Any]] | None] = {}
        self._history_cache: dict[tuple[str, str], list[tuple[int, float]]] = {}
        self._fetched: dict[tuple[str, str], Path | None] = {}

    def close(self) -> None:
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> Experiment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- queries ---------------------------------------------------------------------------------
    @property
    def baseline(self) -> CellRun | None:
        return next((c for c in self.cells if c.is_baseline), None)

    @property
    def policies(self) -> list[CellRun]:
        return [c for c in self.cells if not c.is_baseline]

    def metric_names(self) -> set[str]:
        return {k for c in self.cells for k in c.metrics}

    def has_metric(self, name: str) -> bool:
        return any(c.metric(name) is not None for c in self.cells)

    def run_url(self, run_id: str) -> str:
        """Link to a run in the MLflow UI (`harness ui` serves 127.0.0.1:5000 for local stores)."""
        base = os.environ.get("HARNESS_MLFLOW_UI_URL")
        uri = tracking.tracking_uri()
        if not base:
            base = uri if uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"
        return f"{base.rstrip('/')}/#/experiments/{self.experiment_id}/runs/{run_id}"

    # -- artifacts and histories -----------------------------------------------------------------
    def _fetch(self, run_id: str, path: str) -> Path | None:
        """Local copy of a run's artifact (file or folder), downloaded once through the MLflow client."""
        key = (run_id, path)
        if key not in self._fetched:
            dst = self._tmp / run_id
            dst.mkdir(exist_ok=True)
            self._fetched[key] = layout.fetch_artifact(run_id, path, dst)
        return self._fetched[key]

    def jsonl_artifact(self, run_id: str, path: str) -> list[dict[str, Any]] | None:
        """Rows of a JSONL artifact of a run, or None when the run has no such artifact. Files inside a
        folder are fetched with their whole folder (one download for all of an evaluation's samples)."""
        key = (run_id, path)
        if key not in self._jsonl_cache:
            folder, _, name = path.rpartition("/")
            local = (self._fetch(run_id, folder) / name) if folder and self._fetch(run_id, folder) else (
                None if folder else self._fetch(run_id, path))
            rows = None
            if local is not None and local.is_file():
                with local.open() as fh:
                    rows = [json.loads(line) for line in fh if line.strip()]
            self._jsonl_cache[key] = rows
        return self._jsonl_cache[key]

    def json_artifact(self, run_id: str, path: str) -> Any:
        """A JSON artifact of a run (e.g. a cell's `resolved_config.json`), or None when it has none."""
        local = self._fetch(run_id, path)
        if local is None or not local.is_file():
            return None
        return json.loads(local.read_text())

    def samples(self, cell: CellRun, task: str) -> tuple[list[dict[str, Any]], str] | None:
        """Per-example eval records of `task` for a cell and the evaluate run that logged them."""
        stage = cell.stage("evaluate")
        if stage is None:
            return None
        rows = self.jsonl_artifact(stage.run_id, f"samples/{task}.samples.jsonl")
        return (rows, stage.run_id) if rows else None

    def history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        """(step, value) of a step metric, in step order (last value per step)."""
        cache_key = (run_id, key)
        if cache_key not in self._history_cache:
            self._history_cache[cache_key] = layout.metric_history(run_id, key)
        return self._history_cache[cache_key]


def row_label(cell: CellRun, keys: tuple[str, ...]) -> str:
    return " / ".join(cell.param(k) or "—" for k in keys)


def group_by_identity(cells: list[CellRun]) -> list[list[CellRun]]:
    """Cells grouped by configuration (seeds of one configuration together), in first-seen order."""
    groups: dict[str, list[CellRun]] = {}
    for cell in cells:
        groups.setdefault(identity(cell), []).append(cell)
    return [sorted(g, key=lambda c: c.seed) for g in groups.values()]


def describe_overrides(cell: CellRun, skip: tuple[str, ...] = ()) -> str:
    """Short text of what distinguishes a cell (its grid overrides minus the seed and `skip`)."""
    parts = []
    for key, value in cell.overrides.items():
        if key in SEED_KEYS or key in skip:
            continue
        if isinstance(value, dict):
            extra = {k: v for k, v in value.items() if k not in ("name",) and not isinstance(v, dict)}
            shown = value.get("name", "")
            if extra and len(extra) <= 3:
                shown += "(" + ",".join(f"{k}={v}" for k, v in extra.items()) + ")"
            parts.append(f"{key}={shown}" if shown else key)
        else:
            parts.append(f"{key}={value}")
    return ", ".join(parts) or cell.cell


# Keys that name what a configuration is, shown as bare values, in this order.
_NAMED_KEYS: tuple[tuple[str, str], ...] = (
    ("algorithm.name", "{}"), ("dataset.name", "{}"), ("reward_model.dataset.name", "RM {}"),
    ("reward_model.base", "RM base {}"), ("reward_model.path", "RM {}"), ("prompts.name", "{}"),
    ("model", "{}"),
)


def _flat_keys(overrides: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key, value in overrides.items():
        if isinstance(value, dict):
            keys += _flat_keys(value, f"{prefix}{key}.")
        else:
            keys.append(f"{prefix}{key}")
    return keys


# Table 9's symbols for PPO's batch settings, and short names for the usual swept knobs.
_ABBREVIATIONS = {"prompt_batch_size": "B", "minibatch_size": "b", "rollouts_per_prompt": "r",
                  "gradient_accumulation_steps": "g", "kl_coef": "kl", "beta": "β", "learning_rate": "lr",
                  "num_train_epochs": "epochs", "max_steps": "steps", "sft_weight": "SFT-loss weight",
                  # the GRPO-family switches (ablations/grpo_switches.yaml)
                  "loss_type": "loss", "scale_rewards": "reward scaling", "epsilon_high": "ε high",
                  "importance_sampling_level": "IS level", "mask_truncated_completions": "mask truncated",
                  "num_generations": "G"}


def _short_key(key: str) -> str:
    """`algorithm.kl_coef` -> "kl", `reward_model.train.max_steps` -> "RM steps" (whose field it is)."""
    section, _, _ = key.partition(".")
    short = key.rsplit(".", 1)[-1]
    short = _ABBREVIATIONS.get(short, short)
    owner = {"reward_model": "RM ", "dataset": "data ", "prompts": "prompts "}.get(section, "") if "." in key else ""
    return owner + short


def compact_labels(groups: list[list[CellRun]], max_len: int = 72) -> list[str]:
    """Short labels for configurations (figures, rows) that name what distinguishes each one.

    Naming fields (algorithm, dataset, reward model, prompts) appear when they vary across the groups.
    Then, swept field by swept field (any grid override, e.g. `algorithm.beta`, in the grid's order),
    configurations whose labels are still alike get that field's value (`β=0.1`) on every one of them
    when it differs among them: each label names its value of every field that tells it apart from a
    configuration it would otherwise share its label with, and nothing more. A field that is the same
    across such configurations is left out, so DPO's β never labels a PPO cell. Where only some of them
    set the field themselves (one switch at a time: a grid's `include` cells over its base), only those
    name it, and the others keep the base's value unnamed ("GRPO · β=0.0" beside "GRPO · loss=dapo"),
    instead of every label listing every switch."""
    firsts = [g[0] for g in groups]
    policies = [c for c in firsts if not c.is_baseline]
    # A naming field is shown when configurations disagree on it (a field only some have, such as the
    # reward model of PPO cells next to DPO ones, counts as varying only if it takes two values).
    named = [(k, f) for k, f in _NAMED_KEYS if len({c.param(k) for c in policies} - {None}) > 1
             or (k in ("algorithm.name", "dataset.name") and len({c.param(k) for c in policies}) > 1)]
    if not named and policies:
        named = [(k, f) for k, f in _NAMED_KEYS[:2] if any(c.param(k) for c in policies)]
    named_keys = {k for k, _ in _NAMED_KEYS} | {"dataset", "prompts", "reward_model", "algorithm", "model"}
    swept = [k for k in dict.fromkeys(k for c in policies for k in _flat_keys(c.overrides))
             if k not in named_keys and k not in SEED_KEYS]
    parts: dict[int, list[str]] = {}
    for i, cell in enumerate(firsts):
        if not cell.is_baseline:
            parts[i] = [fmt.format(cell.param(k)) for k, fmt in named if cell.param(k)]
            if parts[i] and parts[i][0] == cell.algorithm:
                parts[i][0] = parts[i][0].upper()
    shown: dict[int, set[str]] = {i: set() for i in parts}
    # Per configuration, its switches: fields it sets that others with the same naming fields leave at the base's
    # value (one switch at a time: a grid's `include` cells over its base). None in a factorial grid.
    switches: dict[int, list[str]] = {}
    by_name: dict[tuple[str, ...], list[int]] = {}
    for i, label in parts.items():
        by_name.setdefault(tuple(label), []).append(i)
    for members in by_name.values():
        set_by = {key: [i for i in members if key in _flat_keys(firsts[i].overrides)] for key in swept}
        for i in members:
            switches[i] = [k for k, who in set_by.items() if i in who and len(who) < len(members)]

    def show(i: int, key: str) -> None:
        parts[i].append(f"{_short_key(key)}={firsts[i].param(key) or '—'}")
        shown[i].add(key)

    for key in swept:
        alike: dict[tuple[str, ...], list[int]] = {}
        for i, label in parts.items():
            alike.setdefault(tuple(label), []).append(i)
        for members in alike.values():
            if len({firsts[i].param(key) for i in members}) > 1:
                setting = [i for i in members if key in _flat_keys(firsts[i].overrides)]
                base_values = {firsts[i].param(key) for i in members if i not in setting}
                for i in setting if setting and len(base_values) <= 1 else members:
                    show(i, key)
    # A configuration that sets several switches names all of them (DAPO: loss, ε high, β, mask truncated),
    # even those its label did not need to tell it apart: otherwise its label reads as the base plus one switch.
    for i in parts:
        for key in switches[i]:
            if key not in shown[i]:
                show(i, key)
    labels = []
    for i, cell in enumerate(firsts):
        label = "SFT" if cell.is_baseline else (" · ".join(parts[i]) or cell.cell)
        labels.append(label if len(label) <= max_len else label[: max_len - 1] + "…")
    for i, label in enumerate(labels):  # still ambiguous (a difference outside the overrides): name the cell
        if labels.count(label) > 1:
            labels[i] = f"{label} [{firsts[i].cell}]"
    return labels
