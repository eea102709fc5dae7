"""RLOO (Ahmadian et al., 2024, "Back to Basics") through TRL's `RLOOTrainer`, with a reward model (EOS
trick applied by `reward_wrappers`) or a verifiable reward function.

k completions per prompt; each one's advantage is its KL-shaped reward r − β·KL(π‖π_ref) minus the mean
of the other k − 1 (leave-one-out baseline); REINFORCE-style update, no value model.

Defaults: k = 2 (the smallest of the paper's k ∈ {2, 4}; TRL's default); β = 0.05, the KL coefficient of
the paper we reproduce (Ivison et al. 2024, Table 9), so RLOO and PPO cells share the KL strength; the
other rollout/optimisation settings are also Table 9's (lr 1e-6, temperature 0.7, 64 prompts per batch,
continuation up to 1024 tokens, 1 epoch, 10% warm-up, one update per batch).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

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


@dataclass
class RLOOAlgoConfig(CheckedConfig):
    OMITTED_AT_DEFAULT = ("peft",)  # added later: left out of the stage key while null (older keys unchanged)

    # k; Ahmadian et al. use k in {2, 4}
    num_generations: Annotated[int, requirement(
        lambda k: k >= 2, "must be >= 2: the leave-one-out baseline needs another sample")] = 2
    beta: NonNegativeFloat = 0.05  # Table 9 KL coefficient (fixed); 0 = no KL term
    learning_rate: PositiveFloat = 1e-6  # Table 9
    temperature: PositiveFloat = 0.7  # Table 9
    max_completion_length: PositiveInt = 1024  # Table 9: L_c
    per_device_train_batch_size: PositiveInt = 8  # completions per micro-batch
    gradient_accumulation_steps: PositiveInt = 16  # 8 x 16 = 128 completions = 64 prompts x k (Table 9: B = 64)
    num_iterations: PositiveInt = 1  # Table 9: e = 1 inner epoch
    epsilon: PositiveFloat = 0.2  # Table 9 clip range (inactive with one update per batch, kept for parity)
    num_train_epochs: PositiveFloat = 1.0  # Table 9: E = 1
    warmup_ratio: WarmupRatio = 0.1  # Table 9
    lr_scheduler_type: LRSchedulerType = "linear"
    max_steps: MaxSteps = -1
    eos_trick: EosTrickMode = "reward_model"  # reward_model | always | never
    eos_penalty_reward: FiniteFloat = -10.0  # App. E.2
    peft: PeftField = None  # LoRA / QLoRA (harness/lora.py); null = full fine-tuning
    gradient_checkpointing: bool = False
    weight_decay: NonNegativeFloat = 0.0
    logging_steps: PositiveInt = 1
    # TRL's generation backends, as GRPOAlgoConfig's (see there)
    use_transformers_paged: bool = False
    use_vllm: bool = False
    vllm_mode: Literal["colocate", "server"] = "colocate"

    def cross_field_problems(self) -> list[Problem]:
        return whole_groups_problems(self)


def train_rloo(ctx: TrainContext) -> dict[str, float]:
    from trl import RLOOConfig, RLOOTrainer

    cfg: RLOOAlgoConfig = ctx.config
    require_rows(ctx, ("prompt",), "rloo")
    backends = generation_backend_kwargs(cfg, "rloo")  # checked before any model loads
    model, tok = load_policy(ctx)
    reward_fn, stats = build_reward(ctx, tok, model, cfg.eos_trick, cfg.eos_penalty_reward)
    args = RLOOConfig(
        **common_trainer_kwargs(ctx, cfg),
        beta=cfg.beta,
        num_generations=cfg.num_generations,
        num_iterations=cfg.num_iterations,
        epsilon=cfg.epsilon,
        temperature=cfg.temperature,
        top_k=0,  # sample from the temperature-scaled policy itself
        top_p=1.0,
        max_completion_length=cfg.max_completion_length,
        **backends,
    )
    trainer = RLOOTrainer(
        model=model, reward_funcs=[reward_fn], args=args, train_dataset=prompt_dataset(ctx.train_rows),
        processing_class=tok, callbacks=[history_callback(ctx.log, extra=stats.drain)], **peft_kwargs(cfg),
    )
    return train_and_save(trainer, tok, ctx)


register(AlgorithmSpec(
    name="rloo",
    config_cls=RLOOAlgoConfig,
    data="prompts",
    needs_reference=True,
    needs_reward=True,
    train=train_rloo,
    kl_coefficient_field="beta",
    defaults_source="Ahmadian et al. 2024 (k = 2); beta 0.05 and rollout/optimiser settings from "
                    "Ivison et al. 2024 Table 9",
    description="REINFORCE Leave-One-Out: k samples per prompt, leave-one-out baseline, no value model",
))
