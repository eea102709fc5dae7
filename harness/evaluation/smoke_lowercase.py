"""Held-out verifiable eval for the smoke grid: does the policy obey "reply in lowercase letters only"?

Reported beside the target metric, always, because DPO on a tiny model can buy the constraint with
degenerate text (the brief's "capitals" pilot: 54% constraint, 18% clean):
- `constraint_rate`: % of answers with letters and no uppercase letter.
- `degenerate_rate`: % of answers that loop (a word 4-gram repeated) or run to the token limit.
- `correct_rate`: % that contain the expected fact (e.g. "paris"), case-insensitively.
- `clean_success_rate` (the score): % that satisfy the constraint, are not degenerate and are correct.
"""

from __future__ import annotations

import re

from datasets_registry import prepare
from datasets_registry.smoke_lowercase import satisfies_lowercase
from harness.evaluation.base import EvalContext, TaskResult, TaskSpec, register_task
from harness.generation import SamplingParams

MAX_NEW_TOKENS = 48
# Words with inner apostrophes ("pig's") but not quoting ones ("'poor'" -> "poor").
_WORDS = re.compile(r"[a-z0-9]+(?:'[a-z]+)*")


def is_degenerate(text: str, hit_token_limit: bool) -> bool:
    words = _WORDS.findall(text.lower())
    grams = [tuple(words[i : i + 4]) for i in range(len(words) - 3)]
    return hit_token_limit or len(grams) != len(set(grams))


def key_fact(answer: str) -> str:
    words = _WORDS.findall(answer.lower())
    return words[-1] if words else ""


def run(ctx: EvalContext) -> TaskResult:
    rows = prepare("smoke-lowercase-eval", seed=0).rows
    if ctx.limit:
        rows = rows[: ctx.limit]
    outputs = ctx.generator.generate(
        [r["prompt"] for r in rows], SamplingParams(max_new_tokens=MAX_NEW_TOKENS, temperature=0.0)
    )
    tok = getattr(ctx.generator, "tokenizer", None)
    samples, n_constraint, n_degenerate, n_correct, n_clean = [], 0, 0, 0, 0
    for row, (text,) in zip(rows, outputs):
        n_tokens = len(tok(text, add_special_tokens=False)["input_ids"]) if tok is not None else 0
        constraint = satisfies_lowercase(text)
        degenerate = is_degenerate(text, hit_token_limit=n_tokens >= MAX_NEW_TOKENS)
        correct = key_fact(row["answer"]) in _WORDS.findall(text.lower())
        clean = constraint and not degenerate and correct
        n_constraint += constraint
        n_degenerate += degenerate
        n_correct += correct
        n_clean += clean
        samples.append({
            "id": row["id"], "prompt": row["prompt"][-1]["content"], "output": text,
            "expected": row["answer"], "constraint": constraint, "degenerate": degenerate,
            "correct": correct, "clean_success": clean,
        })
    n = max(len(rows), 1)
    metrics = {
        "smoke_lowercase/constraint_rate": 100 * n_constraint / n,
        "smoke_lowercase/degenerate_rate": 100 * n_degenerate / n,
        "smoke_lowercase/correct_rate": 100 * n_correct / n,
        "smoke_lowercase/clean_success_rate": 100 * n_clean / n,
        "smoke_lowercase/n": float(len(rows)),
    }
    return TaskResult(metrics, metrics["smoke_lowercase/clean_success_rate"], samples)


register_task(TaskSpec(
    name="smoke_lowercase",
    category="custom",
    run=run,
    description="Held-out 'reply in lowercase' prompts (unseen facts); verifiable, no judge.",
    score_rule="% answers that are lowercase, non-degenerate and correct",
    datasets=lambda _settings: ["smoke-lowercase-eval"],
    uses=(),
))
