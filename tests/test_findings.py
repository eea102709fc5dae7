"""'Does the finding hold here' verdicts on hand-made numbers, with and without bootstrap replicates."""

from __future__ import annotations

import numpy as np
import pytest

from reports.findings import BASELINE, Measured, findings, mean_difference
from reports.stats import ExampleSet, WeightBank, paired_p_value, replicates

CATS = ["category/factuality", "category/reasoning", "category/coding", "category/truthfulness",
        "category/safety", "category/instruction_following"]


def scores(values: list[float]) -> dict[str, float]:
    return {**dict(zip(CATS, values)), "overall": float(np.mean(values))}


def measured(bank: WeightBank, correct: np.ndarray, source: str = "task") -> Measured:
    """A 0-100 accuracy over examples, with replicates from the shared bank (so runs on the same
    examples are paired)."""
    n = len(correct)
    est = ExampleSet(keys=tuple(f"ex{i}" for i in range(n)), num=correct.astype(float), den=np.ones(n),
                     strata=np.zeros(n, dtype=int), scale=100.0, source=source)
    return Measured(est.point(), replicates(est, bank))


def test_table2_sign_per_category_and_overall():
    ours = {
        "HH-RLHF / DPO": scores([40, 10, 5, 30, 80, 20]),
        "HH-RLHF / PPO": scores([41, 14, 6, 27, 82, 19]),
        "UltraFeedback (FG) / DPO": scores([40, 12, 5, 35, 70, 25]),
        "UltraFeedback (FG) / PPO": scores([41, 13, 9, 30, 75, 30]),
    }
    result = {f.claim: f for f in findings("table2", ours)}
    assert len(result) == 7
    overall = next(f for f in result.values() if "outperforms" in f.claim)
    # PPO - DPO overall: (+5/6 + 17/6 ... ) averaged over the two datasets, positive like the paper's +0.7
    assert overall.holds is True and overall.p_value is None
    assert "over 2 (hh-rlhf-60k, ultrafeedback-fg)" in overall.ours
    by_cat = {f.claim.split(" in ")[1].split(" has")[0]: f for f in result.values() if " in " in f.claim}
    assert by_cat["factuality"].holds is False  # here +1.0, paper -0.1
    assert by_cat["reasoning"].holds is True  # +2.5 vs +1.3
    assert by_cat["truthfulness"].holds is True  # -4.0 vs -2.5
    assert by_cat["instruction following"].holds is True  # +2.0 vs +0.1
    assert "does not hold here" in by_cat["factuality"].line()


def test_table2_paired_bootstrap_p_value():
    bank = WeightBank(n_boot=500, seed=0)
    rng = np.random.default_rng(1)
    base = rng.random(300) < 0.5
    better = base | (rng.random(300) < 0.6)  # same examples, many more correct
    dpo, ppo = measured(bank, base), measured(bank, better)
    ours = {"Nectar / DPO": {"overall": dpo}, "Nectar / PPO": {"overall": ppo}}
    (f,) = [f for f in findings("table2", ours) if "outperforms" in f.claim]
    assert f.holds is True
    assert f.p_value == paired_p_value(ppo.replicates - dpo.replicates)
    assert f.p_value <= 0.01 and "paired-bootstrap p = " in f.line()
    # identical runs on the same examples: every replicate difference is 0, p = 1
    same = measured(bank, base)
    diff, p = mean_difference([(dpo, same)])
    assert diff == 0 and p == 1.0


def test_table1_categories_and_best_source():
    base = scores([40, 10, 5, 30, 80, 20])
    ours = {BASELINE: base,
            "HH-RLHF": scores([40, 11, 5, 36, 80, 24]),  # truthfulness +6, IF +4
            "UltraF. (fine-grained)": scores([40, 11, 4, 38, 79, 27])}  # truthfulness +8, IF +7
    cats, best = findings("table1", ours)
    assert cats.holds is True and "truthfulness" in cats.ours and "instruction following" in cats.ours
    assert best.holds is True and "UltraF. (fine-grained) (synthetic" in best.ours
    ours["HH-RLHF"] = scores([40, 30, 5, 31, 99, 21])  # human data now far ahead, on reasoning and safety
    cats, best = findings("table1", ours)
    assert cats.holds is False and best.holds is False


def test_ordered_tables_compare_pairwise_orders():
    paper_order = {"13B UltraF. RM": 0.61, "13B Mix RM": 0.80, "70B UltraF. RM": 0.736, "70B Mix RM": 0.739}
    ours = {label: {"rewardbench/score": v} for label, v in paper_order.items()}
    (rb, *_) = findings("table3", ours)
    assert rb.holds is True and rb.ours == "6 of 6 pairwise orders agree"
    ours["13B UltraF. RM"]["rewardbench/score"] = 0.95  # now first: three orders flip
    (rb, *rest) = findings("table3", ours)
    assert rb.holds is False and rb.ours == "3 of 6 pairwise orders agree"
    assert "13B UltraF. RM vs 13B Mix RM" in rb.detail
    assert all(f.holds is None for f in rest)  # no best-of-N or PPO numbers here


def test_table4_table7_table11():
    t4 = findings("table4", {"13B UltraF. / UF": {"overall": 30.0, "gsm8k/score": 10.0},
                             "13B UltraF. / Mixed": {"overall": 29.0, "gsm8k/score": 12.0}})
    assert [f.holds for f in t4] == [True, False]  # overall does not improve; GSM improves for every RM here
    t7 = findings("table7", {"Strong Model Gen.s": {"overall": 30.0}, "Weak Model Gen.s": {"overall": 30.5},
                             "FalseQA Prompts": {"overall": 28.0}, "UltraChat Prompts": {"overall": 31.0}})
    assert t7[0].holds is True and "spread 0.5 vs 3.0" in t7[0].ours
    t11 = findings("table11", {"64 / 64 / 1 / 1": {"train/hours": 2.0, "overall": 30.0},
                               "512 / 64 / 1 / 1": {"train/hours": 0.5, "overall": 29.0},
                               "256 / 64 / 4 / 4": {"train/hours": 1.5, "overall": 29.5}})
    assert [f.holds for f in t11] == [True, True, True]
    assert t11[0].ours == "4.00x faster"


def test_missing_rows_and_unknown_labels():
    assert all(f.holds is None for f in findings("table2", {}))
    assert findings("table5", {"TÜLU 2+DPO 13B": {"overall": 1.0}})[0].holds is None  # one row: no pair
    with pytest.raises(KeyError, match="rows not in the paper's table"):
        findings("table2", {"hh-rlhf-60k/dpo": {"overall": 1.0}})
    with pytest.raises(KeyError, match="tables with checks"):
        findings("table6", {})
