"""How each stage kind runs at a grid profile's size: the Ray resources it asks for and the `accelerate launch`
configuration it trains under (FSDP or DeepSpeed ZeRO-3 config files shipped in `ablations/launch/`).
What generates is not here: that is the cell's `engine:` block (every stage) and `eval.engine` (the evaluate
stage's, e.g. vLLM at a paper profile), both in the stage keys (`harness.generation.EngineSettings`).

A profile's `launch` block, one entry per stage kind:

    launch:
      train_policy:
        num_gpus: 8
        accelerate: {num_processes: 8, config_file: ablations/launch/fsdp_13b_policy.yaml}
      train_reward_model:
        num_gpus: 8
        accelerate: {num_processes: 8, config_file: ablations/launch/zero3_70b_reward_model.yaml}
      evaluate: {num_gpus: 1, device_profile: a100-80g}

Checked when the grid loads (errors name `profiles.<name>.launch.<kind>...`): the kinds, the numbers, and
each config file (it must exist, parse as an accelerate config, name FSDP or DeepSpeed, and agree with
`num_processes`). `ray_resources` turns the block into the Ray backend's per-kind requests (its
`accelerate:` entries start `accelerate launch --config_file FILE` on the task's GPUs, see
`harness/backends/accelerate_launch.py`); `plan_problems` says, before any compute, which planned stage
cannot run under its launch settings (PPO's batch sizes must split over the ranks; the project's PPO is
data-parallel only, so an FSDP/ZeRO-3 launch does not shard it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from harness.paths import PROJECT_ROOT

STAGE_KINDS = ("prepare_data", "train_reward_model", "reference_logps", "train_policy", "sample_candidates", "evaluate")
SHARDED_TYPES = ("FSDP", "DEEPSPEED")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AccelerateLaunch(_Strict):
    num_processes: int = Field(ge=1, description="ranks, one per GPU")
    config_file: str | None = Field(None, description="accelerate config (FSDP / DeepSpeed), relative to the repository")
    args: list[str] = Field(default_factory=list, description="more `accelerate launch` flags")


class StageLaunch(_Strict):
    num_gpus: float | None = Field(None, ge=0)
    num_cpus: float | None = Field(None, gt=0)
    memory: float | None = Field(None, gt=0, description="bytes")
    accelerate: AccelerateLaunch | None = None
    # The device this kind's stages are priced on by the cost estimate when it differs from the grid's
    # (e.g. evaluation on one GPU while training runs on a TPU pod).
    device_profile: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _engine_is_the_cells(cls, data: Any) -> Any:
        if isinstance(data, dict) and "engine" in data:
            raise ValueError("engine: not a launch setting; the engine is part of the cell (in its stage keys): "
                             "`base.eval.engine` for the evaluate stages, `base.engine` for every stage")
        return data


@dataclass(frozen=True)
class LaunchConfig:
    """One accelerate config file, read: what `--dry-run` says about it."""

    path: Path
    distributed_type: str
    num_processes: int | None
    mixed_precision: str
    detail: str  # e.g. "FSDP v2, FULL_SHARD, auto-wrap LlamaDecoderLayer"

    def describe(self) -> str:
        return f"{self.path.relative_to(PROJECT_ROOT) if self.path.is_relative_to(PROJECT_ROOT) else self.path}: " \
               f"{self.distributed_type} ({self.detail}), mixed precision {self.mixed_precision}"


def config_path(name: str) -> Path:
    path = Path(name).expanduser()
    return path if path.is_absolute() else PROJECT_ROOT / path


def read_launch_config(path: Path) -> LaunchConfig:
    """An accelerate config file, parsed by accelerate itself; ValueError saying what is wrong."""
    from accelerate.commands.config.config_args import ClusterConfig

    if not path.is_file():
        raise ValueError(f"{path} not found")
    try:
        config = ClusterConfig.from_yaml_file(str(path))
    except Exception as exc:  # accelerate raises ValueError / TypeError / yaml errors for a bad file
        raise ValueError(f"{path} is not an accelerate config: {exc}") from None
    kind = getattr(config.distributed_type, "value", str(config.distributed_type))
    if kind not in SHARDED_TYPES:
        raise ValueError(f"{path}: distributed_type {kind!r}; a profile's launch file shards the model: "
                         f"{' or '.join(SHARDED_TYPES)}")
    if kind == "FSDP":
        fsdp = config.fsdp_config or {}
        detail = (f"FSDP v{fsdp.get('fsdp_version', 1)}, "
                  f"{fsdp.get('fsdp_sharding_strategy') or ('reshard after forward' if fsdp.get('fsdp_reshard_after_forward') else 'no reshard')}, "
                  f"auto-wrap {fsdp.get('fsdp_transformer_layer_cls_to_wrap') or fsdp.get('fsdp_auto_wrap_policy')}"
                  + (", parameters offloaded to CPU" if fsdp.get("fsdp_offload_params") else ""))
    else:
        ds = config.deepspeed_config or {}
        stage = ds.get("zero_stage")
        if stage != 3:
            raise ValueError(f"{path}: DeepSpeed zero_stage {stage!r}; a profile's DeepSpeed file is ZeRO-3 "
                             "(parameters sharded)")
        detail = (f"ZeRO-3, offload parameters to {ds.get('offload_param_device', 'none')}, "
                  f"optimizer to {ds.get('offload_optimizer_device', 'none')}")
    processes = config.num_processes if config.num_processes and config.num_processes > 0 else None
    return LaunchConfig(path, kind, processes, str(config.mixed_precision), detail)


def parse_launch(raw: Any, where: str) -> dict[str, StageLaunch]:
    """The `launch` block, checked; errors (ValueError) name `where`.<kind>.<field>."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a mapping of stage kind -> settings, got {raw!r}")
    errors: list[str] = []
    parsed: dict[str, StageLaunch] = {}
    for kind, spec in raw.items():
        if kind not in STAGE_KINDS:
            errors.append(f"{where}.{kind}: unknown stage kind; valid: {', '.join(STAGE_KINDS)}")
            continue
        try:
            parsed[kind] = StageLaunch.model_validate(spec)
        except ValidationError as exc:
            for err in exc.errors():
                path = ".".join([where, kind, *(str(p) for p in err["loc"])])  # a whole-entry error has no loc
                errors.append(f"{path}: {err['msg'].removeprefix('Value error, ')}")
            continue
        if parsed[kind].device_profile is not None:
            from harness.cost_profiles import CostInputError, device_profile

            try:
                device_profile(parsed[kind].device_profile)
            except CostInputError as exc:
                errors.append(f"{where}.{kind}.device_profile: {exc}")
        accelerate = parsed[kind].accelerate
        if accelerate is not None and accelerate.config_file is not None:
            try:
                found = read_launch_config(config_path(accelerate.config_file))
            except ValueError as exc:
                errors.append(f"{where}.{kind}.accelerate.config_file: {exc}")
                continue
            if found.num_processes is not None and found.num_processes != accelerate.num_processes:
                errors.append(f"{where}.{kind}.accelerate.num_processes: {accelerate.num_processes}, but "
                              f"{accelerate.config_file} says num_processes: {found.num_processes}")
    if errors:
        raise ValueError("\n  ".join(errors))
    return parsed


def ray_resources(launch: dict[str, StageLaunch]) -> dict[str, dict[str, Any]]:
    """The Ray backend's per-kind requests (`resources=`; see harness/backends/ray_backend.py)."""
    out: dict[str, dict[str, Any]] = {}
    for kind, spec in launch.items():
        request: dict[str, Any] = {k: v for k, v in (("num_gpus", spec.num_gpus), ("num_cpus", spec.num_cpus),
                                                     ("memory", spec.memory)) if v is not None}
        if spec.accelerate is not None:
            args = list(spec.accelerate.args)
            if spec.accelerate.config_file:
                args = ["--config_file", str(config_path(spec.accelerate.config_file)), *args]
            request["accelerate"] = {"num_processes": spec.accelerate.num_processes, "args": args}
        if request:
            out[kind] = request
    return out


def describe(launch: dict[str, StageLaunch]) -> list[str]:
    """One line per stage kind, for `--dry-run`."""
    lines = []
    for kind, spec in launch.items():
        parts = []
        if spec.num_gpus is not None:
            parts.append(f"{spec.num_gpus:g} GPU(s)")
        if spec.accelerate is not None:
            text = f"accelerate launch, {spec.accelerate.num_processes} processes"
            if spec.accelerate.config_file:
                text += ", " + read_launch_config(config_path(spec.accelerate.config_file)).describe()
            parts.append(text)
        if spec.device_profile is not None:
            parts.append(f"priced on {spec.device_profile}")
        lines.append(f"  {kind}: " + "; ".join(parts or ["defaults"]))
    return lines


def check_launch(spec: dict[str, Any], num_processes: int) -> list[str]:
    """Why the stage `spec` cannot run on `num_processes` ranks (empty if it can), known before launching.

    An algorithm's sizes that are global and split over the ranks (`AlgorithmSpec.launch_problems`, e.g.
    PPO's prompt and minibatch sizes): a size that does not split would otherwise fail inside every rank,
    after the models are loaded (or, for a Ray grid, after the stages before it have run)."""
    if num_processes < 1:
        return [f"accelerate.num_processes must be >= 1, got {num_processes}"]
    algo = dict(spec["config"].get("algorithm") or {}) if spec["kind"] == "train_policy" else {}
    name = algo.pop("name", None)
    if name is None:
        return []
    from harness.algorithms import ALGORITHMS

    algorithm = ALGORITHMS.get(name)
    if algorithm.launch_problems is None:
        return []
    return [f"stage {spec['kind']}/{spec['key']}: algorithm.{problem}"
            for problem in algorithm.launch_problems(algorithm.make_config(algo), num_processes)]


def plan_problems(launch: dict[str, StageLaunch], stages: list[Any]) -> list[str]:
    """Why a planned stage cannot run under the launch settings of its kind (empty if every one can)."""
    from harness.algorithms import ALGORITHMS

    problems: list[str] = []
    for stage in stages:
        spec = launch.get(stage.kind)
        if spec is None or spec.accelerate is None:
            continue
        problems += check_launch(stage.spec(), spec.accelerate.num_processes)
        name = (stage.config.get("algorithm") or {}).get("name") if stage.kind == "train_policy" else None
        if name is not None and ALGORITHMS.get(name).data_parallel_only and spec.accelerate.config_file:
            kind = read_launch_config(config_path(spec.accelerate.config_file)).distributed_type
            problems.append(
                f"{stage.label} {stage.key}: algorithm {name!r} is data-parallel only (docs/scale-out.md, 'PPO on N "
                f"GPUs'): under {kind} it would not be sharded, and each rank holds a full policy, value, reference "
                "and reward model")
    return problems
