"""The paper's 11-benchmark suite (Sec. 2.2, App. D): `SUITES["paper11"]`, its categories and its table;
its best-of-N subset (Table 12): `SUITES["paper-bon"]`.

How each benchmark becomes a 0-100 score (what enters the category average), as in the paper's tables:

| category | benchmark | score |
| factuality | mmlu | accuracy % over test questions |
| reasoning | gsm8k | exact match % of the last number |
| reasoning | bbh | exact match %, mean over the 27 sub-tasks |
| truthfulness | truthfulqa | % answers judged truthful AND informative |
| coding | humaneval_plus, mbpp_plus | pass@10 x 100 |
| safety | toxigen | 100 - % generations classified toxic |
| safety | xstest | refusal F1 x 100 (LLM-judged refusals) |
| instruction_following | alpaca_eval1 | win rate % vs text-davinci-003 |
| instruction_following | alpaca_eval2 | length-controlled win rate % vs GPT-4 turbo |
| instruction_following | ifeval | loose prompt-level accuracy % |

Category = mean of its benchmarks, logged only when every one of them produced a score; overall = mean
of the 6 categories, only when all 6 are so complete (`base.aggregate_categories`, called by
`run_tasks`). A benchmark that cannot run (no judge, no classifier, no data) has score None and a
skipped reason, and withholds its category and `overall` instead of silently shrinking them (XSTest
skipped would raise the paper's SFT overall of 56.8 by about a point); the table says what is missing.

Offline fallbacks (`<task>/offline_fallback_score`: TruthfulQA MC2, or truth x info by judges fine-tuned
here when they are configured; XSTest string-match F1) never enter `category/*` or `overall`;
`with_fallbacks` computes a separately named `category_with_offline_fallbacks/*` and
`overall_with_offline_fallbacks`, where a skipped benchmark's fallback stands in for it, so the table
can show what offline evaluation says without confusing it with the paper's metric (these average
whatever has a score or a fallback: never the paper's number).

Each benchmark runs under its `setting` (`paper`: open-instruct's 2024 evaluation as the paper ran it;
`harness`: this project's choices, the default); `harness eval --suite paper11 --setting paper --dry-run`
lists what each will do.
"""

from __future__ import annotations

import importlib
import math
import statistics
from typing import Any

# The suite's task modules, imported here so that they are registered before the suite checks for
# missing members (whatever order `harness.evaluation.__init__` imports modules in).
import harness.evaluation.alpaca_eval  # noqa: F401
import harness.evaluation.bbh  # noqa: F401
import harness.evaluation.gsm8k  # noqa: F401
import harness.evaluation.ifeval  # noqa: F401
import harness.evaluation.mmlu  # noqa: F401
import harness.evaluation.toxigen  # noqa: F401
import harness.evaluation.truthfulqa  # noqa: F401
import harness.evaluation.xstest  # noqa: F401
from harness.evaluation.base import (
    CATEGORIES,
    SUITES,
    TASKS,
    TaskResult,
    TaskSpec,
    aggregate_categories,
    register_task,
)

try:  # HumanEval+ / MBPP+ live in another engineer's module; the suite must run without it
    importlib.import_module("harness.evaluation.coding")
except ImportError:
    pass

PAPER11_CATEGORIES: dict[str, str] = {
    "mmlu": "factuality",
    "gsm8k": "reasoning",
    "bbh": "reasoning",
    "truthfulqa": "truthfulness",
    "humaneval_plus": "coding",
    "mbpp_plus": "coding",
    "toxigen": "safety",
    "xstest": "safety",
    "alpaca_eval1": "instruction_following",
    "alpaca_eval2": "instruction_following",
    "ifeval": "instruction_following",
}
PAPER11 = list(PAPER11_CATEGORIES)
SUITES["paper11"] = PAPER11
# Paper Table 12's best-of-N benchmarks (the generative ones of the suite), in its column order with its
# column headers: `eval.best_of_n`'s default tasks and the columns of the report's Table 12.
PAPER_BEST_OF_N_COLUMNS: dict[str, str] = {
    "gsm8k": "GSM", "bbh": "BBH", "humaneval_plus": "Codex-Eval+", "mbpp_plus": "MBPP+",
    "alpaca_eval1": "AEval 1", "alpaca_eval2": "AEval 2", "ifeval": "IFEval", "xstest": "XSTest",
}
SUITES["paper-bon"] = list(PAPER_BEST_OF_N_COLUMNS)


def _register_missing() -> None:
    """A suite member whose module is absent (e.g. the coding tasks not installed in a checkout)
    is registered as a task that reports itself skipped, so `run_tasks(ctx, SUITES["paper11"])`
    runs everything else instead of failing on an unknown name."""
    for name, category in PAPER11_CATEGORIES.items():
        if name in TASKS.names():
            continue

        def run(_ctx, _name: str = name) -> TaskResult:
            return TaskResult({}, None, [], skipped_reason=(
                f"{_name}: task module not available in this checkout (no task registered under this name)"))

        register_task(TaskSpec(name=name, category=category, run=run, uses=(),
                               description="placeholder: task module missing", score_rule="n/a"))


_register_missing()


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not math.isnan(x)


def with_fallbacks(metrics: dict[str, float], tasks: list[str]) -> dict[str, float]:
    """`category_with_offline_fallbacks/<cat>` and `overall_with_offline_fallbacks` (see module doc)."""
    by_cat: dict[str, list[float]] = {}
    for name in tasks:
        spec = TASKS.get(name)
        value = metrics.get(f"{name}/score")
        if not _finite(value):
            value = metrics.get(f"{name}/offline_fallback_score")
        if _finite(value) and spec.category in CATEGORIES:
            by_cat.setdefault(spec.category, []).append(float(value))
    out = {f"category_with_offline_fallbacks/{c}": statistics.fmean(v) for c, v in by_cat.items()}
    if len(by_cat) == len(CATEGORIES):
        out["overall_with_offline_fallbacks"] = statistics.fmean(
            out[f"category_with_offline_fallbacks/{c}"] for c in CATEGORIES)
    return out


def _fmt(x: Any) -> str:
    return f"{x:6.1f}" if _finite(x) else "     -"


def format_table(metrics: dict[str, float], skipped: dict[str, str], tasks: list[str],
                 notes: dict[str, str] | None = None) -> str:
    """Plain-text table: per benchmark (score, offline fallback, seconds, status), per category, overall.
    The status is the skipped reason, else the task's note on what its score is, else its score rule."""
    fb = with_fallbacks(metrics, tasks)
    notes = notes or {}
    lines = [f"{'benchmark':<16} {'category':<22} {'score':>6} {'fallbk':>6} {'secs':>7}  status / score rule",
             "-" * 100]
    for name in tasks:
        spec = TASKS.get(name)
        status = skipped.get(name) or notes.get(name) or spec.score_rule
        lines.append(
            f"{name:<16} {spec.category:<22} {_fmt(metrics.get(f'{name}/score'))} "
            f"{_fmt(metrics.get(f'{name}/offline_fallback_score'))} "
            f"{metrics.get(f'{name}/seconds', float('nan')):7.1f}  {status}"
        )
    lines += ["-" * 100, f"{'category':<39} {'score':>6} {'w/ fallbacks':>13}"]
    for cat in CATEGORIES:
        lines.append(f"{cat:<39} {_fmt(metrics.get(f'category/{cat}'))} "
                     f"{_fmt(fb.get(f'category_with_offline_fallbacks/{cat}')):>13}")
    lines.append(f"{'OVERALL (mean of 6 categories)':<39} {_fmt(metrics.get('overall'))} "
                 f"{_fmt(fb.get('overall_with_offline_fallbacks')):>13}")
    _, incomplete = aggregate_categories(tasks, metrics)
    for cat, unscored in incomplete.items():
        lines.append(f"category {cat} withheld: no score for {', '.join(unscored)}")
    missing = [c for c in CATEGORIES if f"category/{c}" not in metrics]
    if missing:
        lines.append(f"overall needs all 6 categories; without a score: {', '.join(missing)} "
                     "(the 'w/ fallbacks' column uses labelled offline substitutes; not the paper's metric)")
    return "\n".join(lines)
