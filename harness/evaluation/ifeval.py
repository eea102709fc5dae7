"""IFEval (instruction following): official checkers, loose prompt-level accuracy (paper App. D).

Choice: the project's generation engine + lm-eval's IFEval scorer. lm-eval's
`lm_eval.tasks.ifeval.utils.process_results` wraps its copy of the official Google checkers
(`instructions_registry`) and computes the four official numbers per prompt; we call it on our
generations rather than running lm-eval's generation loop, so every task in the suite shares one
engine (chat template, batching, vLLM when present) and the generations are saved for re-scoring.

Setting: the 541 prompts of `ifeval/input_data.jsonl`, zero-shot, one user turn in the model's chat
template, greedy, up to 1280 new tokens (lm-eval's `max_gen_toks`), no stop sequence.

Metrics (0-100): `prompt_level_loose_acc` (the paper's number and the score), plus the official
`prompt_level_strict_acc`, `inst_level_strict_acc`, `inst_level_loose_acc`. Loose = the response counts
as following an instruction if any of 8 variants (first/last line removed, '*' removed) does.

NLTK `punkt_tab` is required by two checkers: NLTK_DATA is pointed at the shared copy when unset;
without it the task is not run and says how to provide it (see `harness.paths.ensure_nltk_data`); its files
are part of the task's fingerprint, like the prompt file.

Settings (`IFEvalSettings`, grid `eval.settings.ifeval`): `setting`, `max_new_tokens` (default 1280,
lm-eval's; 2,048 under `setting: paper`; HARNESS_IFEVAL_MAX_NEW_TOKENS supplies another default for CPU
runs). The budget used is logged as `ifeval/max_new_tokens`.

The `paper` setting is open-instruct's 2024 `ifeval` job (`eval/ifeval/run_eval.py` at ea3467dbb): the same
541 prompts as the user turn in open-instruct's Tulu chat format, BOS as the tokenizer adds it, greedy, up
to 2,048 new tokens, no stop. Scored alike (open-instruct carries its own copy of the same official
checkers, which draws unset checker settings from the unseeded global `random`; here they are seeded).

Reproducible rescoring: where a prompt's kwargs leave a checker setting unset or invalid, the official
checker draws it from Python's global `random`. Of the 541 prompts, two do: keys 1122 and 1129 ask for
at least 4 "#" / 6 "!", which `letter_frequency` does not accept as a letter, so it checks a random
letter instead, and identical responses could score up to 2 prompts apart from one run to the next.
Each prompt is therefore scored with `random` seeded by the prompt's key (and the caller's random state
restored afterwards): the same responses always get the same scores. The letter is still the checker's
draw, not the "#" / "!" the prompt asks for, as in the official scorer. The `language:response_language`
checker runs langdetect, which is randomised too (it reseeds from the OS on each call); scoring sets
langdetect's documented `DetectorFactory.seed = 0` for the same reason.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import Field

from harness.evaluation.base import (
    BenchmarkSettings,
    EvalContext,
    TaskProtocol,
    TaskResult,
    TaskSpec,
    folder_files,
    register_task,
)
from harness.evaluation.common import (
    MissingDataError,
    apply_limit,
    benchmark_file,
    count_rows,
    describe_decoding,
    mean_pct,
    read_jsonl,
    require_fields,
    skipped,
)
from harness.evaluation.open_instruct import (
    BOS_RULE,
    CHAT_FORMAT,
    OPEN_INSTRUCT,
    generation_prompts,
    tulu_chat,
)
from harness.generation import SamplingParams
from harness.paths import ensure_nltk_data, punkt_tab_dir

TASK = "ifeval"
MAX_NEW_TOKENS = 1280
PAPER_MAX_NEW_TOKENS = 2048  # open-instruct's eval/ifeval/run_eval.py
MAX_NEW_TOKENS_ENV = "HARNESS_IFEVAL_MAX_NEW_TOKENS"  # a lower budget for CPU runs (logged)
FIELDS = ("key", "prompt", "instruction_id_list", "kwargs")


class IFEvalSettings(BenchmarkSettings):
    max_new_tokens: int = Field(MAX_NEW_TOKENS, ge=1, description="generation budget per response "
                                "(lm-eval's max_gen_toks; paper setting: open-instruct's 2048); lower it for CPU runs")
    env = {"max_new_tokens": MAX_NEW_TOKENS_ENV}
    paper_defaults = {"max_new_tokens": PAPER_MAX_NEW_TOKENS}


def data_files(_settings: IFEvalSettings | None = None) -> list[Path]:
    """The prompts and NLTK's punkt_tab (two checkers tokenize with it)."""
    try:
        punkt = punkt_tab_dir()
    except RuntimeError as err:
        raise MissingDataError(str(err)) from None
    return [benchmark_file("ifeval/input_data.jsonl"), *folder_files(punkt)]


def load_rows(limit: int | None) -> list[dict[str, Any]]:
    path = benchmark_file("ifeval/input_data.jsonl")
    rows = read_jsonl(path)
    for i, row in enumerate(rows):
        require_fields(row, FIELDS, f"{path} row {i}")
        if len(row["kwargs"]) != len(row["instruction_id_list"]):
            raise ValueError(f"{path} row {i}: 'kwargs' and 'instruction_id_list' differ in length")
    return apply_limit(rows, limit)


@contextlib.contextmanager
def seeded_global_random(seed: int) -> Iterator[None]:
    """The checkers' two sources of chance seeded for the duration, then restored: the global `random`
    (the letter draw) and langdetect's detector (`language:response_language` runs langdetect, whose
    detector reseeds a private `random.Random` from the OS on every call unless `DetectorFactory.seed`
    is set: measured, the same 541 responses scored twice differed by one instruction)."""
    from langdetect import DetectorFactory

    state = random.getstate()
    detector_seed = DetectorFactory.seed
    random.seed(seed)
    DetectorFactory.seed = 0  # langdetect's documented way to make detection deterministic
    try:
        yield
    finally:
        random.setstate(state)
        DetectorFactory.seed = detector_seed


def score_one(row: dict[str, Any], response: str) -> dict[str, Any]:
    """lm-eval's official-checker results for one response (bools and per-instruction bool lists); the
    checkers' random draws are seeded by the prompt's key (see the module docstring)."""
    ensure_nltk_data()  # before the import: lm-eval tries (and offline fails) to download punkt_tab
    from lm_eval.tasks.ifeval.utils import process_results

    with seeded_global_random(int(row["key"])):
        return process_results(row, [response])


def score_responses(rows: list[dict[str, Any]], responses: list[str]) -> TaskResult:
    results = [score_one(row, resp) for row, resp in zip(rows, responses)]
    inst_strict = [b for r in results for b in r["inst_level_strict_acc"]]
    inst_loose = [b for r in results for b in r["inst_level_loose_acc"]]
    metrics = {
        f"{TASK}/prompt_level_loose_acc": mean_pct([r["prompt_level_loose_acc"] for r in results]),
        f"{TASK}/prompt_level_strict_acc": mean_pct([r["prompt_level_strict_acc"] for r in results]),
        f"{TASK}/inst_level_loose_acc": mean_pct(inst_loose),
        f"{TASK}/inst_level_strict_acc": mean_pct(inst_strict),
        f"{TASK}/n": float(len(rows)),
    }
    samples = [
        {"key": row["key"], "prompt": row["prompt"], "instruction_id_list": row["instruction_id_list"],
         "output": resp, **res}
        for row, resp, res in zip(rows, responses, results)
    ]
    return TaskResult(metrics, metrics[f"{TASK}/prompt_level_loose_acc"], samples)


def run(ctx: EvalContext, max_new_tokens: int | None = None) -> TaskResult:
    """The registered task; `max_new_tokens` (default: the settings') is lowered only by fast tests."""
    try:
        rows = load_rows(ctx.limit)
        ensure_nltk_data()  # fail before spending time on generation
    except (MissingDataError, RuntimeError) as err:
        return skipped(TASK, str(err))
    settings = ctx.settings_for(TASK)
    params = sampling_params(settings, ctx.seed, max_new_tokens)
    prompts, chat = build_prompts(ctx, rows, settings)
    outputs = ctx.generator.generate(prompts, params, chat=chat)
    result = score_responses(rows, [o[0] for o in outputs])
    result.metrics[f"{TASK}/max_new_tokens"] = float(params.max_new_tokens)
    return result


def sampling_params(settings: IFEvalSettings, seed: int, max_new_tokens: int | None = None) -> SamplingParams:
    return SamplingParams(max_new_tokens=max_new_tokens or settings.max_new_tokens, temperature=0.0, seed=seed)


def build_prompts(ctx: EvalContext, rows: list[dict[str, Any]], settings: IFEvalSettings) -> tuple[list[Any], bool]:
    """(prompts, chat): the paper setting's rendered here, the harness setting's by the engine."""
    if settings.setting == "paper":
        return generation_prompts(ctx.generator, [tulu_chat(r["prompt"]) for r in rows]), False
    return [[{"role": "user", "content": r["prompt"]}] for r in rows], True


def describe(settings: IFEvalSettings, limit: int | None) -> TaskProtocol:
    size = count_rows(lambda: load_rows(limit))
    subset = "all 541 prompts" + (f"; --limit {limit}: the first {limit}" if limit else "")
    decoding = describe_decoding(sampling_params(settings, 0))
    judge = "official checkers (lm-eval's copy, random draws seeded per prompt key); loose prompt-level accuracy"
    if settings.setting == "paper":
        return TaskProtocol("paper", subset, size, None,
                            f"{OPEN_INSTRUCT} eval/ifeval: the prompt as the user turn in {CHAT_FORMAT}; {BOS_RULE}",
                            decoding, judge, tuple(settings.departures_from_paper()))
    return TaskProtocol("harness", subset, size, None,
                        "the prompt as the user turn in the model's chat template; no BOS added", decoding, judge)


register_task(TaskSpec(
    name=TASK,
    category="instruction_following",
    run=run,
    describe=describe,
    settings=IFEvalSettings(),
    data_files=data_files,
    uses=(),
    description=("IFEval 541 prompts, chat template, greedy; lm-eval's copy of the official checkers (their "
                 "random draws seeded by the prompt key)."),
    score_rule="loose prompt-level accuracy, % of prompts (0-100)",
))
