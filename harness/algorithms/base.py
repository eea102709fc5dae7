"""The one interface every preference-learning algorithm implements, and the registry of them.

An algorithm is an `AlgorithmSpec`: what data it consumes, what it needs (reference model, reward
model or reward function), a config dataclass whose defaults are the paper's (or the method's
published) hyperparameters, a `train(ctx)` function, and its capabilities (online or offline, its KL
coefficient's field, launch constraints, ...): the rest of the harness reads those fields and never
names an algorithm. Adding an algorithm is one module with one `register(AlgorithmSpec(...))` call,
imported in `harness/algorithms/__init__.py` (README, "Adding an algorithm or a task").
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from harness.mlflow_layout import fault_point
from harness.registry import Registry
from harness.tracking import WALL_TIME_KEY

if TYPE_CHECKING:
    from harness.generation import EngineSettings

DataKind = Literal["pairs", "unpaired", "prompts"]
# How an offline algorithm's frozen reference costs (harness/cost.py): no reference ("none"), one forward over
# the data before training ("precomputed"), a forward with every training step ("per_step").
ReferencePass = Literal["none", "precomputed", "per_step"]

# Metric names every algorithm logs under (where the quantity exists), so reports compare them.
COMMON_METRICS = (
    "train/loss",
    "train/rewards_chosen",
    "train/rewards_rejected",
    "train/margins",
    "train/accuracy",
    "train/kl",
    "train/reward_mean",
    "train/response_length",
    "train/learning_rate",
    "train/grad_norm",
)


@dataclass
class TrainContext:
    """Everything a `train` function gets. Paths are local folders; rows use the registry's schema."""

    policy_path: str  # SFT policy folder (also the reference model where one is needed)
    train_rows: list[dict[str, Any]]  # preference rows {id, prompt, chosen, rejected, ...} or prompt rows
    config: Any  # instance of the algorithm's config dataclass
    out_dir: Path  # the trained policy must be saved to out_dir / "model"
    seed: int = 0
    reward_model_path: str | None = None  # a trained sequence-classification RM folder
    reward_function: Callable[..., list[float]] | None = None  # verifiable reward (TRL reward_funcs style)
    reward_ensemble: Any = None  # harness.reward_ensemble.EnsembleSpec: several RMs, scores combined
    log: Callable[[dict[str, float], int], None] = lambda metrics, step: None
    # Save the policy every N optimizer steps (PPO: updates) under out_dir/checkpoints (harness.checkpoints);
    # None = only the final model, as without `eval.checkpoint_every`.
    checkpoint_every: int | None = None
    # Engine and precision (`harness.generation.EngineSettings`): training runs under bf16 autocast where
    # it resolves to bf16; PPO samples its rollouts with it. None = `EngineSettings()` (the detected choice).
    engine: EngineSettings | None = None
    # The frozen reference's summed log-probs of each row's chosen and rejected answer, computed once by a
    # shared `reference_logps` stage (`harness.reference_logps.ReferenceLogps`, aligned with train_rows);
    # None = the trainer computes its own. Only for algorithms with `AlgorithmSpec.reference_logps`.
    reference_logps: Any = None


@dataclass(frozen=True)
class RolloutShape:
    """How an online configuration samples and updates, in the cost model's terms (harness/cost.py's
    `OnlineTraining`): what `AlgorithmSpec.rollout_shape` reads off the resolved algorithm fields."""

    prompt_batch_size: int  # prompts per rollout batch (one optimizer step), over all processes
    samples_per_prompt: int  # answers sampled per prompt
    max_new_tokens: int  # generation budget per answer
    max_prompt_length: int  # prompt tokens kept (a static-shape device pads to it)
    epochs: float  # passes over the prompts
    max_steps: int  # rollout batches; > 0 overrides the epochs
    inner_epochs: int  # updates per rollout batch
    reference: bool  # a KL term needs the frozen reference's log-probs
    generation_batch_size: int | None  # sequences decoded together; None = a whole rollout batch
    value_from_reward_model: bool = False  # the value model starts from the reward model (its shape)


def trl_rollout_shape(algo: dict[str, Any], processes: int) -> RolloutShape:
    """The rollout shape of TRL's online trainers whose step takes per-device x accumulation x processes
    completions, `num_generations` per prompt, up to `max_completion_length` tokens each (GRPO, RLOO)."""
    completions = algo.get("per_device_train_batch_size", 1) * algo.get("gradient_accumulation_steps", 1) * processes
    per_prompt = algo["num_generations"]
    prompts = max(1, completions // per_prompt)
    return RolloutShape(
        prompt_batch_size=prompts, samples_per_prompt=per_prompt, max_new_tokens=algo["max_completion_length"],
        # TRL's online trainers keep the whole prompt (no prompt limit in these configs); a static-shape
        # device pads it to Table 9's L_p
        max_prompt_length=algo.get("max_prompt_length", 1024), epochs=algo.get("num_train_epochs", 1.0),
        max_steps=algo.get("max_steps", -1), inner_epochs=algo.get("num_iterations", 1),
        reference=algo.get("beta", 0.0) > 0, generation_batch_size=prompts * per_prompt)


@dataclass
class AlgorithmSpec:
    name: str
    config_cls: type
    data: DataKind  # what it trains on: preference pairs, unpaired labels (made from pairs), prompts
    needs_reference: bool
    needs_reward: bool  # a reward model or a reward function
    train: Callable[[TrainContext], dict[str, float]]
    defaults_source: str  # where the config defaults come from (paper table, method paper)
    description: str = ""
    # Its loss reads the frozen reference's log-probs of each pair's chosen and rejected answers, which its
    # train function takes precomputed (`TrainContext.reference_logps`): cells sharing the reference model,
    # data, max length and precision then share one `reference_logps` stage (harness/reference_logps.py).
    reference_logps: bool = False
    # It samples from the policy through the harness's generation engine while it trains (PPO's rollouts):
    # its result then depends on the whole engine (kind, batching), not only on the training precision.
    rollout_engine: bool = False
    # The config field that weighs the pull towards the reference model (paper Eq. 2's beta): DPO-style
    # losses call it `beta`, PPO `kl_coef`. Sweeps tag each trial with its value and Fig. 4 plots metrics
    # against it. None = the algorithm has no such term (reference-free SimPO/ORPO, whose `beta` scales a
    # reward or an odds-ratio penalty instead), so it is never mistaken for a KL coefficient.
    kl_coefficient_field: str | None = None
    # Why `config` cannot run data-parallel on N processes (empty when it can): sizes that are global and
    # split over ranks (PPO's prompt and minibatch sizes) are checked before any process is launched.
    # None = no constraint beyond the trainer's own.
    launch_problems: Callable[[Any, int], list[str]] | None = None
    # It runs only data-parallel (every rank holds whole models): an accelerate launch file that shards
    # (FSDP, ZeRO-3) would not shard it, so planning such a launch for it is an error. TRL's trainers shard.
    data_parallel_only: bool = False
    # Given the resolved algorithm fields, (why, remedy) when this configuration needs the weights of one
    # reward model (PPO's value_init='reward' copies them into the value model), else None: a verifier or an
    # ensemble as the cell's reward is then refused at load, naming both. None = any reward source works.
    needs_single_reward_model: Callable[[dict[str, Any]], tuple[str, str] | None] | None = None
    # --- What the cost estimate (harness/cost.py, harness/cost_plan.py) counts beyond the policy's own passes.
    # It trains a value model beside the policy (PPO's critic): a value forward per rollout, its training
    # passes and its optimizer state are counted.
    trains_value_model: bool = False
    # It runs a policy forward over every rollout for the old log-probs of its importance ratio whatever its
    # number of updates per rollout (PPO); otherwise only with more than one (TRL's `num_iterations` > 1: the
    # first update reuses the sampling policy's log-probs).
    keeps_old_logprobs: bool = False
    # Answers per prompt when the method fixes them (online DPO: the 2 its judge ranks); None = its config's.
    samples_per_prompt: int | None = None
    # Online algorithms: given the resolved algorithm fields and the data-parallel processes, how it samples
    # and updates (`RolloutShape`). None = TRL's online-trainer fields (`trl_rollout_shape`).
    rollout_shape: Callable[[dict[str, Any], int], RolloutShape] | None = None
    # Parts of its compute the estimate does not count, printed beside it (KTO's KL term on mismatched pairs).
    uncounted_compute: tuple[str, ...] = ()

    @property
    def reference_pass(self) -> ReferencePass:
        """How its frozen reference costs when it trains offline: none (reference-free), one forward over the
        data before training (it takes precomputed reference log-probs, `reference_logps`), or a forward
        with every training step."""
        if not self.needs_reference:
            return "none"
        return "precomputed" if self.reference_logps else "per_step"

    def rollouts(self, resolved: dict[str, Any], processes: int) -> RolloutShape:
        """How an online configuration samples and updates (see `rollout_shape`)."""
        return (self.rollout_shape or trl_rollout_shape)(resolved, processes)

    @property
    def online(self) -> bool:
        """It samples from the policy while it trains (PPO, GRPO, RLOO, online DPO), which is what training
        on prompts means here: reports put it with the PPO-style "downstream" policies of a reward model."""
        return self.data == "prompts"

    def kl_coefficient(self, resolved: dict[str, Any]) -> Any:
        """The KL coefficient's value in the resolved algorithm fields, or None (see `kl_coefficient_field`)."""
        return resolved.get(self.kl_coefficient_field) if self.kl_coefficient_field else None

    def make_config(self, overrides: dict[str, Any]) -> Any:
        """Config dataclass from the grid's overrides; unknown fields raise naming the valid ones."""
        problems = self.check_fields(overrides)
        if problems:
            raise ValueError("; ".join(f"{field}: {msg}" if field else msg for field, msg in problems))
        return self.config_cls(**overrides)

    def check_fields(self, overrides: dict[str, Any]) -> list[tuple[str, str]]:
        """(field, problem) for each unknown field, out-of-range value or wrong type (the ranges are the
        config dataclass's annotations, `harness.config_fields`), then for its cross-field checks."""
        from harness.config_fields import field_problems

        return field_problems(self.config_cls, overrides, f"algorithm {self.name!r}")


ALGORITHMS: Registry[AlgorithmSpec] = Registry("algorithm")


def register(spec: AlgorithmSpec) -> AlgorithmSpec:
    ALGORITHMS.register(spec.name, spec)
    return spec


def spec_or_none(name: str | None) -> AlgorithmSpec | None:
    """The spec registered under `name`, or None (no algorithm: the SFT baseline; or a name this checkout
    does not register, e.g. a run logged by another version): readers of logged runs then assume no
    capability instead of failing."""
    return ALGORITHMS.get(name) if name is not None and name in ALGORITHMS else None


@dataclass
class History:
    """Step metrics of a stage, appended as JSON lines so a crash keeps what was logged: one line per
    row {"step": n, "wall_time": t, key: value, ...}, each written whole with one write (the driver
    follows the file while the stage runs and reads only complete lines)."""

    path: Path
    rows: list[dict[str, float]] = field(default_factory=list)

    def log(self, metrics: dict[str, float], step: int) -> None:
        clean = {k: float(v) for k, v in metrics.items() if _is_number(v) and k != WALL_TIME_KEY}
        if not clean:
            return
        row = {"step": int(step), WALL_TIME_KEY: time.time(), **clean}
        self.rows.append(row)
        with self.path.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        fault_point(f"history_step:{int(step)}")  # tests of mid-stage resume: a kill right after step n is logged


def _is_number(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


# TRL's log keys -> the common names above. Keys not listed are kept under "train/<key>".
TRL_KEY_MAP = {
    "loss": "train/loss",
    "rewards/chosen": "train/rewards_chosen",
    "rewards/rejected": "train/rewards_rejected",
    "rewards/margins": "train/margins",
    "rewards/accuracies": "train/accuracy",
    "kl": "train/kl",
    "objective/kl": "train/kl",
    "reward": "train/reward_mean",
    "rewards/mean": "train/reward_mean",
    "completions/mean_length": "train/response_length",
    "objective/scores": "train/reward_mean",  # Online DPO: mean judge reward of its own samples
    "learning_rate": "train/learning_rate",
    "grad_norm": "train/grad_norm",
}


def map_trl_logs(logs: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in logs.items():
        if not _is_number(value) or key.startswith("eval_") or key in {"epoch", "total_flos"}:
            continue
        name = TRL_KEY_MAP.get(key, f"train/{key.replace('/', '_')}")
        out[name] = float(value)
    return out


def history_callback(
    log: Callable[[dict[str, float], int], None], extra: Callable[[], dict[str, float]] | None = None
):
    """A transformers `TrainerCallback` that forwards TRL's logs, renamed, to `log`; it also reports the
    stage's progress (step / max steps, `harness.progress`) and counts the trained tokens (`harness.usage`).

    `extra` (optional) returns metrics measured outside the trainer since the last log (e.g. a reward
    wrapper's sample stats); they fill common names the trainer itself does not log, never override them.
    """
    from transformers import TrainerCallback

    from harness import progress, usage

    class _Forward(TrainerCallback):
        hook: Any = None

        def on_init_end(self, args, state, control, **kwargs):
            # Data tokenized; what follows until the first step (e.g. DPO's reference log-probs) is preparation.
            progress.report(phase="preparing training", force=True)

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            if model is not None:
                self.hook = usage.watch_training_forwards(model)
            progress.report(done=state.global_step, total=state.max_steps, unit="step", phase="training", force=True)

        def on_step_end(self, args, state, control, **kwargs):
            progress.report(done=state.global_step, total=state.max_steps)

        def on_train_end(self, args, state, control, **kwargs):
            if self.hook is not None:
                self.hook.remove()
                self.hook = None
            progress.report(done=state.global_step, total=state.max_steps, phase="saving", force=True)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs:
                metrics = map_trl_logs(logs)
                if metrics and extra is not None:
                    for key, value in extra().items():
                        metrics.setdefault(key, value)
                if metrics:
                    log(metrics, state.global_step)

    return _Forward()
