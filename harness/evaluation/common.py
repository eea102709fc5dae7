"""Helpers shared by the paper-suite task modules: local data lookup, limits, prompt rendering, skips.

Every benchmark reads its data from the local data directories first (`harness.paths.find_data_file`,
which includes `../shared/data`) so the suite runs offline; a missing file turns into a skipped task
whose reason names the file and how to provide it, never into a made-up number.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Iterable, Sequence, Sized
from pathlib import Path
from typing import Any

from harness.evaluation.base import EvalContext, MissingInput, TaskResult
from harness.loglikelihood import continuation_logprobs
from harness.paths import find_data_file

Messages = list[dict[str, str]]


class MissingDataError(MissingInput):
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


def count_rows(load: Callable[[], Sized]) -> int | None:
    """How many rows `load()` gives; None when its data is missing (a task's `describe`: the dry run then
    says the size is unknown, and why the task will not run)."""
    try:
        return len(load())
    except FileNotFoundError:  # MissingDataError, MissingInput
        return None


def describe_decoding(params: Any) -> str:
    """A SamplingParams in words, for a task's `describe` (the same object its run generates with)."""
    if params.temperature > 0:
        text = f"sampling T={params.temperature:g}, top_p={params.top_p:g}"
    else:
        text = "greedy"
    if params.num_return_sequences > 1:
        text += f", n={params.num_return_sequences}"
    text += f", up to {params.max_new_tokens} new tokens"
    return text + (f", stop at {list(params.stop)!r}" if params.stop else ", no stop string")


def scoring_model(ctx: EvalContext) -> tuple[Any, Any]:
    """(causal LM, tokenizer) for log-likelihood scoring: the generator's model when it is an HF one
    (no second copy in memory), otherwise a fresh load of `ctx.model_path`."""
    gen = ctx._generator
    if gen is not None and hasattr(gen, "model") and hasattr(gen, "tokenizer"):
        return gen.model, gen.tokenizer
    try:
        gen = ctx.generator
    except Exception:  # noqa: BLE001 - an engine that failed to start; fall back to a plain HF load
        gen = None
    if gen is not None and hasattr(gen, "model"):
        return gen.model, gen.tokenizer
    from harness.models import load_causal_lm

    return load_causal_lm(ctx.model_path)


def loglikelihoods(ctx: EvalContext, pairs: Sequence[tuple[str, str]]) -> list[tuple[float, bool]]:
    """(sum of log-probs of the continuation given the context, is it the greedy continuation) for each
    pair, from the context's engine: in-process on its model at its precision, or from a server's
    prompt log-probs (`harness.openai_engine`). A generator without log-likelihoods (best-of-N's) is
    scored on a plain load of `ctx.model_path`."""
    score = getattr(ctx.generator, "loglikelihood", None)
    if score is not None:
        return score(pairs, batch_size=ctx.batch_size)
    model, tok = scoring_model(ctx)
    return continuation_logprobs(model, tok, pairs, batch_size=ctx.batch_size)
