"""ORPO (Hong et al., 2024) through TRL's experimental `ORPOTrainer`: SFT loss on the chosen answer plus
λ · odds-ratio penalty −log σ(log odds(y_c|x) − log odds(y_r|x)); no reference model.

ORPO was designed to replace SFT + preference tuning in one stage from a base model; here, as for every
algorithm in the grid, it starts from the SFT policy, which is how it enters an algorithm comparison.

Defaults: the ORPO authors' Mistral-ORPO-β recipe (xfactlab/orpo scripts/run_mistral_orpo_beta.sh):
λ = 0.1, lr 5e-6, inverse-square-root schedule with 200 warm-up steps, 5 epochs, batch 8 per device on
4 GPUs = 32, response up to 2048 tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.algorithms.base import AlgorithmSpec, TrainContext, history_callback, register
from harness.algorithms.trl_common import (
    common_trainer_kwargs,
    load_policy,
    peft_kwargs,
    preference_dataset,
    require_rows,
    train_and_save,
)
from harness.config_fields import (
    CheckedConfig,
    LRSchedulerType,
    MaxSteps,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    WarmupRatio,
)
from harness.lora import PeftField


@dataclass
class ORPOAlgoConfig(CheckedConfig):
    OMITTED_AT_DEFAULT = ("peft",)  # added later: left out of the stage key while null (older keys unchanged)

    beta: PositiveFloat = 0.1  # λ of the paper (`--alpha 0.1` in the authors' script; TRL calls it beta)
    learning_rate: PositiveFloat = 5e-6  # authors' script
    num_train_epochs: PositiveFloat = 5.0  # authors' script
    lr_scheduler_type: LRSchedulerType = "inverse_sqrt"  # authors' script
    # authors' script (absolute steps; grids at tiny scale set 0 or use warmup_ratio)
    warmup_steps: NonNegativeInt = 200
    warmup_ratio: WarmupRatio = 0.0  # used only when warmup_steps == 0
    per_device_train_batch_size: PositiveInt = 8  # authors' script (x 4 GPUs)
    gradient_accumulation_steps: PositiveInt = 4  # 8 x 4 = 32, the authors' global batch on one device
    max_length: PositiveInt = 2048  # authors' script (response_max_length)
    max_steps: MaxSteps = -1
    peft: PeftField = None  # LoRA / QLoRA (harness/lora.py); null = full fine-tuning
    gradient_checkpointing: bool = False
    weight_decay: NonNegativeFloat = 0.0
    logging_steps: PositiveInt = 1


def train_orpo(ctx: TrainContext) -> dict[str, float]:
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    cfg: ORPOAlgoConfig = ctx.config
    require_rows(ctx, ("prompt", "chosen", "rejected"), "orpo")
    model, tok = load_policy(ctx)
    kwargs = common_trainer_kwargs(ctx, cfg)
    if cfg.warmup_steps > 0:  # transformers reads an int >= 1 as a step count, a float < 1 as a ratio
        kwargs["warmup_steps"] = cfg.warmup_steps
    args = ORPOConfig(**kwargs, beta=cfg.beta, max_length=cfg.max_length)
    trainer = ORPOTrainer(
        model=model, args=args, train_dataset=preference_dataset(ctx.train_rows), processing_class=tok,
        callbacks=[history_callback(ctx.log)], **peft_kwargs(cfg),
    )
    return train_and_save(trainer, tok, ctx)


register(AlgorithmSpec(
    name="orpo",
    config_cls=ORPOAlgoConfig,
    data="pairs",
    needs_reference=False,
    needs_reward=False,
    train=train_orpo,
    kl_coefficient_field=None,  # reference-free: its beta is not a KL coefficient
    defaults_source="Hong et al. 2024, xfactlab/orpo run_mistral_orpo_beta.sh (lambda 0.1, lr 5e-6, "
                    "inverse_sqrt, 200 warm-up steps, 5 epochs, batch 32)",
    description="Odds-Ratio Preference Optimisation: NLL on chosen + odds-ratio penalty, reference-free",
))
