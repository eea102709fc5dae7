"""GSM8K (reasoning): 8-shot chain-of-thought, last number in the response, exact match (paper App. D).

Two settings (`GSM8KSettings.setting`, grid `eval.settings.gsm8k`):

`harness` (default): all 1,319 test questions (`--limit N`: the first N).
- The 8 exemplars are Wei et al.'s chain-of-thought demonstrations as lm-eval ships them (answers end
  "The answer is N."), read at run time from lm-eval's `gsm8k-cot.yaml` (`fewshot_config.samples`).
- One user turn: "Answer the following questions." + the 8 "Question: ...\\nAnswer: ..." pairs + the
  test question (open-instruct's layout); the model's chat template is applied and the assistant turn is
  started with "Answer:". Models without a chat template get the same text raw.
- Greedy decoding, up to 512 new tokens, cut at the next "Question:" (the model starting a new
  exemplar).

`paper`: open-instruct's 2024 `gsm_cot` job (`eval/gsm/run_eval.py` at ea3467dbb, `--max_num_examples
200 --n_shot 8 --use_chat_format`): 200 questions drawn by `random.seed(42); random.sample(test, 200)`
(in the order drawn; `--limit N`: the first N of them), open-instruct's own exemplars (`eval/gsm/
examplars.py`: the same questions and reasoning, each answer ending "So the answer is N."; built here
from lm-eval's by that one change, and tested against open-instruct's text), the same layout in its Tulu
chat format with "Answer:", BOS as the tokenizer adds it, greedy, 512 new tokens, no stop string (in
chat format open-instruct relies on the model to stop). Every GSM8K number in the paper's Tables 3 and
12 is a multiple of 0.5, consistent with n = 200. Scoring is the same in both settings:
- Answer extraction (App. D: "we extract the last number in the model response"): commas between
  digits are removed, the last match of `[-+]?\\d*\\.\\d+|\\d+` is the prediction (the response itself
  when it has no number). The reference is the text after "####" with the same comma removal.
- Scoring: HF `evaluate`'s exact_match with ignore_case and ignore_punctuation, as open-instruct calls
  it (lm-eval ships the same function as `exact_match_hf_evaluate`; the parity tests compare against it).
  ignore_punctuation strips every punctuation character from both strings before comparing, the
  decimal point and the minus sign included, so this rule (kept for parity with open-instruct) also
  counts wrong answers as right: a prediction "3.6" matches the gold answer 36, "-80" matches 80, "-5"
  matches 5. It is a string comparison, not a numeric one: "18.00" does not match 18.

Secondary metrics, computed on the same outputs with lm-eval's own `gsm8k_cot` filters and metric
(`strict-match`: "The answer is N."; `flexible-extract`: last number-like span), for comparison with
lm-eval leaderboards: `gsm8k/exact_match_lmeval_strict`, `gsm8k/exact_match_lmeval_flexible`.

Score for the category average: `gsm8k/exact_match` (% correct, 0-100), as in the paper's tables.
"""

from __future__ import annotations

import functools
import re
import string
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
    apply_limit,
    benchmark_file,
    chat_prompt_with_prefix,
    count_rows,
    describe_decoding,
    mean_pct,
    read_jsonl,
    require_fields,
    skipped,
)
from harness.evaluation.lmeval_bridge import lmeval_tasks_dir
from harness.evaluation.open_instruct import (
    BOS_RULE,
    CHAT_FORMAT,
    OPEN_INSTRUCT,
    SEED,
    generation_prompts,
    sample_indices,
    tulu_chat,
)
from harness.generation import SamplingParams

TASK = "gsm8k"
MAX_NEW_TOKENS = 512
STOP = ("Question:",)
INSTRUCTION = "Answer the following questions."
ANSWER_PREFIX = "Answer:"
PAPER_SUBSET = 200  # open-instruct's --max_num_examples


class GSM8KSettings(BenchmarkSettings):
    """GSM8K's settings: only the setting (paper / harness)."""

_DIGIT_COMMA = re.compile(r"(\d),(\d)")
_NUMBER = re.compile(r"[-+]?\d*\.\d+|\d+")
_PUNCT_TABLE = str.maketrans("", "", string.punctuation)

# lm-eval's gsm8k_cot filters and exact_match options (from its gsm8k-cot.yaml, v3.0).
LMEVAL_STRICT = r"The answer is (\-?[0-9\.\,]+)."
LMEVAL_FLEXIBLE = r"(-?[$0-9.,]{2,})|(-?[0-9]+)"
LMEVAL_IGNORE = (",", r"\$", "(?s).*#### ", r"\.$")


@functools.cache
def wei_exemplars() -> list[dict[str, str]]:
    """Wei et al.'s 8 GSM8K chain-of-thought exemplars, as lm-eval ships them (question, target)."""
    import yaml

    path = lmeval_tasks_dir() / "gsm8k" / "gsm8k-cot.yaml"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: the GSM8K exemplars come from lm-eval's gsm8k-cot.yaml")

    class _Loader(yaml.SafeLoader):  # lm-eval yamls may carry `!function` tags; they are not needed here
        pass

    _Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    config = yaml.load(path.read_text(), Loader=_Loader)
    try:
        samples = config["fewshot_config"]["samples"]
    except (KeyError, TypeError) as err:
        raise ValueError(f"{path}: no fewshot_config.samples (lm-eval layout changed?)") from err
    if len(samples) != 8:
        raise ValueError(f"{path}: expected the 8 Wei et al. exemplars, found {len(samples)}")
    return [{"question": s["question"], "answer": s["target"]} for s in samples]


_LMEVAL_ENDING = re.compile(r" The answer is (\S+)\.$")


@functools.cache
def open_instruct_exemplars() -> list[dict[str, str]]:
    """open-instruct's 8 exemplars (`eval/gsm/examplars.py`): Wei et al.'s, as lm-eval ships them, with
    each answer's closing "The answer is N." written "So the answer is N." (the only difference)."""
    out = []
    for exemplar in wei_exemplars():
        if len(_LMEVAL_ENDING.findall(exemplar["answer"])) != 1:
            raise ValueError(f"lm-eval GSM8K exemplar answer does not end with 'The answer is N.': "
                             f"{exemplar['answer'][-60:]!r}")
        out.append({"question": exemplar["question"],
                    "answer": _LMEVAL_ENDING.sub(r" So the answer is \1.", exemplar["answer"])})
    return out


def build_user_prompt(question: str, exemplars: list[dict[str, str]] | None = None) -> str:
    """The user turn: the instruction, the 8 exemplars (default: lm-eval's) and the question."""
    demos = "\n\n".join(f"Question: {d['question']}\nAnswer: {d['answer']}" for d in exemplars or wei_exemplars())
    return f"{INSTRUCTION}\n\n{demos}\n\nQuestion: {question.strip()}"


def paper_prompt(question: str) -> str:
    """The paper setting's prompt text (open-instruct's exemplars, Tulu chat format, "Answer:"), before BOS."""
    return tulu_chat(build_user_prompt(question, open_instruct_exemplars()), ANSWER_PREFIX)


def reference_answer(answer_field: str) -> str:
    """GSM8K's gold answer: the text after '####', thousands commas removed."""
    if "####" not in answer_field:
        raise ValueError(f"GSM8K answer has no '####' marker: {answer_field[-80:]!r}")
    return _DIGIT_COMMA.sub(r"\1\2", answer_field.split("####")[-1].strip())


def extract_last_number(response: str) -> str:
    """App. D's rule: the last number in the response (commas inside numbers removed).

    Returns the response unchanged when it contains no number (it then only matches a gold answer that
    normalises to the same string, as in open-instruct).
    """
    cleaned = _DIGIT_COMMA.sub(r"\1\2", response)
    numbers = _NUMBER.findall(cleaned)
    return numbers[-1] if numbers else cleaned


def normalize_em(text: str) -> str:
    """HF evaluate exact_match normalisation with ignore_case + ignore_punctuation."""
    return text.lower().translate(_PUNCT_TABLE)


def is_correct(response: str, reference: str) -> bool:
    return normalize_em(extract_last_number(response)) == normalize_em(reference)


def lmeval_scores(responses: list[str], references: list[str]) -> dict[str, list[bool]]:
    """lm-eval's gsm8k_cot strict/flexible filters + exact_match, run by lm-eval's own code."""
    from lm_eval.api.metrics import exact_match_hf_evaluate
    from lm_eval.filters.extraction import RegexFilter

    out: dict[str, list[bool]] = {}
    for name, flt in (
        ("strict", RegexFilter(regex_pattern=LMEVAL_STRICT)),
        ("flexible", RegexFilter(regex_pattern=LMEVAL_FLEXIBLE, group_select=-1)),
    ):
        filtered = [resps[0] for resps in flt.apply([[r] for r in responses], [{}] * len(responses))]
        out[name] = [
            bool(exact_match_hf_evaluate(
                predictions=[p], references=[ref], regexes_to_ignore=list(LMEVAL_IGNORE),
                ignore_case=True, ignore_punctuation=False,
            )["exact_match"])
            for p, ref in zip(filtered, references)
        ]
    return out


def data_files(_settings: None = None) -> list[Path]:
    """The test questions and lm-eval's file holding the 8 exemplars."""
    return [benchmark_file("gsm8k/test.jsonl"), lmeval_tasks_dir() / "gsm8k" / "gsm8k-cot.yaml"]


def load_rows(limit: int | None) -> list[dict[str, Any]]:
    path = benchmark_file("gsm8k/test.jsonl")
    rows = read_jsonl(path)
    for i, row in enumerate(rows[:1]):
        require_fields(row, ("question", "answer"), f"{path} row {i}")
    return apply_limit(rows, limit)


def paper_rows(limit: int | None) -> list[dict[str, Any]]:
    """open-instruct's 200 questions (`random.seed(42); random.sample(test, 200)`, in the order drawn),
    each with its `row` in the test file; `limit`: the first `limit` of them."""
    rows = load_rows(None)
    return apply_limit([{**rows[i], "row": i} for i in sample_indices(len(rows), PAPER_SUBSET)], limit)


def rows_for(settings: GSM8KSettings, limit: int | None) -> list[dict[str, Any]]:
    return paper_rows(limit) if settings.setting == "paper" else load_rows(limit)


def sampling_params(settings: GSM8KSettings, seed: int, max_new_tokens: int = MAX_NEW_TOKENS) -> SamplingParams:
    stop = () if settings.setting == "paper" else STOP
    return SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0, stop=stop, seed=seed)


def score_responses(rows: list[dict[str, Any]], responses: list[str]) -> TaskResult:
    """Metrics and samples from fixed responses (used by `run` and by the parity tests)."""
    refs = [reference_answer(r["answer"]) for r in rows]
    correct = [is_correct(resp, ref) for resp, ref in zip(responses, refs)]
    lm = lmeval_scores(responses, refs)
    samples = [
        {
            "index": i, "question": row["question"], "reference": ref, "output": resp,
            "extracted": extract_last_number(resp), "correct": ok,
            "lmeval_strict": lm["strict"][i], "lmeval_flexible": lm["flexible"][i],
        }
        for i, (row, ref, resp, ok) in enumerate(zip(rows, refs, responses, correct))
    ]
    metrics = {
        f"{TASK}/exact_match": mean_pct(correct),
        f"{TASK}/exact_match_lmeval_strict": mean_pct(lm["strict"]),
        f"{TASK}/exact_match_lmeval_flexible": mean_pct(lm["flexible"]),
        f"{TASK}/n": float(len(rows)),
    }
    return TaskResult(metrics, metrics[f"{TASK}/exact_match"], samples)


def build_prompts(ctx: EvalContext, rows: list[dict[str, Any]], settings: GSM8KSettings | None = None) -> list[str]:
    """The prompts as the engine gets them (generated with chat=False: already templated)."""
    if settings is not None and settings.setting == "paper":
        return generation_prompts(ctx.generator, [paper_prompt(r["question"]) for r in rows])
    tok = ctx.generator.tokenizer
    prompts = []
    for row in rows:
        user = build_user_prompt(row["question"])
        if getattr(tok, "chat_template", None):
            prompts.append(chat_prompt_with_prefix(ctx, [{"role": "user", "content": user}], ANSWER_PREFIX))
        else:
            prompts.append(f"{user}\n{ANSWER_PREFIX}")
    return prompts


def run(ctx: EvalContext, max_new_tokens: int = MAX_NEW_TOKENS) -> TaskResult:
    """The registered task; `max_new_tokens` is lowered only by fast tests."""
    settings = ctx.settings_for(TASK)
    try:
        rows = rows_for(settings, ctx.limit)
    except MissingDataError as err:
        return skipped(TASK, str(err))
    prompts = build_prompts(ctx, rows, settings)
    outputs = ctx.generator.generate(prompts, sampling_params(settings, ctx.seed, max_new_tokens), chat=False)
    result = score_responses(rows, [o[0] for o in outputs])
    for sample, prompt, row in zip(result.samples, prompts, rows):
        sample["prompt"] = prompt
        if "row" in row:
            sample["row"] = row["row"]
    return result


def describe(settings: GSM8KSettings, limit: int | None) -> TaskProtocol:
    size = count_rows(lambda: rows_for(settings, limit))
    decoding = describe_decoding(sampling_params(settings, 0))
    if settings.setting == "paper":
        return TaskProtocol(
            "paper", f"{PAPER_SUBSET} of the 1,319 test questions, random.seed({SEED}); random.sample(test, "
            f"{PAPER_SUBSET}), in the order drawn" + (f"; --limit {limit}: the first {limit}" if limit else ""),
            size, SEED,
            f"{OPEN_INSTRUCT} eval/gsm/run_eval.py: 8 exemplars of eval/gsm/examplars.py (answers end 'So the answer "
            f"is N.'); {CHAT_FORMAT}; assistant starts 'Answer:'; {BOS_RULE}", decoding, None)
    return TaskProtocol(
        "harness", "all 1,319 test questions" + (f"; --limit {limit}: the first {limit}" if limit else ""),
        size, None,
        "8 Wei et al. exemplars from lm-eval's gsm8k-cot.yaml (answers end 'The answer is N.') in the model's "
        "chat template, assistant starts 'Answer:'; no BOS added", decoding, None)


register_task(TaskSpec(
    name=TASK,
    category="reasoning",
    run=run,
    description="GSM8K test, 8-shot CoT (Wei et al. exemplars), chat template, greedy, last number.",
    score_rule="exact match of the last number, % of test questions (0-100)",
    settings=GSM8KSettings(),
    data_files=data_files,
    uses=(),
    describe=describe,
))
