"""Category averages and `overall` (paper Sec. 2.2), only over complete categories: a benchmark without a
score withholds its category and with it `overall` (`aggregate_categories`); `aggregation_plan` states
the same rule before anything runs (`harness eval --dry-run`).
"""

from __future__ import annotations

import statistics

from harness.evaluation.base import CATEGORIES, TASKS


def category_members(task_names: list[str]) -> dict[str, list[str]]:
    """Paper category -> the tasks of `task_names` in it, in CATEGORIES order (other tasks left out)."""
    members: dict[str, list[str]] = {}
    for category in CATEGORIES:
        names = [n for n in dict.fromkeys(task_names) if TASKS.get(n).category == category]
        if names:
            members[category] = names
    return members


def _has_score(metrics: dict[str, float], task: str) -> bool:
    value = metrics.get(f"{task}/score")
    return isinstance(value, (int, float)) and value == value  # not NaN


def aggregation_plan(task_names: list[str], unscored: set[str]) -> tuple[dict[str, list[str]], dict[str, list[str]], bool]:
    """The averaging rule of `aggregate_categories`, applied to which tasks will have no score: ({category:
    its tasks} for the categories that will be averaged, {category: its tasks without a score} for those
    withheld, whether `overall` will be computed). `harness eval --dry-run` states it before anything runs."""
    averaged: dict[str, list[str]] = {}
    incomplete: dict[str, list[str]] = {}
    for category, names in category_members(task_names).items():
        missing = [n for n in names if n in unscored]
        if missing:
            incomplete[category] = missing
        else:
            averaged[category] = names
    return averaged, incomplete, len(averaged) == len(CATEGORIES)


def aggregate_categories(task_names: list[str], metrics: dict[str, float]) -> tuple[dict[str, float], dict[str, list[str]]]:
    """(`category/<name>` = mean of the `<task>/score` of its tasks, for every category whose tasks ALL
    have a score, and `overall` = mean of the six when all six are so complete; {category: its tasks
    without a score} for the others).

    A benchmark without a score (skipped, its input missing, a judged score withheld) withholds its
    category, and with it `overall`: averaging the others would silently change what the number
    measures (XSTest skipped would raise the paper's SFT overall of 56.8 by about a point). A category is the tasks
    the evaluation asked for: a task left out of `eval.tasks` on purpose is not in it (`results.json`
    `categories` lists what each one averaged)."""
    averaged, incomplete, with_overall = aggregation_plan(
        task_names, {n for n in task_names if not _has_score(metrics, n)})
    averages = {f"category/{category}": statistics.fmean(float(metrics[f"{n}/score"]) for n in names)
                for category, names in averaged.items()}
    if with_overall:
        averages["overall"] = statistics.fmean(averages[f"category/{c}"] for c in CATEGORIES)
    return averages, incomplete
