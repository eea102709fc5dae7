"""The report's statistics without MLflow: interval coverage, paired p-values, seed resampling, and the
per-example rules reproducing the evaluation tasks' own metrics."""

from __future__ import annotations

import numpy as np
import pytest

from reports.examples import RULES, mean_of
from reports.stats import (
    Composite,
    ExampleSet,
    WeightBank,
    paired_p_value,
    pass_at_k,
    percentile_ci,
    point,
    replicates,
    seed_replicates,
)


def _bernoulli_set(values: np.ndarray, prefix: str = "") -> ExampleSet:
    n = len(values)
    return ExampleSet(tuple(f"{prefix}{i}" for i in range(n)), values.astype(float), np.ones(n), np.zeros(n, int), 100.0)


def test_bootstrap_interval_covers_the_true_accuracy_at_the_nominal_rate():
    """A task with true accuracy 30% evaluated on 120 examples, 400 times: the 95% interval must contain
    30 about 95% of the time (percentile bootstrap is slightly liberal at this n; accept 0.90-0.98)."""
    rng = np.random.default_rng(7)
    truth, trials, hits = 30.0, 400, 0
    for t in range(trials):
        est = _bernoulli_set(rng.random(120) < truth / 100)
        ci = percentile_ci(replicates(est, WeightBank(n_boot=400, seed=t)))
        assert ci is not None
        hits += ci[0] <= truth <= ci[1]
    assert 0.90 <= hits / trials <= 0.98, hits / trials


def test_bootstrap_over_seeds_widens_the_interval():
    """Two seeds that disagree: resampling seeds as well as examples gives a wider interval than one seed."""
    rng = np.random.default_rng(0)
    a = _bernoulli_set(rng.random(200) < 0.3)
    b = _bernoulli_set(rng.random(200) < 0.5)
    bank = WeightBank(n_boot=1000, seed=1)
    one = percentile_ci(replicates(a, bank))
    both = percentile_ci(seed_replicates([a, b], bank))
    assert one and both and (both[1] - both[0]) > (one[1] - one[0])
    assert both[0] < (point(a) + point(b)) / 2 < both[1]


def test_paired_p_value_small_for_a_real_gap_and_large_for_none():
    rng = np.random.default_rng(3)
    base = rng.random(300) < 0.5
    better = base | (rng.random(300) < 0.2)  # the same examples, some more solved
    bank = WeightBank(n_boot=2000, seed=0)
    a, b = _bernoulli_set(base), _bernoulli_set(better)
    assert paired_p_value(replicates(b, bank) - replicates(a, bank)) < 0.01
    same = replicates(a, bank) - replicates(_bernoulli_set(base.copy()), bank)
    assert paired_p_value(same) == 1.0
    # Pairing matters: the same two runs on *different* examples (unshared weights) are far noisier.
    unpaired = replicates(b, bank) - replicates(_bernoulli_set(base, prefix="other-"), bank)
    ci_paired = percentile_ci(replicates(b, bank) - replicates(a, bank))
    ci_unpaired = percentile_ci(unpaired)
    assert ci_paired and ci_unpaired and (ci_paired[1] - ci_paired[0]) < (ci_unpaired[1] - ci_unpaired[0])


def test_composite_is_the_mean_of_its_parts():
    rng = np.random.default_rng(5)
    parts = [_bernoulli_set(rng.random(50) < p, prefix=str(p)) for p in (0.2, 0.6)]
    comp = Composite(parts)
    assert point(comp) == pytest.approx(np.mean([point(p) for p in parts]))
    bank = WeightBank(n_boot=300)
    assert replicates(comp, bank).mean() == pytest.approx(point(comp), abs=3.0)


def test_pass_at_k_matches_the_coding_tasks_estimator():
    from harness.evaluation import coding

    pairs = [(20, 0), (20, 3), (20, 15), (10, 10), (12, 1)]
    for k in (1, 5, 10):
        assert np.mean([pass_at_k(n, c, k) for n, c in pairs]) == pytest.approx(coding.mean_pass_at_k(pairs, k))


def test_rules_reproduce_the_tasks_metrics():
    """The rules recompute exactly what the evaluation modules report, from the records they save."""
    from harness.evaluation import xstest

    rng = np.random.default_rng(11)
    labels = ["unsafe" if rng.random() < 0.45 else "safe" for _ in range(80)]
    verdicts = [None if i % 17 == 0 else ("refusal" if rng.random() < (0.8 if lab == "unsafe" else 0.2)
                                          else "compliance") for i, lab in enumerate(labels)]
    records = [{"id": str(i), "label": lab, "judge_label": v} for i, (lab, v) in enumerate(zip(labels, verdicts))]
    refused = [None if v is None else v == "refusal" for v in verdicts]
    expected = xstest.refusal_metrics(labels, refused, "judge")["xstest/refusal_f1_judge"]
    assert RULES["xstest/score"].build(records).point() == pytest.approx(expected)

    # BBH: mean over sub-tasks of the within-sub-task accuracy, resampled within each sub-task.
    bbh = [{"subtask": s, "index": i, "correct": bool(rng.random() < q)} for s, q, n in
           (("a", 0.2, 10), ("b", 0.9, 40)) for i in range(n)]
    est = RULES["bbh/score"].build(bbh)
    by_sub = [np.mean([r["correct"] for r in bbh if r["subtask"] == s]) for s in ("a", "b")]
    assert est.point() == pytest.approx(100 * np.mean(by_sub))
    weights = WeightBank(n_boot=50).example_weights(est)
    assert (weights[:, est.strata == 0].sum(axis=1) == 10).all()  # stratum sizes kept

    # Several samples of one prompt are one resampling unit (policy_kl: 2 samples per prompt).
    kl = [{"id": f"p{i // 2}", "kl": float(i)} for i in range(10)]
    est = RULES["policy_kl/kl_mean"].build(kl)
    assert est.n == 5 and est.point() == pytest.approx(4.5)

    # A record without the field is left out, not counted as 0 (AlpacaEval's invalid annotations).
    assert mean_of("x", 1.0)([{"x": 1.0}, {"y": 2.0}, {"x": 0.0}]).point() == pytest.approx(0.5)


def test_tasks_numbered_alike_are_resampled_independently():
    """gsm8k and ifeval both number examples 0..n-1: inside a category average they must get their own
    draws (shared draws would correlate them and inflate the interval); two runs of one task share."""
    values = np.random.default_rng(2).random(60) < 0.5
    gsm, ifeval = _bernoulli_set(values), _bernoulli_set(values)
    gsm.source, ifeval.source = "samples:gsm8k", "samples:ifeval"
    bank = WeightBank(n_boot=200)
    assert not np.array_equal(bank.example_weights(gsm), bank.example_weights(ifeval))
    again = _bernoulli_set(values)
    again.source = "samples:gsm8k"
    assert bank.example_weights(again) is bank.example_weights(gsm)


@pytest.mark.parametrize(("metric", "scope", "field"), [("mmlu/score", "subject", "correct"),
                                                       ("toxigen/toxic_pct", "group", "toxic")])
def test_questions_numbered_within_a_subject_are_separate_units(metric, scope, field):
    """MMLU numbers its questions within each subject and ToxiGen within each target group: question 0 of
    two subjects is two questions. Merged into one unit (the table1 cpu run's SFT row had one MMLU question
    per subject: a single unit, so a zero-width interval [22.8, 22.8]) the bootstrap would be wrong."""
    rng = np.random.default_rng(3)
    records = [{scope: f"s{s}", "index": 0, field: bool(rng.random() < 0.3)} for s in range(57)]
    est = RULES[metric].build(records)
    assert est.n == 57
    assert est.point() == pytest.approx(100 * np.mean([r[field] for r in records]))
    low, high = percentile_ci(replicates(est, WeightBank(n_boot=500)))
    assert high - low > 10  # about +-12 points for 57 questions at 30%
    # several questions per subject: one unit each, not one per subject or per index
    records = [{scope: f"s{s}", "index": i, field: bool((s + i) % 3 == 0)} for s in range(4) for i in range(5)]
    assert RULES[metric].build(records).n == 20
