"""Bootstrap confidence intervals and paired bootstrap p-values, over evaluation examples and seeds.

Every estimator is written as a function of per-example *count weights*: a bootstrap replicate draws
n examples with replacement, i.e. a multinomial count vector w over the n examples, and the statistic
is recomputed with those weights. One weight matrix (B replicates x n examples) can therefore be
shared by two runs evaluated on the same examples, which makes their difference *paired*: the
`WeightBank` hands out the same matrix for the same example keys, so any two runs of a table that saw
the same examples are compared example by example. Seeds are a second level: each replicate also
resamples the runs (seeds) of a configuration, then averages them.

Intervals are percentile intervals (2.5% and 97.5% quantiles of the replicates). p-values are two-sided
from the paired replicates of the difference: 2 x min(P*(delta <= 0), P*(delta >= 0)), floored at 1/B.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_N_BOOT = 1000
ALPHA = 0.05


@dataclass
class ExampleSet:
    """Per-example data of one metric of one run, such that `point()` reproduces the logged metric.

    statistic = scale x mean over strata of ( sum_i w_i num_i / sum_i w_i den_i ) over the stratum's
    examples. A plain mean has den = 1 and one stratum; a mean over samples clustered by prompt has
    num = the prompt's sum and den = its sample count; BBH's mean over sub-tasks has one stratum per
    sub-task (resampled within the stratum, so every sub-task keeps its size).
    """

    keys: tuple[str, ...]  # one per example (unit of resampling), for pairing runs
    num: np.ndarray
    den: np.ndarray
    strata: np.ndarray  # int stratum index per example
    scale: float = 1.0
    source: str = ""  # the task / artifact the examples come from: draws are shared only within one source

    @property
    def n(self) -> int:
        return len(self.keys)

    def evaluate(self, weights: np.ndarray) -> np.ndarray:
        """Statistic for each row of `weights` (B x n)."""
        weights = np.atleast_2d(weights)
        per_stratum = []
        for s in np.unique(self.strata):
            mask = self.strata == s
            top = weights[:, mask] @ self.num[mask]
            bottom = weights[:, mask] @ self.den[mask]
            with np.errstate(invalid="ignore", divide="ignore"):
                per_stratum.append(top / bottom)
        return self.scale * np.mean(per_stratum, axis=0)

    def point(self) -> float:
        return float(self.evaluate(np.ones(self.n))[0])


@dataclass
class Composite:
    """Mean of several metrics (a category = mean of its tasks' scores; overall = mean of categories)."""

    parts: list[ExampleSet | Composite]


Estimator = ExampleSet | Composite


def point(est: Estimator) -> float:
    if isinstance(est, ExampleSet):
        return est.point()
    return float(np.mean([point(p) for p in est.parts]))


def n_examples(est: Estimator) -> int:
    if isinstance(est, ExampleSet):
        return est.n
    return sum(n_examples(p) for p in est.parts)


class WeightBank:
    """Bootstrap weights keyed by the examples they resample: the same examples get the same draws.

    Sharing draws is what pairs two runs; it leaves each run's own interval unchanged (each run still
    sees an ordinary bootstrap of its own examples).
    """

    def __init__(self, n_boot: int = DEFAULT_N_BOOT, seed: int = 0):
        self.n_boot = n_boot
        self.rng = np.random.default_rng(seed)
        self._examples: dict[tuple, np.ndarray] = {}
        self._seeds: dict[int, np.ndarray] = {}

    def example_weights(self, est: ExampleSet) -> np.ndarray:
        # Two tasks that happen to number their examples alike must not share draws (that would
        # correlate them inside a category average); two runs of the same task must (pairing).
        key = (est.source, est.keys, est.strata.tobytes())
        if key not in self._examples:
            weights = np.zeros((self.n_boot, est.n))
            for s in np.unique(est.strata):
                idx = np.flatnonzero(est.strata == s)
                weights[:, idx] = self.rng.multinomial(len(idx), np.full(len(idx), 1 / len(idx)), size=self.n_boot)
            self._examples[key] = weights
        return self._examples[key]

    def seed_choice(self, n_seeds: int) -> np.ndarray:
        """(B x n_seeds) indices of the seeds drawn in each replicate (shared for equal counts, so
        configurations with the same number of seeds are paired seed-by-seed in sorted seed order)."""
        if n_seeds not in self._seeds:
            self._seeds[n_seeds] = self.rng.integers(0, n_seeds, size=(self.n_boot, n_seeds))
        return self._seeds[n_seeds]


def replicates(est: Estimator, bank: WeightBank) -> np.ndarray:
    """B bootstrap replicates of one run's metric."""
    if isinstance(est, ExampleSet):
        return est.evaluate(bank.example_weights(est))
    return np.mean([replicates(p, bank) for p in est.parts], axis=0)


def seed_replicates(per_seed: Sequence[Estimator], bank: WeightBank) -> np.ndarray:
    """Replicates of the mean over seeds: resample seeds, and examples within each seed's run."""
    reps = np.stack([replicates(e, bank) for e in per_seed])  # (S, B)
    if len(per_seed) == 1:
        return reps[0]
    choice = bank.seed_choice(len(per_seed))  # (B, S)
    columns = np.arange(bank.n_boot)[:, None]
    return reps[choice, columns].mean(axis=1)


def percentile_ci(reps: np.ndarray, alpha: float = ALPHA) -> tuple[float, float] | None:
    finite = reps[np.isfinite(reps)]
    if finite.size < max(10, 0.9 * reps.size):
        return None  # too many undefined replicates (e.g. empty strata): no interval rather than a wrong one
    return float(np.quantile(finite, alpha / 2)), float(np.quantile(finite, 1 - alpha / 2))


def paired_p_value(delta_reps: np.ndarray) -> float | None:
    """Two-sided bootstrap p-value of "no difference" from the replicates of a paired difference."""
    finite = delta_reps[np.isfinite(delta_reps)]
    if finite.size == 0:
        return None
    low = float(np.mean(finite <= 0))
    high = float(np.mean(finite >= 0))
    return max(min(1.0, 2 * min(low, high)), 1.0 / finite.size)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem with n samples, c correct (Chen et al., 2021)."""
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))
