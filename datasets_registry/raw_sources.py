"""Where raw rows come from: a spec's `local_files` patterns under `harness.paths.data_dirs()`, else the
hub (only when hub access is not switched off), else `DataUnavailableError` naming the files looked for.
`source_spec` builds a spec with those loaders bound; `variant` copies one with other paths or sizes."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from datasets_registry.raw_files import read_any
from datasets_registry.spec import DatasetSpec, DataUnavailableError


def hub_disabled() -> bool:
    """Hub loading is skipped when the user (or the test suite) switched it off: trying it offline
    costs ~30 s of retries before failing."""
    flags = ("HARNESS_NO_HUB", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    return any(os.environ.get(flag, "").lower() in ("1", "true", "yes") for flag in flags)


def find_local(patterns: Iterable[str]) -> list[Path]:
    """Files of the first pattern (in order) that matches under any local data dir; [] if none."""
    from harness.paths import data_dirs

    dirs = data_dirs()
    for pattern in patterns:
        for base in dirs:
            matches = sorted(p for p in base.glob(pattern) if p.is_file())
            if matches:
                return matches
    return []


class RawRows:
    """Iterable of raw rows that remembers where they came from (`sources`, for the split's metadata)."""

    def __init__(self, rows: Iterable[Any], sources: list[str]):
        self._rows, self.sources = rows, sources

    def __iter__(self) -> Iterator[Any]:
        return iter(self._rows)


def hub_rows(spec: DatasetSpec) -> Iterator[dict[str, Any]]:
    """Raw rows from the hub with the pinned revision (used only when no local file exists).

    The dataset is loaded before any row is asked for, so that network errors surface
    in `load_raw` (where they are reported together with the local options), not mid-iteration."""
    import datasets

    if spec.hub_files:
        kind = {".csv": "csv", ".parquet": "parquet"}.get(Path(spec.hub_files[0]).suffix, "json")
        revision = f"@{spec.revision}" if spec.revision else ""
        data_files = [f"hf://datasets/{spec.hub_id}{revision}/{f}" for f in spec.hub_files]
        dataset = datasets.load_dataset(kind, data_files=data_files, split="train")
    else:
        dataset = datasets.load_dataset(spec.hub_id, name=spec.hub_config, split=spec.split or "train",
                                        revision=spec.revision)

    def rows() -> Iterator[dict[str, Any]]:
        for index, row in enumerate(dataset, 1):
            row["_where"] = f"hub:{spec.hub_id}@{spec.revision or 'main'} row {index}"
            yield row

    return rows()


def unavailable_message(spec: DatasetSpec) -> str:
    from harness.paths import data_dirs

    lines = [f"dataset {spec.name!r}: no local raw file found and the hub was not used"
             + (" (hub access is switched off: HARNESS_NO_HUB / HF_HUB_OFFLINE / HF_DATASETS_OFFLINE)"
                if hub_disabled() else ""),
             f"  looked for: {', '.join(spec.local_files) or '(no local layout)'}",
             f"  under: {', '.join(str(d) for d in data_dirs())} (set HARNESS_DATA_DIR to add folders)"]
    if spec.hub_id:
        lines.append(f"  hub source: {spec.hub_id} split={spec.split} revision={spec.revision or 'main (unpinned)'}")
    if spec.how_to_get:
        lines.append(f"  to provide it: {spec.how_to_get}")
    return "\n".join(lines)


def source_spec(*, read: Callable[[Path], Iterable[dict[str, Any]]] = read_any,
                group_raw: Callable[[Iterable[dict[str, Any]]], Iterable[Any]] | None = None,
                **fields: Any) -> DatasetSpec:
    """A DatasetSpec whose raw rows come from its `local_files` or, failing that, its hub id.

    `group_raw` (optional) turns the stream of raw rows into the units curation works on (e.g. all
    responses to one prompt) and may yield DropRow for raw rows it rejects."""
    spec = DatasetSpec(load_raw=_unbound, read=read, group_raw=group_raw, **fields)
    _bind_source(spec)
    return spec


def _unbound(seed: int) -> Iterable[dict[str, Any]]:
    raise RuntimeError("source spec used before its loaders were bound")


def _bind_source(spec: DatasetSpec) -> None:
    """(Re)attach the loaders of a file/hub-backed spec to *this* spec object (variants change paths)."""
    assert spec.read is not None
    read = spec.read

    def from_rows(rows: Iterable[dict[str, Any]]) -> Iterable[Any]:
        return spec.group_raw(rows) if spec.group_raw else rows

    def load_files(paths: list[Path]) -> RawRows:
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"dataset {spec.name!r}: raw file(s) not found: {missing}")

        def rows() -> Iterator[Any]:
            for path in paths:
                yield from read(path)

        return RawRows(from_rows(rows()), [str(p) for p in paths])

    def load_raw(seed: int) -> RawRows:
        del seed  # raw rows do not depend on the seed; only subsampling does
        paths = find_local(spec.local_files)
        if paths:
            return load_files(paths)
        if spec.hub_id and not hub_disabled():
            try:
                rows = hub_rows(spec)
            except Exception as exc:  # network, auth, missing revision: report with the local options
                raise DataUnavailableError(f"{unavailable_message(spec)}\n  hub error: {exc}") from exc
            return RawRows(from_rows(rows), [f"hub:{spec.hub_id}@{spec.revision or 'main'}"])
        raise DataUnavailableError(unavailable_message(spec))

    spec.load_raw, spec.load_files = load_raw, load_files
    spec.is_available = lambda: bool(find_local(spec.local_files))


def variant(base: DatasetSpec, **changes: Any) -> DatasetSpec:
    """A copy of `base` with other name/size (e.g. the 60,908-row size-matched splits of Table 2)."""
    spec = dataclasses.replace(base, **changes)
    if spec.read is not None:
        _bind_source(spec)  # its own paths / hub files, not the base's
    else:
        spec.is_available = base.is_available
    return spec
