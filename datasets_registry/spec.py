"""Dataset specs and their registry: `DatasetSpec` (what a dataset is, where its raw rows come from, how
they are curated, the provenance of the rule), `DATASETS` / `register`, `mix_spec`, and the errors a
dataset raises (`DropRow` for a row curation drops, `DataFormatError`, `DataUnavailableError`).

The normalised row schema and preparation are in `core.py`; reading raw files in `raw_files.py`;
specs whose rows come from local files or the hub (`source_spec`, `variant`) in `raw_sources.py`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from harness.registry import Registry

DatasetKind = Literal["preference", "prompts"]
SourceType = Literal["human", "web", "synthetic", "mixed", "built-in"]
# Where an entry sits in the paper: the 14 datasets of Table 1, variants (Tables 2, 7), mixes
# (Table 6), prompt sets for policy training (§3.4, App. J), built-in smoke data, or the authors'
# released splits (allenai/tulu-2.5-preference-data, read as published).
Group = Literal["table1", "variant", "mix", "prompts", "built-in", "released", "other"]
GROUPS: tuple[str, ...] = ("table1", "variant", "mix", "prompts", "built-in", "released", "other")


# The authors' preference-data build script (named by the allenai/tulu-2.5-preference-data card); specs cite it
# in `rule_source`, followed by the script's branch (its `--input_dataset`).
AUTHORS_SCRIPT = "hamishivi/EasyLM conversion_scripts/convert_preference_data.py"


class DropRow(Exception):
    """Raised by a curation function for a row that must be dropped; `reason` is counted."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class DataFormatError(ValueError):
    """A raw file that is not in the expected format: names the file, line and field."""


class DataUnavailableError(FileNotFoundError):
    """Neither a local raw file nor the hub could provide a dataset; says how to provide it."""


@dataclass
class DatasetSpec:
    name: str
    kind: DatasetKind
    source_type: SourceType
    description: str
    # loader(seed) -> iterable of raw rows (already located locally or on the hub)
    load_raw: Callable[[int], Iterable[dict[str, Any]]]
    # curate(raw_row) -> normalised row, or raise DropRow(reason)
    curate: Callable[[dict[str, Any]], dict[str, Any]]
    hub_id: str | None = None
    split: str | None = None
    revision: str | None = None
    license: str | None = None
    paper_size: int | None = None  # Table 1 "# Samples" after curation
    downsample_to: int | None = None  # random downsampling after curation (App. B)
    local_files: tuple[str, ...] = ()  # relative paths (globs allowed) looked for under the local data dirs
    is_available: Callable[[], bool] = lambda: True
    # --- additive fields (defaults keep older specs valid) ---
    group: Group = "other"
    hub_config: str | None = None  # `name=` for datasets.load_dataset
    hub_files: tuple[str, ...] = ()  # files inside the hub repo, for repos without a loadable config
    # Mixes: (component dataset, rows taken from it or None for all). Rows keep their component's id
    # and get `source` = component name; `downsample_to` then applies to the union.
    components: tuple[tuple[str, int | None], ...] = ()
    # How a user provides the raw data when it is neither local nor reachable (shown in errors).
    how_to_get: str = ""
    # Loader that takes explicit files (for `prepare(..., files=[...])`); set by `source_spec`.
    load_files: Callable[[list[Path]], Iterable[dict[str, Any]]] | None = None
    # For specs built by `source_spec`: how one raw file is read, and the optional grouping of raw rows.
    read: Callable[[Path], Iterable[dict[str, Any]]] | None = None
    group_raw: Callable[[Iterable[dict[str, Any]]], Iterable[Any]] | None = None
    # For a spec with its own `load_raw` that reads something besides its code (e.g. the prompt-tag
    # cache of the mined prompt sets): what it reads, as JSON-able identity, for `source_fingerprint`.
    raw_inputs: Callable[[], dict[str, Any]] | None = None
    # --- provenance of the curation rule (shown by `harness data show`, tabled in the README) ---
    rule: str = ""  # what the code does to raw rows, in one or two sentences
    rule_source: str = ""  # where the rule comes from: paper section and/or the authors' script
    deviation: str = ""  # where paper and authors' code disagree, or the code departs from both, and why
    expected_size: int | None = None  # rows expected after curation at full scale (may differ from paper_size)
    # Why `revision` is None for a hub source (no commit id could be found); required for unpinned hub sources.
    unpinned_reason: str = ""
    # The generic "identical chosen and rejected" drop; off where the authors' build keeps such rows.
    drop_identical: bool = True
    # Registry name of the authors' released split of this dataset (`build: released` in a grid).
    released_as: str | None = None

    @property
    def pinned(self) -> bool:
        """Whether the hub source (if any) is pinned to a commit; local-only data counts as pinned."""
        return self.hub_id is None or self.revision is not None


DATASETS: Registry[DatasetSpec] = Registry("dataset")


# Dataset name -> the module that registered it (its code is part of `source_fingerprint`).
_REGISTERED_IN: dict[str, str] = {}


def register(spec: DatasetSpec) -> DatasetSpec:
    DATASETS.register(spec.name, spec)
    _REGISTERED_IN[spec.name] = sys._getframe(1).f_globals.get("__name__", __name__)
    return spec


def registering_module(name: str) -> str | None:
    """The module that registered dataset `name` (None if it was not registered through `register`)."""
    return _REGISTERED_IN.get(name)


def mix_spec(*, components: tuple[tuple[str, int | None], ...], **fields: Any) -> DatasetSpec:
    def load_raw(seed: int) -> Iterable[dict[str, Any]]:
        raise RuntimeError("mixes are prepared from their components (prepare() handles them)")

    def available() -> bool:
        return all(DATASETS.get(name).is_available() for name, _ in components)

    spec = DatasetSpec(load_raw=load_raw, curate=lambda row: row, components=components, **fields)
    spec.is_available = available
    return spec
