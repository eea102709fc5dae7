"""The stage DAG of a grid cell, and the functions that execute each stage kind.

    prepare_data ─┬─> train_reward_model ─┐
                  ├─> reference_logps ────┤
                  └───────────────────────┴─> train_policy ──> evaluate

Each stage is content-addressed (`harness.cache.stage_key`): the hash of its kind, its code version,
its resolved config and the keys of its inputs. Cells that share a stage (the same data, the same
reward model, the same SFT evaluation) share its key, so it runs once. The config holds everything the
result depends on, resolved at plan time:
- prepare_data: the dataset's `source_fingerprint` (raw files' sha256 or the hub revision, the
  loader's code), so other rows, an edited file or a changed loader is another stage;
- evaluate: per task, `resolve_task`'s fingerprint (version, code, resolved settings, data files'
  sha256, the judge endpoint for tasks that use one); tasks whose inputs are missing are listed apart
  (`missing`), not run, and retried once their input exists; judge settings of the after-the-fact
  `harness judge` step (prompts, num_prompts, reference) are not in it.
- every stage that computes with a model: the engine the cell's `engine:` block resolved to on the
  planning machine (`CellConfig.engine`, pinned at load), as much of it as the result depends on: the
  precision (`ResolvedEngine.training_key()`) for train_reward_model, reference_logps and train_policy, the
  whole engine (`key()`: kind, batching, a server's model) for evaluate (and its best-of-N samples) and for
  algorithms that generate through it while training (`AlgorithmSpec.rollout_engine`: PPO). prepare_data has
  none. The pinned settings travel with the stage's spec (`spec()["engine"]`), so a worker runs the planned
  engine (`stage_engine`), never its own "auto".
- reference_logps (harness/reference_logps.py): the reference model, the data stage, max length, truncation
  and precision of the DPO-family cells (`AlgorithmSpec.reference_logps`) that share them; their
  train_policy stages take it as input `reference_logps` instead of each running the reference pass.
`STAGE_VERSIONS` versions each executor's own code; bump a kind's version when it changes what it
produces (a task's own changes are in its fingerprint).
"""

from __future__ import annotations

import gc
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import cache, resume
from harness.generation import EngineSettings
from harness.grid import Cell

logger = logging.getLogger(__name__)

# Optional file in a stage folder: {tag: value} the runner sets on the stage's MLflow run.
STAGE_TAGS_FILE = "tags.json"

# prepare_data 2: the raw source in the key, checked at execution. train_reward_model 2: also scores
# RewardBench when its data is local; 3: the seeded held-out split that never leaves a side empty.
# train_policy 2, evaluate 3: generation ignores a checkpoint's generation_config sampling settings, and PPO
# zeroes functional dropout (attention_dropout); both change what models that ship such settings produce.
# evaluate 4: per-task fingerprints, missing tasks apart, finished tasks reused from the task store.
STAGE_VERSIONS = {"prepare_data": 2, "train_reward_model": 3, "train_policy": 2, "evaluate": 4,
                  "reference_logps": 1}

# Stages that train (and so checkpoint mid-stage and can be resumed or stopped: `harness.resume`).
TRAINING_KINDS = ("train_reward_model", "train_policy")

# Default Ray resource requests per kind (a user on a GPU cluster overrides with `resources:`).
DEFAULT_RESOURCES = {
    "prepare_data": {"num_cpus": 1},
    "train_reward_model": {"num_cpus": 1},
    "train_policy": {"num_cpus": 1},
    "evaluate": {"num_cpus": 1},
    "reference_logps": {"num_cpus": 1},
}

# The key, in the config an executor receives, of the stage's pinned engine settings (`execute_config`).
ENGINE_SETTINGS = "engine_settings"


@dataclass
class Stage:
    kind: str
    config: dict[str, Any]
    inputs: dict[str, Stage] = field(default_factory=dict)
    key: str = ""
    # Plan-time notes, not part of the key: evaluate's {task: why it is not run} (for --dry-run).
    missing: dict[str, str] = field(default_factory=dict)
    # The cell's engine settings with "auto" resolved at plan time (`EngineSettings.pinned`), for the worker;
    # only the part in `config["engine"]` changes the result (a server's URL or concurrency does not).
    engine: EngineSettings | None = None
    # Training stages: when to save resume checkpoints ({"minutes", "steps"}, `harness.resume.Settings`).
    # Not part of the key: when work is saved never changes what is computed.
    checkpointing: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.key = cache.stage_key(
            self.kind, STAGE_VERSIONS[self.kind], self.config,
            {role: f"{s.kind}/{s.key}" for role, s in self.inputs.items()},
        )

    @property
    def id(self) -> str:
        return f"{self.kind}/{self.key}"

    @property
    def path(self) -> Path:
        return cache.stage_dir(self.kind, self.key)

    @property
    def complete(self) -> bool:
        return cache.is_complete(self.kind, self.key)

    @property
    def label(self) -> str:
        return _spec_label({"kind": self.kind, "config": self.config})

    def spec(self) -> dict[str, Any]:
        """A plain-data description a remote worker can execute (no live objects)."""
        spec = {"kind": self.kind, "key": self.key, "config": self.config,
                "inputs": {role: {"kind": s.kind, "key": s.key} for role, s in self.inputs.items()}}
        if self.engine is not None:
            spec["engine"] = self.engine.model_dump(mode="json")
        if self.checkpointing is not None:
            spec["checkpointing"] = self.checkpointing
        return spec


@dataclass
class CellPlan:
    cell: Cell
    stages: list[Stage]  # topological order; the last one is the cell's evaluation

    @property
    def key(self) -> str:
        """Identity of the cell's content: the key of its final stage (covers every upstream input)."""
        return self.stages[-1].key

    def stage(self, kind: str) -> Stage | None:
        return next((s for s in self.stages if s.kind == kind), None)


def _data_stage(ref: Any, seed: int) -> Stage:
    from datasets_registry.core import source_fingerprint

    # The raw input it will read and the loader's code, resolved now: other rows, an edited raw file or
    # a changed loader is another stage (and so is everything downstream of it).
    return Stage("prepare_data", {"name": ref.name, "seed": ref.seed if ref.seed is not None else seed,
                                  "max_rows": ref.max_rows, "source": source_fingerprint(ref.name)})


def _reward_model_stage(rm: Any, cell_seed: int, engine: EngineSettings) -> tuple[Stage, Stage]:
    """(data stage, train_reward_model stage) of a reward model trained by the grid (`rm.dataset` set), at the
    precision of the cell's (pinned) `engine`."""
    from harness.config_fields import resolved_fields
    from harness.reward_model import RewardModelConfig, rewardbench_fingerprint

    seed = rm.seed if rm.seed is not None else cell_seed  # the RM's training seed; its data is the cell's
    rm_data = _data_stage(rm.dataset, cell_seed)
    rm_train = resolved_fields(RewardModelConfig(**rm.train))
    # The RewardBench data's hash (None = absent): the stage is redone when the data appears or changes.
    return rm_data, Stage("train_reward_model", {"base": rm.base, "train": rm_train,
                                                 "seed": seed, "rewardbench": rewardbench_fingerprint(),
                                                 "engine": engine.resolved().training_key()},
                          {"data": rm_data}, engine=engine)


@dataclass
class RewardPlan:
    """A cell's reward as stages: the RM stages to run (with their data), the inputs a consumer stage takes
    (role -> RM stage) and the plain-data part of the reward (None: one trained RM, the input itself).

    config: {"path": P} a given RM; {"verifier": V, "format_weight": w}; {"ensemble": [{"input": role} |
    {"path": P}], "combine": c[, "uwo_lambda": l]} whose trained members are the inputs `reward_model.<i>`."""

    stages: list[Stage] = field(default_factory=list)
    inputs: dict[str, Stage] = field(default_factory=dict)
    config: dict[str, Any] | None = None


def reward_plan(rm: Any, cell_seed: int, engine: EngineSettings, role: str = "reward_model") -> RewardPlan:
    """`role` names the input(s) of the trained RM(s): `role`, or `role.<i>` for ensemble members."""
    plan = RewardPlan()
    if rm.dataset is not None:
        rm_data, rm_stage = _reward_model_stage(rm, cell_seed, engine)
        plan.stages, plan.inputs = [rm_data, rm_stage], {role: rm_stage}
    elif rm.path is not None:
        plan.config = {"path": rm.path}
    elif rm.verifier is not None:
        plan.config = {"verifier": rm.verifier, "format_weight": rm.format_weight}
    else:
        members: list[dict[str, str]] = []
        for i, member in enumerate(rm.ensemble):
            if member.dataset is not None:
                rm_data, rm_stage = _reward_model_stage(member, cell_seed, engine)
                plan.stages += [rm_data, rm_stage]
                plan.inputs[f"{role}.{i}"] = rm_stage
                members.append({"input": f"{role}.{i}"})
            else:
                members.append({"path": member.path})
        plan.config = {"ensemble": members, "combine": rm.combine,
                       **({"uwo_lambda": rm.uwo_lambda} if rm.combine == "uwo" else {})}
    return plan


def _task_uses(name: str) -> tuple[str, ...]:
    from harness.evaluation import TASKS

    return TASKS.get(name).used_inputs


def _task_group(name: str) -> str:
    from harness.evaluation import TASKS

    return TASKS.get(name).group


def _plan_tasks(cfg: Any, task_names: list[str]) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """({task: fingerprint} ready to run, {task: why not}) for a cell's tasks, resolved now."""
    from harness.evaluation.base import judge_endpoint, plan_tasks

    return plan_tasks(task_names, cfg.eval.settings, judge=judge_endpoint(cfg.judge.model_dump()) if cfg.judge else None,
                      has_reference=True,
                      # tasks that score with a reward model take one RM (a verifier or an ensemble is none)
                      has_reward_model=cfg.reward_model is not None and cfg.reward_model.is_single_model)


def plan_cell(cell: Cell) -> CellPlan:
    from harness.evaluation.base import judge_endpoint

    cfg = cell.config
    engine = cfg.engine  # pinned when the cell was loaded: resolving it again gives the same choice anywhere
    resolved_engine = engine.resolved()
    stages: list[Stage] = []
    policy_stage: Stage | None = None
    rewarded_by = reward_plan(cfg.reward_model, cfg.seed, engine) if cfg.reward_model is not None else RewardPlan()
    if cfg.algorithm is not None:
        inputs: dict[str, Stage] = {}
        if cfg.dataset is not None:
            inputs["data"] = _data_stage(cfg.dataset, cfg.seed)
        if cfg.prompts is not None:
            inputs["prompts"] = _data_stage(cfg.prompts, cfg.seed)
        stages.extend(inputs.values())
        stages.extend(rewarded_by.stages)  # trained even when only the evaluation uses it (table3 groups by it)
        rm_config: dict[str, Any] | None = None
        from harness.algorithms import ALGORITHMS

        algorithm = ALGORITHMS.get(cfg.algorithm.name)
        if algorithm.needs_reward:
            # (e.g. DPO with an RM only for evaluation: its training must not depend on the RM)
            inputs.update(rewarded_by.inputs)
            rm_config = rewarded_by.config
        resolved_algorithm = cfg.algorithm.resolved()
        if algorithm.reference_logps and "data" in inputs:
            reference = _reference_stage(cfg.model, resolved_algorithm, inputs["data"], engine)
            if reference is not None:
                stages.append(reference)
                inputs["reference_logps"] = reference
        policy_config: dict[str, Any] = {
            "model": cfg.model, "algorithm": resolved_algorithm, "seed": cfg.seed,
            # `reward_function` stays (always None: verifiers are `reward_model` configs now) so that the keys
            # of the cells that had none are unchanged.
            "reward_function": None, "reward_model": rm_config,
            # The precision it trains at; the whole engine when it also generates through it (PPO's rollouts).
            "engine": resolved_engine.key() if algorithm.rollout_engine else resolved_engine.training_key(),
        }
        if cfg.eval.checkpoint_every is not None:
            # Only when asked, so the keys (and cached models) of every other cell stay as they were.
            policy_config["checkpoint_every"] = cfg.eval.checkpoint_every
        policy_stage = Stage("train_policy", policy_config, inputs, engine=engine)
        stages.append(policy_stage)
    bon = cfg.eval.best_of_n
    ready, missing = _plan_tasks(cfg, cfg.eval.tasks)
    uses_rm = any("reward_model" in _task_uses(name) for name in ready) or bon is not None
    if policy_stage is None and uses_rm:
        # The SFT baseline's samples scored by the same reward model as the policies' (seed 000 plots),
        # or the baseline's best-of-N picked by it.
        stages.extend(rewarded_by.stages)
    eval_inputs: dict[str, Stage] = {}
    if policy_stage is not None:
        eval_inputs["policy"] = policy_stage
    if uses_rm:
        eval_inputs.update(rewarded_by.inputs)
    uses_judge = any("judge" in _task_uses(name) for name in ready)
    eval_config = {
        "tasks": ready,  # {task: resolve_task fingerprint}: what each result depends on
        # Requested tasks whose input is missing now: not run; their settings, to say why at run time.
        "missing": {name: cfg.eval.settings.get(_task_group(name)) for name in missing},
        "limit": cfg.eval.limit, "batch_size": cfg.eval.batch_size, "seed": cfg.seed,
        # The starting model is both the evaluated model of the baseline and the KL reference.
        "reference_model": cfg.model,
        "model": cfg.model if policy_stage is None else None,
        "reward_model_path": (cfg.reward_model.path if uses_rm and cfg.reward_model and cfg.reward_model.path
                              else None),
        # Only the endpoint, and only for tasks that call it (`harness judge`'s fields are not here).
        "judge": judge_endpoint(cfg.judge.model_dump()) if uses_judge and cfg.judge else None,
        # What generates and scores (kind, precision, batching; a server's model): it changes the answers.
        "engine": resolved_engine.key(),
    }
    if policy_stage is not None and cfg.eval.checkpoint_every is not None:
        eval_config["checkpoint_every"] = cfg.eval.checkpoint_every  # only when asked, as best_of_n below
        # Step 0 of the curves is the SFT model under the same eval settings: the evaluate stage of this
        # cell's baseline (same key as the grid's own baseline cell, so shared and run once).
        baseline = Cell(f"{cell.name}/sft", cfg.model_copy(update={"algorithm": None}), {})
        eval_inputs["sft"] = plan_cell(baseline).stages[-1]
    if policy_stage is not None and cfg.eval.checkpoint_every is not None and cfg.monitor.enabled:
        eval_config["monitor"] = _monitor_plan(cfg, policy_stage, rewarded_by, stages, eval_inputs)
    if uses_rm and rewarded_by.config is not None and "path" not in rewarded_by.config:
        eval_config["reward"] = rewarded_by.config  # a verifier or an ensemble (only then: keys of the others kept)
    if bon is not None:
        # Only when asked: the keys (and cached results) of every other evaluation stay as they were.
        bon_ready, bon_missing = _plan_tasks(cfg, bon.tasks)
        eval_config["best_of_n"] = {**bon.model_dump(exclude={"tasks"}), "limit": bon.limit or cfg.eval.limit,
                                    "tasks": bon_ready,
                                    "missing": {name: cfg.eval.settings.get(_task_group(name)) for name in bon_missing}}
        if any("judge" in _task_uses(name) for name in bon_ready) and cfg.judge:
            eval_config["judge"] = judge_endpoint(cfg.judge.model_dump())
        missing.update({f"bon/{name}": f"best-of-N {reason}" for name, reason in bon_missing.items()})
    stages.append(Stage("evaluate", eval_config, eval_inputs, missing=missing, engine=engine))
    # De-duplicate (the same data stage can feed both the policy and the reward model).
    unique: dict[str, Stage] = {}
    for stage in stages:
        unique.setdefault(stage.id, stage)
        if stage.kind in TRAINING_KINDS:
            stage.checkpointing = {"minutes": cfg.train.checkpoint_minutes, "steps": cfg.train.checkpoint_steps}
    return CellPlan(cell, list(unique.values()))


def _monitor_plan(cfg: Any, policy: Stage, rewarded_by: RewardPlan, stages: list[Stage],
                  eval_inputs: dict[str, Stage]) -> dict[str, Any]:
    """The over-optimisation monitor's part of the evaluate stage (harness/monitor.py): its settings, the
    proxy (the training reward: the policy's own reward inputs) and the gold signal (its RM stages as
    `monitor_gold[.<i>]` inputs), and its prompts (`monitor_prompts`: a named set, else the training one)."""
    from harness.algorithms import ALGORITHMS

    monitor = cfg.monitor
    prompts = _data_stage(monitor.prompts, cfg.seed) if monitor.prompts else (
        policy.inputs.get("prompts") or policy.inputs["data"])
    stages.append(prompts)
    eval_inputs["monitor_prompts"] = prompts
    config: dict[str, Any] = {**monitor.model_dump(exclude={"enabled", "gold", "prompts"}), "proxy": None, "gold": None}
    if ALGORITHMS.get(cfg.algorithm.name).needs_reward and cfg.reward_model is not None:
        eval_inputs.update(rewarded_by.inputs)
        config["proxy"] = {"role": "reward_model", "reward": rewarded_by.config}
    if monitor.gold == "judge":
        config["gold"] = "judge"
    elif monitor.gold is not None:
        gold = reward_plan(monitor.gold, cfg.seed, cfg.engine, role="monitor_gold")
        stages.extend(gold.stages)
        eval_inputs.update(gold.inputs)
        config["gold"] = {"role": "monitor_gold", "reward": gold.config}
    return config


def _reference_stage(model: str, algorithm: dict[str, Any], data: Stage, engine: EngineSettings) -> Stage | None:
    """The `reference_logps` stage of a DPO-family cell (shared by every cell with the same reference model,
    data, max length, truncation and precision), or None when its trainer computes its own."""
    from harness import reference_logps

    config = reference_logps.stage_config(model, algorithm, engine.resolved().training_key())
    return None if config is None else Stage(reference_logps.KIND, config, {"data": data}, engine=engine)


def unique_stages(plans: list[CellPlan]) -> list[Stage]:
    """All distinct stages of the grid in a dependency-respecting order."""
    ordered: dict[str, Stage] = {}

    def visit(stage: Stage) -> None:
        for dep in stage.inputs.values():
            visit(dep)
        ordered.setdefault(stage.id, stage)

    for plan in plans:
        for stage in plan.stages:
            visit(stage)
    return list(ordered.values())


# ---------------------------------------------------------------------------------------------
# Executors: run(config, inputs: role -> published input folder, out: working folder) -> summary metrics
# ---------------------------------------------------------------------------------------------

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
    by_group = {_task_group(name): values for name, values in groups.items()}
    return settings_from_config(by_group, list(groups))


def _eval_context(config: dict[str, Any], model_path: str, out_dir: Path, reward_model_path: str | None) -> Any:
    """The evaluate stage's settings (limit, seed, judge, reference, RM, task settings) applied to one model."""
    from harness.evaluation import EvalContext
    from harness.models import resolve_model

    return EvalContext(
        model_path=model_path, out_dir=out_dir, limit=config["limit"], seed=config["seed"],
        batch_size=config["batch_size"], judge=config.get("judge"),
        reference_path=resolve_model(config["reference_model"]), reward_model_path=reward_model_path,
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
    # `rm_reward` scores with one reward model; a verifier or an ensemble has none to give it.
    reward_model_path = reward.model_path if reward is not None else None
    ctx = _eval_context(config, model_path, out / "artifacts" / "samples", reward_model_path)
    metrics, results = _run_planned(ctx, config, store=True)
    from harness.generation import record_engine

    # What generated and scored: the engine built (its own record), else the planned settings (no task generated).
    record_engine(out, getattr(ctx._generator, "resolved", None) or ctx.engine.resolved())
    del ctx  # frees the evaluated model's generator before another model (a checkpoint, the SFT sampler) loads
    gc.collect()
    tags = evaluation_tags(results)  # which tasks have no result and why, which were reused
    if config.get("checkpoint_every") and "policy" in inputs:
        rows = _evaluate_checkpoints(config, inputs["policy"], inputs.get("sft"), reward_model_path, metrics, out)
        if config.get("monitor"):
            _monitor(config, inputs, rows, metrics, out)
        from harness.checkpoints import HISTORY_FILE

        with (out / HISTORY_FILE).open("w") as fh:
            for row in rows:
                fh.write(json.dumps(row, sort_keys=True) + "\n")
    if config.get("best_of_n"):
        if reward is None:  # the config validator forbids it; a hand-made spec could still
            raise ValueError("best-of-N needs the cell's reward model, and this evaluate stage has none")
        bon_metrics, bon_results = _best_of_n(config, reward, out)
        metrics.update(bon_metrics)
        tags.update(evaluation_tags(bon_results, best_of_n=True))
    _write_tags(out, tags)
    return metrics


def _evaluate_checkpoints(config: dict[str, Any], policy_dir: Path, sft_dir: Path | None,
                          reward_model_path: str | None, final: dict[str, float], out: Path) -> list[dict[str, Any]]:
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
        ctx = _eval_context(config, str(folder), out / "artifacts" / "checkpoints" / f"step-{step}", reward_model_path)
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


def _best_of_n(config: dict[str, Any], reward: Any, out: Path) -> tuple[dict[str, float], dict[str, Any]]:
    """`bon/<task>/<metric>`: the tasks on the reward model's picks among N samples of the SFT model.

    The SFT model is the cell's starting model (`reference_model`), whatever policy the cell trained;
    its samples come from the shared cache (results/bon_cache), so every RM and cell picks from the same
    candidates and they are generated once.
    """
    from harness.best_of_n import BestOfNConfig, best_of_n_tasks, default_cache
    from harness.engines import make_generator
    from harness.models import resolve_model

    bon = config["best_of_n"]
    sft_path = resolve_model(config["reference_model"])
    cache, model_key = default_cache(sft_path)
    settings = BestOfNConfig(n=bon["n"], temperature=bon["temperature"], top_p=bon["top_p"], seed=bon["seed"])
    base = make_generator(sft_path, batch_size=config["batch_size"], engine=stage_engine(config))
    # Not through the task store: the picks depend on the reward model and the candidates, which the
    # task fingerprint of the SFT model does not say; the candidates themselves are cached.
    found = best_of_n_tasks(base, sft_path, reward, _planned_names(bon), out / "artifacts" / "bon",
                            cache, model_key, settings, limit=bon["limit"], batch_size=config["batch_size"],
                            task_settings=_task_settings(bon), judge=config.get("judge"), planned=bon["tasks"])
    results = _checked_results(out / "artifacts" / "bon", bon)
    # No RM label in the key: a cell has one reward model (the reports' `bon/<task>/score` shape).
    metrics = {f"bon/{key}": value for key, value in found.items()}
    metrics["bon/cache_hits"] = float(cache.hits)
    metrics["bon/cache_misses"] = float(cache.misses)
    return metrics, results


EXECUTORS: dict[str, Callable[[dict[str, Any], dict[str, Path], Path], dict[str, float]]] = {
    "prepare_data": run_prepare_data,
    "train_reward_model": run_train_reward_model,
    "train_policy": run_train_policy,
    "evaluate": run_evaluate,
    "reference_logps": run_reference_logps,
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
                message = f"resumed {_spec_label(spec)} {key} from step {resumed_from}"
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


def _spec_label(spec: dict[str, Any]) -> str:
    """`Stage.label` from a plain-data spec (e.g. `train_policy[dpo]`)."""
    config = spec["config"]
    name = config.get("name") or (config.get("algorithm") or {}).get("name") or config.get("model", "")
    return f"{spec['kind']}[{name}]" if name else spec["kind"]


def _error_text(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
