"""BIG-Bench Hard (reasoning): official 3-shot CoT prompts, answer after "the answer is" (paper App. D).

Two settings (`BBHSettings.setting`, grid `eval.settings.bbh`):

`harness` (default), this project's choice:
- Data: `bbh/tasks/<subtask>.json` (`examples: [{input, target}]`) and the official CoT prompts
  `bbh/cot-prompts/<subtask>.txt` (canary header up to the "-----" line removed), 27 sub-tasks, all
  6,511 examples.
- One user turn: the sub-task's CoT prompt (task description + 3 exemplars) + "\\n\\nQ: <input>";
  chat template applied, the assistant turn started with "A: Let's think step by step." (the
  exemplars' own answer start: the project's choice, not open-instruct's). Greedy, up to 512 new tokens,
  cut at a new "\\n\\nQ:".

`paper`: open-instruct's 2024 `bbh_cot` job (`eval/bbh/run_eval.py` at ea3467dbb,
`--max_num_examples_per_task 40 --use_chat_format`): 40 examples per sub-task, 1,080 in all, drawn by
one `random.Random(42)` sub-task after sub-task (`random.sample(examples, 40)`); open-instruct went
through the task files in `glob.glob` order, the file system's, so the paper's exact draws cannot be
rebuilt: the sorted order is used (`open_instruct.seeded_draws`). The same user turn (its rule, the CoT
file without its first two lines, gives the same text for all 27 files) in open-instruct's Tulu chat
format, the assistant turn started with "A:" only, BOS as the tokenizer adds it, greedy, 512 new tokens,
stop at the first blank line ("\\n\\n"). "A: Let's think step by step." and the later stop favour verbose
chain-of-thought (which the paper attributes to PPO), so `harness` numbers are not comparable with the
paper's.

Both settings score alike:
- Extraction (App. D): the answer after "the answer is" ("[t|T]he answer is (.*?)\\." - up to the next
  period, which for one-word targets is App. D's "first word" and keeps multi-word targets such as
  word_sorting's), or the whole response when the phrase is absent.
- Scoring: exact match with ignore_case and ignore_punctuation (HF evaluate's exact_match, the
  open-instruct call); accuracy per sub-task, then the unweighted mean over the 27 sub-tasks.

Secondary metric on the same outputs with lm-eval's own `bbh_cot_fewshot` filter
("(?<=the answer is )(.*)(?=.)", first match) and exact_match: `bbh/exact_match_lmeval` (also a mean
over sub-tasks; lm-eval's own group score weights sub-tasks by size instead).

`--limit N`: the first max(1, ceil(N / 27)) examples of every sub-task, so all 27 enter the mean.

Score for the category average: `bbh/exact_match` (0-100), as in the paper's tables.
"""

from __future__ import annotations

import json
import math
import re
import statistics
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
    benchmark_file,
    chat_prompt_with_prefix,
    count_rows,
    describe_decoding,
    mean_pct,
    skipped,
)
from harness.evaluation.gsm8k import normalize_em
from harness.evaluation.open_instruct import (
    BOS_RULE,
    CHAT_FORMAT,
    OPEN_INSTRUCT,
    SEED,
    generation_prompts,
    seeded_draws,
    tulu_chat,
)
from harness.generation import SamplingParams

TASK = "bbh"
MAX_NEW_TOKENS = 512
STOP = ("\n\nQ:",)
ANSWER_PREFIX = "A: Let's think step by step."
PAPER_ANSWER_PREFIX = "A:"
PAPER_STOP = ("\n\n",)
PAPER_PER_TASK = 40  # open-instruct's --max_num_examples_per_task


class BBHSettings(BenchmarkSettings):
    """BBH's settings: only the setting (paper / harness)."""
SUBTASKS = (
    "boolean_expressions", "causal_judgement", "date_understanding", "disambiguation_qa",
    "dyck_languages", "formal_fallacies", "geometric_shapes", "hyperbaton",
    "logical_deduction_five_objects", "logical_deduction_seven_objects",
    "logical_deduction_three_objects", "movie_recommendation", "multistep_arithmetic_two", "navigate",
    "object_counting", "penguins_in_a_table", "reasoning_about_colored_objects", "ruin_names",
    "salient_translation_error_detection", "snarks", "sports_understanding", "temporal_sequences",
    "tracking_shuffled_objects_five_objects", "tracking_shuffled_objects_seven_objects",
    "tracking_shuffled_objects_three_objects", "web_of_lies", "word_sorting",
)

_ANSWER = re.compile(r"[t|T]he answer is (.*?)\.")
LMEVAL_PATTERN = r"(?<=the answer is )(.*)(?=.)"  # lm-eval bbh/cot_fewshot template, filter get-answer


def load_cot_prompt(path: Path) -> str:
    """The official CoT prompt without its canary header (everything up to the '-----' line)."""
    text = path.read_text(encoding="utf-8")
    if "-----" in text:
        text = text.split("-----", 1)[1]
    return text.strip()


def extract_answer(response: str) -> str:
    match = _ANSWER.search(response)
    return match.group(1).strip() if match else response.strip()


def is_correct(response: str, target: str) -> bool:
    return normalize_em(extract_answer(response)) == normalize_em(target)


def lmeval_correct(responses: list[str], targets: list[str]) -> list[bool]:
    """lm-eval's bbh_cot_fewshot 'get-answer' filter + exact_match, run by lm-eval's own code."""
    from lm_eval.api.metrics import exact_match_hf_evaluate
    from lm_eval.filters.extraction import RegexFilter

    flt = RegexFilter(regex_pattern=LMEVAL_PATTERN)
    filtered = [r[0] for r in flt.apply([[r] for r in responses], [{}] * len(responses))]
    return [
        bool(exact_match_hf_evaluate(predictions=[p], references=[t])["exact_match"])
        for p, t in zip(filtered, targets)
    ]


def per_subtask_limit(limit: int | None) -> int | None:
    return max(1, math.ceil(limit / len(SUBTASKS))) if limit else None


def data_files(_settings: None = None) -> list[Path]:
    """Each sub-task's examples and its CoT prompt."""
    return [benchmark_file(f"bbh/{kind}/{sub}.{ext}") for sub in SUBTASKS
            for kind, ext in (("tasks", "json"), ("cot-prompts", "txt"))]


def load_rows(limit: int | None) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Rows `{subtask, index, input, target}` and each sub-task's CoT prompt."""
    k = per_subtask_limit(limit)
    rows: list[dict[str, Any]] = []
    prompts: dict[str, str] = {}
    for sub in SUBTASKS:
        task_path = benchmark_file(f"bbh/tasks/{sub}.json")
        prompts[sub] = load_cot_prompt(benchmark_file(f"bbh/cot-prompts/{sub}.txt"))
        examples = json.loads(task_path.read_text(encoding="utf-8")).get("examples")
        if not isinstance(examples, list):
            raise ValueError(f"{task_path}: expected a list under 'examples'")
        for i, ex in enumerate(examples[:k] if k else examples):
            if "input" not in ex or "target" not in ex:
                raise ValueError(f"{task_path} example {i}: needs 'input' and 'target'")
            rows.append({"subtask": sub, "index": i, "input": ex["input"], "target": ex["target"]})
    return rows, prompts


def paper_rows(limit: int | None) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """open-instruct's 40 examples per sub-task (one Random(42), sub-tasks in sorted order, each draw in
    the order drawn) and each sub-task's CoT prompt; `limit`: the first max(1, ceil(limit / 27)) of each."""
    rows, prompts = load_rows(None)
    by_sub: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_sub.setdefault(row["subtask"], []).append(row)
    draws = seeded_draws({sub: len(v) for sub, v in by_sub.items()},
                         lambda rng, n: rng.sample(range(n), min(n, PAPER_PER_TASK)))
    k = per_subtask_limit(limit)
    return [by_sub[sub][i] for sub in SUBTASKS for i in (draws[sub][:k] if k else draws[sub])], prompts


def paper_prompt(cot_prompt: str, row: dict[str, Any]) -> str:
    """The paper setting's prompt text (Tulu chat format, "A:"), before BOS."""
    return tulu_chat(f"{cot_prompt.strip()}\n\nQ: {row['input']}", PAPER_ANSWER_PREFIX)


def sampling_params(settings: BBHSettings, seed: int, max_new_tokens: int = MAX_NEW_TOKENS) -> SamplingParams:
    stop = PAPER_STOP if settings.setting == "paper" else STOP
    return SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0, stop=stop, seed=seed)


def build_prompts(ctx: EvalContext, rows: list[dict[str, Any]], cot_prompts: dict[str, str],
                  settings: BBHSettings) -> list[str]:
    """The prompts as the engine gets them (generated with chat=False: already templated)."""
    if settings.setting == "paper":
        return generation_prompts(ctx.generator, [paper_prompt(cot_prompts[r["subtask"]], r) for r in rows])
    tok = ctx.generator.tokenizer
    prompts = []
    for row in rows:
        user = f"{cot_prompts[row['subtask']]}\n\nQ: {row['input']}"
        if getattr(tok, "chat_template", None):
            prompts.append(chat_prompt_with_prefix(ctx, [{"role": "user", "content": user}], ANSWER_PREFIX))
        else:
            prompts.append(f"{user}\n{ANSWER_PREFIX}")
    return prompts


def score_responses(rows: list[dict[str, Any]], responses: list[str]) -> TaskResult:
    correct = [is_correct(resp, row["target"]) for row, resp in zip(rows, responses)]
    lm = lmeval_correct(responses, [r["target"] for r in rows])
    by_sub: dict[str, list[bool]] = {}
    by_sub_lm: dict[str, list[bool]] = {}
    samples = []
    for row, resp, ok, ok_lm in zip(rows, responses, correct, lm):
        by_sub.setdefault(row["subtask"], []).append(ok)
        by_sub_lm.setdefault(row["subtask"], []).append(ok_lm)
        samples.append({**row, "output": resp, "extracted": extract_answer(resp), "correct": ok,
                        "lmeval_correct": ok_lm})
    metrics: dict[str, float] = {
        f"{TASK}/{sub}/exact_match": mean_pct(vals) for sub, vals in by_sub.items()
    }
    metrics[f"{TASK}/exact_match"] = statistics.fmean(mean_pct(v) for v in by_sub.values())
    metrics[f"{TASK}/exact_match_lmeval"] = statistics.fmean(mean_pct(v) for v in by_sub_lm.values())
    metrics[f"{TASK}/n"] = float(len(rows))
    metrics[f"{TASK}/n_subtasks"] = float(len(by_sub))
    return TaskResult(metrics, metrics[f"{TASK}/exact_match"], samples)


def rows_for(settings: BBHSettings, limit: int | None) -> tuple[list[dict[str, Any]], dict[str, str]]:
    return paper_rows(limit) if settings.setting == "paper" else load_rows(limit)


def run(ctx: EvalContext, max_new_tokens: int = MAX_NEW_TOKENS) -> TaskResult:
    """The registered task; `max_new_tokens` is lowered only by fast tests."""
    settings = ctx.settings_for(TASK)
    try:
        rows, cot_prompts = rows_for(settings, ctx.limit)
    except MissingDataError as err:
        return skipped(TASK, str(err))
    prompts = build_prompts(ctx, rows, cot_prompts, settings)
    outputs = ctx.generator.generate(prompts, sampling_params(settings, ctx.seed, max_new_tokens), chat=False)
    result = score_responses(rows, [o[0] for o in outputs])
    for sample, prompt in zip(result.samples, prompts):
        sample["prompt"] = prompt
    return result


def describe(settings: BBHSettings, limit: int | None) -> TaskProtocol:
    size = count_rows(lambda: rows_for(settings, limit)[0])
    per_task = f"; --limit {limit}: the first {per_subtask_limit(limit)} of each sub-task" if limit else ""
    decoding = describe_decoding(sampling_params(settings, 0))
    if settings.setting == "paper":
        return TaskProtocol(
            "paper", f"{PAPER_PER_TASK} per sub-task x 27 = 1,080: one random.Random({SEED}) drawn sub-task after "
            f"sub-task, in sorted order{per_task}", size, SEED,
            f"{OPEN_INSTRUCT} eval/bbh/run_eval.py: official 3-shot CoT prompt + '\\n\\nQ: <input>'; {CHAT_FORMAT}; "
            f"assistant starts 'A:'; {BOS_RULE}", decoding, None,
            ("open-instruct drew the sub-tasks in glob.glob (file-system) order: its exact 1,080 cannot be rebuilt; "
             "sorted order here",))
    return TaskProtocol(
        "harness", f"all 6,511 examples of the 27 sub-tasks{per_task}", size, None,
        "official 3-shot CoT prompt + '\\n\\nQ: <input>' in the model's chat template, assistant starts "
        "\"A: Let's think step by step.\"; no BOS added", decoding, None)


register_task(TaskSpec(
    name=TASK,
    category="reasoning",
    run=run,
    description="BIG-Bench Hard, 27 sub-tasks, official 3-shot CoT prompts, chat template, greedy.",
    score_rule="exact match of the answer after 'the answer is', mean over the 27 sub-tasks (0-100)",
    settings=BBHSettings(),
    data_files=data_files,
    uses=(),
    describe=describe,
))
