"""Reward-model ensembles (Coste et al., 2024, "Reward Model Ensembles Help Mitigate Overoptimization"):
k reward models score each sample and one rule combines the k scores r_1..r_k into the reward:

    mean   R = (1/k) sum_i r_i
    wco    R = min_i r_i                                   worst-case optimisation
    uwo    R = (1/k) sum_i r_i - lambda * (1/k) sum_i (r_i - mean)^2     uncertainty-weighted optimisation

UWO penalises the members' disagreement by their (population) variance, as Coste et al. define it; some
summaries (e.g. seed 002) write a standard deviation instead: this module follows the paper. lambda is
`reward_model.uwo_lambda` in a grid (default 0.5: a choice of this project, not a value from the paper,
which reports UWO as robust to it). The members are ordinary reward models (a grid trains each once, as
its own cached stage); their raw scores are combined without normalisation, as in the paper, whose
members share one architecture and training recipe.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

Combine = Literal["mean", "wco", "uwo"]
COMBINE_RULES: tuple[str, ...] = ("mean", "wco", "uwo")


def combine_scores(member_scores: Sequence[Sequence[float]], combine: str, uwo_lambda: float = 0.0) -> list[float]:
    """Per-sample combined reward from `member_scores[m][i]` (member m's score of sample i)."""
    if combine not in COMBINE_RULES:
        raise ValueError(f"combine must be one of {COMBINE_RULES}, got {combine!r}")
    if not member_scores:
        raise ValueError("an ensemble needs at least one member's scores")
    n = len(member_scores[0])
    if any(len(scores) != n for scores in member_scores):
        raise ValueError(f"members scored different numbers of samples: {[len(s) for s in member_scores]}")
    out = []
    for i in range(n):
        values = [float(scores[i]) for scores in member_scores]
        if combine == "wco":
            out.append(min(values))
            continue
        mean = statistics.fmean(values)
        out.append(mean if combine == "mean" else mean - uwo_lambda * statistics.pvariance(values, mu=mean))
    return out


@dataclass(frozen=True)
class EnsembleSpec:
    """Resolved members (local RM folders) and how to combine them."""

    paths: tuple[str, ...]
    combine: str = "mean"
    uwo_lambda: float = 0.0

    def __post_init__(self) -> None:
        if len(self.paths) < 2:
            raise ValueError(f"an ensemble needs at least 2 reward models, got {len(self.paths)}")
        if self.combine not in COMBINE_RULES:
            raise ValueError(f"combine must be one of {COMBINE_RULES}, got {self.combine!r}")


class EnsembleScorer:
    """The ensemble with `RewardScorer`'s interface (`score`, `as_reward_function`); `last_members` keeps
    the members' scores of the latest call (for logging their disagreement)."""

    def __init__(self, spec: EnsembleSpec, device: str | None = None, batch_size: int = 16):
        from harness.reward_model import RewardScorer

        self.spec = spec
        self.members = [RewardScorer(path, device=device, batch_size=batch_size) for path in spec.paths]
        self.last_members: list[list[float]] = []

    def score(self, prompts: Sequence[Any], responses: Sequence[Any]) -> list[float]:
        self.last_members = [member.score(prompts, responses) for member in self.members]
        return combine_scores(self.last_members, self.spec.combine, self.spec.uwo_lambda)

    def as_reward_function(self) -> Callable[..., list[float]]:
        from harness.reward_model import reward_function_of

        return reward_function_of(self)
