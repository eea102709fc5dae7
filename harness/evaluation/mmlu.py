"""MMLU (factuality): 0-shot, answer-letter likelihood, average accuracy over test examples (App. D).

Setting: the official Hendrycks et al. prompt ("The following are multiple choice questions (with
answers) about <subject>.\\n\\n<question>\\nA. ..\\nB. ..\\nC. ..\\nD. ..\\nAnswer:"), zero-shot. The
prediction is the letter among " A", " B", " C", " D" with the highest next-token log-probability
(the official script compares these four logits; lm-eval's `mmlu` compares the same four
continuations' log-likelihoods). We choose log-likelihood over generation deliberately: it is the
official script's method and the paper's ("official MMLU evaluation script and prompts"), and it does
not depend on how a small model formats a free-form answer.

Chat models: the prompt is the user turn of the chat template and the assistant turn is started with
"The answer is:" (as the Tulu evaluation does for chat models), then the letter is scored. Models
without a chat template (or `chat=False`) are scored on the raw prompt, which is exactly lm-eval's
`mmlu_<subject>` task; the parity test runs lm-eval's pipeline on the same model in that mode.

Accuracy is over all test examples (not a mean of subject means). `--limit N`: the first
max(1, ceil(N / 57)) questions of every subject.

Settings (`MMLUSettings`, grid `eval.settings.mmlu`): `setting`. `harness` is the above. `paper` is
open-instruct's 2024 `mmlu_0shot` job (`eval/mmlu/run_eval.py` at ea3467dbb): the same questions, the
prompt as its `format_subject` renders it ("about  abstract algebra.": two spaces, every word gets a
leading one) with the question not stripped, in open-instruct's Tulu chat format with "The answer is:",
encoded with the tokenizer's special tokens (BOS for Llama-2 / Tulu-2), and the prediction the argmax
of the next-token log-probabilities of the last token of " A".." D" (its `get_next_word_predictions`).
Not reproduced: open-instruct loaded the model in 8-bit.

Score for the category average: `mmlu/acc` (0-100).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from harness.evaluation.base import (
    BenchmarkSettings,
    EvalContext,
    TaskProtocol,
    TaskResult,
    TaskSpec,
    register_task,
)
from harness.evaluation.common import (
    MissingDataError,
    chat_prompt_with_prefix,
    count_rows,
    loglikelihoods,
    mean_pct,
    scoring_model,
    skipped,
)
from harness.evaluation.open_instruct import BOS_RULE, CHAT_FORMAT, INT8_NOTE, OPEN_INSTRUCT, tulu_chat
from harness.loglikelihood import continuation_logprobs, encoded_logprobs
from harness.paths import find_data_file

TASK = "mmlu"
LETTERS = ("A", "B", "C", "D")
CHAT_ANSWER_PREFIX = "The answer is:"
COLUMNS = ("question", "choice0", "choice1", "choice2", "choice3", "answer")


def subject_files() -> list[Path]:
    folder = find_data_file("benchmarks/mmlu/test")
    if folder is None or not folder.is_dir():
        raise MissingDataError(
            "benchmarks/mmlu/test/<subject>_test.csv not found in any local data directory "
            "(HARNESS_DATA_DIR or ../shared/data)"
        )
    files = sorted(folder.glob("*_test.csv"))
    if len(files) != 57:
        raise MissingDataError(f"{folder}: expected 57 subject files *_test.csv, found {len(files)}")
    return files


def subject_name(path: Path) -> str:
    return path.name[: -len("_test.csv")]


def load_rows(limit: int | None) -> list[dict[str, Any]]:
    files = subject_files()
    k = max(1, math.ceil(limit / len(files))) if limit else None
    rows: list[dict[str, Any]] = []
    for path in files:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise ValueError(f"{path}: missing column(s) {missing}; header is {reader.fieldnames}")
            for i, rec in enumerate(reader):
                if k is not None and i >= k:
                    break
                answer = int(rec["answer"])
                if answer not in range(4):
                    raise ValueError(f"{path} row {i}: 'answer' must be 0-3, got {rec['answer']!r}")
                rows.append({
                    "subject": subject_name(path), "index": i, "question": rec["question"],
                    "choices": [rec[f"choice{j}"] for j in range(4)], "answer": answer,
                })
    return rows


class MMLUSettings(BenchmarkSettings):
    """MMLU's settings: only the setting (paper / harness)."""


def format_subject(subject: str) -> str:
    return subject.replace("_", " ")


def paper_user_turn(row: dict[str, Any]) -> str:
    """open-instruct's 0-shot prompt: `format_subject` puts a space before every word (hence two after
    "about") and the question is not stripped."""
    subject = "".join(" " + word for word in row["subject"].split("_"))
    options = "".join(f"\n{letter}. {choice}" for letter, choice in zip(LETTERS, row["choices"]))
    return (f"The following are multiple choice questions (with answers) about {subject}.\n\n"
            f"{row['question']}{options}\nAnswer:")


def paper_context(row: dict[str, Any]) -> str:
    return tulu_chat(paper_user_turn(row), CHAT_ANSWER_PREFIX)


def predict_paper(model: Any, tokenizer: Any, contexts: list[str], batch_size: int) -> list[list[float]]:
    """open-instruct's prediction inputs: the next-token log-probabilities, after the context encoded
    with the tokenizer's special tokens, of the LAST token of " A".." D" (`get_next_word_predictions`
    with `tokenizer.encode(" " + letter, add_special_tokens=False)[-1]`)."""
    answer_ids = [tokenizer(f" {letter}", add_special_tokens=False)["input_ids"][-1] for letter in LETTERS]
    encoded = []
    for context in contexts:
        ids = tokenizer(context, add_special_tokens=True)["input_ids"]
        encoded.extend((ids, [token]) for token in answer_ids)
    scores = encoded_logprobs(model, tokenizer, encoded, batch_size=batch_size)
    return [[scores[4 * i + j][0] for j in range(4)] for i in range(len(contexts))]


def raw_prompt(row: dict[str, Any]) -> str:
    """Hendrycks et al.'s 0-shot prompt (identical to lm-eval's description + doc_to_text)."""
    options = "".join(f"\n{letter}. {choice}" for letter, choice in zip(LETTERS, row["choices"]))
    return (
        f"The following are multiple choice questions (with answers) about "
        f"{format_subject(row['subject'])}.\n\n{row['question'].strip()}{options}\nAnswer:"
    )


def letter_pairs(contexts: list[str]) -> list[tuple[str, str]]:
    return [(c, f" {letter}") for c in contexts for letter in LETTERS]


def letter_loglikes(contexts: list[str], scores: list[tuple[float, bool]]) -> list[list[float]]:
    return [[scores[4 * i + j][0] for j in range(4)] for i in range(len(contexts))]


def predict(model: Any, tokenizer: Any, contexts: list[str], batch_size: int) -> list[list[float]]:
    """Log-likelihood of " A".." D" after each context, on an in-memory model."""
    return letter_loglikes(contexts, continuation_logprobs(model, tokenizer, letter_pairs(contexts), batch_size=batch_size))


def score_predictions(rows: list[dict[str, Any]], loglikes: list[list[float]]) -> TaskResult:
    preds = [max(range(4), key=lambda j: ll[j]) for ll in loglikes]
    correct = [p == r["answer"] for p, r in zip(preds, rows)]
    by_subject: dict[str, list[bool]] = {}
    for row, ok in zip(rows, correct):
        by_subject.setdefault(row["subject"], []).append(ok)
    metrics = {f"{TASK}/acc": mean_pct(correct), f"{TASK}/n": float(len(rows)),
               f"{TASK}/n_subjects": float(len(by_subject))}
    samples = [
        {**row, "loglikelihoods": ll, "prediction": p, "correct": ok}
        for row, ll, p, ok in zip(rows, loglikes, preds, correct)
    ]
    return TaskResult(metrics, metrics[f"{TASK}/acc"], samples)


def harness_contexts(ctx: EvalContext, rows: list[dict[str, Any]], chat: bool) -> list[str]:
    """The harness setting's scoring contexts: the chat template + "The answer is:", or the raw prompt."""
    if not chat:
        return [raw_prompt(r) for r in rows]
    return [chat_prompt_with_prefix(ctx, [{"role": "user", "content": raw_prompt(r)}], CHAT_ANSWER_PREFIX)
            for r in rows]


def run(ctx: EvalContext, chat: bool | None = None) -> TaskResult:
    """The registered task; `chat=False` forces the raw (lm-eval `mmlu`) prompt (harness setting)."""
    try:
        rows = load_rows(ctx.limit)
    except MissingDataError as err:
        return skipped(TASK, str(err))
    if ctx.settings_for(TASK).setting == "paper":
        # In-process, whatever the engine: open-instruct's rule needs the next-token distribution after
        # the context encoded with the tokenizer's special tokens.
        model, tok = scoring_model(ctx)
        contexts = [paper_context(r) for r in rows]
        result = score_predictions(rows, predict_paper(model, tok, contexts, ctx.batch_size))
        for sample, context in zip(result.samples, contexts):
            sample["prompt"] = context
        return result
    tok = ctx.generator.tokenizer
    use_chat = bool(getattr(tok, "chat_template", None)) if chat is None else chat
    contexts = harness_contexts(ctx, rows, use_chat)
    result = score_predictions(rows, letter_loglikes(contexts, loglikelihoods(ctx, letter_pairs(contexts))))
    for sample, context in zip(result.samples, contexts):
        sample["prompt"] = context
    result.metrics[f"{TASK}/chat_template"] = float(use_chat)
    return result


def describe(settings: MMLUSettings, limit: int | None) -> TaskProtocol:
    size = count_rows(lambda: load_rows(limit))
    subset = "all test questions of the 57 subjects (14,042), 0-shot" + (
        f"; --limit {limit}: the first {max(1, math.ceil(limit / 57))} of each subject" if limit else "")
    if settings.setting == "paper":
        return TaskProtocol(
            "paper", subset, size, None,
            f"{OPEN_INSTRUCT} eval/mmlu/run_eval.py: 'about  <subject>' (two spaces), question not stripped; "
            f"{CHAT_FORMAT}; assistant starts 'The answer is:'; {BOS_RULE}",
            "no generation: argmax of the next-token log-probabilities of the last token of ' A'..' D'", None,
            (INT8_NOTE,))
    return TaskProtocol(
        "harness", subset, size, None,
        "Hendrycks et al.'s 0-shot prompt (one space, question stripped) in the model's chat template, assistant "
        "starts 'The answer is:' (raw prompt without a template); no BOS added",
        "no generation: log-likelihood of ' A'..' D' as continuations", None)


register_task(TaskSpec(
    name=TASK,
    category="factuality",
    run=run,
    description="MMLU 57 subjects, 0-shot official prompt, chat template, answer-letter log-likelihood.",
    score_rule="accuracy over all test questions, % (0-100)",
    settings=MMLUSettings(),
    data_files=lambda _settings: subject_files(),
    uses=(),
    describe=describe,
    not_best_of_n="scores answer log-likelihoods",
))
