"""Verifiable reward functions, by name, in TRL `reward_funcs` style: f(completions, **kw) -> list[float]."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from datasets_registry.smoke_lowercase import lowercase_reward
from harness.registry import Registry

REWARD_FUNCTIONS: Registry[Callable[..., list[float]]] = Registry("reward function")
REWARD_FUNCTIONS.register("lowercase", lowercase_reward)


def _text(completion: Any) -> str:
    if isinstance(completion, list):  # conversational: [{"role": "assistant", "content": ...}]
        return "".join(m.get("content", "") for m in completion if isinstance(m, dict))
    return str(completion)


def lowercase_fraction_reward(completions: Sequence[Any], **_: Any) -> list[float]:
    """Dense version of `lowercase`: the share of the completion's letters that are lowercase (0 without letters).

    Why it exists: SmolLM2-135M-Instruct essentially never answers entirely in lowercase, so the binary
    `lowercase` reward is 0 for every sample of a group (measured: 16/16 GRPO samples at T=0.7) and
    group-relative methods (GRPO, RLOO) get no advantage at all. This one ranks "the capital of france is
    paris." above "The capital of France is Paris." and gives those methods a signal on the same constraint.
    """
    out = []
    for completion in completions:
        letters = [c for c in _text(completion) if c.isalpha()]
        out.append(sum(c.islower() for c in letters) / len(letters) if letters else 0.0)
    return out


REWARD_FUNCTIONS.register("lowercase_fraction", lowercase_fraction_reward)


def gsm8k_reward(completions: Sequence[Any], answer: Sequence[str] | None = None, **_: Any) -> list[float]:
    """1.0 when the completion's last number equals the gold answer, else 0.0.

    Uses the GSM8K eval's own extraction and comparison (`harness.evaluation.gsm8k.is_correct`), so the
    training reward and the reported GSM8K accuracy can never disagree on what "correct" means. `answer`
    is the prompt rows' column (TRL passes dataset columns as keyword arguments): a bare final answer (the
    `prompts-gsm8k-train` rows) or a full GSM8K solution ending in "#### N".
    """
    if answer is None:
        raise ValueError("reward function 'gsm8k' needs an `answer` column in the prompt rows (the gold number)")
    from harness.evaluation.gsm8k import is_correct, reference_answer

    out = []
    for completion, gold in zip(completions, answer, strict=True):
        reference = reference_answer(gold) if "####" in str(gold) else str(gold).strip()
        out.append(1.0 if is_correct(_text(completion), reference) else 0.0)
    return out


REWARD_FUNCTIONS.register("gsm8k", gsm8k_reward)
