"""SimPO (Meng et al., 2024): reference-free, length-normalised preference loss with a target margin,
through TRL's experimental `CPOTrainer` (`loss_type="simpo"`, `cpo_alpha=0` = no added NLL term).

Loss: −log σ( β/|y_c| · log π(y_c|x) − β/|y_r| · log π(y_r|x) − γ ).

Defaults are the SimPO authors' recipe for an *instruct* starting point (our SFT policy, SmolLM2-Instruct,
is one): princeton-nlp/SimPO training_configs/llama-3-8b-instruct-simpo.yaml: β = 2.5, γ/β = 0.55,
lr 1e-6, 1 epoch, cosine schedule, 10% warm-up, max length 2048; effective batch 128 (paper, §4 setup).
`gamma_beta_ratio` is the knob the authors tune (γ = ratio · β), so a β sweep keeps the margin ratio.
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
    PositiveFloat,
    PositiveInt,
    WarmupRatio,
)
from harness.lora import PeftField


@dataclass
class SimPOConfig(CheckedConfig):
    OMITTED_AT_DEFAULT = ("peft",)  # added later: left out of the stage key while null (older keys unchanged)

    beta: PositiveFloat = 2.5  # llama-3-8b-instruct-simpo.yaml
    gamma_beta_ratio: NonNegativeFloat = 0.55  # same file; TRL's simpo_gamma = ratio * beta
    sft_weight: NonNegativeFloat = 0.0  # TRL's cpo_alpha: 0 = pure SimPO (the paper adds no NLL term)
    learning_rate: PositiveFloat = 1e-6  # same file
    num_train_epochs: PositiveFloat = 1.0  # same file
    warmup_ratio: WarmupRatio = 0.1  # same file
    lr_scheduler_type: LRSchedulerType = "cosine"  # same file
    per_device_train_batch_size: PositiveInt = 8
    gradient_accumulation_steps: PositiveInt = 16  # 8 x 16 = 128, the SimPO paper's batch size
    max_length: PositiveInt = 2048  # same file
    max_steps: MaxSteps = -1
    peft: PeftField = None  # LoRA / QLoRA (harness/lora.py); null = full fine-tuning
    gradient_checkpointing: bool = False
    weight_decay: NonNegativeFloat = 0.0
    logging_steps: PositiveInt = 1


def train_simpo(ctx: TrainContext) -> dict[str, float]:
    from trl.experimental.cpo import CPOConfig, CPOTrainer

    cfg: SimPOConfig = ctx.config
    require_rows(ctx, ("prompt", "chosen", "rejected"), "simpo")
    model, tok = load_policy(ctx)
    args = CPOConfig(
        **common_trainer_kwargs(ctx, cfg),
        loss_type="simpo",
        beta=cfg.beta,
        simpo_gamma=cfg.gamma_beta_ratio * cfg.beta,
        cpo_alpha=cfg.sft_weight,
        max_length=cfg.max_length,
    )
    trainer = CPOTrainer(
        model=model, args=args, train_dataset=preference_dataset(ctx.train_rows), processing_class=tok,
        callbacks=[history_callback(ctx.log)], **peft_kwargs(cfg),
    )
    return train_and_save(trainer, tok, ctx)


register(AlgorithmSpec(
    name="simpo",
    config_cls=SimPOConfig,
    data="pairs",
    needs_reference=False,
    needs_reward=False,
    train=train_simpo,
    kl_coefficient_field=None,  # reference-free: its beta is not a KL coefficient
    defaults_source="Meng et al. 2024, princeton-nlp/SimPO llama-3-8b-instruct-simpo.yaml "
                    "(beta 2.5, gamma/beta 0.55, lr 1e-6, 1 epoch, cosine, 10% warm-up, batch 128)",
    description="Simple Preference Optimisation: reference-free, length-normalised reward, target margin",
))
