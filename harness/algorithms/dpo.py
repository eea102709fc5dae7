"""DPO (Rafailov et al., 2023) through TRL's `DPOTrainer`, with the paper's hyperparameters as defaults.

Loss (paper Eq. 3):  L_DPO = -E[ log sigma( beta * log(pi(y_c|x)/pi_ref(y_c|x)) - beta * log(pi(y_r|x)/pi_ref(y_r|x)) ) ]

Defaults = App. F.1 of Ivison et al. (2024): 3 epochs, lr 5e-7, linear warm-up over 10% of training then
linear decay, beta 0.1; effective batch 32 and max length 2048 follow the Tulu 2 + DPO recipe the paper
says it reuses (Ivison et al., 2023). Grid files scale these down (e.g. `max_steps`, `max_length`).
`sft_weight > 0` adds TRL's "sft" loss on the chosen answer (an NLL anchor, as in RPO), which on
tiny models stops DPO from buying the preference with degenerate text.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import Field

from harness.algorithms.base import AlgorithmSpec, TrainContext, history_callback, register
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
from harness.reference_logps import TRUNCATION_MODE

# TRL 1.16 DPOConfig.loss_type values (its docstring and DPOTrainer's "Unknown loss type" list).
DPOLossType = Literal["sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
                      "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm"]


@dataclass
class DPOAlgoConfig(CheckedConfig):
    OMITTED_AT_DEFAULT = ("peft",)  # added later: left out of the stage key while null (older keys unchanged)

    beta: PositiveFloat = 0.1  # App. F.1
    learning_rate: PositiveFloat = 5e-7  # App. F.1
    num_train_epochs: PositiveFloat = 3.0  # App. F.1
    warmup_ratio: WarmupRatio = 0.1  # App. F.1: linear warm-up for 10% of training
    lr_scheduler_type: LRSchedulerType = "linear"  # App. F.1: linear cool-down
    per_device_train_batch_size: PositiveInt = 8
    gradient_accumulation_steps: PositiveInt = 4  # 8 x 4 = 32, the Tulu 2 DPO effective batch
    max_length: PositiveInt = 2048  # Tulu 2 DPO recipe
    max_steps: MaxSteps = -1  # -1 = run the epochs; grids set this for small runs
    loss_type: DPOLossType = "sigmoid"  # TRL loss name: sigmoid (DPO), ipo, hinge, robust, ...
    # robust-DPO / cDPO epsilon, a label-flip rate: TRL requires [0, 0.5) for robust (0.5 divides by zero).
    label_smoothing: Annotated[float, Field(ge=0, lt=0.5)] = 0.0
    sft_weight: NonNegativeFloat = 0.0  # weight of an added NLL term on chosen (0 = pure DPO as in the paper)
    # Reference log-probs once, before training: same loss, no reference forward per step and no
    # reference model in memory during training. On by default for the memory; whether it also saves
    # time depends on the machine and the number of epochs (benchmarks/bench_dpo_precompute.py).
    precompute_ref_log_probs: bool = True
    peft: PeftField = None  # LoRA / QLoRA (harness/lora.py); null = full fine-tuning
    gradient_checkpointing: bool = False  # off: on CPU it costs time and the small models fit
    weight_decay: NonNegativeFloat = 0.0
    logging_steps: PositiveInt = 1


def make_dpo_config(cfg: DPOAlgoConfig, ctx: TrainContext, **extra: Any):
    from trl import DPOConfig

    from harness.algorithms.trl_common import common_trainer_kwargs

    loss_types = [cfg.loss_type] + (["sft"] if cfg.sft_weight > 0 else [])
    weights = [1.0] + ([cfg.sft_weight] if cfg.sft_weight > 0 else [])
    return DPOConfig(
        **common_trainer_kwargs(ctx, cfg),
        beta=cfg.beta,
        max_length=cfg.max_length,
        truncation_mode=TRUNCATION_MODE,  # TRL's default; the shared reference pass cuts sequences the same way
        loss_type=loss_types,
        loss_weights=weights if len(weights) > 1 else None,
        label_smoothing=cfg.label_smoothing,
        # Under several ranks TRL keeps the reference log-probs it precomputes in a per-process temp cache
        # that other ranks cannot read: it computes them on the fly there, unless a shared reference_logps
        # stage gave them as dataset columns (every rank reads those).
        precompute_ref_log_probs=ctx.reference_logps is not None or (
            cfg.precompute_ref_log_probs and int(os.environ.get("WORLD_SIZE", "1")) == 1),
        **extra,
    )


def train_dpo(ctx: TrainContext) -> dict[str, float]:
    from trl import DPOTrainer

    from harness.algorithms.trl_common import load_policy, peft_kwargs, preference_dataset, train_and_save

    cfg: DPOAlgoConfig = ctx.config
    model, tok = load_policy(ctx)
    dataset = preference_dataset(ctx.train_rows)
    trainer_class = DPOTrainer
    if ctx.reference_logps is not None:  # computed once for the grid by its reference_logps stage
        from harness.reference_logps import precomputed_trainer_class

        dataset = ctx.reference_logps.with_columns(dataset)
        trainer_class = precomputed_trainer_class()
    trainer = trainer_class(
        model=model,
        args=make_dpo_config(cfg, ctx),
        train_dataset=dataset,
        processing_class=tok,
        callbacks=[history_callback(ctx.log)],
        **peft_kwargs(cfg),
    )
    return train_and_save(trainer, tok, ctx)


register(AlgorithmSpec(
    name="dpo",
    config_cls=DPOAlgoConfig,
    data="pairs",
    needs_reference=True,
    needs_reward=False,
    train=train_dpo,
    defaults_source="Ivison et al. 2024, App. F.1 (3 epochs, lr 5e-7, 10% warm-up, linear decay, beta 0.1)",
    description="Direct Preference Optimization, sigmoid loss (paper Eq. 3)",
    reference_logps=True,
    kl_coefficient_field="beta",
))
