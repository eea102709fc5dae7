"""Registry core: the normalised row schema, dataset specs, preparation with drop counting, fingerprints.

Row schema (every preference dataset, after curation):
    {"id": str,                       # stable: hash of source + content, independent of seed / order
     "prompt": [{"role": "user"|"system"|"assistant", "content": str}, ...],   # chat messages
     "chosen": [{"role": "assistant", "content": str}],
     "rejected": [{"role": "assistant", "content": str}],
     "source": str,                   # dataset name (or sub-source for mixes)
     "scores": {aspect: float} | absent}   # flat, side-prefixed: "chosen_overall", "rejected_helpfulness"
Prompt-set rows (policy-training prompts, verifiable evals):
    {"id": str, "prompt": [...messages], "source": str, optional "answer"/"constraint" fields}
This is TRL's conversational preference / prompt-only format, so rows go to its trainers unchanged.

Where raw rows come from (`load_raw`): for datasets built with `source_spec`, the first of the spec's
`local_files` patterns that matches under `harness.paths.data_dirs()`, else the hub (only when hub
access is not switched off), else `DataUnavailableError` naming the files looked for.
A loader may yield a `DropRow` instead of a row: it is counted like a curation drop (used when rows
are grouped before curation, e.g. all PRM800K labels of one problem).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import gzip
import hashlib
import heapq
import json
import os
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
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


@dataclass
class PreparedSplit:
    name: str
    rows: list[dict[str, Any]]
    raw_count: int
    dropped: dict[str, int] = field(default_factory=dict)
    fingerprint: str = ""
    seed: int = 0
    sources: list[str] = field(default_factory=list)  # files (or hub ids) the raw rows came from

    @property
    def kept(self) -> int:
        return len(self.rows)

    def meta(self) -> dict[str, Any]:
        return {"name": self.name, "seed": self.seed, "raw": self.raw_count, "kept": self.kept,
                "dropped": dict(sorted(self.dropped.items())), "fingerprint": self.fingerprint,
                "sources": self.sources}


def stable_id(*parts: Any) -> str:
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def content_id(source: str, prompt: list[dict[str, Any]], *responses: Any) -> str:
    """Stable row id from the source name and the texts (cheaper than `stable_id`'s JSON at 10M rows).

    Separators are ASCII control characters that do not occur in the texts' structure, so different
    (role, content) sequences cannot collide by concatenation."""
    parts = [source, "\x1d"]
    for message in prompt:
        parts += [str(message.get("role")), "\x1f", str(message.get("content")), "\x1e"]
    for response in responses:
        parts += ["\x1d", str(response)]
    return hashlib.sha256("".join(parts).encode("utf-8", "surrogatepass")).hexdigest()[:16]


def fingerprint_rows(rows: list[dict[str, Any]]) -> str:
    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps(row, sort_keys=True, ensure_ascii=False).encode())
        digest.update(b"\n")
    return digest.hexdigest()[:16]


def check_preference_row(row: dict[str, Any], *, drop_identical: bool = True) -> dict[str, Any]:
    """Generic malformed-row rules (App. B footnote: 'we filter out any malformed examples').

    `drop_identical=False` keeps pairs whose chosen and rejected texts are equal: the authors' build
    script has no such rule, and where Table 1's count equals the source's size they were kept."""
    for key in ("prompt", "chosen", "rejected"):
        if key not in row or not row[key]:
            raise DropRow(f"missing_{key}")
    for key in ("prompt", "chosen", "rejected"):
        for message in row[key]:
            if not isinstance(message.get("content"), str) or not message["content"].strip():
                raise DropRow(f"empty_turn_{key}")
    if drop_identical and ([m["content"].strip() for m in row["chosen"]]
                           == [m["content"].strip() for m in row["rejected"]]):
        raise DropRow("identical_chosen_rejected")
    return row


def check_prompt_row(row: dict[str, Any]) -> dict[str, Any]:
    if not row.get("prompt"):
        raise DropRow("missing_prompt")
    for message in row["prompt"]:
        if not isinstance(message.get("content"), str) or not message["content"].strip():
            raise DropRow("empty_turn_prompt")
    return row


def _sample_key(name: str, seed: int, row_id: str) -> int:
    """Seeded pseudo-random rank of a row: the subsample is the rows with the smallest keys.

    Why not `random.sample`: this needs no list of all rows (500k out of 10M StackExchange pairs fits
    in a bounded heap) and does not depend on file order, only on (name, seed, id)."""
    return int.from_bytes(hashlib.sha256(f"{name}:{seed}:{row_id}".encode()).digest()[:8], "big")


def prepare(name: str, *, seed: int = 0, max_rows: int | None = None,
            files: list[Path] | None = None) -> PreparedSplit:
    """Load, curate, drop-and-count, (down)sample deterministically, fingerprint.

    `files` replaces the local/hub lookup with explicit raw files in the dataset's raw format.
    Output rows are sorted by id, so the same seed gives byte-identical splits."""
    return prepare_spec(DATASETS.get(name), seed=seed, max_rows=max_rows, files=files)


def prepare_spec(spec: DatasetSpec, *, seed: int = 0, max_rows: int | None = None,
                 files: list[Path] | None = None) -> PreparedSplit:
    """`prepare` for a spec object (registered or not, e.g. a test's smaller variant)."""
    name = spec.name
    if spec.components:
        if files:
            raise ValueError(f"{name!r} is a mix of {[c for c, _ in spec.components]}; it takes no --file")
        return _prepare_mix(spec, seed=seed, max_rows=max_rows)
    if files is not None:
        if spec.load_files is None:
            raise ValueError(f"dataset {name!r} does not read raw files")
        raw_rows: Iterable[Any] = spec.load_files([Path(f) for f in files])
        # a loader may read more than the files given (e.g. a prompt filter's own source)
        sources = list(getattr(raw_rows, "sources", [str(f) for f in files]))
    else:
        raw_rows = spec.load_raw(seed)
        sources = []
    return _curate_and_sample(spec, raw_rows, seed=seed, max_rows=max_rows, sources=sources)


def _curate_and_sample(spec: DatasetSpec, raw_rows: Iterable[Any], *, seed: int, max_rows: int | None,
                       sources: list[str]) -> PreparedSplit:
    target = min((x for x in (spec.downsample_to, max_rows) if x is not None), default=None)
    dropped: Counter[str] = Counter()
    seen: set[str] = set()
    heap: list[tuple[int, str, dict[str, Any]]] = []  # (-key, id, row): max-heap of the k smallest keys
    kept_all: list[dict[str, Any]] = []
    raw_count = 0

    def check(row: dict[str, Any]) -> dict[str, Any]:
        if spec.kind == "preference":
            return check_preference_row(row, drop_identical=spec.drop_identical)
        return check_prompt_row(row)

    for raw in raw_rows:
        raw_count += 1
        if isinstance(raw, DropRow):
            dropped[raw.reason] += 1
            continue
        try:
            row = check(spec.curate(raw))
        except DropRow as drop:
            dropped[drop.reason] += 1
            continue
        if row["id"] in seen:
            dropped["duplicate"] += 1
            continue
        seen.add(row["id"])
        if target is None:
            kept_all.append(row)
            continue
        item = (-_sample_key(spec.name, seed, row["id"]), row["id"], row)
        if len(heap) < target:
            heapq.heappush(heap, item)
        elif item[:2] > heap[0][:2]:
            heapq.heapreplace(heap, item)
    rows = kept_all if target is None else [item[2] for item in heap]
    rows.sort(key=lambda r: r["id"])
    if not sources and hasattr(raw_rows, "sources"):
        sources = list(raw_rows.sources)
    return PreparedSplit(spec.name, rows, raw_count, dict(dropped), fingerprint_rows(rows), seed, sources)


def _prepare_mix(spec: DatasetSpec, *, seed: int, max_rows: int | None) -> PreparedSplit:
    pooled: list[dict[str, Any]] = []
    dropped: Counter[str] = Counter()
    raw_count = 0
    sources: list[str] = []
    for component, count in spec.components:
        part = prepare(component, seed=seed, max_rows=count)
        raw_count += part.raw_count
        sources.extend(part.sources)
        for reason, n in part.dropped.items():
            dropped[f"{component}/{reason}"] += n
        if count is not None and part.kept < count:
            # A short component changes the mix proportions: say so instead of silently mixing less.
            dropped[f"{component}/short_by"] += count - part.kept
        pooled.extend({**row, "source": component} for row in part.rows)

    # Components already applied their own rules (some keep identical pairs, as the authors did).
    pooled_spec = dataclasses.replace(spec, curate=lambda row: row, drop_identical=False)
    mixed = _curate_and_sample(pooled_spec, pooled, seed=seed, max_rows=max_rows, sources=sources)
    mixed.raw_count = raw_count
    for reason, n in mixed.dropped.items():
        dropped[reason] += n
    mixed.dropped = dict(dropped)
    return mixed


# ---------------------------------------------------------------------------------------------
# Reading raw files in the hub's formats
# ---------------------------------------------------------------------------------------------

def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """JSON lines (optionally .gz); a bad line (or a non-UTF-8 byte) fails naming file and line."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh, _utf8_errors_name_the_line(path):
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataFormatError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise DataFormatError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            yield row


@contextlib.contextmanager
def _utf8_errors_name_the_line(path: Path) -> Iterator[None]:
    """A decoding error while reading `path` becomes a DataFormatError naming the file and the line
    (the text reader decodes whole blocks, so its own error knows neither)."""
    from harness.text_files import non_utf8_message

    try:
        yield
    except UnicodeDecodeError:
        raise DataFormatError(non_utf8_message(path)) from None


def read_json_array(path: Path) -> Iterator[dict[str, Any]]:
    """A JSON file holding a list of objects (AlpacaFarm's layout); JSON lines are accepted too."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh, _utf8_errors_name_the_line(path):
        text = fh.read()
    if not text.lstrip().startswith("["):
        yield from read_jsonl(path)
        return
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataFormatError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    for index, row in enumerate(data):
        if not isinstance(row, dict):
            raise DataFormatError(f"{path}: item {index}: expected a JSON object, got {type(row).__name__}")
        yield row


def read_csv(path: Path) -> Iterator[dict[str, Any]]:
    """CSV with a header; rows carry `_line` (the file line the record starts on) for error messages."""
    csv.field_size_limit(2**31 - 1)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", newline="") as fh, _utf8_errors_name_the_line(path):
        reader = csv.DictReader(fh)
        if not reader.fieldnames:
            raise DataFormatError(f"{path}:1: empty CSV (no header)")
        line = reader.line_num + 1
        for row in reader:
            if None in row:  # more cells than header fields
                raise DataFormatError(f"{path}:{line}: {len(row[None])} cell(s) beyond the header's "
                                      f"{len(reader.fieldnames)} columns")
            row["_line"] = line
            yield row
            line = reader.line_num + 1


def read_parquet(path: Path) -> Iterator[dict[str, Any]]:
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for a non-parquet file
        raise DataFormatError(f"{path}: not a parquet file ({exc})") from None
    for batch in table.iter_batches(batch_size=2048):
        yield from batch.to_pylist()


def read_any(path: Path) -> Iterator[dict[str, Any]]:
    """Rows of a raw file by its suffix; every row gets `_where` = 'file:line' for error messages."""
    name = path.name.lower()
    if name.endswith((".jsonl", ".jsonl.gz")):
        rows: Iterator[dict[str, Any]] = read_jsonl(path)
        numbered = True
    elif name.endswith((".json", ".json.gz")):
        rows, numbered = read_json_array(path), False
    elif name.endswith((".csv", ".csv.gz")):
        for row in read_csv(path):
            row["_where"] = f"{path}:{row.pop('_line')}"
            yield row
        return
    elif name.endswith(".parquet"):
        rows, numbered = read_parquet(path), False
    else:
        raise DataFormatError(f"{path}: unknown raw file type (expected .jsonl[.gz], .json, .csv, .parquet)")
    for index, row in enumerate(rows, 1):
        row["_where"] = f"{path}:{index}" if numbered else f"{path}: row {index}"
        yield row


def require_fields(row: dict[str, Any], fields: Iterable[str], where: str) -> None:
    missing = [f for f in fields if f not in row]
    if missing:
        present = sorted(k for k in row if not k.startswith("_"))
        raise DataFormatError(f"{where}: missing field(s) {missing}; present: {present}")


def where(row: dict[str, Any]) -> str:
    return str(row.get("_where", "<hub row>"))


# ---------------------------------------------------------------------------------------------
# Locating raw data: local files first, then the hub
# ---------------------------------------------------------------------------------------------

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


def source_fingerprint(name: str) -> dict[str, Any]:
    """What `prepare(name)` would read now, resolved without reading any row: the identity of the raw
    input plus the code that turns it into rows. Part of the `prepare_data` stage key, so pointing
    HARNESS_DATA_DIR at other rows, editing a raw file or changing a loader reruns that stage (and
    everything downstream), and nothing else.

    {"dataset": name,
     "code": hash of the dataset's module and the registry modules it uses (`harness.cache.code_fingerprint`),
     "raw": one of
        {"files": {path relative to its data dir: sha256}}      local files (`local_files` via `find_local`)
        {"hub": id, "revision": commit | None, "config", "split", "files"}   no local file; None = unpinned
        {"unavailable": True}                                    neither (prepare raises DataUnavailableError)
        {"components": {name: source_fingerprint(name)}}         a mix
        {"inputs": spec.raw_inputs()}                            a custom loader that declares its inputs
        {"generated": True}                                      built-in data: the code is the data}
    """
    from harness.cache import code_fingerprint, file_sha256
    from harness.paths import data_label

    spec = DATASETS.get(name)
    raw: dict[str, Any]
    if spec.components:
        raw = {"components": {component: source_fingerprint(component) for component, _ in spec.components}}
    elif spec.read is not None:  # a `source_spec`: local files first, then the hub (as `load_raw` does)
        paths = find_local(spec.local_files)
        if paths:
            raw = {"files": {data_label(p): file_sha256(p) for p in paths}}
        elif spec.hub_id and not hub_disabled():
            raw = {"hub": spec.hub_id, "revision": spec.revision, "config": spec.hub_config, "split": spec.split,
                   "files": list(spec.hub_files)}
        else:
            raw = {"unavailable": True}
    elif spec.raw_inputs is not None:
        raw = {"inputs": spec.raw_inputs()}
    else:
        raw = {"generated": True}
    # The package's __init__ only imports every dataset module: not a dependency of any one of them.
    code = code_fingerprint(_REGISTERED_IN.get(name, __name__), ("datasets_registry",), exclude=("datasets_registry",))
    return {"dataset": name, "code": code, "raw": raw}


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


def mix_spec(*, components: tuple[tuple[str, int | None], ...], **fields: Any) -> DatasetSpec:
    def load_raw(seed: int) -> Iterable[dict[str, Any]]:
        raise RuntimeError("mixes are prepared from their components (prepare() handles them)")

    def available() -> bool:
        return all(DATASETS.get(name).is_available() for name, _ in components)

    spec = DatasetSpec(load_raw=load_raw, curate=lambda row: row, components=components, **fields)
    spec.is_available = available
    return spec


# ---------------------------------------------------------------------------------------------
# Helpers shared by the source modules
# ---------------------------------------------------------------------------------------------

def user(content: str) -> dict[str, str]:
    return {"role": "user", "content": content}


def assistant(content: str) -> dict[str, str]:
    return {"role": "assistant", "content": content}


def text_field(row: dict[str, Any], key: str) -> str:
    """A string field; None / non-string content drops the row (a malformed turn), absent fails the file."""
    require_fields(row, [key], where(row))
    value = row[key]
    if value is None:
        raise DropRow(f"missing_{key}")
    if not isinstance(value, str):
        raise DataFormatError(f"{where(row)}: field {key!r} should be a string, got {type(value).__name__}")
    return value


def row_rng(*parts: Any) -> int:
    """A per-row deterministic choice (e.g. which lower-rated response becomes `rejected`): a hash of
    the row's content, so the binarisation is fixed like a released dataset, whatever the seed."""
    return int.from_bytes(hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode()).digest()[:8], "big")


def preference_row(source: str, prompt: list[dict[str, str]], chosen: str, rejected: str,
                   scores: dict[str, float] | None = None, **extra: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": content_id(source, prompt, chosen, rejected),
        "prompt": prompt,
        "chosen": [assistant(chosen)],
        "rejected": [assistant(rejected)],
        "source": source,
    }
    if scores:
        row["scores"] = {k: float(v) for k, v in scores.items()}
    row.update(extra)
    return row


def write_prepared(split: PreparedSplit, out_dir: Path | None = None) -> Path:
    """Write a prepared split to the local cache (`results/prepared/<name>/seed<seed>[...].jsonl`)
    with a `.meta.json` holding counts, drop reasons and the fingerprint. Returns the rows path."""
    from harness.paths import results_dir

    folder = Path(out_dir) if out_dir else results_dir() / "prepared" / split.name
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"seed{split.seed}-n{split.kept}.jsonl"
    tmp = path.with_suffix(".jsonl.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for row in split.rows:
            fh.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
    tmp.replace(path)
    path.with_suffix(".meta.json").write_text(json.dumps(split.meta(), indent=2, sort_keys=True) + "\n")
    return path
