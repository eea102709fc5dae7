"""Does the paper's finding hold here? One short verdict per table, from this run's numbers beside the
paper's (`reports.paper_numbers`).

The caller (a report builder) maps its cells to the paper's rows (`PaperTable.match(cell params)`, the
SFT cell to the table's baseline row) and passes this run's numbers keyed by the paper row's label
(or "baseline" for the SFT cell):

    ours = {"baseline": {...}, "HH-RLHF / DPO": {"overall": 41.2, ...}, "HH-RLHF / PPO": {...}}
    for f in findings("table2", ours):
        print(f.line())

A number is a float, or a `Measured` carrying its bootstrap replicates; when every number of a
comparison has replicates drawn from one shared `reports.stats.WeightBank` (so they are paired), the
verdict carries the two-sided paired-bootstrap p-value of the difference (`reports.stats.paired_p_value`).

Scales differ (a 135M model on a few hundred rows against Tulu 2 13B), so every check compares
directions and orders, never levels: the sign of PPO - DPO, which category moved most, which row ranks
first. `holds` is None when this run lacks the rows a claim needs.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from reports.paper_numbers import PaperNumbers, PaperTable, paper_numbers
from reports.stats import paired_p_value

BASELINE = "baseline"


@dataclass(frozen=True)
class Measured:
    """A number and its B bootstrap replicates (paired with the other numbers of the same comparison)."""

    value: float
    replicates: np.ndarray | None = None


Number = float | Measured
Scores = Mapping[str, Number]


@dataclass(frozen=True)
class Finding:
    table: str
    claim: str  # the paper's claim, in its words where possible
    paper: str  # the paper's numbers behind the claim
    ours: str  # this run's numbers for the same comparison
    holds: bool | None  # None: this run lacks what the claim needs
    p_value: float | None = None  # paired bootstrap, when replicates were given
    detail: str = ""

    def line(self) -> str:
        verdict = {True: "holds here", False: "does not hold here", None: "cannot be checked here"}[self.holds]
        p = f", paired-bootstrap p = {self.p_value:.3g}" if self.p_value is not None else ""
        extra = f" {self.detail}" if self.detail else ""
        return f"{self.claim} Paper: {self.paper}. Here: {self.ours}{p}: {verdict}.{extra}"


def _value(x: Number) -> float:
    return x.value if isinstance(x, Measured) else float(x)


def _reps(x: Number) -> np.ndarray | None:
    return x.replicates if isinstance(x, Measured) else None


def mean_difference(pairs: Sequence[tuple[Number, Number]]) -> tuple[float, float | None]:
    """Mean over pairs of (second - first), and its paired-bootstrap p-value when every number has
    replicates (the replicates of the mean difference are the means of the replicate differences)."""
    diff = statistics.fmean(_value(b) - _value(a) for a, b in pairs)
    reps = [(_reps(a), _reps(b)) for a, b in pairs]
    if not pairs or any(ra is None or rb is None for ra, rb in reps):
        return diff, None
    delta_reps = np.mean([rb - ra for ra, rb in reps], axis=0)  # type: ignore[operator]
    return diff, paired_p_value(delta_reps)


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


def _fmt(x: float) -> str:
    return f"{x:+.1f}" if abs(x) >= 0.05 else f"{x:+.2f}"


def _name(metric: str) -> str:
    return metric.removeprefix("category/").replace("_", " ")


def _present(ours: Mapping[str, Scores], label: str, metric: str) -> bool:
    return label in ours and metric in ours[label]


def _baseline(table: PaperTable, ours: Mapping[str, Scores]) -> Scores | None:
    base = table.baseline
    if BASELINE in ours:
        return ours[BASELINE]
    return ours.get(base.label) if base is not None else None


# ------------------------------------------------------------------------------------------------
# Table 2: PPO vs DPO on the same data
# ------------------------------------------------------------------------------------------------

def table2(ours: Mapping[str, Scores], numbers: PaperNumbers) -> list[Finding]:
    """Sign of PPO - DPO per category and overall, averaged over the datasets this run has both for."""
    t2 = numbers.table("table2")
    delta_row = next(r for r in t2.rows if r.kind == "delta")
    datasets = list(dict.fromkeys(r.key["dataset.name"] for r in t2.rows if r.key.get("algorithm.name") == "dpo"))
    out = []
    for column in t2.columns:
        pairs, names = [], []
        for d in datasets:
            dpo = t2.find({"algorithm.name": "dpo", "dataset.name": d}).label
            ppo = t2.find({"algorithm.name": "ppo", "dataset.name": d}).label
            if _present(ours, dpo, column) and _present(ours, ppo, column):
                pairs.append((ours[dpo][column], ours[ppo][column]))
                names.append(d)
        paper_delta = delta_row.value(column)
        what = _name(column)
        claim = (f"Table 2: PPO outperforms DPO on the same data ({what})." if column == "overall"
                 else f"Table 2: PPO - DPO in {what} has the paper's sign.")
        if not pairs:
            out.append(Finding("table2", claim, f"avg. Δ {_fmt(paper_delta)} over 5 datasets",  # type: ignore[arg-type]
                               "no dataset with both a DPO and a PPO cell", None))
            continue
        diff, p = mean_difference(pairs)
        out.append(Finding("table2", claim, f"avg. Δ {_fmt(paper_delta)} over 5 datasets",  # type: ignore[arg-type]
                           f"avg. Δ {_fmt(diff)} over {len(pairs)} ({', '.join(names)})",
                           _sign(diff) == _sign(paper_delta), p))  # type: ignore[arg-type]
    return out


# ------------------------------------------------------------------------------------------------
# Table 1: what preference data changes, and which source is best
# ------------------------------------------------------------------------------------------------

def table1(ours: Mapping[str, Scores], numbers: PaperNumbers) -> list[Finding]:
    t1 = numbers.table("table1")
    categories = [c for c in t1.columns if c.startswith("category/")]
    data_rows = [r for r in t1.rows if r.kind == "data"]
    paper_base = t1.baseline
    out = []

    # Which categories DPO moves most (mean delta over SFT across datasets).
    paper_gain = {c: statistics.fmean(r.value(c) - paper_base.value(c) for r in data_rows)  # type: ignore[operator,union-attr]
                  for c in categories}
    paper_top = sorted(categories, key=paper_gain.get, reverse=True)[:2]  # type: ignore[arg-type]
    claim = "Table 1: preference-based learning helps " + " and ".join(map(_name, paper_top)) + " most."
    paper_text = ", ".join(f"{_name(c)} {_fmt(paper_gain[c])}" for c in paper_top)
    base = _baseline(t1, ours)
    rows = [r for r in data_rows if r.label in ours]
    usable = [c for c in categories if base is not None and c in base and all(c in ours[r.label] for r in rows)]
    if base is None or not rows or len(usable) < 3:
        out.append(Finding("table1", claim, f"mean gain over SFT: {paper_text}",
                           "needs the SFT cell and DPO cells with at least 3 categories", None))
    else:
        gains = {c: mean_difference([(base[c], ours[r.label][c]) for r in rows]) for c in usable}
        top = sorted(usable, key=lambda c: gains[c][0], reverse=True)[:2]
        partial = "" if len(usable) == len(categories) else f"(only {len(usable)} of 6 categories here)"
        holds = set(top) == set(paper_top) if set(paper_top) <= set(usable) else None
        out.append(Finding("table1", claim, f"mean gain over SFT: {paper_text}",
                           "top two: " + ", ".join(f"{_name(c)} {_fmt(gains[c][0])}" for c in top)
                           + f" over {len(rows)} dataset(s)", holds, detail=partial))

    # The best dataset's source.
    best_paper = max(data_rows, key=lambda r: r.value("overall"))  # type: ignore[arg-type,return-value]
    claim = f"Table 1: {best_paper.source} data works best."
    scored = [r for r in rows if "overall" in ours[r.label]]
    if len(scored) < 2:
        out.append(Finding("table1", claim, f"best: {best_paper.label} ({best_paper.value('overall')})",
                           "needs DPO cells on at least two datasets with an overall score", None))
    else:
        best = max(scored, key=lambda r: _value(ours[r.label]["overall"]))
        sources = sorted({r.source for r in scored})
        out.append(Finding("table1", claim, f"best: {best_paper.label} ({best_paper.value('overall')})",
                           f"best: {best.label} ({best.source}; sources compared: {', '.join(map(str, sources))})",
                           best.source == best_paper.source if best_paper.source in sources else None))
    return out


# ------------------------------------------------------------------------------------------------
# Tables whose claim is an order of rows: 3, 5, 12, 13 (and Table 4's prompt comparison)
# ------------------------------------------------------------------------------------------------

def order_agreement(table: PaperTable, ours: Mapping[str, Scores], column: str) -> tuple[int, int, list[str]]:
    """How many pairs of rows (present here, printed in the paper) are ordered as in the paper on
    `column`: (agreeing, compared, the disagreeing pairs). Paper ties are skipped."""
    rows = [r for r in table.rows if r.kind == "data" and _present(ours, r.label, column) and r.value(column) is not None]
    agree, total, bad = 0, 0, []
    for a, b in itertools.combinations(rows, 2):
        paper = _sign(b.value(column) - a.value(column))  # type: ignore[operator]
        if paper == 0:
            continue
        total += 1
        if _sign(_value(ours[b.label][column]) - _value(ours[a.label][column])) == paper:
            agree += 1
        else:
            bad.append(f"{a.label} vs {b.label}")
    return agree, total, bad


CLAIMS: dict[tuple[str, str], str] = {
    ("table3", "rewardbench/score"): "Table 3: reward models rank on RewardBench as in the paper (13B Mix RM first).",
    ("table3", "bon/average"): "Table 3: reward models rank on best-of-N as in the paper (the 70B RMs first).",
    ("table3", "gsm8k/score"): "Table 3: PPO's GSM follows the paper's reward-model order (70B UltraF. RM best).",
    ("table3", "overall"): "Table 3: PPO's overall score follows the paper's reward-model order (all within 1.2 points).",
    ("table5", "overall"): "Table 5: the configurations rank overall as in the paper (PPO with the 70B UltraF. RM first).",
    ("table12", "gsm8k/score"): "Table 12: reward models rank on best-of-N GSM as in the paper.",
    ("table13", "rewardbench/score"): "Table 13: reward models rank on RewardBench as in the paper.",
}


def ordered(name: str, columns: Sequence[str]) -> Callable[[Mapping[str, Scores], PaperNumbers], list[Finding]]:
    def check(ours: Mapping[str, Scores], numbers: PaperNumbers) -> list[Finding]:
        table = numbers.table(name)
        out = []
        for column in columns:
            agree, total, bad = order_agreement(table, ours, column)
            claim = CLAIMS.get((name, column), f"{table.title}: rows ordered as in the paper on {column}.")
            paper_order = " > ".join(r.label for r in sorted(
                (r for r in table.rows if r.kind == "data" and r.value(column) is not None),
                key=lambda r: -r.value(column)))  # type: ignore[operator]
            out.append(Finding(name, claim, paper_order,
                               f"{agree} of {total} pairwise orders agree" if total else "fewer than two matching rows",
                               (agree == total) if total else None,
                               detail=f"Disagreeing: {'; '.join(bad)}." if bad else ""))
        return out
    return check


def table4(ours: Mapping[str, Scores], numbers: PaperNumbers) -> list[Finding]:
    """Mixed (remix) prompts against UltraFeedback prompts, per reward model."""
    t4 = numbers.table("table4")
    out = []
    for column, claim in (("overall", "Table 4: the remixed prompt set does not improve overall performance."),
                          ("gsm8k/score", "Table 4: the remixed prompt set gives no consistent GSM gain.")):
        pairs, paper_pairs = [], []
        for uf in t4.find_all({"prompts.name": "prompts-ultrafeedback"}):
            rm = {k: uf.key[k] for k in ("reward_model.base", "reward_model.dataset.name")}
            mixed = t4.find({**rm, "prompts.name": "prompts-remix"})
            paper_pairs.append(mixed.value(column) - uf.value(column))  # type: ignore[operator]
            if _present(ours, uf.label, column) and _present(ours, mixed.label, column):
                pairs.append((ours[uf.label][column], ours[mixed.label][column]))
        paper_text = f"remix - UF per RM: {', '.join(_fmt(d) for d in paper_pairs)}"
        if not pairs:
            out.append(Finding("table4", claim, paper_text, "no reward model with both prompt sets", None))
            continue
        diff, p = mean_difference(pairs)
        if column == "overall":
            holds = diff <= 0
        else:  # "no consistent gain": not every RM improves
            holds = not all(_value(b) > _value(a) for a, b in pairs)
        out.append(Finding("table4", claim, paper_text, f"mean remix - UF {_fmt(diff)} over {len(pairs)} RM(s)", holds, p))
    return out


def table7(ours: Mapping[str, Scores], numbers: PaperNumbers) -> list[Finding]:
    """Generator strength (top/middle/bottom) matters less than the prompt source."""
    t7 = numbers.table("table7")
    strength = [r for r in t7.rows if r.key.get("dataset.name") in
                ("ultrafeedback-top", "ultrafeedback-middle", "ultrafeedback-bottom")]
    sources = [r for r in t7.rows if str(r.key.get("dataset.name", "")).startswith("ultrafeedback-src-")]

    def spread(rows: Sequence, get: Callable) -> float:
        values = [get(r) for r in rows]
        return max(values) - min(values)

    claim = "Table 7: the strength of the models that wrote the answers matters less than the prompt source."
    paper_text = (f"overall spread {spread(strength, lambda r: r.value('overall')):.1f} across model groups vs "
                  f"{spread(sources, lambda r: r.value('overall')):.1f} across prompt sources")
    ours_strength = [r for r in strength if _present(ours, r.label, "overall")]
    ours_sources = [r for r in sources if _present(ours, r.label, "overall")]
    if len(ours_strength) < 2 or len(ours_sources) < 2:
        return [Finding("table7", claim, paper_text, "needs two model-group and two prompt-source cells", None)]
    a = spread(ours_strength, lambda r: _value(ours[r.label]["overall"]))
    b = spread(ours_sources, lambda r: _value(ours[r.label]["overall"]))
    return [Finding("table7", claim, paper_text, f"overall spread {a:.1f} vs {b:.1f}", a < b)]


def table11(ours: Mapping[str, Scores], numbers: PaperNumbers) -> list[Finding]:
    """Bigger prompt batches train faster but score lower; more rollouts per prompt recover most of it.
    Wall time here is `train/hours` (or any time in consistent units under that name)."""
    t11 = numbers.table("table11")
    base, big, r2, r4 = t11.rows
    out = []
    claim = "Table 11: an 8x prompt batch trains much faster (60 h -> 12 h)."
    if _present(ours, base.label, "train/hours") and _present(ours, big.label, "train/hours"):
        speedup = _value(ours[base.label]["train/hours"]) / _value(ours[big.label]["train/hours"])
        out.append(Finding("table11", claim, "5.0x faster", f"{speedup:.2f}x faster", speedup > 1))
    else:
        out.append(Finding("table11", claim, "5.0x faster", "needs the first two rows' train/hours", None))
    claim = "Table 11: the bigger prompt batch costs performance (61.7 -> 61.1)."
    if _present(ours, base.label, "overall") and _present(ours, big.label, "overall"):
        diff, p = mean_difference([(ours[base.label]["overall"], ours[big.label]["overall"])])
        out.append(Finding("table11", claim, "-0.6", _fmt(diff), diff < 0, p))
    else:
        out.append(Finding("table11", claim, "-0.6", "needs the first two rows' overall", None))
    claim = "Table 11: more rollouts per prompt recover most of the loss."
    recover = [r for r in (r2, r4) if _present(ours, r.label, "overall")]
    if recover and _present(ours, big.label, "overall"):
        best = max(recover, key=lambda r: _value(ours[r.label]["overall"]))
        diff, p = mean_difference([(ours[big.label]["overall"], ours[best.label]["overall"])])
        out.append(Finding("table11", claim, "+0.3 with r = 4", f"{_fmt(diff)} with {best.label}", diff > 0, p))
    else:
        out.append(Finding("table11", claim, "+0.3 with r = 4", "needs the big-batch row and a more-rollouts row", None))
    return out


CHECKS: dict[str, Callable[[Mapping[str, Scores], PaperNumbers], list[Finding]]] = {
    "table1": table1,
    "table2": table2,
    "table3": ordered("table3", ("rewardbench/score", "bon/average", "gsm8k/score", "overall")),
    "table4": table4,
    "table5": ordered("table5", ("overall",)),
    "table7": table7,
    "table11": table11,
    "table12": ordered("table12", ("gsm8k/score",)),
    "table13": ordered("table13", ("rewardbench/score",)),
}


def findings(table: str, ours: Mapping[str, Scores], numbers: PaperNumbers | None = None) -> list[Finding]:
    """The verdicts for one paper table (KeyError naming the tables that have checks)."""
    if table not in CHECKS:
        raise KeyError(f"no finding checks for {table!r}; tables with checks: {', '.join(CHECKS)}")
    numbers = numbers or paper_numbers()
    unknown = [label for label in ours if label != BASELINE and label not in
               {r.label for r in numbers.table(table).rows}]
    if unknown:
        raise KeyError(f"{table}: rows not in the paper's table: {unknown} (use the paper row labels or "
                       f"{BASELINE!r}; `PaperTable.match(cell params)` finds them)")
    return CHECKS[table](ours, numbers)
