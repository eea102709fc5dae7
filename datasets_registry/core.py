"""Registry core: the normalised row schema, dataset specs, preparation with drop counting, fingerprints.

Row schema (every preference dataset, after curation):
    {"id": str,                       # stable: hash of source + content, independent of seed / order
     "prompt": [{"role": "user"|"system"|"assistant", "content": str}, ...],   # chat messages
     "chosen": [{"role": "assistant", "content": str}],
     "rejected": [{"role": "assistant", "content": str}],
     "source": str,                   # dataset name (or sub-source for mixes)
     "scores": {aspect: float} | absent}
Prompt-set rows (policy-training prompts, verifiable evals):
    {"id": str, "prompt": [...messages], "source": str, optional "answer"/"constraint" fields}
This is TRL's conversational preference / prompt-only format, so rows go to its trainers unchanged.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from harness.registry import Registry

DatasetKind = Literal["preference", "prompts"]
SourceType = Literal["human", "web", "synthetic", "mixed", "built-in"]


class DropRow(Exception):
    """Raised by a curation function for a row that must be dropped; `reason` is counted."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class DataFormatError(ValueError):
    """A raw file that is not in the expected format: names the file, line and field."""


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
    local_files: tuple[str, ...] = ()  # relative paths looked for under the local data dirs
    is_available: Callable[[], bool] = lambda: True


DATASETS: Registry[DatasetSpec] = Registry("dataset")


def register(spec: DatasetSpec) -> DatasetSpec:
    DATASETS.register(spec.name, spec)
    return spec


@dataclass
class PreparedSplit:
    name: str
    rows: list[dict[str, Any]]
    raw_count: int
    dropped: dict[str, int] = field(default_factory=dict)
    fingerprint: str = ""

    @property
    def kept(self) -> int:
        return len(self.rows)


def stable_id(*parts: Any) -> str:
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def fingerprint_rows(rows: list[dict[str, Any]]) -> str:
    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps(row, sort_keys=True, ensure_ascii=False).encode())
        digest.update(b"\n")
    return digest.hexdigest()[:16]


def check_preference_row(row: dict[str, Any]) -> dict[str, Any]:
    """Generic malformed-row rules (App. B footnote: 'we filter out any malformed examples')."""
    for key in ("prompt", "chosen", "rejected"):
        if key not in row or not row[key]:
            raise DropRow(f"missing_{key}")
    for key in ("prompt", "chosen", "rejected"):
        for message in row[key]:
            if not isinstance(message.get("content"), str) or not message["content"].strip():
                raise DropRow(f"empty_turn_{key}")
    if [m["content"].strip() for m in row["chosen"]] == [m["content"].strip() for m in row["rejected"]]:
        raise DropRow("identical_chosen_rejected")
    return row


def prepare(name: str, *, seed: int = 0, max_rows: int | None = None) -> PreparedSplit:
    """Load, curate, drop-and-count, (down)sample deterministically, fingerprint."""
    spec = DATASETS.get(name)
    kept: list[dict[str, Any]] = []
    dropped: Counter[str] = Counter()
    raw_count = 0
    for raw in spec.load_raw(seed):
        raw_count += 1
        try:
            row = spec.curate(raw)
            if spec.kind == "preference":
                row = check_preference_row(row)
        except DropRow as drop:
            dropped[drop.reason] += 1
            continue
        kept.append(row)
    # Deterministic order independent of file order, then seeded sampling.
    kept.sort(key=lambda r: r["id"])
    seen: set[str] = set()
    unique = []
    for row in kept:
        if row["id"] in seen:
            dropped["duplicate"] += 1
            continue
        seen.add(row["id"])
        unique.append(row)
    kept = unique
    target = min(x for x in (spec.downsample_to, max_rows, len(kept)) if x is not None)
    if target < len(kept):
        rng = random.Random(f"{name}:{seed}")
        kept = rng.sample(kept, target)
    return PreparedSplit(name, kept, raw_count, dict(dropped), fingerprint_rows(kept))


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """JSON lines (optionally .gz); a bad line fails naming file and line."""
    import gzip

    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
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


def require_fields(row: dict[str, Any], fields: Iterable[str], where: str) -> None:
    missing = [f for f in fields if f not in row]
    if missing:
        raise DataFormatError(f"{where}: missing field(s) {missing}; present: {sorted(row)}")
