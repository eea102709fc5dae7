"""Planning: the stage DAG of a grid cell as content-addressed `Stage`s. Nothing here runs a stage: the
executors (`harness.executors`) do, from a stage's plain-data `spec()`.

    prepare_data ─┬─> train_reward_model ─┐
                  ├─> reference_logps ────┤
                  └───────────────────────┴─> train_policy ──> evaluate
                                               sample_candidates ─┘  (cells with eval.best_of_n)

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
  whole engine (`key()`: kind, batching, a server's model) for evaluate and sample_candidates and for
  algorithms that generate through it while training (`AlgorithmSpec.rollout_engine`: PPO). prepare_data has
  none. The pinned settings travel with the stage's spec (`spec()["engine"]`), so a worker runs the planned
  engine (`harness.executors.stage_engine`), never its own "auto".
- reference_logps (harness/reference_logps.py): the reference model, the data stage, max length, truncation
  and precision of the DPO-family cells (`AlgorithmSpec.reference_logps`) that share them; their
  train_policy stages take it as input `reference_logps` instead of each running the reference pass.
- sample_candidates (harness/sample_candidates.py): best-of-N's N samples per prompt of the SFT model, keyed by
  the model's content, the sampling settings, the engine and the best-of-N tasks' fingerprints and limit; every
  cell with the same ones (whatever its reward model, seed or policy) shares it as its evaluate stage's input
  `candidates`, so every reward model picks among the same candidates.
`STAGE_VERSIONS` versions each executor's own code; bump a kind's version when it changes what it
produces (a task's own changes are in its fingerprint).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import cache
from harness.generation import EngineSettings
from harness.grid import Cell

# prepare_data 2: the raw source in the key, checked at execution. train_reward_model 2: also scores
# RewardBench when its data is local; 3: the seeded held-out split that never leaves a side empty.
# train_policy 2, evaluate 3: generation ignores a checkpoint's generation_config sampling settings, and PPO
# zeroes functional dropout (attention_dropout); both change what models that ship such settings produce.
# evaluate 4: per-task fingerprints, missing tasks apart, finished tasks reused from the task store.
STAGE_VERSIONS = {"prepare_data": 2, "train_reward_model": 3, "train_policy": 2, "evaluate": 4,
                  "reference_logps": 1, "sample_candidates": 1}

# Stages that train (and so checkpoint mid-stage and can be resumed or stopped: `harness.resume`).
TRAINING_KINDS = ("train_reward_model", "train_policy")


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
        return spec_label({"kind": self.kind, "config": self.config})

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


def task_uses(name: str) -> tuple[str, ...]:
    from harness.evaluation import TASKS

    return TASKS.get(name).used_inputs


def task_group(name: str) -> str:
    from harness.evaluation import TASKS

    return TASKS.get(name).group


def _plan_tasks(cfg: Any, task_names: list[str], settings: dict[str, Any] | None = None,
                ) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """({task: fingerprint} ready to run, {task: why not}) for a cell's tasks, resolved now (under `settings`
    by group, default the cell's)."""
    from harness.evaluation.base import judge_endpoint, plan_tasks

    return plan_tasks(task_names, cfg.eval.settings if settings is None else settings, judge=judge_endpoint(cfg.judge.model_dump()) if cfg.judge else None,
                      has_reference=True,
                      # tasks that score with the cell's reward take any: a reward model, an ensemble or a verifier
                      has_reward_model=cfg.reward_model is not None)


def _best_of_n_settings(settings: dict[str, Any], tasks: list[str]) -> dict[str, Any]:
    """The cell's task settings with each best-of-N task's `best_of_n_settings` over its group's (a pick is
    one answer per prompt: the coding tasks score pass@1 of it)."""
    from harness.evaluation.base import TASKS

    out = dict(settings)
    for name in tasks:
        spec = TASKS.get(name)
        if spec.best_of_n_settings:
            out[spec.group] = {**(out.get(spec.group) or {}), **spec.best_of_n_settings}
    return out


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
    uses_rm = any("reward_model" in task_uses(name) for name in ready) or bon is not None
    if policy_stage is None and uses_rm:
        # The SFT baseline's samples scored by the same reward model as the policies' (seed 000 plots),
        # or the baseline's best-of-N picked by it.
        stages.extend(rewarded_by.stages)
    eval_inputs: dict[str, Stage] = {}
    if policy_stage is not None:
        eval_inputs["policy"] = policy_stage
    if uses_rm:
        eval_inputs.update(rewarded_by.inputs)
    uses_judge = any("judge" in task_uses(name) for name in ready)
    eval_engine = cfg.eval.engine or engine  # e.g. vLLM for the benchmarks while PPO's rollouts stay in-process
    eval_config = {
        "tasks": ready,  # {task: resolve_task fingerprint}: what each result depends on
        # Requested tasks whose input is missing now: not run; their settings, to say why at run time.
        "missing": {name: cfg.eval.settings.get(task_group(name)) for name in missing},
        "limit": cfg.eval.limit, "batch_size": cfg.eval.batch_size, "seed": cfg.seed,
        # The starting model is both the evaluated model of the baseline and the KL reference.
        "reference_model": cfg.model,
        "model": cfg.model if policy_stage is None else None,
        "reward_model_path": (cfg.reward_model.path if uses_rm and cfg.reward_model and cfg.reward_model.path
                              else None),
        # Only the endpoint, and only for tasks that call it (`harness judge`'s fields are not here).
        "judge": judge_endpoint(cfg.judge.model_dump()) if uses_judge and cfg.judge else None,
        # What generates and scores (kind, precision, batching; a server's model): it changes the answers.
        "engine": eval_engine.resolved().key(),
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
        bon_settings = _best_of_n_settings(cfg.eval.settings, bon.tasks)
        bon_ready, bon_missing = _plan_tasks(cfg, bon.tasks, bon_settings)
        eval_config["best_of_n"] = {**bon.model_dump(exclude={"tasks"}), "limit": bon.limit or cfg.eval.limit,
                                    "tasks": bon_ready,
                                    "missing": {name: bon_settings.get(task_group(name)) for name in bon_missing}}
        bon_judge = None
        if any("judge" in task_uses(name) for name in bon_ready) and cfg.judge:
            eval_config["judge"] = bon_judge = judge_endpoint(cfg.judge.model_dump())
        if bon_ready:  # the candidates the cell's reward model picks among (shared by every cell sampling the same)
            candidates = _candidates_stage(cfg, eval_config["best_of_n"], bon_judge, eval_engine)
            stages.append(candidates)
            eval_inputs["candidates"] = candidates
        missing.update({f"bon/{name}": f"best-of-N {reason}" for name, reason in bon_missing.items()})
    stages.append(Stage("evaluate", eval_config, eval_inputs, missing=missing, engine=eval_engine))
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


def _candidates_stage(cfg: Any, bon: dict[str, Any], judge: dict[str, Any] | None, engine: EngineSettings) -> Stage:
    """The `sample_candidates` stage of a best-of-N cell (`bon`: its evaluate stage's `best_of_n` block): N samples
    of the cell's starting model (the SFT policy, whatever policy the cell trains) per request of the ready tasks."""
    from harness import sample_candidates

    config = sample_candidates.stage_config(cfg.model, bon, bon["tasks"], bon["limit"], cfg.eval.batch_size, judge,
                                            engine.resolved().key())
    return Stage(sample_candidates.KIND, config, engine=engine)


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


def spec_label(spec: dict[str, Any]) -> str:
    """`Stage.label` from a plain-data spec (e.g. `train_policy[dpo]`)."""
    config = spec["config"]
    name = config.get("name") or (config.get("algorithm") or {}).get("name") or config.get("model", "")
    return f"{spec['kind']}[{name}]" if name else spec["kind"]

