"""Helpers shared by the paper-suite task modules: local data lookup, limits, prompt rendering, skips.

Every benchmark reads its data from the local data directories first (`harness.paths.find_data_file`,
which includes `../shared/data`) so the suite runs offline; a missing file turns into a skipped task
whose reason names the file and how to provide it, never into a made-up number.
"""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from harness.evaluation.base import EvalContext, TaskResult
from harness.paths import find_data_file, shared_data_dir

Messages = list[dict[str, str]]


class MissingDataError(FileNotFoundError):
    """A benchmark file is not in any local data directory; the message says where it was looked for."""


def benchmark_file(*relative: str) -> Path:
    """Absolute path of a benchmark file under `<data dir>/benchmarks/`, or a clear error."""
    candidates = [f"benchmarks/{r}" for r in relative]
    path = find_data_file(*candidates)
    if path is None:
        from harness.paths import data_dirs

        raise MissingDataError(
            f"benchmark file {candidates[0]!r} not found in any local data directory "
            f"({', '.join(str(d) for d in data_dirs())}); put it there or point HARNESS_DATA_DIR at a "
            "folder containing benchmarks/..."
        )
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({err})") from err
    return rows


def require_fields(row: dict[str, Any], fields: Iterable[str], where: str) -> None:
    missing = [f for f in fields if f not in row]
    if missing:
        raise ValueError(f"{where}: missing field(s) {missing}; has {sorted(row)}")


def apply_limit(rows: list[Any], limit: int | None) -> list[Any]:
    """First `limit` rows (deterministic, like lm-eval's --limit); all rows when limit is None/0."""
    return rows[:limit] if limit else rows


def skipped(task: str, reason: str, metrics: dict[str, float] | None = None) -> TaskResult:
    """A task that could not run: score None, the reason recorded, no invented numbers."""
    return TaskResult(metrics=metrics or {}, score=None, samples=[], skipped_reason=f"{task}: {reason}")


def mean_pct(values: Sequence[float | bool]) -> float:
    """Mean of 0/1 values as a percentage; NaN for an empty list (never a silent 0)."""
    if not values:
        return float("nan")
    return 100.0 * statistics.fmean(float(v) for v in values)


def chat_prompt_with_prefix(ctx: EvalContext, messages: Messages, assistant_prefix: str = "") -> str:
    """The model's chat template applied to `messages` (generation prompt added), then `assistant_prefix`.

    Used where the Tulu/open-instruct evaluation starts the assistant turn for the model (e.g. GSM8K's
    "Answer:"): the result is a raw string, generated with `chat=False` so it is not templated twice.
    """
    from harness.generation import render_prompt

    text = render_prompt(ctx.generator.tokenizer, messages, chat=True)
    if assistant_prefix:
        text += assistant_prefix
    return text


def ensure_nltk_data() -> None:
    """IFEval's checkers need NLTK `punkt_tab`; point NLTK at the shared copy when the user has not.

    Raises a RuntimeError telling how to provide it when it cannot be found (lm-eval would otherwise
    try a download that fails offline while printing that it succeeded).
    """
    if not os.environ.get("NLTK_DATA"):
        shared = shared_data_dir()
        if shared is not None and (shared / "nltk_data").is_dir():
            os.environ["NLTK_DATA"] = str(shared / "nltk_data")
    import nltk

    folder = os.environ.get("NLTK_DATA")
    if folder and folder not in nltk.data.path:
        nltk.data.path.insert(0, folder)
    try:
        nltk.data.find("tokenizers/punkt_tab/english/")
    except LookupError as err:
        raise RuntimeError(
            "IFEval needs the NLTK 'punkt_tab' tokenizer: set NLTK_DATA to a folder containing "
            "tokenizers/punkt_tab (e.g. ../shared/data/nltk_data), or run "
            "`python -m nltk.downloader punkt_tab` on a machine with internet access"
        ) from err
