"""Helpers shared by the paper-suite task modules: local data lookup, limits, prompt rendering, skips.

Every benchmark reads its data from the local data directories first (`harness.paths.find_data_file`,
which includes `../shared/data`) so the suite runs offline; a missing file turns into a skipped task
whose reason names the file and how to provide it, never into a made-up number.
"""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Callable, Iterable, Sequence, Sized
from pathlib import Path
from typing import Any

from harness.evaluation.base import EvalContext, MissingInput, TaskResult
from harness.paths import find_data_file, shared_data_dir

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


def ensure_nltk_data() -> Path:
    """IFEval's checkers need NLTK `punkt_tab`; point NLTK at the shared copy when the user has not.
    Returns its English folder.

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
        return Path(str(nltk.data.find("tokenizers/punkt_tab/english/")))
    except LookupError as err:
        raise RuntimeError(
            "IFEval needs the NLTK 'punkt_tab' tokenizer: set NLTK_DATA to a folder containing "
            "tokenizers/punkt_tab (e.g. ../shared/data/nltk_data), or run "
            "`python -m nltk.downloader punkt_tab` on a machine with internet access"
        ) from err


def punkt_tab_dir() -> Path:
    """NLTK punkt_tab's English folder (part of IFEval's fingerprint): looked up in NLTK_DATA first, so
    planning a grid does not import NLTK (seconds); otherwise as `ensure_nltk_data` finds it."""
    if not os.environ.get("NLTK_DATA"):
        shared = shared_data_dir()
        if shared is not None and (shared / "nltk_data").is_dir():
            os.environ["NLTK_DATA"] = str(shared / "nltk_data")
    for folder in os.environ.get("NLTK_DATA", "").split(os.pathsep):
        english = Path(folder) / "tokenizers" / "punkt_tab" / "english"
        if folder and english.is_dir():
            return english
    return ensure_nltk_data()


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


def encode_pair(tokenizer: Any, context: str, continuation: str,
                add_special_tokens: bool = False) -> tuple[list[int], list[int]]:
    """Token ids of (context, continuation) split the way lm-eval's HF backend splits them.

    Trailing spaces of the context move into the continuation, the whole string is encoded once and
    the continuation is what follows the separately encoded context; so " A" after "Answer:" is scored
    as the tokenizer would produce it in running text. `add_special_tokens=True` encodes both with the
    tokenizer's special tokens (its BOS), as open-instruct's scoring calls did.
    """
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = tokenizer(context + continuation, add_special_tokens=add_special_tokens)["input_ids"]
    ctx_ids = tokenizer(context, add_special_tokens=add_special_tokens)["input_ids"]
    return ctx_ids, whole[len(ctx_ids):]


def continuation_logprobs(
    model: Any, tokenizer: Any, pairs: Sequence[tuple[str, str]], batch_size: int = 8,
    max_length: int = 2048, add_special_tokens: bool = False,
) -> list[tuple[float, bool]]:
    """(sum of log-probs of the continuation given the context, whether it is the greedy continuation)
    for each (context, continuation) pair; what lm-eval's `loglikelihood` returns.

    Pairs whose context is shared and whose continuations are single tokens (MMLU's " A".." D") cost one
    forward pass of the context together. `add_special_tokens`: see `encode_pair`.
    """
    encoded = [encode_pair(tokenizer, c, x, add_special_tokens) for c, x in pairs]
    for i, (_, cont_ids) in enumerate(encoded):
        if not cont_ids:
            raise ValueError(f"empty continuation after encoding pair {i}: {pairs[i][1]!r}")
    return encoded_logprobs(model, tokenizer, encoded, batch_size=batch_size, max_length=max_length)


def encoded_logprobs(model: Any, tokenizer: Any, encoded: Sequence[tuple[list[int], list[int]]],
                     batch_size: int = 8, max_length: int = 2048) -> list[tuple[float, bool]]:
    """`continuation_logprobs` on pairs already encoded as (context ids, continuation ids)."""
    import torch

    results: list[tuple[float, bool] | None] = [None] * len(encoded)
    # Each forward input is (token ids, [(pair index, position of first continuation logit, cont ids)]).
    jobs: dict[tuple[int, ...], list[tuple[int, list[int]]]] = {}
    singles: list[tuple[list[int], list[tuple[int, int, list[int]]]]] = []
    for i, (ctx_ids, cont_ids) in enumerate(encoded):
        if not cont_ids:
            raise ValueError(f"empty continuation ids for pair {i}")
        if len(cont_ids) == 1 and ctx_ids:
            jobs.setdefault(tuple(ctx_ids), []).append((i, cont_ids))
        else:
            full = (ctx_ids + cont_ids)[-(max_length + 1):]
            n_ctx = len(full) - len(cont_ids)
            singles.append((full[:-1], [(i, n_ctx - 1, cont_ids)]))
    forwards = [(list(k), [(i, len(k) - 1, c) for i, c in v]) for k, v in jobs.items()] + singles
    forwards.sort(key=lambda f: len(f[0]))
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(forwards), batch_size):
            batch = forwards[start:start + batch_size]
            # Left padding: every row's needed logits are its last positions, so only the last `keep`
            # positions go through the LM head (a [batch, seq, vocab] tensor would cost gigabytes).
            rows = [ids[-max_length:] for ids, _ in batch]
            width = max(len(ids) for ids in rows)
            keep = max(len(ids) - pos for (ids, targets) in batch for _, pos, _ in targets)
            input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, ids in enumerate(rows):
                input_ids[row, width - len(ids):] = torch.tensor(ids)
                mask[row, width - len(ids):] = 1
            positions = (mask.cumsum(dim=1) - 1).clamp(min=0)  # real tokens at 0..n-1, as unpadded
            inputs = dict(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                          position_ids=positions.to(device))
            with torch.no_grad():
                try:
                    logits = model(**inputs, logits_to_keep=keep).logits
                except TypeError:  # architectures without `logits_to_keep`
                    logits = model(**inputs).logits[:, -keep:]
            logprobs = torch.log_softmax(logits.float(), dim=-1).cpu()
            for row, (ids, targets) in enumerate(batch):
                for i, pos, cont in targets:
                    # `pos` indexes the untruncated row; count it from the end instead.
                    from_end = len(ids) - pos
                    span = logprobs[row, keep - from_end: keep - from_end + len(cont)]
                    cont_t = torch.tensor(cont)
                    total = float(span.gather(1, cont_t[:, None]).sum())
                    greedy = bool((span.argmax(dim=-1) == cont_t).all())
                    results[i] = (total, greedy)
    finally:
        model.train(was_training)
    return [r for r in results if r is not None]
