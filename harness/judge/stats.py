"""Win rates with bootstrap confidence intervals, and a Bradley-Terry ranking from pairwise verdicts."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class WinRate:
    win_rate: float  # mean score: wins 1, ties 0.5, losses 0
    ci_low: float
    ci_high: float
    n: int  # valid verdicts
    wins: int
    ties: int
    losses: int
    invalid: int = 0  # verdicts excluded (the judge named neither side in some order)

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in vars(self).items()}


def bootstrap_ci(scores: Sequence[float], n_boot: int = 10_000, alpha: float = 0.05,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean over prompts (resampling prompts with replacement)."""
    values = np.asarray(scores, dtype=float)
    if values.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    for start in range(0, n_boot, 1000):  # chunks keep memory flat for large prompt sets
        stop = min(start + 1000, n_boot)
        idx = rng.integers(0, values.size, size=(stop - start, values.size))
        means[start:stop] = values[idx].mean(axis=1)
    return float(np.quantile(means, alpha / 2)), float(np.quantile(means, 1 - alpha / 2))


def win_rate(scores: Sequence[float], invalid: int = 0, n_boot: int = 10_000, alpha: float = 0.05,
             seed: int = 0) -> WinRate:
    """Win rate of a policy from per-prompt scores (1 win, 0.5 tie, 0 loss) with a bootstrap CI."""
    values = [float(s) for s in scores]
    if any(s not in (0.0, 0.5, 1.0) for s in values):
        raise ValueError("scores must be 1 (win), 0.5 (tie) or 0 (loss)")
    low, high = bootstrap_ci(values, n_boot=n_boot, alpha=alpha, seed=seed)
    return WinRate(
        win_rate=float(np.mean(values)) if values else math.nan, ci_low=low, ci_high=high, n=len(values),
        wins=sum(s == 1.0 for s in values), ties=sum(s == 0.5 for s in values),
        losses=sum(s == 0.0 for s in values), invalid=invalid,
    )


@dataclass
class BradleyTerry:
    scores: dict[str, float]  # log-strengths, the anchor at 0
    anchor: str
    n_comparisons: int

    def ranking(self) -> list[tuple[str, float]]:
        return sorted(self.scores.items(), key=lambda kv: -kv[1])

    def expected_win_rate(self, player: str, opponent: str) -> float:
        return 1 / (1 + math.exp(self.scores[opponent] - self.scores[player]))


def bradley_terry(comparisons: Sequence[tuple[str, str, float]], anchor: str | None = None,
                  l2: float = 0.01, max_iter: int = 500) -> BradleyTerry:
    """Fit P(i beats j) = sigmoid(s_i - s_j) by maximum likelihood over (i, j, score_of_i) comparisons
    (ties count half a win each way), with a weak L2 penalty so a player that never lost still gets a
    finite score. Scores are shifted so that `anchor` (default: the first player) sits at 0."""
    players = sorted({p for i, j, _ in comparisons for p in (i, j)})
    if not players:
        raise ValueError("no comparisons")
    anchor = anchor or players[0]
    if anchor not in players:
        raise ValueError(f"anchor {anchor!r} is in no comparison; players: {players}")
    index = {p: k for k, p in enumerate(players)}
    n = len(players)
    wins = np.zeros((n, n))  # wins[i, j]: (fractional) wins of i over j
    for i, j, score in comparisons:
        wins[index[i], index[j]] += score
        wins[index[j], index[i]] += 1 - score
    games = wins + wins.T
    theta = np.zeros(n)
    # Newton's method on the concave penalised log-likelihood (n is small: the policies of one grid).
    for _ in range(max_iter):
        diff = theta[:, None] - theta[None, :]
        p = 1 / (1 + np.exp(-diff))
        grad = (wins - games * p).sum(axis=1) - l2 * theta
        w = games * p * (1 - p)
        hess = -np.diag(w.sum(axis=1)) + w - l2 * np.eye(n)
        step = np.linalg.solve(hess, grad)
        theta -= step
        if np.max(np.abs(step)) < 1e-10:
            break
    theta -= theta[index[anchor]]
    return BradleyTerry({p: float(theta[index[p]]) for p in players}, anchor, len(comparisons))
