"""GRPO (Shao et al., 2024, DeepSeekMath) through TRL's `GRPOTrainer`, with a reward model (EOS trick
applied by `reward_wrappers`) or a verifiable reward function.

For each prompt GRPO samples a group of G completions, uses the group-normalised reward
(r − mean_group) / std_group as every token's advantage (no value model), and optimises the PPO-clipped
surrogate plus β · KL(π‖π_ref) (the k3 estimator) as a loss term with a *fixed* β (no adaptive control).

Two registered names:
- `grpo`: DeepSeekMath's published settings where the method fixes them (β 0.04, G 64, lr 1e-6, batch
  1024 completions, one policy update per batch of samples, sample-level loss normalisation `grpo`);
  rollout settings the method paper does not fix follow the PPO recipe of Ivison et al. (2024, Table 9):
  temperature 0.7, continuation up to 1024 tokens, 1 epoch over the prompts, 10% warm-up, clip ε 0.2.
- `grpo-seed000`: the GRPO configuration of seed 000 (the PPO/DPO/GRPO comparison write-up): group size 3,
  KL coefficient 0.02 with no adaptive KL, 2 prompts x 3 samples per step, one optimisation epoch per
  rollout batch. It states no learning rate or GRPO length limit: lr stays 1e-6 and completions are
  capped at 64 new tokens, the `max_new_tokens` that write-up gives its PPO run.
A separate registered name (rather than a `preset:` field) keeps "which settings ran" a single value in
the grid, the cache key and the report, and lets explicit fields still override the preset.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from harness.algorithms.base import AlgorithmSpec, TrainContext, history_callback, register
from harness.algorithms.reward_wrappers import EosTrickMode, build_reward
from harness.algorithms.trl_common import (
    common_trainer_kwargs,
    generation_backend_kwargs,
    load_policy,
    peft_kwargs,
    prompt_dataset,
    require_rows,
    train_and_save,
    whole_groups_problems,
)
from harness.config_fields import (
    CheckedConfig,
    FiniteFloat,
    LRSchedulerType,
    MaxSteps,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    Problem,
    WarmupRatio,
    requirement,
)
from harness.lora import PeftField

# TRL 1.16 GRPOConfig.loss_type values (its help text and GRPOTrainer's loss dispatch).
GRPOLossType = Literal["grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo", "luspo", "vespo"]
# TRL 1.16 GRPOConfig.scale_rewards values (its booleans True/False are "group"/"none").
ScaleRewards = Literal["group", "batch", "none"]
# TRL's num_generations: a group needs two samples for its mean and std to mean anything.
GroupSize = Annotated[int, requirement(lambda n: n >= 2, "must be >= 2: GRPO's advantage is relative to the group")]
# Switches of the GRPO family that TRL 1.16's GRPOTrainer does not implement: accepted only at "off", so a grid
# asking for them fails at load instead of silently training plain GRPO.
DynamicSampling = Annotated[bool, requirement(
    lambda on: on is False, "is not supported: TRL 1.16's GRPOTrainer has no dynamic sampling (DAPO's re-sampling "
    "of prompts whose group rewards are all equal); such groups get zero advantage instead")]
# Loss types that clip the ratio to [1 - epsilon, 1 + epsilon_high] (cispo's epsilon_high is its own upper cap).
_CLIPPED_LOSSES = ("grpo", "dr_grpo", "dapo", "bnpo", "luspo")


@dataclass
class GRPOAlgoConfig(CheckedConfig):
    # Added later: left out of the stage key while at their defaults (older keys unchanged).
    OMITTED_AT_DEFAULT = ("peft", "epsilon_high", "importance_sampling_level", "mask_truncated_completions",
                          "dynamic_sampling")

    beta: NonNegativeFloat = 0.04  # DeepSeekMath §4.2 (fixed KL coefficient); 0 = no KL term (TRL's default)
    num_generations: GroupSize = 64  # DeepSeekMath: 64 samples per question
    learning_rate: PositiveFloat = 1e-6  # DeepSeekMath (also Ivison et al. Table 9's PPO η)
    loss_type: GRPOLossType = "grpo"  # DeepSeekMath's per-sequence length normalisation (TRL's default is "dapo")
    scale_rewards: ScaleRewards = "group"  # DeepSeekMath outcome supervision: divide by the group's std
    num_iterations: PositiveInt = 1  # DeepSeekMath: a single policy update per exploration stage (Table 9: e = 1)
    epsilon: PositiveFloat = 0.2  # clip range, Table 9
    temperature: PositiveFloat = 0.7  # Table 9 rollout temperature (the method paper does not fix one)
    max_completion_length: PositiveInt = 1024  # DeepSeekMath max length 1024 (Table 9: L_c = 1024)
    per_device_train_batch_size: PositiveInt = 64  # completions per micro-batch
    gradient_accumulation_steps: PositiveInt = 16  # 64 x 16 = 1024 completions per update (DeepSeekMath batch)
    num_train_epochs: PositiveFloat = 1.0  # Table 9: E = 1 over the prompts
    warmup_ratio: WarmupRatio = 0.1  # Table 9
    lr_scheduler_type: LRSchedulerType = "linear"
    max_steps: MaxSteps = -1
    eos_trick: EosTrickMode = "reward_model"  # where the EOS trick applies: reward_model | always | never
    eos_penalty_reward: FiniteFloat = -10.0  # App. E.2: reward of a completion that never emitted EOS
    # --- GRPO-family switches (ablations/grpo_switches.yaml); the defaults are DeepSeekMath's GRPO. Together
    # with loss_type (aggregation: grpo | dr_grpo | dapo | bnpo | ...), scale_rewards (group | batch | none),
    # beta (0 = no KL term in the loss) and num_generations, each is passed to TRL's GRPOConfig as is. ---
    epsilon_high: PositiveFloat | None = None  # asymmetric "clip-higher" upper bound (DAPO: 0.28); None = epsilon
    importance_sampling_level: Literal["token", "sequence"] = "token"  # "sequence": GSPO's sequence-level ratio
    mask_truncated_completions: bool = False  # DAPO's overlong filtering: truncated completions leave the loss
    dynamic_sampling: DynamicSampling = False  # DAPO's dynamic sampling: not in TRL, so only false is accepted
    peft: PeftField = None  # LoRA / QLoRA (harness/lora.py); null = full fine-tuning
    gradient_checkpointing: bool = False
    weight_decay: NonNegativeFloat = 0.0
    logging_steps: PositiveInt = 1
    # TRL's generation backends (the precision comes from `ctx.engine`): transformers' paged continuous
    # batching (measured 0.54x of `generate` on a 2-core CPU; meant for GPUs, unmeasured there; with bf16
    # training TRL casts the policy to bf16 for it) and vLLM (`vllm_mode` as TRL's; GPU only: untested here).
    use_transformers_paged: bool = False
    use_vllm: bool = False
    vllm_mode: Literal["colocate", "server"] = "colocate"

    def cross_field_problems(self) -> list[Problem]:
        problems = whole_groups_problems(self)
        if self.epsilon_high is not None and self.loss_type in _CLIPPED_LOSSES and self.epsilon_high < self.epsilon:
            problems.append(("epsilon_high", f"epsilon_high ({self.epsilon_high}) must be >= epsilon ({self.epsilon}): "
                             "clip-higher raises the upper clip bound 1 + epsilon_high above 1 + epsilon"))
        return problems


@dataclass
class GRPOSeed000Config(GRPOAlgoConfig):
    num_generations: GroupSize = 3  # seed 000: group_size = 3
    beta: NonNegativeFloat = 0.02  # seed 000: KL coefficient 0.02, no adaptive KL
    per_device_train_batch_size: PositiveInt = 6  # seed 000: 2 prompts x 3 samples per step
    gradient_accumulation_steps: PositiveInt = 1
    num_iterations: PositiveInt = 1  # seed 000: one optimisation epoch per rollout
    max_completion_length: PositiveInt = 64  # seed 000 gives max_new_tokens = 64 (stated for its PPO run)


def grpo_trl_config(ctx: TrainContext, cfg: GRPOAlgoConfig) -> Any:
    """TRL's GRPOConfig for `cfg`: every switch of the config passed through under TRL's own name."""
    from trl import GRPOConfig

    return GRPOConfig(
        **common_trainer_kwargs(ctx, cfg),
        beta=cfg.beta,
        num_generations=cfg.num_generations,
        loss_type=cfg.loss_type,
        scale_rewards=cfg.scale_rewards,
        num_iterations=cfg.num_iterations,
        epsilon=cfg.epsilon,
        epsilon_high=cfg.epsilon_high,
        importance_sampling_level=cfg.importance_sampling_level,
        mask_truncated_completions=cfg.mask_truncated_completions,
        temperature=cfg.temperature,
        top_k=0,  # sample from the temperature-scaled policy itself: no top-k/top-p truncation
        top_p=1.0,
        max_completion_length=cfg.max_completion_length,
        **generation_backend_kwargs(cfg, "grpo"),
    )


def train_grpo(ctx: TrainContext) -> dict[str, float]:
    from trl import GRPOTrainer

    cfg: GRPOAlgoConfig = ctx.config
    require_rows(ctx, ("prompt",), "grpo")
    args = grpo_trl_config(ctx, cfg)  # before any model loads: a generation backend this machine lacks fails here
    model, tok = load_policy(ctx)
    reward_fn, stats = build_reward(ctx, tok, model, cfg.eos_trick, cfg.eos_penalty_reward)
    trainer = GRPOTrainer(
        model=model, reward_funcs=[reward_fn], args=args,
        train_dataset=prompt_dataset(ctx.train_rows), processing_class=tok,
        callbacks=[history_callback(ctx.log, extra=stats.drain)], **peft_kwargs(cfg),
    )
    return train_and_save(trainer, tok, ctx)


_ROLLOUT = "rollout settings from Ivison et al. 2024 Table 9 (temperature 0.7, L_c 1024, 1 epoch, 10% warm-up)"

register(AlgorithmSpec(
    name="grpo",
    config_cls=GRPOAlgoConfig,
    data="prompts",
    needs_reference=True,
    needs_reward=True,
    train=train_grpo,
    kl_coefficient_field="beta",
    defaults_source=f"Shao et al. 2024 (DeepSeekMath): beta 0.04, G 64, lr 1e-6, batch 1024; {_ROLLOUT}",
    description="Group Relative Policy Optimisation: group-normalised rewards, no value model",
))

register(AlgorithmSpec(
    name="grpo-seed000",
    config_cls=GRPOSeed000Config,
    data="prompts",
    needs_reference=True,
    needs_reward=True,
    train=train_grpo,
    kl_coefficient_field="beta",
    defaults_source="seed 000 GRPO config: group 3, KL 0.02 fixed, 2 prompts x 3 samples/step, 1 epoch per "
                    "rollout, max 64 new tokens; other fields as `grpo`",
    description="GRPO with the settings of the seed-000 PPO/DPO/GRPO comparison",
))
