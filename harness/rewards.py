"""Verifiable rewards ("verifiers"): rule-based reward functions in TRL `reward_funcs` style,
f(completions, **row_columns) -> list[float], the reward source `reward_model: {verifier: NAME}` of a grid.

A verifier is a reward like any trained reward model: PPO, GRPO, RLOO and Online DPO train on it, and
best-of-N picks with it when it needs no per-prompt gold data (`columns` empty). Each one names the
prompt-row columns it reads (TRL passes a dataset's columns to reward functions as keyword arguments;
the project's PPO passes the same), and optionally a format check: with `format_weight: w` the reward
is verifier(y) + w * format(y), format(y) in {0, 1}.

| verifier | reward | reads | format check | training prompts |
| --- | --- | --- | --- | --- |
| `smoke_lowercase` | 1 when the answer has letters and none is uppercase | - | - | `smoke-lowercase` (its prompts) |
| `smoke_lowercase_fraction` | share of the answer's letters in lowercase (dense version) | - | - | `smoke-lowercase` |
| `gsm8k` | 1 when the last number equals the gold answer (the GSM8K eval's own `is_correct`) | `answer` | "The answer is N." (lm-eval's strict-match) | `prompts-gsm8k-train` |
| `ifeval` | share of the prompt's IFEval instructions followed (the official checkers, strict) | `key`, `instruction_id_list`, `instruction_kwargs` | - | `prompts-ifeval-synthetic` |
| `length_bonus` | min(1, characters / 200): pays for length and nothing else; a deliberately hackable proxy, the over-optimisation monitor's negative control (harness/monitor.py) | - | - | any |

The mined math prompts (`prompts-mined-math`) have no gold answer, so no verifier here can score them:
a cell that pairs them with `gsm8k` fails when its training starts, naming the missing column.

`reward_function: NAME` (the older spelling, one name of `REWARD_FUNCTIONS`) is read as
`reward_model: {verifier: ...}` when a grid loads (`lowercase` -> `smoke_lowercase`, `lowercase_fraction`
-> `smoke_lowercase_fraction`, `gsm8k` -> `gsm8k`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from datasets_registry.smoke_lowercase import lowercase_reward
from harness.registry import Registry

RewardFn = Callable[..., list[float]]


def completion_text(completion: Any) -> str:
    """The text of a completion as TRL passes it: a string, or conversational [{"role", "content"}]."""
    if isinstance(completion, list):
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
        letters = [c for c in completion_text(completion) if c.isalpha()]
        out.append(sum(c.islower() for c in letters) / len(letters) if letters else 0.0)
    return out


def gsm8k_reward(completions: Sequence[Any], answer: Sequence[str] | None = None, **_: Any) -> list[float]:
    """1.0 when the completion's last number equals the gold answer, else 0.0.

    Uses the GSM8K eval's own extraction and comparison (`harness.evaluation.gsm8k.is_correct`), so the
    training reward and the reported GSM8K accuracy can never disagree on what "correct" means. `answer`
    is the prompt rows' column (TRL passes dataset columns as keyword arguments): a bare final answer (the
    `prompts-gsm8k-train` rows) or a full GSM8K solution ending in "#### N".
    """
    if answer is None:
        raise ValueError("verifier 'gsm8k' needs an `answer` column in the prompt rows (the gold number)")
    from harness.evaluation.gsm8k import is_correct, reference_answer

    out = []
    for completion, gold in zip(completions, answer, strict=True):
        reference = reference_answer(gold) if "####" in str(gold) else str(gold).strip()
        out.append(1.0 if is_correct(completion_text(completion), reference) else 0.0)
    return out


def gsm8k_format(text: str) -> bool:
    """The answer is stated as "The answer is N." (lm-eval's gsm8k-cot strict-match pattern)."""
    from harness.evaluation.gsm8k import LMEVAL_STRICT

    return re.search(LMEVAL_STRICT, text) is not None


def ifeval_reward(completions: Sequence[Any], key: Sequence[int] | None = None,
                  instruction_id_list: Sequence[list[str]] | None = None,
                  instruction_kwargs: Sequence[list[dict[str, Any]]] | None = None,
                  prompts: Sequence[Any] | None = None, **_: Any) -> list[float]:
    """Share of the prompt's instructions the completion follows, by IFEval's official checkers (strict),
    called through the IFEval eval's own `score_one` (lm-eval's copy of the checkers, their random draws
    seeded by the row's key), so training and evaluation apply the same rules."""
    if key is None or instruction_id_list is None or instruction_kwargs is None or prompts is None:
        raise ValueError("verifier 'ifeval' needs prompt rows with `key`, `instruction_id_list` and "
                         "`instruction_kwargs` columns (e.g. the prompt set prompts-ifeval-synthetic)")
    from harness.evaluation.ifeval import score_one

    out = []
    for completion, k, ids, kwargs, prompt in zip(completions, key, instruction_id_list, instruction_kwargs,
                                                  prompts, strict=True):
        row = {"key": int(k), "prompt": completion_text(prompt[-1:] if isinstance(prompt, list) else prompt),
               "instruction_id_list": list(ids), "kwargs": [dict(kw or {}) for kw in kwargs]}
        followed = score_one(row, completion_text(completion))["inst_level_strict_acc"]
        out.append(sum(followed) / len(followed) if followed else 0.0)
    return out


def length_bonus_reward(completions: Sequence[Any], **_: Any) -> list[float]:
    """Deliberately hackable: pays for length only (characters / 200, capped at 1). Not a reward to train a
    useful policy with: the over-optimisation monitor's test case of a proxy a policy can game."""
    return [min(1.0, len(completion_text(c)) / 200.0) for c in completions]


@dataclass(frozen=True)
class Verifier:
    name: str
    reward: RewardFn
    columns: tuple[str, ...]  # prompt-row columns the reward reads (beyond prompt and completion)
    description: str
    format_check: Callable[[str], bool] | None = None
    format_description: str = ""


VERIFIERS: Registry[Verifier] = Registry("verifier")


def register_verifier(verifier: Verifier) -> Verifier:
    VERIFIERS.register(verifier.name, verifier)
    return verifier


register_verifier(Verifier("smoke_lowercase", lowercase_reward, (),
                           "1 when the answer has letters and none is uppercase (the smoke constraint)"))
register_verifier(Verifier("smoke_lowercase_fraction", lowercase_fraction_reward, (),
                           "share of the answer's letters in lowercase (dense smoke constraint)"))
register_verifier(Verifier("gsm8k", gsm8k_reward, ("answer",),
                           "1 when the answer's last number is the gold answer (GSM8K eval's is_correct)",
                           gsm8k_format, 'the answer ends with "The answer is N." (lm-eval strict-match)'))
register_verifier(Verifier("length_bonus", length_bonus_reward, (),
                           "min(1, characters / 200): deliberately hackable (pays for length only)"))
register_verifier(Verifier("ifeval", ifeval_reward, ("key", "instruction_id_list", "instruction_kwargs"),
                           "share of the prompt's IFEval instructions followed (official checkers, strict)"))


class VerifierReward:
    """A verifier (plus its weighted format check) as one TRL-style reward callable; `columns` says
    which prompt-row columns it needs, so trainers can check them before training starts."""

    def __init__(self, name: str, format_weight: float = 0.0):
        self.verifier = VERIFIERS.get(name)
        if format_weight and self.verifier.format_check is None:
            raise ValueError(f"verifier {name!r} has no format check, so format_weight must be 0; verifiers "
                             f"with one: {', '.join(format_verifiers())}")
        self.format_weight = float(format_weight)
        self.columns = self.verifier.columns
        self.__name__ = name if not format_weight else f"{name}+format"

    def __call__(self, completions: Sequence[Any], **kwargs: Any) -> list[float]:
        scores = [float(s) for s in self.verifier.reward(completions=completions, **kwargs)]
        if not self.format_weight:
            return scores
        check = self.verifier.format_check
        assert check is not None
        return [s + self.format_weight * float(check(completion_text(c))) for s, c in zip(scores, completions,
                                                                                       strict=True)]


def format_verifiers() -> list[str]:
    return [name for name in VERIFIERS.names() if VERIFIERS.get(name).format_check is not None]


def missing_columns(reward: Any, rows: Sequence[dict[str, Any]]) -> list[str]:
    """The columns `reward` reads (`columns` attribute; none for a reward model) that some row lacks."""
    needed = getattr(reward, "columns", ())
    return [c for c in needed if any(c not in row for row in rows)]


# The `reward_function: NAME` spelling of older grids and code: name -> verifier.
REWARD_FUNCTION_VERIFIERS = {"lowercase": "smoke_lowercase", "lowercase_fraction": "smoke_lowercase_fraction",
                             "gsm8k": "gsm8k"}
REWARD_FUNCTIONS: Registry[RewardFn] = Registry("reward function")
for _name, _verifier in REWARD_FUNCTION_VERIFIERS.items():
    REWARD_FUNCTIONS.register(_name, VERIFIERS.get(_verifier).reward)
