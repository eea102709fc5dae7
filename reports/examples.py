"""From a run's per-example artifacts to an `ExampleSet` whose point estimate is the logged metric.

One rule per metric (lm-eval style registry: a task adds one line). A rule reads the per-example
records a task wrote (`samples/<task>.samples.jsonl` of the evaluate stage run, or a stage artifact
such as the reward model's `rm_scores.jsonl`) and says how the metric aggregates them. Before any
interval is drawn the rule's point estimate is checked against the metric MLflow holds; a mismatch
(a task whose records do not carry what its metric was computed from) gives no interval and a note,
never an interval around a different number.

Category averages (`category/<name>`) and `overall` are composites of the tasks' `<task>/score`,
using the task->category map of the evaluation registry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from reports.data import CellRun, Experiment
from reports.stats import Composite, Estimator, ExampleSet, pass_at_k, point

Records = list[dict[str, Any]]
_KEY_FIELDS = ("id", "key", "task_id", "index", "prompt_id")
# Fields tried, in order, for tasks without a registered rule (their check against the logged metric
# still applies, so a wrong guess costs an interval, never a wrong one).
_GENERIC_FIELDS = ("correct", "passed", "is_correct", "acc", "score")


def _unit_key(record: dict[str, Any], position: int, unit: tuple[str, ...] | None = None) -> str:
    """The resampling unit of a record: its `unit` fields when the rule names them (a task whose `index`
    counts within a subject or group: MMLU, ToxiGen), else its first key field, else its position."""
    if unit is not None:
        if all(record.get(name) is not None for name in unit):
            return "/".join(str(record[name]) for name in unit)
        return f"#{position}"
    for name in _KEY_FIELDS:
        if record.get(name) is not None:
            return str(record[name])
    return f"#{position}"


Value = Callable[[dict[str, Any]], float | None]


def field_value(name: str) -> Value:
    """A record's numeric (or boolean) field; None (record left out) when absent or not a number."""

    def get(rec: dict[str, Any]) -> float | None:
        value = rec.get(name)
        return float(value) if isinstance(value, (bool, int, float)) else None

    return get


def ratio_of(num: Value, den: Value, scale: float = 1.0, stratum: str | None = None,
             where: Callable[[dict[str, Any]], bool] | None = None,
             unit: tuple[str, ...] | None = None) -> Callable[[Records], ExampleSet | None]:
    """sum(num) / sum(den) over records (within strata, then averaged over strata). Records sharing a
    key (several samples of one prompt; `unit` names the key's fields where one field is not unique)
    form one resampling unit; a record whose num is None is left out (e.g. an unparsed judge verdict
    that the task itself excluded)."""

    def rule(records: Records) -> ExampleSet | None:
        units: dict[tuple[str, str], list[float]] = {}
        for i, rec in enumerate(records):
            if where is not None and not where(rec):
                continue
            top, bottom = num(rec), den(rec)
            if top is None or bottom is None:
                continue
            group = str(rec.get(stratum, "")) if stratum else ""
            acc = units.setdefault((group, _unit_key(rec, i, unit)), [0.0, 0.0])
            acc[0] += top
            acc[1] += bottom
        if not units:
            return None
        ordered = sorted(units)
        groups = sorted({g for g, _ in ordered})
        return ExampleSet(
            keys=tuple(f"{g}|{k}" for g, k in ordered),
            num=np.array([units[u][0] for u in ordered]),
            den=np.array([units[u][1] for u in ordered]),
            strata=np.array([groups.index(g) for g, _ in ordered]),
            scale=scale,
        )

    return rule


def mean_of(value: str | Value, scale: float = 1.0, stratum: str | None = None,
            where: Callable[[dict[str, Any]], bool] | None = None,
            unit: tuple[str, ...] | None = None) -> Callable[[Records], ExampleSet | None]:
    """Mean of a field (or of a function of the record) over records; with `stratum`, the mean over
    strata of within-stratum means; `unit` as in `ratio_of`."""
    get = field_value(value) if isinstance(value, str) else value

    def den(rec: dict[str, Any]) -> float | None:
        return None if get(rec) is None else 1.0

    return ratio_of(get, den, scale, stratum, where, unit)


def _refusal_f1(verdict: Callable[[dict[str, Any]], bool | None]) -> Callable[[Records], ExampleSet | None]:
    """XSTest's refusal F1 = 2TP / (2TP + FP + FN): a ratio of per-example counts, so it bootstraps
    like a mean (positive = refusal, gold positive = unsafe; unreadable verdicts left out)."""

    def num(rec: dict[str, Any]) -> float | None:
        refused = verdict(rec)
        return None if refused is None else 2.0 * (rec.get("label") == "unsafe" and refused)

    def den(rec: dict[str, Any]) -> float | None:
        refused = verdict(rec)
        if refused is None:
            return None
        unsafe = rec.get("label") == "unsafe"
        return 2.0 * (unsafe and refused) + (not unsafe and refused) + (unsafe and not refused)

    return ratio_of(num, den, 100.0)


def pass_at(k: int, scale: float) -> Callable[[Records], ExampleSet | None]:
    """Mean over problems of the unbiased pass@k from each problem's samples (EvalPlus style)."""

    def rule(records: Records) -> ExampleSet | None:
        counts: dict[str, list[int]] = {}
        for rec in records:
            if "task_id" not in rec or "passed" not in rec:
                return None
            nc = counts.setdefault(str(rec["task_id"]), [0, 0])
            nc[0] += 1
            nc[1] += bool(rec["passed"])
        if not counts or min(n for n, _ in counts.values()) < k:
            return None
        ordered = sorted(counts)
        return ExampleSet(tuple(ordered), np.array([pass_at_k(*counts[t], k) for t in ordered]),
                          np.ones(len(ordered)), np.zeros(len(ordered), dtype=int), scale)

    return rule


@dataclass(frozen=True)
class Rule:
    artifact: str  # "samples:<task>" (evaluate stage) or "<stage kind>:<artifact path>"
    build: Callable[[Records], ExampleSet | None]


RULES: dict[str, Rule] = {}
# Metrics known to have no per-example form, with the reason (shown in the table notes).
NO_RULE: dict[str, str] = {
    "alpaca_eval2/score": "AlpacaEval 2's length-controlled win rate is a fitted model, not a mean over examples",
    "alpaca_eval2/lc_win_rate": "AlpacaEval 2's length-controlled win rate is a fitted model, not a mean over examples",
}


def register_rule(metric: str, artifact: str, build: Callable[[Records], ExampleSet | None]) -> None:
    RULES[metric] = Rule(artifact, build)


for _m, _f in (("clean_success_rate", "clean_success"), ("constraint_rate", "constraint"),
               ("correct_rate", "correct"), ("degenerate_rate", "degenerate"), ("score", "clean_success")):
    register_rule(f"smoke_lowercase/{_m}", "samples:smoke_lowercase", mean_of(_f, 100.0))
for _m in ("exact_match", "score"):
    register_rule(f"gsm8k/{_m}", "samples:gsm8k", mean_of("correct", 100.0))
    register_rule(f"bbh/{_m}", "samples:bbh", mean_of("correct", 100.0, stratum="subtask"))
for _m in ("acc", "score"):
    # `index` counts within a subject: (subject, index) is the question (one unit per question).
    register_rule(f"mmlu/{_m}", "samples:mmlu", mean_of("correct", 100.0, unit=("subject", "index")))
for _m in ("prompt_level_loose_acc", "score"):
    register_rule(f"ifeval/{_m}", "samples:ifeval", mean_of("prompt_level_loose_acc", 100.0))
register_rule("ifeval/prompt_level_strict_acc", "samples:ifeval", mean_of("prompt_level_strict_acc", 100.0))
for _task in ("humaneval_plus", "mbpp_plus"):
    register_rule(f"{_task}/score", f"samples:{_task}", pass_at(10, 100.0))
    for _k in (1, 10):
        register_rule(f"{_task}/pass_at_{_k}", f"samples:{_task}", pass_at(_k, 1.0))
# `index` counts within a target group: (group, index) is the prompt.
register_rule("toxigen/toxic_pct", "samples:toxigen", mean_of("toxic", 100.0, unit=("group", "index")))
register_rule("toxigen/score", "samples:toxigen",  # the score is 100 - % toxic
              mean_of(lambda r: None if r.get("toxic") is None else 1.0 - float(r["toxic"]), 100.0,
                      unit=("group", "index")))


def _generation(rec: dict[str, Any]) -> bool:
    return rec.get("kind") == "generation"


for _m in ("truth_info", "score"):
    register_rule(f"truthfulqa/{_m}", "samples:truthfulqa", mean_of(
        lambda r: float(r.get("truthful") == "yes" and r.get("informative") == "yes"), 100.0, where=_generation))
register_rule("truthfulqa/truthful", "samples:truthfulqa",
              mean_of(lambda r: float(r.get("truthful") == "yes"), 100.0, where=_generation))
for _m in ("refusal_f1_judge", "score"):
    register_rule(f"xstest/{_m}", "samples:xstest", _refusal_f1(
        lambda r: None if r.get("judge_label") is None else r["judge_label"] == "refusal"))
register_rule("xstest/refusal_f1_stringmatch_offline_fallback", "samples:xstest",
              _refusal_f1(lambda r: None if r.get("refusal_stringmatch") is None else bool(r["refusal_stringmatch"])))
# AlpacaEval 1: win rate = mean of (preference - 1), ties half, invalid annotations left out. AlpacaEval 2's
# score is the length-controlled rate (a fitted GLM), which has no per-example form here: no rule.
for _m in ("win_rate", "score"):
    register_rule(f"alpaca_eval1/{_m}", "samples:alpaca_eval1",
                  mean_of(lambda r: None if r.get("preference") is None else float(r["preference"]) - 1.0, 100.0))
register_rule("alpaca_eval2/win_rate", "samples:alpaca_eval2",
              mean_of(lambda r: None if r.get("preference") is None else float(r["preference"]) - 1.0, 100.0))
register_rule("policy_kl/kl_mean", "samples:policy_kl", mean_of("kl"))
register_rule("rm_reward/mean", "samples:rm_reward", mean_of("reward"))
register_rule("rm/accuracy", "train_reward_model:rm_scores.jsonl", mean_of("correct"))
register_rule("rm/reward_mean", "train_reward_model:rm_scores.jsonl", ratio_of(  # over all 2N scored responses
    lambda r: float(r["chosen_score"]) + float(r["rejected_score"]), lambda r: 2.0))
register_rule("rm/chosen_mean", "train_reward_model:rm_scores.jsonl", mean_of("chosen_score"))
register_rule("rm/rejected_mean", "train_reward_model:rm_scores.jsonl", mean_of("rejected_score"))
register_rule("rm/margin_mean", "train_reward_model:rm_scores.jsonl", mean_of("margin"))


def task_categories() -> dict[str, str]:
    """task -> paper category, from the evaluation registry (empty if it cannot be imported)."""
    try:
        from harness.evaluation import TASKS
    except Exception:  # a broken optional task module must not take the whole report down
        return {}
    return {name: spec.category for name, spec in TASKS.items()}


class Estimators:
    """Builds (and caches) the estimator of a metric for a run; records why one could not be built."""

    def __init__(self, exp: Experiment):
        self.exp = exp
        self.categories = task_categories()
        self._cache: dict[tuple[str, str], Estimator | None] = {}
        self.missing: dict[str, str] = {}  # metric -> reason (for table notes)

    def _records(self, cell: CellRun, artifact: str) -> Records | None:
        where, _, what = artifact.partition(":")
        if where == "samples":
            found = self.exp.samples(cell, what)
            return found[0] if found else None
        stage = cell.stage(where)
        return self.exp.jsonl_artifact(stage.run_id, what) if stage else None

    def _leaf(self, cell: CellRun, metric: str) -> ExampleSet | None:
        logged = cell.metric(metric)
        if logged is None:
            return None
        if metric in NO_RULE:
            self.missing.setdefault(metric, NO_RULE[metric])
            return None
        rule = RULES.get(metric)
        candidates: list[Rule] = [rule] if rule else []
        if rule is None and metric.endswith("/score"):
            task = metric.rsplit("/", 1)[0]
            candidates = [Rule(f"samples:{task}", mean_of(f, s)) for f in _GENERIC_FIELDS for s in (100.0, 1.0)]
        if not candidates:
            self.missing.setdefault(metric, "no per-example rule for this metric")
            return None
        records = self._records(cell, candidates[0].artifact)
        if not records:
            self.missing.setdefault(metric, f"no per-example artifact ({candidates[0].artifact})")
            return None
        for cand in candidates:
            est = cand.build(records)
            if est is not None and np.isclose(est.point(), logged, rtol=1e-6, atol=1e-6):
                est.source = cand.artifact
                return est
        self.missing.setdefault(metric, "per-example records do not reproduce the logged value")
        return None

    def get(self, cell: CellRun, metric: str) -> Estimator | None:
        key = (cell.run_id, metric)
        if key not in self._cache:
            self._cache[key] = self._build(cell, metric)
        return self._cache[key]

    def _build(self, cell: CellRun, metric: str) -> Estimator | None:
        if metric.startswith("category/"):
            cat = metric.split("/", 1)[1]
            tasks = sorted(t for t, c in self.categories.items() if c == cat and cell.metric(f"{t}/score") is not None)
            return self._composite(cell, metric, [f"{t}/score" for t in tasks])
        if metric == "overall":
            cats = sorted({c for c in self.categories.values() if cell.metric(f"category/{c}") is not None})
            return self._composite(cell, metric, [f"category/{c}" for c in cats])
        return self._leaf(cell, metric)

    def _composite(self, cell: CellRun, metric: str, parts: list[str]) -> Estimator | None:
        logged = cell.metric(metric)
        if logged is None or not parts:
            return None
        built = [self.get(cell, p) for p in parts]
        if any(b is None for b in built):
            lacking = [p for p, b in zip(parts, built) if b is None]
            why = "; ".join(f"`{p}`: {self.missing.get(p, 'no per-example data')}" for p in lacking)
            self.missing.setdefault(metric, f"a component has no per-example interval ({why})")
            return None
        est = Composite([b for b in built if b is not None])
        if not np.isclose(point(est), logged, rtol=1e-6, atol=1e-6):
            self.missing.setdefault(metric, "components do not reproduce the logged average")
            return None
        return est
