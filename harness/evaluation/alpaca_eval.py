"""AlpacaEval 1 and 2 (instruction following): 805 instructions judged against reference outputs.

- AlpacaEval 1: win rate against text-davinci-003's outputs, AlpacaEval's `alpaca_eval_gpt4` annotator.
- AlpacaEval 2: length-controlled win rate against gpt-4-1106-preview (GPT-4 turbo) outputs,
  AlpacaEval's `weighted_alpaca_eval_gpt4_turbo` annotator.
The judging, the annotator prompts (read from the installed `alpaca_eval` package) and the
length-controlled win rate (the package's own `length_controlled_v1`, the leaderboard's) are the judge
module's (`harness.judge.alpaca.evaluate_alpaca_eval`); this module generates the model's outputs and
turns the result into a task.

Generation (App. D): each instruction as one user turn in the chat template, greedy, up to 8192 new
tokens, no stop sequence. AlpacaEval 1 and 2 use the same 805 instructions, so the outputs are
generated once per evaluation and reused by both tasks (also saved as
`<out_dir>/alpaca_eval.outputs.jsonl`, which a later run with the same model and limit reuses).

Without a judge both tasks are not run (they require one: there is no offline substitute for a
pairwise GPT-4 preference). A judge that fails at run time raises `TaskUnavailable`: nothing is
invented or cached, and the task is retried on the next run.

Settings (`AlpacaEvalSettings`, grid `eval.settings.alpaca_eval`, shared by both tasks): `setting`,
`max_new_tokens` (default 8192, open-instruct's; HARNESS_ALPACA_EVAL_MAX_NEW_TOKENS supplies another
default for CPU runs), logged as `<task>/max_new_tokens`. The `paper` setting is open-instruct's 2024
`alpaca_eval` / `alpaca_eval_2` jobs (`eval/alpaca_farm/run_eval.py` at ea3467dbb with alpaca-eval 0.6's
default annotators, which are the ones used here): the same instructions, decoding and judging, the
instruction in open-instruct's Tulu chat format with BOS as the tokenizer adds it instead of the model's
template. The outputs are reused between the two versions only within one setting.

Scores for the category average (0-100): AlpacaEval 1 `alpaca_eval1/win_rate` (ties count half),
AlpacaEval 2 `alpaca_eval2/lc_win_rate`, as in the paper's tables. The LC GLM reads `df_gamed.csv` from
`benchmarks/alpaca_eval/` in a local data dir, or from the hub. When neither has it, AlpacaEval 2's
score is its raw win rate `alpaca_eval2/win_rate`, labelled: `alpaca_eval2/score_is_length_controlled`
is 0 (1 when the score is the LC win rate), no `alpaca_eval2/lc_win_rate` is logged, and the task's
note (results.json `notes`, the `harness eval` table) says that the score is the raw win rate and why
LC is unavailable.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import Field

from harness.evaluation.base import (
    BenchmarkSettings,
    EvalContext,
    TaskProtocol,
    TaskResult,
    TaskSpec,
    TaskUnavailable,
    register_task,
)
from harness.evaluation.common import MissingDataError, count_rows, describe_decoding, skipped
from harness.evaluation.open_instruct import (
    BOS_RULE,
    CHAT_FORMAT,
    OPEN_INSTRUCT,
    generation_prompts,
    tulu_chat,
)
from harness.generation import SamplingParams
from harness.paths import find_data_file

MAX_NEW_TOKENS = 8192  # open-instruct's AlpacaEval setting
MAX_NEW_TOKENS_ENV = "HARNESS_ALPACA_EVAL_MAX_NEW_TOKENS"  # a lower budget for CPU runs (logged)
OUTPUTS_FILE = "alpaca_eval.outputs.jsonl"


class AlpacaEvalSettings(BenchmarkSettings):
    max_new_tokens: int = Field(MAX_NEW_TOKENS, ge=1, description="generation budget per output "
                                "(open-instruct's 8192); lower it for CPU runs")
    env = {"max_new_tokens": MAX_NEW_TOKENS_ENV}


def data_files(version: int) -> list[Path]:
    """What the result of `version` is computed from besides the judge: the reference outputs, the
    alpaca_eval package's annotator prompt, and for AlpacaEval 2 the package's LC GLM module and the
    local copies of its hub files (one first copied in turns the score from raw into LC)."""
    from harness.judge.alpaca import ANNOTATORS, LC_DATA_DIR, LC_HUB_FILES, REFERENCE_FILES, _package_dir

    reference = find_data_file(REFERENCE_FILES[version])
    if reference is None:
        raise MissingDataError(f"{REFERENCE_FILES[version]} not found under the local data dirs "
                               "(HARNESS_DATA_DIR or ../shared/data)")
    files = [reference]
    package = _package_dir()
    if package is not None:
        files.append(package / "evaluators_configs" / ANNOTATORS[version]["file"])
        if version == 2:
            files.append(package / "metrics" / "glm_winrate.py")
    if version == 2:
        files.extend(find_data_file(f"{LC_DATA_DIR}/{name}") for name in LC_HUB_FILES)
    return [p for p in files if p is not None and p.is_file()]


def _outputs_key(ctx: EvalContext, max_new_tokens: int, setting: str = "harness") -> dict[str, Any]:
    key: dict[str, Any] = {"model_path": ctx.model_path, "limit": ctx.limit, "seed": ctx.seed,
                           "max_new_tokens": max_new_tokens}
    if setting != "harness":  # the harness setting's key as it was before settings existed
        key["setting"] = setting
    return key


def sampling_params(settings: AlpacaEvalSettings, seed: int, max_new_tokens: int | None = None) -> SamplingParams:
    return SamplingParams(max_new_tokens=max_new_tokens or settings.max_new_tokens, temperature=0.0, seed=seed)


def build_prompts(ctx: EvalContext, instructions: list[str], setting: str) -> tuple[list[Any], bool]:
    """(prompts, chat): the paper setting's rendered here, the harness setting's by the engine."""
    if setting == "paper":
        return generation_prompts(ctx.generator, [tulu_chat(ins) for ins in instructions]), False
    return [[{"role": "user", "content": ins}] for ins in instructions], True


def generate_outputs(ctx: EvalContext, instructions: list[str], max_new_tokens: int,
                     setting: str = "harness") -> list[str]:
    """The model's outputs for the AlpacaEval instructions, generated once per (model, limit, seed, setting)."""
    path = ctx.out_dir / OUTPUTS_FILE
    key = _outputs_key(ctx, max_new_tokens, setting)
    if path.exists():
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if (len(rows) == len(instructions) and all(r.get("key") == key for r in rows)
                and [r["instruction"] for r in rows] == instructions):
            return [r["output"] for r in rows]
    prompts, chat = build_prompts(ctx, instructions, setting)
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0, seed=ctx.seed)
    outputs = [o[0] for o in ctx.generator.generate(prompts, params, chat=chat)]
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for ins, out in zip(instructions, outputs):
            fh.write(json.dumps({"key": key, "instruction": ins, "output": out}, ensure_ascii=False) + "\n")
    return outputs


def run_version(ctx: EvalContext, version: int, max_new_tokens: int | None = None) -> TaskResult:
    from harness.judge import JudgeError, judge_client_from_settings
    from harness.judge.alpaca import evaluate_alpaca_eval, load_reference

    task = f"alpaca_eval{version}"
    try:
        instructions, references = load_reference(version, ctx.limit)  # type: ignore[arg-type]
    except FileNotFoundError as err:
        return skipped(task, str(err))
    try:
        judge = judge_client_from_settings(ctx.judge)
    except ValueError as err:
        return skipped(task, f"judge settings invalid: {err}")
    if judge is None:
        return skipped(task, "needs an LLM judge (set judge settings: model, base_url); no offline "
                             "substitute for AlpacaEval's pairwise preference")
    settings = ctx.settings_for(task)
    if max_new_tokens is None:
        max_new_tokens = settings.max_new_tokens
    outputs = generate_outputs(ctx, instructions, max_new_tokens, settings.setting)
    try:
        result = evaluate_alpaca_eval(judge, instructions, outputs, references, version=version,  # type: ignore[arg-type]
                                      seed=ctx.seed)
    except JudgeError as err:  # the planned judge did not answer: not a result, retried next run
        raise TaskUnavailable(f"{task}: judge calls failed ({err}); the outputs are kept in "
                              f"{ctx.out_dir / OUTPUTS_FILE}") from err
    metrics = {**result.metrics(task), f"{task}/max_new_tokens": float(max_new_tokens)}
    score: float | None = result.win_rate
    note = None
    if version == 2:
        metrics[f"{task}/score_is_length_controlled"] = float(result.lc_win_rate is not None)
        if result.lc_win_rate is not None:
            score = result.lc_win_rate
        else:
            note = (f"{task}: score is the raw win rate, not length-controlled (LC unavailable: "
                    f"{result.lc_unavailable_reason})")
    reason = None
    if score is None or score != score:  # NaN: no valid annotation
        score, reason = None, f"{task}: too few valid judge annotations ({result.n}) for a win rate"
    samples = [{**a, "judge_template": result.template_source} for a in result.annotations]
    return TaskResult(metrics, score, samples, skipped_reason=reason, note=note)


def describe(version: int, settings: AlpacaEvalSettings, limit: int | None) -> TaskProtocol:
    from harness.judge.alpaca import ANNOTATORS, load_reference

    size = count_rows(lambda: load_reference(version, limit)[0])
    subset = "all 805 instructions" + (f"; --limit {limit}: the first {limit}" if limit else "")
    reference = "text-davinci-003" if version == 1 else "gpt-4-1106-preview"
    judge = (f"alpaca_eval's {ANNOTATORS[version]['config']} annotator via the judge endpoint, vs "
             f"{reference}; " + ("win rate" if version == 1 else "length-controlled win rate (length_controlled_v1)"))
    decoding = describe_decoding(sampling_params(settings, 0))
    if settings.setting == "paper":
        return TaskProtocol("paper", subset, size, None, f"{OPEN_INSTRUCT} eval/alpaca_farm: the instruction as the "
                            f"user turn in {CHAT_FORMAT}; {BOS_RULE}", decoding, judge)
    return TaskProtocol("harness", subset, size, None,
                        "the instruction as the user turn in the model's chat template; no BOS added", decoding, judge)


register_task(TaskSpec(
    name="alpaca_eval1",
    describe=lambda settings, limit: describe(1, settings, limit),
    category="instruction_following",
    run=lambda ctx: run_version(ctx, 1),
    settings=AlpacaEvalSettings(),
    settings_group="alpaca_eval",
    data_files=lambda _settings: data_files(1),
    uses=("judge",),
    requires=("judge",),
    description="AlpacaEval 1: 805 instructions vs text-davinci-003, alpaca_eval_gpt4 annotator via the judge.",
    score_rule="win rate % against text-davinci-003 (ties count half)",
))
register_task(TaskSpec(
    name="alpaca_eval2",
    describe=lambda settings, limit: describe(2, settings, limit),
    category="instruction_following",
    run=lambda ctx: run_version(ctx, 2),
    settings=AlpacaEvalSettings(),
    settings_group="alpaca_eval",
    data_files=lambda _settings: data_files(2),
    uses=("judge",),
    requires=("judge",),
    description="AlpacaEval 2: 805 instructions vs GPT-4 turbo, weighted gpt4_turbo annotator, length-controlled.",
    score_rule="length-controlled win rate % against gpt-4-1106-preview (alpaca_eval's length_controlled_v1)",
))
