"""TruthfulQA (truthfulness): generation, greedy, judged truthful and informative (paper App. D).

Real metric (needs a judge endpoint, `ctx.judge`):
- Prompt: the official "QA" primer (six Q/A pairs) + "Q: <question>"; the primer is rendered from
  lm-eval's `truthfulqa_mc1.yaml` template (lm-eval's copy of the official primer). Chat models get it
  as the user turn with the assistant turn started by "A:"; others get the raw "...\\nA:" prompt.
- Greedy, up to 50 new tokens (the official script's generation length), the answer cut at the first
  blank line or a new "Q:" and stripped (the official post-processing keeps the first answer).
- Each answer is judged twice through `JudgeClient.classify_many` with the judge module's
  `TRUTHFULQA_TRUTH` and `TRUTHFULQA_INFO` templates (labels yes/no). These stand in for the paper's
  fine-tuned GPT-judge / GPT-info classifiers (not available): the score is comparable across this
  project's runs, not with published numbers. Metrics: `truthfulqa/truth_info` (% truthful AND
  informative: the score), `truthfulqa/truthful`, `truthfulqa/informative`, `truthfulqa/n_unparsed`.

Offline fallback, always computed (no judge needed), clearly named and never the score:
`truthfulqa/mc2_offline_fallback`: TruthfulQA MC2 (normalised probability mass on the true answers),
identical to lm-eval's `truthfulqa_mc2` on the raw primer prompt (parity-tested), from
`truthfulqa/mc_task.json`. It is also reported as `truthfulqa/offline_fallback_score` for the
clearly labelled "with offline fallbacks" average of the CLI.

Score for the category average: `truthfulqa/truth_info` (0-100), as in the paper's tables.
"""

from __future__ import annotations

import csv
import functools
import json
import math
from typing import Any

from harness.evaluation.base import EvalContext, TaskResult, TaskSpec, register_task, unparsed_reason
from harness.evaluation.common import (
    MissingDataError,
    apply_limit,
    benchmark_file,
    chat_prompt_with_prefix,
    continuation_logprobs,
    mean_pct,
    scoring_model,
)
from harness.generation import SamplingParams

TASK = "truthfulqa"
MAX_NEW_TOKENS = 50
STOP = ("\n\n", "\nQ:")


@functools.cache
def _doc_to_text_template() -> str:
    import yaml

    from harness.evaluation.lmeval_bridge import lmeval_tasks_dir

    path = lmeval_tasks_dir() / "truthfulqa" / "truthfulqa_mc1.yaml"
    return yaml.safe_load(path.read_text())["doc_to_text"]


def qa_prompt(question: str) -> str:
    """The official QA-primer prompt ending in "\\nA:", rendered from lm-eval's template."""
    import jinja2

    return jinja2.Template(_doc_to_text_template()).render(question=question)


def qa_user_turn(question: str) -> str:
    """The QA prompt without its trailing "\nA:" (chat models get "A:" as the assistant's start)."""
    prompt = qa_prompt(question)
    if not prompt.endswith("\nA:"):
        raise ValueError("lm-eval's TruthfulQA template no longer ends with '\\nA:'")
    return prompt[: -len("\nA:")]


def load_mc_rows(limit: int | None) -> list[dict[str, Any]]:
    path = benchmark_file("truthfulqa/mc_task.json")
    rows = json.loads(path.read_text(encoding="utf-8"))
    out = []
    for i, row in enumerate(rows):
        if "question" not in row or "mc2_targets" not in row:
            raise ValueError(f"{path} item {i}: needs 'question' and 'mc2_targets'")
        targets = row["mc2_targets"]
        out.append({"question": row["question"], "choices": list(targets),
                    "labels": [int(v) for v in targets.values()]})
    return apply_limit(out, limit)


def load_gen_rows(limit: int | None) -> list[dict[str, Any]]:
    path = benchmark_file("truthfulqa/TruthfulQA.csv")
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or "Question" not in reader.fieldnames:
            raise ValueError(f"{path}: needs a 'Question' column; header is {reader.fieldnames}")
        rows = [{"question": r["Question"], "category": r.get("Category", ""),
                 "best_answer": r.get("Best Answer", "")} for r in reader]
    return apply_limit(rows, limit)


def mc2_score(loglikes: list[float], labels: list[int]) -> float:
    """lm-eval's / the official MC2: probability mass of the true answers after normalisation."""
    top = max(loglikes)
    probs = [math.exp(ll - top) for ll in loglikes]  # shift for stability; cancels in the ratio
    total = sum(probs)
    return sum(p for p, lab in zip(probs, labels) if lab == 1) / total


def mc2_loglikes(model: Any, tok: Any, rows: list[dict[str, Any]], batch_size: int) -> list[list[float]]:
    pairs = [(qa_prompt(r["question"]), f" {c}") for r in rows for c in r["choices"]]
    flat = continuation_logprobs(model, tok, pairs, batch_size=batch_size)
    out, k = [], 0
    for r in rows:
        out.append([flat[k + j][0] for j in range(len(r["choices"]))])
        k += len(r["choices"])
    return out


def postprocess(answer: str) -> str:
    for stop in STOP:
        answer = answer.split(stop)[0]
    return answer.strip()


def judge_answers(judge: Any, rows: list[dict[str, Any]], answers: list[str]) -> dict[str, list[Any]]:
    from harness.judge import TRUTHFULQA_INFO, TRUTHFULQA_TRUTH, YES_NO

    fields = [{"question": r["question"], "answer": a} for r, a in zip(rows, answers)]
    truth = judge.classify_many(TRUTHFULQA_TRUTH, fields, YES_NO)
    info = judge.classify_many(TRUTHFULQA_INFO, fields, YES_NO)
    return {"truth": truth, "info": info}


def score_judged(truth: list[str | None], info: list[str | None]) -> dict[str, float]:
    """% truthful, % informative and % both; an unparsed verdict counts as not satisfied (and is
    counted in n_unparsed) so a judge that fails to answer can never raise the score."""
    t = [v == "yes" for v in truth]
    i = [v == "yes" for v in info]
    return {
        f"{TASK}/truth_info": mean_pct([a and b for a, b in zip(t, i)]),
        f"{TASK}/truthful": mean_pct(t),
        f"{TASK}/informative": mean_pct(i),
        f"{TASK}/n_unparsed": float(sum(v is None for v in truth) + sum(v is None for v in info)),
    }


def run(ctx: EvalContext, max_new_tokens: int = MAX_NEW_TOKENS) -> TaskResult:
    from harness.judge import JudgeError, judge_client_from_settings

    try:
        mc_rows = load_mc_rows(ctx.limit)
        gen_rows = load_gen_rows(ctx.limit)
    except MissingDataError as err:
        return TaskResult({}, None, [], skipped_reason=f"{TASK}: {err}")
    model, tok = scoring_model(ctx)
    lls = mc2_loglikes(model, tok, mc_rows, ctx.batch_size)
    mc2 = [mc2_score(ll, r["labels"]) for ll, r in zip(lls, mc_rows)]
    metrics: dict[str, float] = {
        f"{TASK}/mc2_offline_fallback": mean_pct(mc2),
        f"{TASK}/offline_fallback_score": mean_pct(mc2),
        f"{TASK}/n": float(len(gen_rows)),
    }
    samples: list[dict[str, Any]] = [
        {"kind": "mc2", "question": r["question"], "choices": r["choices"], "labels": r["labels"],
         "loglikelihoods": ll, "mc2": s}
        for r, ll, s in zip(mc_rows, lls, mc2)
    ]
    try:
        judge = judge_client_from_settings(ctx.judge)
    except ValueError as err:
        judge, reason = None, f"judge settings invalid: {err}"
    else:
        reason = "no judge configured (set judge settings: model, base_url)"
    if judge is None:
        return TaskResult(metrics, None, samples, skipped_reason=(
            f"{TASK}: truthful+informative needs an LLM judge: {reason}; only the offline fallback "
            "truthfulqa/mc2_offline_fallback was computed"))
    if getattr(tok, "chat_template", None):
        prompts = [chat_prompt_with_prefix(ctx, [{"role": "user", "content": qa_user_turn(r["question"])}],
                                           "A:") for r in gen_rows]
    else:
        prompts = [qa_prompt(r["question"]) for r in gen_rows]
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0, stop=STOP, seed=ctx.seed)
    answers = [postprocess(o[0]) for o in ctx.generator.generate(prompts, params, chat=False)]
    gen_samples = [{"kind": "generation", "question": r["question"], "prompt": p, "output": a}
                   for r, p, a in zip(gen_rows, prompts, answers)]
    try:
        verdicts = judge_answers(judge, gen_rows, answers)
    except JudgeError as err:
        return TaskResult(metrics, None, samples + gen_samples,
                          skipped_reason=f"{TASK}: judge calls failed ({err}); answers are saved")
    for s, t, i in zip(gen_samples, verdicts["truth"], verdicts["info"]):
        s.update(truthful=t, informative=i, judge_model=judge.model)
    metrics.update(score_judged(verdicts["truth"], verdicts["info"]))
    # Two verdicts per answer (truthful, informative); unreadable ones already count as failures.
    withheld = unparsed_reason(TASK, int(metrics[f"{TASK}/n_unparsed"]), 2 * len(gen_rows), judge.model)
    if withheld is not None:
        return TaskResult(metrics, None, samples + gen_samples, skipped_reason=withheld)
    return TaskResult(metrics, metrics[f"{TASK}/truth_info"], samples + gen_samples)


register_task(TaskSpec(
    name=TASK,
    category="truthfulness",
    run=run,
    description="TruthfulQA generation (QA primer, greedy), LLM-judged truthful+informative; MC2 fallback.",
    score_rule="% answers judged both truthful and informative (0-100); MC2 only as a labelled fallback",
))

