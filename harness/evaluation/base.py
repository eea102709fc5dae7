"""Evaluation task contract and registry (lm-eval style: a task is one module and one register line).

A task gets an `EvalContext` (the model, a lazily built shared generator, a limit, a seed, where to
write) and returns a `TaskResult`: raw metrics (named `<task>/<metric>`), a 0-100 `score` used for
category averages (or None with `skipped_reason` when it cannot run: never a made-up number), and
per-example `samples` (saved as a JSONL artifact so any metric can be recomputed without regenerating).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.registry import Registry


@dataclass
class EvalContext:
    model_path: str
    out_dir: Path
    limit: int | None = None
    seed: int = 0
    batch_size: int = 16
    judge: dict[str, Any] | None = None  # judge endpoint settings, for judge-based tasks
    reference_path: str | None = None  # the SFT/reference policy, for KL-to-reference measurements
    reward_model_path: str | None = None  # a trained RM folder, for reward-of-samples measurements
    _generator: Any = None

    @property
    def generator(self):
        """The shared generation engine, built on first use (tasks that only score do not pay for it)."""
        if self._generator is None:
            from harness.generation import make_generator

            self._generator = make_generator(self.model_path, batch_size=self.batch_size)
        return self._generator


@dataclass
class TaskResult:
    metrics: dict[str, float]
    score: float | None  # 0-100, what enters the category average
    samples: list[dict[str, Any]] = field(default_factory=list)
    skipped_reason: str | None = None
    # What the score is when it is not what the task's `score_rule` says, and why (e.g. AlpacaEval 2's raw
    # win rate when its length-controlled one cannot be computed): in results.json `notes` and the table.
    note: str | None = None


@dataclass
class TaskSpec:
    name: str
    category: str  # one of CATEGORIES, or "custom" for tasks outside the paper's suite
    run: Callable[[EvalContext], TaskResult]
    description: str = ""
    score_rule: str = ""  # how `score` is derived from the metric, as in the paper's tables
    # What else a finished result depends on, beyond `task_fingerprint`'s shared fields (e.g. the content
    # of a judge folder named by an environment variable): part of this task's resume key only, so
    # configuring it does not rerun the other tasks. Must not raise on a misconfiguration.
    fingerprint_extra: Callable[[], dict[str, Any]] | None = None
    # Raises ValueError/FileNotFoundError on a misconfiguration; `run_tasks` calls it for every task
    # before running any, so a bad setting fails at once and not hours into a suite.
    preflight: Callable[[], None] | None = None
    # Prefixes of environment variables that change what this task computes (e.g. HARNESS_CODING_ for a
    # generation budget): part of this task's resume key only, so a CPU knob for one task does not
    # rerun the others. HARNESS_DATA_DIR is in every task's key.
    env_prefixes: tuple[str, ...] = ()


# The paper's six categories (Sec. 2.2, App. D).
CATEGORIES = ("factuality", "reasoning", "truthfulness", "coding", "safety", "instruction_following")

TASKS: Registry[TaskSpec] = Registry("eval task")
SUITES: dict[str, list[str]] = {}


# A judge that fails to answer in the expected format on more than this share of its verdicts is not
# usable for the task (e.g. a 135M model as judge): the score is withheld instead of being computed on
# the few verdicts it did give (measured: XSTest refusal F1 read 100 from 4 parsed verdicts of 20).
MAX_UNPARSED_FRACTION = 0.1


def unparsed_reason(task: str, n_unparsed: int, n_verdicts: int, judge_model: str) -> str | None:
    """Why a judged score is withheld (too many unreadable verdicts), or None when it stands."""
    if n_verdicts and n_unparsed / n_verdicts > MAX_UNPARSED_FRACTION:
        return (f"{task}: the judge ({judge_model}) gave {n_unparsed} of {n_verdicts} verdicts in no readable "
                f"form (over {MAX_UNPARSED_FRACTION:.0%}): no score; its verdicts and the responses are saved, "
                "use a stronger judge")
    return None


def register_task(spec: TaskSpec) -> TaskSpec:
    TASKS.register(spec.name, spec)
    return spec


# Environment variables every task's result depends on; tasks add their own (`TaskSpec.env_prefixes`).
_SHARED_ENV_PREFIXES = ("HARNESS_DATA_DIR",)


def task_fingerprint(ctx: EvalContext, spec: TaskSpec) -> dict[str, Any]:
    """What a finished task's result depends on: its code (the task module's source), the model's
    content, the context's settings and the judge endpoint (never its key). A checkpoint is reused
    only when all of it is unchanged; shared code (the generation engine) is not part of it."""
    from harness.best_of_n import model_fingerprint

    run = inspect.unwrap(spec.run)
    module = inspect.getmodule(run)
    source = inspect.getsource(module) if module is not None else spec.name
    judge = {k: v for k, v in (ctx.judge or {}).items() if "key" not in k.lower()}
    extra = {"extra": spec.fingerprint_extra()} if spec.fingerprint_extra is not None else {}
    return {
        "task": spec.name,
        "task_code": hashlib.sha256(source.encode()).hexdigest()[:16],
        "model": model_fingerprint(ctx.model_path),
        "limit": ctx.limit, "seed": ctx.seed, "batch_size": ctx.batch_size, "judge": judge,
        "reference": model_fingerprint(ctx.reference_path) if ctx.reference_path else None,
        "reward_model": model_fingerprint(ctx.reward_model_path) if ctx.reward_model_path else None,
        "env": {k: v for k, v in sorted(os.environ.items())
                if k.startswith(_SHARED_ENV_PREFIXES + spec.env_prefixes)},
        **extra,
    }


def _load_checkpoint(path: Path, fingerprint: dict[str, Any]) -> dict[str, Any] | None:
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return saved if saved.get("fingerprint") == fingerprint else None


def run_tasks(ctx: EvalContext, task_names: list[str], resume: bool = False,
              echo: Callable[[str], None] | None = None) -> dict[str, float]:
    """Run tasks, write `<task>.samples.jsonl` + `results.json` under ctx.out_dir, return flat metrics.

    Besides each task's metrics: `<task>/score` (0-100), `<task>/seconds`, category averages
    `category/<name>` over the tasks that produced a score, and `overall` (mean of categories) when
    every paper category has a score.

    Each finished task also leaves `<task>.result.json` (its metrics and a fingerprint of what they
    depend on, written after its samples). With `resume`, a task whose checkpoint matches is not run
    again: a suite that takes hours on a CPU survives being stopped, and rerunning the same command
    with the same `--out` finishes it.
    """
    for name in task_names:
        spec = TASKS.get(name)
        if spec.preflight is not None:
            spec.preflight()
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    flat: dict[str, float] = {}
    skipped: dict[str, str] = {}
    notes: dict[str, str] = {}
    by_category: dict[str, list[float]] = {}
    for name in task_names:
        spec = TASKS.get(name)
        checkpoint = ctx.out_dir / f"{name}.result.json"
        fingerprint = task_fingerprint(ctx, spec)
        saved = _load_checkpoint(checkpoint, fingerprint) if resume else None
        if saved is not None:
            if echo is not None:
                echo(f"{name}: finished earlier, resumed from {checkpoint}")
            result = TaskResult(saved["metrics"], saved["score"], [], saved["skipped_reason"], saved.get("note"))
            seconds = float(saved["seconds"])
        else:
            start = time.perf_counter()
            result = spec.run(ctx)
            seconds = time.perf_counter() - start
            with (ctx.out_dir / f"{name}.samples.jsonl").open("w") as fh:
                for sample in result.samples:
                    fh.write(json.dumps(sample, ensure_ascii=False, default=str) + "\n")
            partial = checkpoint.with_name(checkpoint.name + ".tmp")
            partial.write_text(json.dumps({"fingerprint": fingerprint, "metrics": result.metrics,
                                           "score": result.score, "skipped_reason": result.skipped_reason,
                                           "note": result.note, "seconds": seconds}, indent=2, default=float))
            partial.replace(checkpoint)  # atomic: a checkpoint is whole or absent
        flat.update(result.metrics)
        flat[f"{name}/seconds"] = seconds
        if result.skipped_reason is not None:
            skipped[name] = result.skipped_reason
        if result.note is not None:
            notes[name] = result.note
        if result.score is not None:
            flat[f"{name}/score"] = float(result.score)
            by_category.setdefault(spec.category, []).append(float(result.score))
    paper_cats = {}
    for category, scores in by_category.items():
        if category in CATEGORIES:
            paper_cats[category] = statistics.fmean(scores)
            flat[f"category/{category}"] = paper_cats[category]
    if paper_cats and len(paper_cats) == len(CATEGORIES):
        flat["overall"] = statistics.fmean(paper_cats.values())
    (ctx.out_dir / "results.json").write_text(
        json.dumps({"metrics": flat, "skipped": skipped, "notes": notes}, indent=2, default=float)
    )
    return flat
