"""Execution: the function that runs each stage kind, and `execute_stage`, which runs one planned stage from
its plain-data spec (`harness.planning.Stage.spec`) in its claimed working folder and publishes it.

An executor is `run(config, inputs: role -> published input folder, out: working folder) -> summary
metrics`; what a stage's key covers and when to bump its version: `harness.planning`.
"""

from __future__ import annotations

import gc
import json
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness import cache, resume
from harness.generation import EngineSettings
from harness.planning import TRAINING_KINDS, spec_label, task_group

logger = logging.getLogger(__name__)

# Optional file in a stage folder: {tag: value} the runner sets on the stage's MLflow run.
STAGE_TAGS_FILE = "tags.json"

# Default Ray resource requests per kind (a user on a GPU cluster overrides with `resources:`).
DEFAULT_RESOURCES = {
    "prepare_data": {"num_cpus": 1},
    "train_reward_model": {"num_cpus": 1},
    "train_policy": {"num_cpus": 1},
    "evaluate": {"num_cpus": 1},
    "reference_logps": {"num_cpus": 1},
    "sample_candidates": {"num_cpus": 1},
}

# The key, in the config an executor receives, of the stage's pinned engine settings (`execute_config`).
ENGINE_SETTINGS = "engine_settings"


def _read_rows(folder: Path) -> list[dict[str, Any]]:
    with (folder / "rows.jsonl").open() as fh:
        return [json.loads(line) for line in fh if line.strip()]


def run_prepare_data(config: dict[str, Any], inputs: dict[str, Path], out: Path) -> dict[str, float]:
    from datasets_registry import prepare
    from datasets_registry.core import source_fingerprint

    _check_source(config, source_fingerprint(config["name"]))
    split = prepare(config["name"], seed=config["seed"], max_rows=config["max_rows"])
    # What was read is what was planned (a file rewritten while it was read gets a new mtime, so a new hash).
    _check_source(config, source_fingerprint(config["name"]))
    with (out / "rows.jsonl").open("w") as fh:
        for row in split.rows:
            fh.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
    (out / "artifacts").mkdir(exist_ok=True)
    summary = {"name": config["name"], "raw": split.raw_count, "kept": split.kept, "dropped": split.dropped,
               "fingerprint": split.fingerprint}
    (out / "artifacts" / "data_summary.json").write_text(json.dumps(summary, indent=2))
    metrics = {"data/raw_rows": float(split.raw_count), "data/kept_rows": float(split.kept)}
    metrics.update({f"data/dropped_{reason}": float(n) for reason, n in split.dropped.items()})
    metrics.update(preference_lengths(split.rows))
    (out / "fingerprint.txt").write_text(split.fingerprint)
    return metrics


def preference_lengths(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Length statistics (characters) of preference pairs, for the length-controlled report views: the mean
    chosen and rejected answer lengths and the share of pairs whose chosen answer is the longer one (a
    preference for length in the data is what DPO-family training can turn into longer answers)."""
    pairs = [r for r in rows if isinstance(r.get("chosen"), list) and isinstance(r.get("rejected"), list)]
    if not pairs:
        return {}

    def chars(messages: list[dict[str, Any]]) -> int:
        return sum(len(str(m.get("content", ""))) for m in messages)

    chosen, rejected = [chars(r["chosen"]) for r in pairs], [chars(r["rejected"]) for r in pairs]
    return {"data/chosen_chars_mean": sum(chosen) / len(pairs), "data/rejected_chars_mean": sum(rejected) / len(pairs),
            "data/chosen_longer_rate": sum(c > r for c, r in zip(chosen, rejected, strict=True)) / len(pairs)}


def _check_source(config: dict[str, Any], found: dict[str, Any]) -> None:
    """The raw input here must be the one the stage key was computed from; otherwise this worker would
    publish other rows under that key."""
    if found != config["source"]:
        raise RuntimeError(
            f"prepare_data[{config['name']}]: the raw input here differs from what the plan saw "
            f"(planned {json.dumps(config['source'], sort_keys=True)}, found {json.dumps(found, sort_keys=True)}); "
            "re-run the grid so the stage is re-planned, or give this worker the same data dirs (HARNESS_DATA_DIR)")


def run_train_reward_model(config: dict[str, Any], inputs: dict[str, Path], out: Path) -> dict[str, float]:
    from harness.algorithms.base import History
    from harness.reward_model import (
        RewardModelConfig,
        evaluate_reward_model,
        split_heldout,
        train_reward_model,
    )

    rm_config = RewardModelConfig(**config["train"])
    rows = _read_rows(inputs["data"])
    try:
        train_rows, heldout_rows = split_heldout(rows, rm_config.heldout_fraction, seed=config["seed"])
    except ValueError as err:  # before any training: too few rows to hold some out
        data = json.loads((inputs["data"] / "config.json").read_text())["config"]
        raise ValueError(f"train_reward_model: dataset {data['name']!r} (max_rows={data['max_rows']}) has "
                         f"{len(rows)} pair(s) after curation: {err}") from None
    history = History(out / "history.jsonl")
    metrics = train_reward_model(train_rows, config["base"], rm_config, out, config["seed"], history.log,
                                 engine=stage_engine(config))
    metrics.update(evaluate_reward_model(str(out / "model"), heldout_rows, out))
    metrics["rm/train_pairs"] = float(len(train_rows))
    metrics["rm/heldout_pairs"] = float(len(heldout_rows))
    metrics.update(_rewardbench(config, out, rm_config.eval_batch_size))
    return metrics


def _rewardbench(config: dict[str, Any], out: Path, batch_size: int) -> dict[str, float]:
    """RewardBench metrics when the data was there at plan time; otherwise none, and a tag saying why."""
    from harness.mlflow_layout import TAG_REWARDBENCH
    from harness.reward_model import evaluate_rewardbench, rewardbench_fingerprint, rewardbench_missing_reason

    planned = config.get("rewardbench")
    if planned is None:
        reason = rewardbench_missing_reason()
        logger.warning("train_reward_model: RewardBench skipped: %s", reason)
        _write_tags(out, {TAG_REWARDBENCH: f"skipped: {reason}"})
        return {}
    found = rewardbench_fingerprint()
    if found != planned:
        # The key promised RewardBench numbers for these exact files; scoring others (or none, on a worker
        # without the data) would publish numbers under the wrong key.
        raise RuntimeError(f"RewardBench data differs from what the plan saw (planned {planned}, found {found}; "
                           f"None = not found here: {rewardbench_missing_reason()}); re-run the grid so the stage "
                           "is re-planned, or give this worker the same data dir")
    metrics, skipped = evaluate_rewardbench(str(out / "model"), out, batch_size=batch_size)
    if skipped:  # the files vanished between the two checks
        raise RuntimeError(skipped)
    _write_tags(out, {TAG_REWARDBENCH: f"scored {int(metrics['rewardbench/n'])} pairs (data {planned})"})
    return metrics


def _write_tags(out: Path, tags: dict[str, str]) -> None:
    """Tags for the stage's MLflow run (the runner sets them), e.g. why an evaluation was skipped."""
    path = out / STAGE_TAGS_FILE
    existing = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**existing, **tags}, indent=2))


def run_train_policy(config: dict[str, Any], inputs: dict[str, Path], out: Path) -> dict[str, float]:
    from harness.algorithms import ALGORITHMS, TrainContext
    from harness.algorithms.base import History
    from harness.models import resolve_model
    from harness.reward_source import resolve

    algo = dict(config["algorithm"])
    spec = ALGORITHMS.get(algo.pop("name"))
    rows_from = inputs.get("prompts") or inputs.get("data")
    if rows_from is None:
        raise ValueError(f"algorithm {spec.name!r} got no training data")
    reward = resolve(config.get("reward_model"), inputs)
    history = History(out / "history.jsonl")
    rows = _read_rows(rows_from)
    reference = None
    if "reference_logps" in inputs:  # computed once for every cell sharing it (harness/reference_logps.py)
        from harness.reference_logps import ReferenceLogps

        reference = ReferenceLogps.load(inputs["reference_logps"], rows)
    ctx = TrainContext(
        policy_path=resolve_model(config["model"]),
        train_rows=rows,
        config=spec.make_config(algo),
        out_dir=out,
        seed=config["seed"],
        log=history.log,
        checkpoint_every=config.get("checkpoint_every"),
        engine=stage_engine(config),
        reference_logps=reference,
        **(reward.train_fields() if reward is not None else {}),
    )
    (out / "artifacts").mkdir(exist_ok=True)
    start = time.perf_counter()
    metrics = spec.train(ctx)
    metrics["train/wall_seconds"] = time.perf_counter() - start
    # The resume checkpoints go; the intermediate policies eval.checkpoint_every asks for stay (as weights).
    resume.discard(out, keep_every=ctx.checkpoint_every)
    if ctx.checkpoint_every:  # before trainer/ (where TRL saved them) is removed
        from harness.checkpoints import finalize

        steps = finalize(out, ctx.checkpoint_every, int(metrics["train/steps"]), base_model=ctx.policy_path)
        metrics["train/checkpoints"] = float(len(steps))
    shutil.rmtree(out / "trainer", ignore_errors=True)  # TRL's output_dir: nothing we need is left there
    if not (out / "model" / "config.json").exists():
        raise RuntimeError(f"algorithm {spec.name!r} did not save a model to {out / 'model'}")
    return metrics


def run_reference_logps(config: dict[str, Any], inputs: dict[str, Path], out: Path) -> dict[str, float]:
    from harness import reference_logps
    from harness.generation import record_engine
    from harness.models import resolve_model

    engine = stage_engine(config)
    rows = _read_rows(inputs["data"])
    start = time.perf_counter()
    found = reference_logps.compute(resolve_model(config["model"]), rows, config, engine, out)
    found.save(out)
    record_engine(out, engine.resolved())
    return {**found.metrics(), "ref/wall_seconds": time.perf_counter() - start}


def _task_settings(block: dict[str, Any]) -> dict[str, Any]:
    """The planned settings of a task block ({tasks: {name: fingerprint}, missing: {name: settings}})."""
    from harness.evaluation.base import settings_from_config

    groups = {fp["task"]: fp["settings"] for fp in block["tasks"].values()} | dict(block.get("missing", {}))
    by_group = {task_group(name): values for name, values in groups.items()}
    return settings_from_config(by_group, list(groups))


def _eval_context(config: dict[str, Any], model_path: str, out_dir: Path, reward: Any) -> Any:
    """The evaluate stage's settings (limit, seed, judge, reference, reward, task settings) applied to one model."""
    from harness.evaluation import EvalContext
    from harness.models import resolve_model

    return EvalContext(
        model_path=model_path, out_dir=out_dir, limit=config["limit"], seed=config["seed"],
        batch_size=config["batch_size"], judge=config.get("judge"),
        reference_path=resolve_model(config["reference_model"]),
        reward_model_path=reward.model_path if reward is not None else None, reward=reward,
        settings=_task_settings(config), engine=stage_engine(config),
    )


def _planned_names(block: dict[str, Any]) -> list[str]:
    """The tasks a block asked for: the planned ones, then those that were missing."""
    return list(block["tasks"]) + [n for n in block.get("missing", {}) if n not in block["tasks"]]


def _run_planned(ctx: Any, block: dict[str, Any], store: bool) -> tuple[dict[str, float], dict[str, Any]]:
    """The planned tasks of `block` on ctx's model (each checked against its planned fingerprint), the
    missing ones reported; returns (metrics, results.json)."""
    from harness.evaluation import run_tasks

    metrics = run_tasks(ctx, _planned_names(block), store=store, planned=block["tasks"])
    return metrics, _checked_results(ctx.out_dir, block)


def _checked_results(out_dir: Path, block: dict[str, Any]) -> dict[str, Any]:
    """`run_tasks`' results.json; raises when a planned task could not run (never published then)."""
    results = json.loads((out_dir / "results.json").read_text())
    if results["unavailable"]:
        raise RuntimeError(
            f"evaluate: task(s) {sorted(results['unavailable'])} could not run although their inputs resolved "
            f"when the grid was planned ({'; '.join(results['unavailable'].values())}); the "
            f"{len(block['tasks']) - len(results['unavailable'])} other task(s) finished and are kept in the "
            "task store (results/stages/evaluate_task/): the next run of the grid reruns only these")
    return results


def run_evaluate(config: dict[str, Any], inputs: dict[str, Path], out: Path) -> dict[str, float]:
    from harness.mlflow_layout import evaluation_tags
    from harness.models import resolve_model
    from harness.reward_source import resolve

    model_path = str(inputs["policy"] / "model") if "policy" in inputs else resolve_model(config["model"])
    reward = resolve(config.get("reward") or ({"path": config["reward_model_path"]}
                                              if config.get("reward_model_path") else None), inputs)
    ctx = _eval_context(config, model_path, out / "artifacts" / "samples", reward)
    metrics, results = _run_planned(ctx, config, store=True)
    from harness.generation import record_engine

    # What generated and scored: the engine built (its own record), else the planned settings (no task generated).
    record_engine(out, getattr(ctx._generator, "resolved", None) or ctx.engine.resolved())
    del ctx  # frees the evaluated model's generator before another model (a checkpoint, the SFT sampler) loads
    gc.collect()
    tags = evaluation_tags(results)  # which tasks have no result and why, which were reused
    if config.get("checkpoint_every") and "policy" in inputs:
        rows = _evaluate_checkpoints(config, inputs["policy"], inputs.get("sft"), reward, metrics, out)
        if config.get("monitor"):
            _monitor(config, inputs, rows, metrics, out)
        from harness.checkpoints import HISTORY_FILE

        with (out / HISTORY_FILE).open("w") as fh:
            for row in rows:
                fh.write(json.dumps(row, sort_keys=True) + "\n")
    if config.get("best_of_n"):
        if reward is None:  # the config validator forbids it; a hand-made spec could still
            raise ValueError("best-of-N needs the cell's reward model, and this evaluate stage has none")
        bon_metrics, bon_results = _best_of_n(config, inputs, reward, out)
        metrics.update(bon_metrics)
        tags.update(evaluation_tags(bon_results, best_of_n=True))
    _write_tags(out, tags)
    return metrics


def _evaluate_checkpoints(config: dict[str, Any], policy_dir: Path, sft_dir: Path | None,
                          reward: Any, final: dict[str, float], out: Path) -> list[dict[str, Any]]:
    """The cell's eval tasks (same limit, seed, judge) on each intermediate checkpoint of the policy, as
    rows {"step": s, metric: value} (written to `checkpoint_history.jsonl` for the runner to log over steps).

    Step 0 is the SFT model's metrics from the baseline evaluate stage (`sft_dir`, same settings); the
    last row is the final model's own metrics at the final step (not a re-evaluation), so a curve ends
    at exactly the number the cell reports. Samples go to artifacts/checkpoints/step-<s>/.
    """
    from harness.checkpoints import final_step, list_checkpoints

    def curve_metrics(metrics: dict[str, float]) -> dict[str, float]:
        # Timings are not a property of the checkpoint: left out of the curves.
        return {k: float(v) for k, v in metrics.items() if not k.endswith("/seconds")}

    rows: list[dict[str, Any]] = []
    if sft_dir is not None:
        sft = json.loads((sft_dir / "metrics.json").read_text())
        # Only what the policy's curves have (not e.g. the baseline's best-of-N metrics).
        rows.append({"step": 0, **{k: v for k, v in curve_metrics(sft).items() if k in final}})
    for step, folder in list_checkpoints(policy_dir):
        ctx = _eval_context(config, str(folder), out / "artifacts" / "checkpoints" / f"step-{step}", reward)
        rows.append({"step": step, **curve_metrics(_run_planned(ctx, config, store=True)[0])})
        del ctx
        gc.collect()
    rows.append({"step": final_step(policy_dir), **curve_metrics(final)})
    return rows


def _monitor(config: dict[str, Any], inputs: dict[str, Path], rows: list[dict[str, Any]],
             final: dict[str, float], out: Path) -> None:
    """The over-optimisation monitor (harness/monitor.py) at step 0 (the SFT model), at every checkpoint and
    at the final model: its metrics join the checkpoint rows (and `final`), its flags `final` and the
    stage's tags."""
    from harness import monitor
    from harness.checkpoints import list_checkpoints
    from harness.judge.client import judge_client_from_settings
    from harness.models import load_causal_lm, resolve_model
    from harness.reward_source import resolve

    settings_config = config["monitor"]
    settings = monitor.Settings.from_config(settings_config)
    prompt_rows = _read_rows(inputs["monitor_prompts"])[: settings.limit]

    def scorer(part: dict[str, Any] | str | None) -> Any:
        if not isinstance(part, dict):
            return None
        source = resolve(part["reward"], inputs, role=part["role"])
        return source.scorer(batch_size=config["batch_size"]) if source is not None else None

    proxy, gold = scorer(settings_config["proxy"]), scorer(settings_config["gold"])
    judge = judge_client_from_settings(config.get("judge")) if settings_config["gold"] == "judge" else None
    refusal_rows, refusal_note = monitor.refusal_prompts(settings.refusal_limit)
    sft_path = resolve_model(config["reference_model"])
    reference, reference_tok = load_causal_lm(sft_path)
    points = [(0, sft_path), *[(step, str(folder)) for step, folder in list_checkpoints(inputs["policy"])],
              (rows[-1]["step"], str(inputs["policy"] / "model"))]
    by_step = {row["step"]: row for row in rows}
    sft_texts: list[str] | None = None
    for step, path in points:
        sampled = monitor.measure(path, reference, reference_tok, prompt_rows, proxy, gold, settings,
                                  seed=config["seed"], batch_size=config["batch_size"], judge=judge,
                                  sft_texts=sft_texts, refusal_rows=refusal_rows)
        if step == 0:
            sft_texts = sampled.texts
            if judge is not None:  # the SFT model against itself: a tie by definition
                sampled.metrics[monitor.GOLD] = 0.5
        by_step.setdefault(step, {"step": step}).update(sampled.metrics)
    rows[:] = [by_step[s] for s in sorted(by_step)]
    final.update(rows[-1])
    final.pop("step", None)
    flag_metrics, tags = monitor.flags(rows, settings)
    final.update(flag_metrics)
    tags[monitor.TAG_REFUSAL] = refusal_note or f"XSTest string-match on {len(refusal_rows)} prompts"
    _write_tags(out, tags)


def _best_of_n(config: dict[str, Any], inputs: dict[str, Path], reward: Any,
               out: Path) -> tuple[dict[str, float], dict[str, Any]]:
    """`bon/<task>/<metric>`: the tasks on the reward model's picks among the N samples of the SFT model (the
    cell's starting model, `reference_model`, whatever policy the cell trained) that the shared
    `sample_candidates` stage (input `candidates`) sampled; nothing is generated here."""
    from harness.best_of_n import best_of_n_tasks
    from harness.models import resolve_model
    from harness.sample_candidates import Candidates

    bon = config["best_of_n"]
    # No input: none of the best-of-N tasks' inputs resolved at plan time, so there is nothing to pick among
    # (the tasks are reported missing; a request would fail naming its prompt).
    candidates = Candidates.load(inputs["candidates"]) if "candidates" in inputs else Candidates(source="no stage")
    # Not through the task store: the picks depend on the reward model and the candidates, which the
    # task fingerprint of the SFT model does not say.
    found = best_of_n_tasks(candidates, resolve_model(config["reference_model"]), reward, _planned_names(bon),
                            out / "artifacts" / "bon", limit=bon["limit"], seed=bon["seed"],
                            batch_size=config["batch_size"], engine=stage_engine(config),
                            task_settings=_task_settings(bon), judge=config.get("judge"), planned=bon["tasks"])
    results = _checked_results(out / "artifacts" / "bon", bon)
    # No RM label in the key: a cell has one reward model (the reports' `bon/<task>/score` shape).
    return {f"bon/{key}": value for key, value in found.items()}, results


def run_sample_candidates(config: dict[str, Any], inputs: dict[str, Path], out: Path) -> dict[str, float]:
    from harness import sample_candidates
    from harness.generation import record_engine

    engine = stage_engine(config)
    start = time.perf_counter()
    metrics, resolved = sample_candidates.sample(config, _task_settings(config), engine, out)
    record_engine(out, resolved or engine.resolved())
    return {**metrics, "candidates/wall_seconds": time.perf_counter() - start}


EXECUTORS: dict[str, Callable[[dict[str, Any], dict[str, Path], Path], dict[str, float]]] = {
    "prepare_data": run_prepare_data,
    "train_reward_model": run_train_reward_model,
    "train_policy": run_train_policy,
    "evaluate": run_evaluate,
    "reference_logps": run_reference_logps,
    "sample_candidates": run_sample_candidates,
}


def executor_config(spec: dict[str, Any]) -> dict[str, Any]:
    """The config an executor gets: the stage's config plus its pinned engine settings (`ENGINE_SETTINGS`)."""
    if "engine" not in spec:
        return spec["config"]
    return {**spec["config"], ENGINE_SETTINGS: spec["engine"]}


def stage_engine(config: dict[str, Any]) -> EngineSettings:
    """The engine a stage runs with: the settings its plan pinned, checked against the part in its key (a
    worker never resolves "auto" itself: it would choose by its own device)."""
    planned = config["engine"]
    given = config.get(ENGINE_SETTINGS)
    try:
        settings = EngineSettings(**given) if given is not None else EngineSettings(**planned)
    except ValueError as err:  # a hand-made spec without the settings of a server engine
        raise RuntimeError(f"stage config engine {planned}: no runnable engine settings in the spec ({err})") from None
    resolved = settings.resolved()
    found = {**resolved.key(), **resolved.training_key()}
    if any(found.get(name) != value for name, value in planned.items()):
        raise RuntimeError(f"the stage's engine settings resolve to {found} here, but its key says {planned}")
    return settings


# How often a stage whose working folder another live writer holds checks whether it was published.
WAIT_FOR_WRITER_S = 1.0


def execute_stage(spec: dict[str, Any]) -> str:
    """Run one stage from its plain-data spec and publish it; returns the published folder.

    Safe to call in any process (local, a pool worker, a Ray task): inputs are read from the shared
    stage store, the stage is written in its working folder (claimed, so two processes never write one
    stage: a second caller waits for the first to publish, or takes over once it died), and published
    atomically; an already-published stage is not redone. A failure is recorded in the working folder
    (`harness status` shows it) and raised.
    """
    import random
    import traceback

    import numpy as np
    import torch

    from harness import progress, usage

    kind, key = spec["kind"], spec["key"]
    inputs = {}
    for role, ref in spec["inputs"].items():
        if not cache.is_complete(ref["kind"], ref["key"]):
            raise RuntimeError(f"stage {kind}/{key}: input {role} ({ref['kind']}/{ref['key']}) is not published")
        inputs[role] = cache.stage_dir(ref["kind"], ref["key"])
    claim = None
    waiting_since = time.time()
    while claim is None:
        if cache.is_complete(kind, key):
            return str(cache.stage_dir(kind, key))
        claim = cache.claim_work_dir(kind, key)
        if claim is None:
            if time.time() - waiting_since > 60:
                waiting_since = time.time()
                state = cache.work_state(kind, key)
                logger.info("stage %s/%s: waiting for its writer %s", kind, key, (state and state.writer) or "?")
            time.sleep(WAIT_FOR_WRITER_S)
    try:
        if claim.previous is not None:
            # Left by a writer that died, failed or was stopped: a training stage goes on from its last
            # resume checkpoint (harness.resume); anything else starts over.
            logger.info("stage %s/%s: reclaiming the working folder left by %s", kind, key, claim.previous)
            resumed_from = resume.prepare(claim) if kind in TRAINING_KINDS else None
            if resumed_from is None:
                cache.reset_work_dir(claim)
            else:
                message = f"resumed {spec_label(spec)} {key} from step {resumed_from}"
                logger.info(message)
                print(message, flush=True)
        out = claim.path
        seed = int(spec["config"].get("seed", 0) or 0)
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        (out / "artifacts").mkdir(exist_ok=True)
        (out / "config.json").write_text(json.dumps(spec, indent=2, default=str))
        try:
            with progress.stage_folder(out), usage.measuring(since=claim.started_at) as measured, \
                    resume.stage_settings(resume.Settings.from_spec(spec)):
                progress.report(phase="loading", force=True)
                metrics = EXECUTORS[kind](executor_config(spec), inputs, out)
        except BaseException as exc:
            cache.record_failure(kind, key, _error_text(exc), "".join(traceback.format_exception(exc)), claim.attempt)
            raise
        finally:
            gc.collect()
        spent = measured.usage
        metrics = {k: float(v) for k, v in metrics.items()}
        metrics.update(spent.metrics())
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        resume.discard(out)  # what is left of the resume checkpoints (the reward model's): never published
        fingerprint = (out / "fingerprint.txt").read_text() if (out / "fingerprint.txt").exists() else None
        record = {"spec": spec, "seconds": spent.wall_seconds, "fingerprint": fingerprint, "usage": spent.as_dict()}
        return str(cache.publish(claim, record))
    finally:
        claim.release()


def _error_text(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
