"""The registry of report items (lm-eval style: one builder function per table or figure, one
decorator line each) and the context every builder gets: the experiment, the estimators and the
shared bootstrap weights, and helpers that turn logged metrics into table entries.

A builder declares what it needs (`Needs`); the report skips it, with that reason in index.md, when
the experiment lacks it. A builder may also raise `Skip` for finer conditions found while building.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from harness.registry import Registry
from reports.data import CellRun, Experiment
from reports.examples import Estimators
from reports.model import Entry, ReportTable
from reports.stats import (
    DEFAULT_N_BOOT,
    WeightBank,
    n_examples,
    paired_p_value,
    percentile_ci,
    seed_replicates,
)

# The paper's six categories and their column labels (Table 1 order), then the average.
PAPER_CATEGORIES: list[tuple[str, str]] = [
    ("Factuality", "category/factuality"), ("Reasoning", "category/reasoning"), ("Coding", "category/coding"),
    ("Truthfulness", "category/truthfulness"), ("Safety", "category/safety"),
    ("Inst. Foll.", "category/instruction_following"),
]
AVERAGE = ("Average", "overall")
# Metrics whose interval the producing code logged itself (the judge's bootstrap over prompts).
LOGGED_CI = {"judge/win_rate": ("judge/win_rate_ci_low", "judge/win_rate_ci_high")}


# Training and data summaries are single measurements, not means over evaluation examples: no interval
# is expected for them, so no note says one is missing.
NO_CI_PREFIXES = ("train/", "data/", "stage/", "rm/n_pairs")


class Skip(Exception):
    """The experiment lacks what an item needs; the message says what (shown in index.md)."""


@dataclass(frozen=True)
class Needs:
    """Declared requirements: at least one metric matching each group of `metrics_any` patterns, and
    at least one policy cell whose param matches each of `params` (glob on the value)."""

    metrics_any: tuple[tuple[str, ...], ...] = ()
    params: tuple[tuple[str, str], ...] = ()
    text: str = ""

    def missing(self, exp: Experiment) -> str | None:
        names = exp.metric_names()
        for group in self.metrics_any:
            if not any(fnmatch.filter(names, pattern) for pattern in group):
                return f"no metric matching {' or '.join(f'`{p}`' for p in group)}"
        for key, pattern in self.params:
            if not any(c.param(key) is not None and fnmatch.fnmatch(c.param(key) or "", pattern) for c in exp.policies):
                return f"no cell with `{key}` = `{pattern}`"
        return None


@dataclass
class FigureOutput:
    figure: Any  # matplotlib Figure
    caption: str
    data: list[dict[str, Any]] = field(default_factory=list)  # every plotted number with its run ids
    notes: list[str] = field(default_factory=list)


@dataclass
class ReportItem:
    name: str
    kind: Literal["table", "figure"]
    title: str  # e.g. "Table 1: preference data"
    needs: Needs
    build: Callable[[ReportContext], ReportTable | FigureOutput]


ITEMS: Registry[ReportItem] = Registry("report item")
_ORDER: list[str] = []  # registration order = the paper's order, used for output and index.md


def register(name: str, kind: Literal["table", "figure"], title: str, needs: Needs | None = None):
    def decorator(fn: Callable[[ReportContext], Any]) -> Callable[[ReportContext], Any]:
        ITEMS.register(name, ReportItem(name, kind, title, needs or Needs(), fn))
        _ORDER.append(name)
        return fn

    return decorator


def items(kind: str) -> list[ReportItem]:
    """Items of a kind in registration order (the paper's order)."""
    return [ITEMS.get(name) for name in _ORDER if ITEMS.get(name).kind == kind]


class ReportContext:
    def __init__(self, exp: Experiment, ci: bool = True, n_boot: int = DEFAULT_N_BOOT, seed: int = 0):
        self.exp = exp
        self.ci = ci
        self.bank = WeightBank(n_boot, seed)
        self.estimators = Estimators(exp)

    # -- entries -----------------------------------------------------------------------------------
    def value(self, cells: Sequence[CellRun], metric: str, scale: float = 1.0, digits: int = 1) -> Entry:
        """The logged metric of a configuration (mean over its seeds) with its bootstrap interval."""
        have = [c for c in cells if c.metric(metric) is not None]
        if not have:
            return Entry(metric=metric, digits=digits)
        values = [c.metric(metric) for c in have]
        entry = Entry(value=scale * float(np.mean(values)), metric=metric, scale=scale, digits=digits,
                      run_ids=tuple(c.run_id for c in have), n_seeds=len(have))
        if not self.ci:
            return entry
        ests = [self.estimators.get(c, metric) for c in have]
        if all(e is not None for e in ests):
            reps = scale * seed_replicates(ests, self.bank)  # type: ignore[arg-type]
            entry.reps, entry.ci = reps, percentile_ci(reps)
            entry.n_examples = n_examples(ests[0])  # type: ignore[arg-type]
        elif metric in LOGGED_CI and len(have) == 1:
            low, high = (have[0].metric(k) for k in LOGGED_CI[metric])
            if low is not None and high is not None:
                entry.ci = (scale * low, scale * high)
        return entry

    def stage_value(self, stage_run: Any, metric: str, scale: float = 1.0, digits: int = 1) -> Entry:
        """A metric of a stage run (no per-example interval)."""
        value = stage_run.metrics.get(metric)
        if value is None:
            return Entry(metric=metric, digits=digits)
        return Entry(value=scale * float(value), metric=metric, scale=scale, digits=digits,
                     run_ids=(stage_run.run_id,))

    def difference(self, a: Entry, b: Entry) -> Entry:
        """b - a, with the paired interval and p-value when both carry replicates."""
        if not (a.is_number and b.is_number):
            return Entry(metric=b.metric or a.metric, digits=b.digits, signed=True)
        out = Entry(value=b.value - a.value, metric=b.metric, digits=b.digits, signed=True,  # type: ignore[operator]
                    run_ids=tuple(dict.fromkeys(a.run_ids + b.run_ids)))
        if a.reps is not None and b.reps is not None:
            out.reps = b.reps - a.reps
            out.ci, out.p_value = percentile_ci(out.reps), paired_p_value(out.reps)
        return out

    def mean_of(self, entries: Sequence[Entry], signed: bool = False) -> Entry:
        """Average of entries (e.g. the paper's Avg. Δ row), replicates averaged alongside."""
        nums = [e for e in entries if e.is_number]
        if not nums:
            return Entry(signed=signed)
        out = Entry(value=float(np.mean([e.value for e in nums])), metric=nums[0].metric, digits=nums[0].digits,
                    signed=signed, run_ids=tuple(dict.fromkeys(r for e in nums for r in e.run_ids)))
        if all(e.reps is not None for e in nums):
            out.reps = np.mean([e.reps for e in nums], axis=0)
            out.ci = percentile_ci(out.reps)
            if signed:
                out.p_value = paired_p_value(out.reps)
        return out

    # -- columns -----------------------------------------------------------------------------------
    def suite_columns(self) -> tuple[list[tuple[str, str]], list[str]]:
        """The paper's category columns + Average when the experiment has them; otherwise every
        `<task>/score` it has (with a note saying so), so small grids still get their table."""
        names = self.exp.metric_names()
        if any(m in names for _, m in PAPER_CATEGORIES):
            return [*PAPER_CATEGORIES, AVERAGE], []
        scores = sorted(m for m in names if m.endswith("/score") and not m.startswith(("bon/", "judge/")))
        if not scores:
            raise Skip("no `category/*` metrics and no `<task>/score` metrics")
        return [(m.rsplit("/", 1)[0], m) for m in scores], [
            "The paper's category metrics (`category/*`, `overall`) are absent from this experiment: "
            "its per-task scores (`<task>/score`, 0-100) are shown instead."]


def colour_against(entries: Sequence[Entry], baseline: Sequence[Entry]) -> None:
    """The paper's colouring: above the SFT baseline 'up', below 'down' (same column)."""
    for entry, base in zip(entries, baseline):
        if entry.is_number and base.is_number and not entry.signed:
            if entry.value > base.value + 1e-9:  # type: ignore[operator]
                entry.colour = "up"
            elif entry.value < base.value - 1e-9:  # type: ignore[operator]
                entry.colour = "down"


def ci_notes(ctx: ReportContext, table: ReportTable) -> None:
    """Say which metrics got no interval and why (never an interval around another number)."""
    if not ctx.ci:
        return
    shown = {e.metric for row in table.rows for e in row.entries
             if e.is_number and e.ci is None and e.metric and e.text is None and not e.metric.startswith(NO_CI_PREFIXES)}
    for metric in sorted(shown):
        reason = ctx.estimators.missing.get(metric)
        if reason:
            table.notes.append(f"No interval for `{metric}`: {reason}.")
