"""What a logged metric is called where a reader sees it (figure titles, axes, captions): the paper's
words for its benchmarks and categories, plain words for the training curves. The one place that maps
MLflow metric keys to display names; a key it does not know is spelled out from its parts
(`smoke_lowercase/correct_rate` -> "smoke lowercase: correct rate"), never shown raw.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

# Benchmarks as the paper names them (Sec. 2.2, App. D), and the project's own tasks.
TASK_NAMES: dict[str, str] = {
    "mmlu": "MMLU", "gsm8k": "GSM8K", "bbh": "BBH", "truthfulqa": "TruthfulQA", "humaneval_plus": "HumanEval+",
    "mbpp_plus": "MBPP+", "toxigen": "ToxiGen", "xstest": "XSTest", "alpaca_eval1": "AlpacaEval 1",
    "alpaca_eval2": "AlpacaEval 2", "ifeval": "IFEval", "smoke_lowercase": "Lowercase task",
    "policy_kl": "KL to the SFT model", "rm_reward": "Reward-model score",
}

CATEGORY_NAMES: dict[str, str] = {
    "factuality": "Factuality", "reasoning": "Reasoning", "coding": "Coding", "truthfulness": "Truthfulness",
    "safety": "Safety", "instruction_following": "Instruction following",
}

METRIC_NAMES: dict[str, str] = {
    "overall": "Average over categories",
    "gsm8k/score": "GSM8K accuracy (%)",
    "bbh/score": "BBH exact match (%)",
    "mmlu/score": "MMLU accuracy (%)",
    "ifeval/score": "IFEval loose prompt accuracy (%)",
    "alpaca_eval1/score": "AlpacaEval 1 win rate (%)",
    "alpaca_eval2/score": "AlpacaEval 2 score (%)",
    "truthfulqa/score": "TruthfulQA % truthful and informative",
    "toxigen/score": "ToxiGen % non-toxic",
    "xstest/score": "XSTest refusal F1",
    "humaneval_plus/score": "HumanEval+ pass@10 (%)",
    "mbpp_plus/score": "MBPP+ pass@10 (%)",
    "smoke_lowercase/score": "Lowercase task: clean successes (%)",
    "smoke_lowercase/clean_success_rate": "Lowercase task: clean successes (%)",
    "smoke_lowercase/constraint_rate": "Lowercase task: answers in lowercase (%)",
    "smoke_lowercase/degenerate_rate": "Lowercase task: degenerate answers (%)",
    "smoke_lowercase/correct_rate": "Lowercase task: correct answers (%)",
    "rm_reward/mean": "Reward-model score (mean)",
    "policy_kl/kl_mean": "KL(π ‖ π_ref) per completion (nats)",
    "judge/win_rate": "Judge win rate vs the SFT model",
    # Training curves (per optimizer step; DPO-style losses report implicit rewards β·log π/π_ref).
    "train/loss": "Training loss",
    "train/accuracy": "Preference accuracy on training batches",
    "train/margins": "Implicit reward margin (chosen − rejected)",
    "train/rewards_margins": "Implicit reward margin (chosen − rejected)",
    "train/rewards_chosen": "Implicit reward of chosen answers",
    "train/rewards_rejected": "Implicit reward of rejected answers",
    "train/reward_mean": "Reward of sampled answers (mean)",
    "train/kl": "KL to the reference policy (training)",
    "train/entropy": "Policy entropy",
    "train/response_length": "Sampled answer length (tokens)",
    "train/policy_loss": "Policy loss",
    "train/value_loss": "Value loss",
    "train/learning_rate": "Learning rate",
    "train/grad_norm": "Gradient norm",
}


def _words(text: str) -> str:
    return text.replace("_", " ")


def metric_name(key: str) -> str:
    """The display name of a metric key (an `eval/` prefix, for checkpoint evaluations, is dropped)."""
    key = key.removeprefix("eval/")
    if key in METRIC_NAMES:
        return METRIC_NAMES[key]
    head, _, rest = key.partition("/")
    if head == "category" and rest:
        return f"{CATEGORY_NAMES.get(rest, _words(rest))} (category average)"
    if not rest:
        return _words(key)
    task = TASK_NAMES.get(head, _words(head))
    return f"{task} score" if rest == "score" else f"{task}: {_words(rest)}"


def reward_score_name(cells: Iterable[Any]) -> str:
    """What `rm_reward` scored the answers with, in words: "verifier reward (NAME)" when every cell's reward is
    that one verifier (`reward_model.verifier`, e.g. GRPO on a verifiable reward), else "reward-model score"."""
    verifiers = {cell.param("reward_model.verifier") for cell in cells}
    if len(verifiers) == 1 and None not in verifiers:
        return f"verifier reward ({verifiers.pop()})"
    return "reward-model score"
