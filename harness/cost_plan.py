"""Cost before compute for a planned grid: every stage's resolved config mapped to a `harness.cost`
workload, estimated on a device profile, per stage, per cell and in total (`harness run GRID --dry-run
--device-profile NAME [--usd-per-hour R]`).

How each stage kind maps (docs/cost.md, "hooks"):
- `prepare_data` -> `DataPreparation(rows, tokens)`: host-side, no device time;
- `train_reward_model` -> `PairwiseTraining("reward_model", base, pairs)`: the data minus its held-out share,
  `num_train_epochs` / `max_steps`, batch per device x accumulation x processes, `max_length`; the
  held-out pairs and RewardBench (when planned) are a forward each;
- `train_policy` -> `PairwiseTraining(algorithm, ...)` for the offline algorithms (DPO and family, KTO, SimPO,
  ORPO; the reference precomputed or per step as the config says, none when the cell's shared
  `reference_logps` stage is its input), `OnlineTraining(...)` for PPO, GRPO, RLOO and online DPO
  (prompts, rollouts, generation budget, reward model and value model shapes; the reward: a trained or given
  RM's shape, each member's of an ensemble, none for a verifier);
- `reference_logps` -> `PairwiseTraining(..., reference_only=True)`: one reference forward over the pairs;
- `evaluate` -> `Evaluation(model, tasks)`: one `EvalTask` per planned task from `harness/cost_inputs.yaml`
  (benchmark sizes, prompt lengths, generation budgets; each task's resolved `max_new_tokens` and
  `n_samples` settings win), times the checkpoints evaluated (`eval.checkpoint_every`); tasks not planned (a
  missing input) are not counted; best-of-N's reward forward over the N candidates (not their generation);
- `sample_candidates` -> `Evaluation(SFT model, tasks)` with best-of-N's N samples per prompt.

Rows: a cached `prepare_data` stage's kept rows; else `max_rows` against the dataset's full size (the
registry's `downsample_to` / `expected_size` / `paper_size`), or against the measured count when the plan
reads the very raw input that was measured (`cost_inputs.yaml`: the local sample, not the full dataset). Token lengths: measured per dataset on its local
sample with the SmolLM2 tokenizer (`python -m harness.cost_plan --measure NAME ...` rewrites the entries);
a dataset never measured uses UltraFeedback's, with a note.

The same mapping prices a logged cell from its MLflow stage specs (`resolved_config.json`), which is how
the reports put a compute column beside Tables 1, 2 and 4 (`reports/compute.py`).
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from harness import cost, cost_profiles
from harness.cost import (
    DataPreparation,
    EvalTask,
    Evaluation,
    OnlineTraining,
    PairwiseTraining,
    PreferencePairs,
    StageEstimate,
    Workload,
)
from harness.cost_profiles import CostInputError, DeviceProfile

COST_INPUTS_FILE = Path(__file__).with_name("cost_inputs.yaml")
DEFAULT_DEVICE = "cpu-2core"
# Pairs RewardBench scores when its data is there (the filtered set; the prior sets are not counted).
REWARDBENCH_PAIRS = 2985
# Engines whose batches refill as answers finish (continuous batching): a batch does not wait for its
# longest answer, so an evaluation decodes about the mean answer length, not the budget.
CONTINUOUS_ENGINES = ("vllm", "openai")


# ------------------------------------------------------------------------------------------------
# Inputs: measured token lengths and benchmark shapes
# ------------------------------------------------------------------------------------------------

@functools.cache
def cost_inputs(path: str | None = None) -> dict[str, Any]:
    file = Path(path) if path else COST_INPUTS_FILE
    raw = yaml.safe_load(file.read_text()) or {}
    for section in ("datasets", "eval_tasks", "fallback"):
        if not isinstance(raw.get(section), dict):
            raise CostInputError(f"{file}: expected a `{section}` mapping")
    return raw


@dataclass(frozen=True)
class TokenLengths:
    prompt: float
    chosen: float
    rejected: float
    note: str = ""  # set when these are not the dataset's own measured lengths


def token_lengths(name: str) -> TokenLengths:
    entry = cost_inputs()["datasets"].get(name)
    if entry is None:
        fb = cost_inputs()["fallback"]
        return TokenLengths(fb["prompt_tokens"], fb["chosen_tokens"], fb["rejected_tokens"],
                            f"{name}: token lengths not measured here, {fb['source']}'s assumed")
    answer = entry.get("chosen_tokens", entry.get("answer_tokens", cost_inputs()["fallback"]["chosen_tokens"]))
    return TokenLengths(entry["prompt_tokens"], answer, entry.get("rejected_tokens", answer))


def _source_digest(source: dict[str, Any]) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(source.get("raw"), sort_keys=True).encode()).hexdigest()[:16]


def data_rows(config: dict[str, Any], cached_rows: int | None = None, full_data: bool = False) -> tuple[int, str]:
    """(rows after curation, how that number was found) for a `prepare_data` stage config. `full_data`:
    count the dataset at its full curated size even where the plan reads a local sample."""
    from datasets_registry import DATASETS

    name, max_rows = config["name"], config.get("max_rows")
    if cached_rows is not None:
        return cached_rows, ""
    spec = DATASETS.get(name)
    full = spec.downsample_to or spec.expected_size or spec.paper_size
    measured = cost_inputs()["datasets"].get(name, {})
    source = config.get("source") or {}
    if source and measured.get("source_digest") == _source_digest(source) and not (full_data and full):
        full = measured["rows"]  # the local sample the plan will read, not the dataset at full scale
    if max_rows is not None:
        return (min(max_rows, full) if full else max_rows), ""
    if full:
        return int(full), ""
    rows = int(cost_inputs()["fallback"]["rows"])
    return rows, f"{name}: row count unknown until prepared, {rows:,} assumed"


# ------------------------------------------------------------------------------------------------
# Stage -> workload
# ------------------------------------------------------------------------------------------------

@dataclass
class StageView:
    """What the mapping reads of a stage: a planned `harness.planning.Stage` has these attributes; a logged
    cell's stage specs (`resolved_config.json`) are turned into these (`views_from_specs`)."""

    kind: str
    key: str
    config: dict[str, Any]
    inputs: dict[str, StageView] = field(default_factory=dict)

    @property
    def label(self) -> str:
        name = self.config.get("name") or (self.config.get("algorithm") or {}).get("name") or self.config.get("model", "")
        return f"{self.kind}[{name}]" if name else self.kind


def views_from_specs(specs: Sequence[dict[str, Any]]) -> list[StageView]:
    """StageViews of a cell's stage specs (each {kind, key, config, inputs: {role: {kind, key}}})."""
    by_id: dict[str, StageView] = {f"{s['kind']}/{s['key']}": StageView(s["kind"], s["key"], s["config"]) for s in specs}
    for spec in specs:
        view = by_id[f"{spec['kind']}/{spec['key']}"]
        for role, ref in (spec.get("inputs") or {}).items():
            found = by_id.get(f"{ref['kind']}/{ref['key']}")
            if found is not None:
                view.inputs[role] = found
    return list(by_id.values())


RowsOf = Callable[[Any], tuple[int, str]]


@dataclass
class Mapping:
    """The context of the mapping: how rows are found, the launch settings per stage kind."""

    rows_of: RowsOf
    launch: dict[str, Any] = field(default_factory=dict)  # kind -> harness.launch.StageLaunch
    notes: list[str] = field(default_factory=list)
    kind_devices: bool = True  # price a kind on its launch block's device_profile when it names one

    def rows(self, data_stage: Any) -> int:
        rows, note = self.rows_of(data_stage)
        if note:
            self.notes.append(note)
        return rows

    def processes(self, kind: str) -> int:
        spec = self.launch.get(kind)
        return spec.accelerate.num_processes if spec is not None and spec.accelerate is not None else 1

def _lengths(stage: Any, mapping: Mapping) -> TokenLengths:
    found = token_lengths(stage.config["name"])
    if found.note:
        mapping.notes.append(found.note)
    return found


def _pairs(stage: Any, mapping: Mapping, rows: int | None = None) -> PreferencePairs:
    lengths = _lengths(stage, mapping)
    return PreferencePairs(rows if rows is not None else mapping.rows(stage), lengths.prompt, lengths.chosen,
                           lengths.rejected)


def _shape(name: str, mapping: Mapping, fallback: Any = None) -> Any:
    try:
        return cost_profiles.model_shape(name)
    except CostInputError as exc:
        if fallback is None:
            raise
        mapping.notes.append(f"{exc}: estimated with the policy's shape")
        return fallback


def reward_model_workload(stage: Any, mapping: Mapping) -> PairwiseTraining:
    from harness.reward_model import RewardModelConfig

    train = RewardModelConfig(**stage.config["train"])
    data = stage.inputs["data"]
    rows = mapping.rows(data)
    heldout = max(1, round(rows * train.heldout_fraction))
    scored = heldout + (REWARDBENCH_PAIRS if stage.config.get("rewardbench") else 0)
    return PairwiseTraining(
        "reward_model", cost_profiles.model_shape(stage.config["base"]), _pairs(data, mapping, rows - heldout),
        epochs=train.num_train_epochs,
        batch_size=train.per_device_train_batch_size * train.gradient_accumulation_steps
        * mapping.processes("train_reward_model"),
        max_length=train.max_length, max_steps=train.max_steps, eval_pairs=scored,
        label=f"RM {stage.config['base']} on {data.config['name']}")


def reward_shapes(reward: dict[str, Any] | None, inputs: dict[str, Any], mapping: Mapping, fallback: Any,
                  role: str = "reward_model") -> cost.RewardModels:
    """The models a stage's reward runs, from its planned reward config (`harness.planning.RewardPlan.config`)
    and its inputs: a trained RM (input `role`: its base's shape); a given one (`path`: a folder or a hub id,
    an unknown one priced with `fallback`'s shape and a note); a verifier (None: no model FLOPs); an ensemble
    (each member's shape: trained members are the inputs `role.<i>`)."""
    if role in inputs:
        return cost_profiles.model_shape(inputs[role].config["base"])
    if not reward:
        return None
    if "path" in reward:
        return _shape(reward["path"], mapping, fallback=fallback)
    if "verifier" in reward:
        return None
    if "ensemble" in reward:
        return tuple(cost_profiles.model_shape(inputs[m["input"]].config["base"]) if "input" in m
                     else _shape(m["path"], mapping, fallback=fallback) for m in reward["ensemble"])
    raise CostInputError(f"reward {sorted(reward)}: not a reward model (`path`), a verifier or an ensemble")


def reference_workload(stage: Any, mapping: Mapping) -> PairwiseTraining:
    """The shared `reference_logps` stage (harness/reference_logps.py): one reference forward over the pairs."""
    config = stage.config
    return PairwiseTraining(cost.REFERENCE_PASS, cost_profiles.model_shape(config["model"]), _pairs(stage.inputs["data"], mapping),
                            epochs=1.0, batch_size=config.get("batch_size", 1), max_length=config["max_length"],
                            reference="precomputed", reference_only=True, label=f"reference {config['model']}")


def policy_workload(stage: Any, mapping: Mapping) -> Workload:
    """The workload of a `train_policy` stage, from its algorithm's spec: offline ones train on pairs with
    the spec's reference pass (unless the config or a shared `reference_logps` input decides it); online
    ones sample and update as the spec's `rollouts` shape says."""
    from harness.algorithms import ALGORITHMS

    algo = dict(stage.config["algorithm"])
    name = algo["name"]
    spec = ALGORITHMS.get(name)
    policy = cost_profiles.model_shape(stage.config["model"])
    data = stage.inputs.get("prompts") or stage.inputs.get("data")
    if data is None:
        raise CostInputError(f"{stage.label}: no training data input")
    processes = mapping.processes("train_policy")
    label = f"{name} {stage.config['model']} on {data.config['name']}"
    if not spec.online:
        reference = None
        if "reference_logps" in stage.inputs:  # the shared reference_logps stage ran that pass
            reference = "none"
        elif "precompute_ref_log_probs" in algo:
            reference = "precomputed" if algo["precompute_ref_log_probs"] and processes == 1 else "per_step"
        return PairwiseTraining(
            name, policy, _pairs(data, mapping), epochs=algo.get("num_train_epochs", 1.0),
            batch_size=algo.get("per_device_train_batch_size", 1) * algo.get("gradient_accumulation_steps", 1) * processes,
            max_length=algo.get("max_length", 2048), max_steps=algo.get("max_steps", -1),
            reference=reference or spec.reference_pass, label=label)
    prompts = mapping.rows(data)
    lengths = _lengths(data, mapping)
    reward = reward_shapes(stage.config.get("reward_model"), stage.inputs, mapping, policy)
    try:
        shape = spec.rollouts(algo, processes)
    except KeyError as exc:
        raise CostInputError(f"{stage.label}: no rollout shape for algorithm {name!r} (its config has no {exc}): "
                             "register its AlgorithmSpec with a `rollout_shape`") from None
    value = None
    if spec.trains_value_model:
        value = reward if shape.value_from_reward_model and isinstance(reward, cost_profiles.ModelShape) else policy
    return OnlineTraining(
        name, policy, reward, prompts=prompts, prompt_tokens=lengths.prompt, response_tokens=lengths.chosen,
        max_prompt_length=shape.max_prompt_length, max_new_tokens=shape.max_new_tokens,
        prompt_batch_size=shape.prompt_batch_size, epochs=shape.epochs, max_steps=shape.max_steps,
        rollouts_per_prompt=shape.samples_per_prompt, inner_epochs=shape.inner_epochs, reference=shape.reference,
        value_model=value, generation_batch_size=shape.generation_batch_size, label=label)


def training_steps(work: Workload) -> int:
    """Optimizer steps (PPO: rollout batches) of a training workload: where checkpoints fall."""
    if isinstance(work, PairwiseTraining):
        if work.max_steps > 0:
            return work.max_steps
        return max(1, math.ceil(work.epochs * work.data.pairs / work.batch_size))
    if isinstance(work, OnlineTraining):
        if work.max_steps > 0:
            return work.max_steps
        return max(1, math.ceil(work.epochs * work.prompts / work.prompt_batch_size))
    return 0


def _task_shape(name: str, settings: dict[str, Any], limit: int | None, batch_size: int, engine: str | None,
                samples: int | None = None, scorer: Any = None) -> tuple[EvalTask, str]:
    shapes = cost_inputs()["eval_tasks"]
    note = ""
    shape = shapes.get(name)
    if shape is None:
        shape = shapes["_default"]
        note = f"evaluation task {name!r}: shape not in cost_inputs.yaml, {shape['source']} assumed"
    prompt_tokens = shape.get("prompt_tokens")
    if shape.get("prompt_set"):  # rm_reward, policy_kl: the rows of the prompt set its settings name
        prompt_set = settings.get("prompt_set", "smoke-lowercase-eval")
        measured = cost_inputs()["datasets"].get(prompt_set, {})
        examples = measured.get("rows") or data_rows({"name": prompt_set, "max_rows": None})[0]
        prompt_tokens = token_lengths(prompt_set).prompt
    else:
        examples = int(shape["examples"])
    if limit is not None:
        examples = min(examples, max(limit, int(shape.get("min_examples_with_limit", 1))))
    budget = int(settings.get("max_new_tokens", shape.get("max_new_tokens", 0)))
    mean_new = float(shape.get("mean_new_tokens", budget)) if budget else 0.0
    mean_new = min(mean_new, budget) if budget else 0.0
    n = samples or int(settings.get("n_samples", settings.get("samples_per_prompt", shape.get("samples_per_example", 1))))
    steps = mean_new if engine in CONTINUOUS_ENGINES else None
    task = EvalTask(name, examples * int(shape.get("sequences_per_example", 1)), float(prompt_tokens),
                    max_new_tokens=budget, mean_new_tokens=mean_new or None, samples_per_example=n,
                    scored_tokens=float(shape.get("scored_tokens", 0.0)), batch_size=batch_size,
                    decode_steps_per_batch=steps, scorer=scorer)
    return task, note


def evaluation_workload(stage: Any, mapping: Mapping) -> tuple[Evaluation, int]:
    """(one evaluation of the model, how many times it runs: 1 + the intermediate checkpoints)."""
    config = stage.config
    policy = stage.inputs.get("policy")
    model_name = policy.config["model"] if policy is not None else config["model"]
    model = cost_profiles.model_shape(model_name)
    engine = config["engine"]["kind"]  # the stage's resolved engine (the cell's, or its `eval.engine`)
    # as the executor resolves it: a verifier or an ensemble (`reward`), else one given RM's path
    reward = config.get("reward") or ({"path": config["reward_model_path"]} if config.get("reward_model_path") else None)
    rm_shape = reward_shapes(reward, stage.inputs, mapping, model)
    tasks: list[EvalTask] = []
    for name, fingerprint in config["tasks"].items():
        settings = (fingerprint or {}).get("settings") or {}
        scorer = rm_shape if name == "rm_reward" else (model if name == "policy_kl" else None)
        task, note = _task_shape(name, settings, config.get("limit"), config.get("batch_size", 16), engine,
                                 scorer=scorer)
        tasks.append(task)
        if note:
            mapping.notes.append(note)
    bon = config.get("best_of_n")
    for name, fingerprint in (bon or {}).get("tasks", {}).items():  # the reward's forward over the N candidates
        task, note = _task_shape(name, (fingerprint or {}).get("settings") or {}, bon.get("limit"),
                                 config.get("batch_size", 16), engine, samples=int(bon["n"]), scorer=rm_shape)
        tasks.append(replace(task, name=f"bon/{name}", generated=False))
        mapping.notes.extend([note] if note else [])
    if config.get("missing"):
        mapping.notes.append(f"not counted (inputs missing, not run): {', '.join(sorted(config['missing']))}")
    runs = 1
    if config.get("checkpoint_every") and policy is not None:
        steps = training_steps(policy_workload(policy, Mapping(mapping.rows_of, mapping.launch)))
        runs = 1 + max(0, math.ceil(steps / config["checkpoint_every"]) - 1)  # the final model is the last one
    label = f"evaluate {model_name if policy is None else 'policy of ' + policy.label}"
    return Evaluation(model, tuple(tasks), label=label), runs


def candidates_workload(stage: Any, mapping: Mapping) -> Evaluation:
    """The shared `sample_candidates` stage (harness/sample_candidates.py): N samples per prompt of each
    best-of-N task from the SFT model (then its tasks' scoring of the first samples, counted as no work)."""
    config = stage.config
    engine, tasks = config["engine"]["kind"], []  # the resolved engine that samples them
    for name, fingerprint in config["tasks"].items():
        task, note = _task_shape(name, (fingerprint or {}).get("settings") or {}, config["limit"],
                                 config["batch_size"], engine, samples=int(config["n"]))
        tasks.append(replace(task, name=f"candidates/{name}"))
        mapping.notes.extend([note] if note else [])
    return Evaluation(cost_profiles.model_shape(config["model"]), tuple(tasks), label=f"sample {config['model']}")


def stage_estimate(stage: Any, device: DeviceProfile, mapping: Mapping,
                   usd_per_device_hour: float | None = None) -> StageEstimate:
    """The estimate of one stage (a planned Stage or a StageView) on `device`."""
    launch = mapping.launch.get(stage.kind)
    if launch is not None and launch.device_profile and mapping.kind_devices:
        device = cost_profiles.device_profile(launch.device_profile)
    if launch is not None and launch.num_gpus and device.scalable and launch.num_gpus > device.devices:
        device = cost_profiles.with_profile_overrides(device, devices=int(launch.num_gpus))
    if stage.kind == "prepare_data":
        rows = mapping.rows(stage)
        lengths = _lengths(stage, mapping)
        est = cost.estimate(DataPreparation(rows, rows * (lengths.prompt + lengths.chosen + lengths.rejected),
                                            label=stage.label), device, usd_per_device_hour)
    elif stage.kind == "train_reward_model":
        est = cost.estimate(reward_model_workload(stage, mapping), device, usd_per_device_hour)
    elif stage.kind == "reference_logps":
        est = cost.estimate(reference_workload(stage, mapping), device, usd_per_device_hour)
    elif stage.kind == "sample_candidates":
        est = cost.estimate(candidates_workload(stage, mapping), device, usd_per_device_hour)
    elif stage.kind == "train_policy":
        est = cost.estimate(policy_workload(stage, mapping), device, usd_per_device_hour)
    elif stage.kind == "evaluate":
        work, runs = evaluation_workload(stage, mapping)
        est = cost.estimate(work, device, usd_per_device_hour)
        if runs > 1:
            est = scaled(est, runs, f"{runs} evaluations (checkpoints + final)")
    else:
        raise CostInputError(f"no cost mapping for stage kind {stage.kind!r}")
    return replace(est, label=f"{stage.label} {stage.key[:8]}")


def scaled(est: StageEstimate, times: int, note: str) -> StageEstimate:
    return replace(est, tokens_trained=est.tokens_trained * times, tokens_forward=est.tokens_forward * times,
                   tokens_generated=est.tokens_generated * times, flops=est.flops * times,
                   seconds=est.seconds * times, device_hours=est.device_hours * times,
                   usd=None if est.usd is None else est.usd * times, notes=(*est.notes, note))


# ------------------------------------------------------------------------------------------------
# A planned grid
# ------------------------------------------------------------------------------------------------

def planned_rows(full_data: bool = False) -> RowsOf:
    """Rows of a planned data stage: its published kept rows when cached, else `data_rows`."""
    def rows_of(stage: Any) -> tuple[int, str]:
        cached = None
        if getattr(stage, "complete", False):
            metrics = json.loads((stage.path / "metrics.json").read_text())
            cached = int(metrics.get("data/kept_rows", 0)) or None
        return data_rows(stage.config, cached, full_data)
    return rows_of


@dataclass
class GridCost:
    device: str
    stages: list[tuple[Any, StageEstimate]]  # distinct stages, dependency order
    cells: dict[str, StageEstimate]  # cell -> total of its stages (shared stages counted in each)
    notes: list[str]

    def total(self, only_to_run: bool = False) -> StageEstimate | None:
        items = [e for s, e in self.stages if not (only_to_run and getattr(s, "complete", False))]
        return cost.total(items, "total") if items else None

    def by_kind(self) -> dict[str, StageEstimate]:
        kinds: dict[str, list[StageEstimate]] = {}
        for stage, est in self.stages:
            kinds.setdefault(stage.kind, []).append(est)
        return {kind: cost.total(items, kind) for kind, items in kinds.items()}


def grid_cost(plans: Sequence[Any], device: str | DeviceProfile, launch: dict[str, Any] | None = None,
              usd_per_device_hour: float | None = None, full_data: bool = False,
              kind_devices: bool = True) -> GridCost:
    """Every distinct planned stage's estimate, each cell's total, and the notes behind them. `full_data`:
    datasets at their full curated size (a profile meant for the full data); `kind_devices`: a launch
    block's per-kind `device_profile` wins over `device` (False: every stage on `device`)."""
    from harness.planning import unique_stages

    profile = cost_profiles.device_profile(device) if isinstance(device, str) else device
    mapping = Mapping(planned_rows(full_data), launch or {}, kind_devices=kind_devices)
    stages = [(s, stage_estimate(s, profile, mapping, usd_per_device_hour)) for s in unique_stages(list(plans))]
    by_id = {s.id: e for s, e in stages}
    cells = {p.cell.name: cost.total([by_id[s.id] for s in p.stages], p.cell.name) for p in plans}
    return GridCost(profile.name, stages, cells, list(dict.fromkeys(mapping.notes)))


def _row(label: str, est: StageEstimate, status: str = "") -> str:
    usd = "n/a" if est.usd is None else f"{est.usd:,.2f}"
    return (f"{label[:44]:<44} {status:<8} {cost.human(est.tokens_trained):>8} {cost.human(est.tokens_forward):>8} "
            f"{cost.human(est.tokens_generated):>8} {cost.human(est.flops):>8} {est.hours:>9.3g} "
            f"{est.device_hours:>9.3g} {usd:>10}")


def format_grid_cost(found: GridCost, usd_per_device_hour: float | None = None) -> str:
    """The `--dry-run` cost section: per stage, per stage kind, per cell, and the totals."""
    profile = cost_profiles.device_profile(found.device)
    rate = usd_per_device_hour if usd_per_device_hour is not None else profile.usd_per_device_hour
    header = (f"{'stage':<44} {'status':<8} {'trained':>8} {'fwd':>8} {'gen':>8} {'FLOPs':>8} {'hours':>9} "
              f"{'dev-h':>9} {'USD':>10}")
    lines = [f"cost estimate on {profile.name} ({profile.description}); "
             f"{'money at $' + format(rate, ',.2f') + ' per device-hour' if rate is not None else 'no rate: money n/a (--usd-per-hour R)'}",
             "tokens: trained (training passes), fwd (forward-only passes), gen (sampled); hours = wall on the stage's "
             "devices, dev-h = device-hours (harness/cost.py, docs/cost.md)", header]
    for stage, est in found.stages:
        lines.append(_row(est.label, est, "cached" if getattr(stage, "complete", False) else "to run"))
        lines += [f"    note: {n}" for n in est.notes if not n.startswith("API judges")]
    lines.append("per stage kind:")
    lines += [_row(f"  {kind}", est) for kind, est in found.by_kind().items()]
    lines.append("per cell (shared stages counted in every cell that uses them):")
    lines += [_row(f"  {name}", est) for name, est in found.cells.items()]
    total = found.total()
    todo = found.total(only_to_run=True)
    if total is not None:
        lines.append(_row("total (each distinct stage once)", total))
    if todo is not None and total is not None and todo.flops != total.flops:
        lines.append(_row("total still to run", todo))
    if any(n.startswith("API judges") for _, e in found.stages for n in e.notes):
        lines.append("not counted: API judges (AlpacaEval, XSTest, TruthfulQA's GPT judges; `harness judge`): the "
                     "judge client reports their tokens and price")
    lines += [f"note: {n}" for n in found.notes]
    return "\n".join(lines)


def describe_cost(plans: Sequence[Any], device: str, launch: dict[str, Any] | None = None,
                  usd_per_device_hour: float | None = None, full_data: bool = False,
                  kind_devices: bool = True) -> str:
    found = grid_cost(plans, device, launch, usd_per_device_hour, full_data, kind_devices)
    text = format_grid_cost(found, usd_per_device_hour)
    if full_data:
        text += "\nnote: the profile is meant for the full data: datasets are counted at their full curated size"
    return text


# ------------------------------------------------------------------------------------------------
# A logged cell (reports)
# ------------------------------------------------------------------------------------------------

def cell_training_cost(stage_specs: Sequence[dict[str, Any]], device: str | DeviceProfile,
                       rows: dict[str, int] | None = None) -> tuple[StageEstimate | None, list[str]]:
    """(the estimate of a logged cell's training: its reward model and policy stages, None for the SFT
    baseline; notes) from its stage specs. `rows`: kept rows per dataset name as logged (exact)."""
    profile = cost_profiles.device_profile(device) if isinstance(device, str) else device
    logged = rows or {}

    def rows_of(stage: Any) -> tuple[int, str]:
        return data_rows(stage.config, logged.get(stage.config["name"]))

    mapping = Mapping(rows_of)
    views = views_from_specs(stage_specs)
    items = [stage_estimate(v, profile, mapping) for v in views if v.kind in ("train_reward_model", "train_policy")]
    return (cost.total(items, "training") if items else None), list(dict.fromkeys(mapping.notes))


# ------------------------------------------------------------------------------------------------
# Measuring a dataset's token lengths (rewrites its entry of cost_inputs.yaml)
# ------------------------------------------------------------------------------------------------

def measure(names: Iterable[str], tokenizer_name: str = "smollm2-135m-instruct") -> dict[str, dict[str, Any]]:
    """Mean tokens of a prompt and of each answer over a dataset's local rows (all of them)."""
    import statistics

    from datasets_registry import prepare
    from datasets_registry.core import source_fingerprint
    from harness.models import load_tokenizer

    tok = load_tokenizer(tokenizer_name)

    def count(messages: Any) -> int:
        text = messages if isinstance(messages, str) else "\n".join(m["content"] for m in messages)
        return len(tok(text, add_special_tokens=False)["input_ids"])

    out = {}
    for name in names:
        split = prepare(name, seed=0)
        rows = split.rows
        entry: dict[str, Any] = {"rows": len(rows), "prompt_tokens": round(statistics.fmean(count(r["prompt"]) for r in rows), 1)}
        if rows and "chosen" in rows[0]:
            entry["chosen_tokens"] = round(statistics.fmean(count(r["chosen"]) for r in rows), 1)
            entry["rejected_tokens"] = round(statistics.fmean(count(r["rejected"]) for r in rows), 1)
        entry["source_digest"] = _source_digest(source_fingerprint(name))
        entry["source"] = f"measured on the {len(rows):,} local rows with the {tokenizer_name} tokenizer"
        out[name] = entry
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m harness.cost_plan",
                                     description="measure datasets' token lengths into harness/cost_inputs.yaml")
    parser.add_argument("--measure", nargs="+", required=True, metavar="DATASET")
    args = parser.parse_args(argv)
    found = measure(args.measure)
    text = COST_INPUTS_FILE.read_text()
    data = yaml.safe_load(text)
    data["datasets"].update(found)
    head = "".join(line for line in text.splitlines(keepends=True) if line.startswith("#"))
    COST_INPUTS_FILE.write_text(head + yaml.safe_dump(data, sort_keys=False, width=120))
    for name, entry in found.items():
        print(name, entry)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
