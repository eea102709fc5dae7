"""LLM judge: an OpenAI-compatible client (pairwise with order swap, single grade, classification),
a persistent cache, win-rate statistics, AlpacaEval 1/2, experiment-level judging and a local server.

    from harness.judge import judge_client_from_settings
    judge = judge_client_from_settings(ctx.judge)          # None when no judge is configured
    verdict = judge.pairwise(instruction, output_a, output_b)   # asked in both orders
    instructions, refs = load_reference(2)                      # AlpacaEval 2 set, gpt-4-1106 references
    result = evaluate_alpaca_eval(judge, instructions, outputs, refs, version=2)  # .win_rate, .lc_win_rate
    # .lc_win_rate is alpaca_eval's own length_controlled_v1 (the leaderboard's), or None with
    # .lc_unavailable_reason; `score_annotations` scores saved annotations the same way.
"""

from harness.judge.alpaca import (
    AlpacaEvalResult,
    evaluate_alpaca_eval,
    length_controlled_win_rate,
    load_reference,
    score_annotations,
)
from harness.judge.client import (
    Completion,
    JudgeClient,
    JudgeError,
    JudgeParseError,
    PairVerdict,
    judge_client_from_settings,
    usage_metrics,
)
from harness.judge.prompts import TRUTHFULQA_INFO, TRUTHFULQA_TRUTH, XSTEST_LABELS, XSTEST_REFUSAL, YES_NO
from harness.judge.stats import WinRate, bootstrap_ci, bradley_terry, win_rate

__all__ = [
    "AlpacaEvalResult", "Completion", "JudgeClient", "JudgeError", "JudgeParseError", "PairVerdict",
    "TRUTHFULQA_INFO", "TRUTHFULQA_TRUTH", "WinRate", "XSTEST_LABELS", "XSTEST_REFUSAL", "YES_NO",
    "bootstrap_ci", "bradley_terry", "evaluate_alpaca_eval", "judge_client_from_settings",
    "length_controlled_win_rate", "load_reference", "score_annotations", "usage_metrics", "win_rate",
]
