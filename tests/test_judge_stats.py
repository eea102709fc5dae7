"""Win rate with ties counted half, bootstrap intervals, and the Bradley-Terry fit."""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.judge.client import combine_votes
from harness.judge.prompts import parse_grade, parse_label, parse_pairwise
from harness.judge.stats import bootstrap_ci, bradley_terry, win_rate


def test_ties_count_half_and_ci_brackets_the_mean():
    scores = [1.0] * 60 + [0.5] * 30 + [0.0] * 60  # 150 prompts, as in the reproduced table
    wr = win_rate(scores, invalid=2, n_boot=4000, seed=1)
    assert wr.win_rate == pytest.approx(0.5)
    assert (wr.wins, wr.ties, wr.losses, wr.n, wr.invalid) == (60, 30, 60, 150, 2)
    assert wr.ci_low < 0.5 < wr.ci_high
    # Binomial-like width: sd of the mean is about sqrt(0.2/150) ~ 0.037, so the 95% CI is ~ +-0.07.
    assert 0.05 < wr.win_rate - wr.ci_low < 0.1
    assert win_rate(scores, n_boot=4000, seed=1) == win_rate(scores, n_boot=4000, seed=1)  # seeded


def test_ci_narrows_with_more_prompts():
    rng = np.random.default_rng(0)
    small = rng.choice([0.0, 0.5, 1.0], size=30, p=[0.3, 0.2, 0.5])
    large = rng.choice([0.0, 0.5, 1.0], size=600, p=[0.3, 0.2, 0.5])
    lo_s, hi_s = bootstrap_ci(small, n_boot=2000)
    lo_l, hi_l = bootstrap_ci(large, n_boot=2000)
    assert hi_l - lo_l < (hi_s - lo_s) / 2


def test_win_rate_rejects_non_outcome_scores():
    with pytest.raises(ValueError):
        win_rate([0.7])
    empty = win_rate([])
    assert math.isnan(empty.win_rate) and empty.n == 0


def test_vote_combination_rule():
    assert combine_votes("a", "a") == ("a", True)
    assert combine_votes("b", "b") == ("b", True)
    assert combine_votes("a", "b") == ("tie", True)  # position-dependent: no win
    assert combine_votes(None, "a") == ("tie", False)


def test_reply_parsers():
    assert parse_pairwise("A") == "A"
    assert parse_pairwise("**B**.") == "B"
    assert parse_pairwise("Response B is better than Response A") == "B"
    assert parse_pairwise("Both are fine") is None
    assert parse_label("Refusal. The assistant declines.", ["compliance", "refusal"]) == "refusal"
    assert parse_label("no, it is not", ["yes", "no"]) == "no"
    assert parse_label("unknown", ["yes", "no"]) is None
    assert parse_grade("Rating: 7/10", 1, 10) == 7.0
    assert parse_grade("42", 1, 10) is None


def test_bradley_terry_recovers_strengths():
    rng = np.random.default_rng(0)
    true = {"sft": 0.0, "dpo": 0.4, "ppo": 0.2, "grpo": 1.0}
    names = list(true)
    comparisons = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            p = 1 / (1 + math.exp(true[b] - true[a]))
            for _ in range(400):
                u = rng.random()
                score = 1.0 if u < p * 0.9 else (0.5 if u < p * 0.9 + 0.1 else 0.0)
                comparisons.append((a, b, score))
    bt = bradley_terry(comparisons, anchor="sft")
    assert bt.scores["sft"] == 0.0
    assert [name for name, _ in bt.ranking()] == ["grpo", "dpo", "ppo", "sft"]
    for name, value in true.items():
        assert bt.scores[name] == pytest.approx(value, abs=0.2)
    assert bt.expected_win_rate("grpo", "sft") > 0.65


def test_bradley_terry_stays_finite_for_an_unbeaten_player():
    bt = bradley_terry([("a", "b", 1.0)] * 20 + [("b", "c", 0.5)] * 20, anchor="b")
    assert all(math.isfinite(v) for v in bt.scores.values())
    assert bt.scores["a"] > bt.scores["b"] == 0.0
    assert bt.scores["c"] == pytest.approx(0.0, abs=0.05)  # ties only: equal up to the weak penalty
    with pytest.raises(ValueError):
        bradley_terry([("a", "b", 1.0)], anchor="zzz")
