"""Running a list of evaluation tasks: `run_tasks` (the grid's evaluate stage, best-of-N scoring and
`harness eval` all call it), and the reuse of finished results, from a stopped run's checkpoints
(`resume`) or from the task store shared by every grid evaluation (`store`).

Every task's settings and fingerprint are resolved before any task runs (`base.task_fingerprint`), so a
bad setting fails at once and a result is reused only when everything it depends on is unchanged. The
category averages and `overall` come from `harness.evaluation.aggregation`.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.evaluation.aggregation import aggregate_categories, category_members
from harness.evaluation.base import (
    TASKS,
    EvalContext,
    TaskResult,
    TaskUnavailable,
    resolve_settings,
    task_fingerprint,
    task_reason,
)

# ---------------------------------------------------------------------------------------------
# Finished task results, reused across evaluations (the grid's task store)
# ---------------------------------------------------------------------------------------------

TASK_STORE_KIND = "evaluate_task"  # results/stages/evaluate_task/<key>/: one finished task each


def _store_key(fingerprint: dict[str, Any]) -> str:
    from harness.cache import stage_key

    return stage_key(TASK_STORE_KIND, 1, fingerprint, {})


def _store_load(fingerprint: dict[str, Any]) -> tuple[dict[str, Any], Path] | None:
    from harness import cache

    key = _store_key(fingerprint)
    if not cache.is_complete(TASK_STORE_KIND, key):
        return None
    folder = cache.stage_dir(TASK_STORE_KIND, key)
    return json.loads((folder / "result.json").read_text()), folder / "samples.jsonl"


def _store_save(fingerprint: dict[str, Any], saved: dict[str, Any], samples: Path) -> None:
    from harness import cache

    key = _store_key(fingerprint)
    if cache.is_complete(TASK_STORE_KIND, key):
        return
    tmp = cache.new_temp_dir(TASK_STORE_KIND, key)
    (tmp / "result.json").write_text(json.dumps(saved, indent=2, default=float))
    shutil.copyfile(samples, tmp / "samples.jsonl")
    cache.publish_temp(tmp, TASK_STORE_KIND, key, {"task": fingerprint["task"]})


def _load_checkpoint(path: Path, fingerprint: dict[str, Any]) -> dict[str, Any] | None:
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return saved if saved.get("fingerprint") == fingerprint else None


def _planned_part(fingerprint: dict[str, Any], planned: dict[str, Any]) -> dict[str, Any]:
    return {k: fingerprint.get(k) for k in planned}


def run_tasks(ctx: EvalContext, task_names: list[str], resume: bool = False,
              echo: Callable[[str], None] | None = None, store: bool = False,
              planned: dict[str, dict[str, Any]] | None = None) -> dict[str, float]:
    """Run tasks, write `<task>.samples.jsonl` + `results.json` under ctx.out_dir, return flat metrics.

    Besides each task's metrics: `<task>/score` (0-100), `<task>/seconds`, `category/<name>` for each
    category all of whose tasks produced a score, and `overall` (mean of the six) when all six are
    complete (`aggregate_categories`); results.json lists the others under `incomplete_categories`.

    Before anything runs, every task's settings and fingerprint are resolved (a bad setting fails now,
    not hours into a suite); a task with a missing input is not run (`results.json` lists it under
    `missing` and `skipped`, with the reason). A finished task's result can be reused without running it:
    - `resume`: from `<task>.result.json` in ctx.out_dir (a stopped `harness eval` rerun with the same
      `--out` finishes the suite);
    - `store`: from the task store (results/stages/evaluate_task/), shared by every grid evaluation, so
      an evaluation whose key changed for one task (its data appeared) reruns only that task.
    Both hold only results without a `skipped_reason`: a task that could not run is retried next time.

    `planned` ({task: resolve_task fingerprint}, the grid's plan): every planned task must resolve to the
    same fingerprint here (else RuntimeError: this worker sees other data than the plan did); a task not
    in it is reported missing and not run.
    """
    specs = {name: TASKS.get(name) for name in task_names}
    for spec in specs.values():  # resolved once, before any task runs: a bad value fails now
        if spec.settings is not None and spec.group not in ctx.settings:
            ctx.settings[spec.group] = resolve_settings(spec)
    fingerprints: dict[str, dict[str, Any]] = {}
    missing: dict[str, str] = {}
    for name, spec in specs.items():
        try:
            fingerprints[name] = task_fingerprint(ctx, spec)
        except FileNotFoundError as err:
            missing[name] = task_reason(name, str(err))
    if planned is not None:
        for name in list(fingerprints):
            if name not in planned:
                missing[name] = f"{name}: its inputs were missing when the grid was planned (present now: re-run the grid)"
                del fingerprints[name]
        changed = [name for name, fp in planned.items()
                   if name in missing or _planned_part(fingerprints[name], fp) != fp]
        if changed:
            details = "; ".join(f"{n}: planned {json.dumps(planned[n], sort_keys=True)}, found "
                                f"{missing.get(n) or json.dumps(_planned_part(fingerprints[n], planned[n]), sort_keys=True)}"
                                for n in changed)
            raise RuntimeError(f"evaluate: the inputs of task(s) {changed} differ from what the plan saw ({details}); "
                               "re-run the grid so the stage is re-planned, or give this worker the same data dirs")
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    flat: dict[str, float] = {}
    skipped: dict[str, str] = {}
    unavailable: dict[str, str] = {}
    reused: list[str] = []
    notes: dict[str, str] = {}
    from harness import progress

    for index, (name, spec) in enumerate(specs.items()):
        progress.report(done=index, total=len(specs), unit="task", phase=name, force=True)  # harness run/status
        samples_path = ctx.out_dir / f"{name}.samples.jsonl"
        if name in missing:
            skipped[name] = missing[name]
            samples_path.write_text("")  # the task produced no samples
            continue
        checkpoint = ctx.out_dir / f"{name}.result.json"
        fingerprint = fingerprints[name]
        saved = _load_checkpoint(checkpoint, fingerprint) if resume else None
        stored = _store_load(fingerprint) if store and saved is None else None
        if stored is not None:
            saved = stored[0]
            shutil.copyfile(stored[1], samples_path)
        if saved is not None:
            if echo is not None:
                echo(f"{name}: finished earlier, resumed from {'the task store' if stored else checkpoint}")
            reused.append(name)
            result = TaskResult(saved["metrics"], saved["score"], [], saved["skipped_reason"], saved.get("note"))
            seconds = float(saved["seconds"])
        else:
            start = time.perf_counter()
            try:
                result = spec.run(ctx)
            except TaskUnavailable as err:
                skipped[name] = unavailable[name] = task_reason(name, str(err))
                continue
            seconds = time.perf_counter() - start
            with samples_path.open("w") as fh:
                for sample in result.samples:
                    fh.write(json.dumps(sample, ensure_ascii=False, default=str) + "\n")
            if result.skipped_reason is None:  # only finished results are ever reused
                record = {"fingerprint": fingerprint, "metrics": result.metrics, "score": result.score,
                          "skipped_reason": None, "note": result.note, "seconds": seconds}
                partial = checkpoint.with_name(checkpoint.name + ".tmp")
                partial.write_text(json.dumps(record, indent=2, default=float))
                partial.replace(checkpoint)  # atomic: a checkpoint is whole or absent
                if store:
                    _store_save(fingerprint, record, samples_path)
        flat.update(result.metrics)
        flat[f"{name}/seconds"] = seconds
        if result.skipped_reason is not None:
            skipped[name] = result.skipped_reason
        if result.note is not None:
            notes[name] = result.note
        if result.score is not None:
            flat[f"{name}/score"] = float(result.score)
    averages, incomplete = aggregate_categories(task_names, flat)
    flat.update(averages)
    (ctx.out_dir / "results.json").write_text(json.dumps(
        {"metrics": flat, "skipped": skipped, "notes": notes, "missing": missing, "unavailable": unavailable,
         "reused": reused, "categories": category_members(task_names), "incomplete_categories": incomplete},
        indent=2, default=float))
    return flat
