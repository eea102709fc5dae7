"""Registry core: the normalised row schema, row ids and builders, preparation with drop counting, fingerprints.

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

Dataset specs and the registry are in `spec.py`; where raw rows come from (`load_raw`, `source_spec`)
in `raw_sources.py`; reading raw files in `raw_files.py`.
A loader may yield a `DropRow` instead of a row: it is counted like a curation drop (used when rows
are grouped before curation, e.g. all PRM800K labels of one problem).
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets_registry.raw_sources import find_local, hub_disabled
from datasets_registry.spec import DATASETS, DatasetSpec, DropRow, registering_module


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
    code = code_fingerprint(registering_module(name) or __name__, ("datasets_registry",), exclude=("datasets_registry",))
    return {"dataset": name, "code": code, "raw": raw}


def user(content: str) -> dict[str, str]:
    return {"role": "user", "content": content}


def assistant(content: str) -> dict[str, str]:
    return {"role": "assistant", "content": content}


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
