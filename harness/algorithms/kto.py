"""KTO (Ethayarajh et al., 2024) through TRL's `KTOTrainer`, trained on preference pairs seen unpaired.

Each pair becomes two labelled examples: chosen -> desirable, rejected -> undesirable (so the data is
balanced and λ_D = λ_U = 1 is the paper's recommended weighting). KTO's value function compares the
policy/reference log-ratio of each example to a batch-level KL reference point, estimated by TRL from
mismatched (prompt, completion) pairs within the batch; hence the per-device batch must be > 1.

Defaults: β = 0.1, λ_D = λ_U = 1 and lr 5e-7 are the KTO authors' settings (HALOs repo,
config/loss/kto.yaml and config/config.yaml). The rest of the schedule (3 epochs, 10% warm-up, linear
decay, effective batch 32, max length 2048) is Ivison et al. (2024) App. F.1's DPO recipe, so a
KTO-vs-DPO cell differs in the loss and the data view only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from harness.algorithms.base import AlgorithmSpec, TrainContext, history_callback, register
from harness.algorithms.trl_common import (
    common_trainer_kwargs,
    load_policy,
    peft_kwargs,
    require_rows,
    train_and_save,
    unpaired_dataset,
)
from harness.config_fields import (
    CheckedConfig,
    LRSchedulerType,
    MaxSteps,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    WarmupRatio,
    requirement,
)
from harness.lora import PeftField


@dataclass
class KTOAlgoConfig(CheckedConfig):
    OMITTED_AT_DEFAULT = ("peft",)  # added later: left out of the stage key while null (older keys unchanged)

    beta: PositiveFloat = 0.1  # KTO paper / HALOs kto.yaml
    desirable_weight: PositiveFloat = 1.0  # λ_D; 1 because unpairing pairs gives a 1:1 desirable:undesirable ratio
    undesirable_weight: PositiveFloat = 1.0  # λ_U
    learning_rate: PositiveFloat = 5e-7  # HALOs config.yaml (also DPO's App. F.1 value)
    num_train_epochs: PositiveFloat = 3.0  # App. F.1 (DPO recipe)
    warmup_ratio: WarmupRatio = 0.1  # App. F.1
    lr_scheduler_type: LRSchedulerType = "linear"  # App. F.1
    per_device_train_batch_size: Annotated[int, requirement(
        lambda n: n >= 2, "must be >= 2: KTO estimates its KL term within a batch")] = 8
    gradient_accumulation_steps: PositiveInt = 4  # 8 x 4 = 32, App. F.1's effective batch
    max_length: PositiveInt = 2048  # App. F.1
    max_steps: MaxSteps = -1
    # As for DPO: reference log-probs (also of the in-batch KL pairs, fixed by sequential sampling) computed
    # once before training; same loss, no reference model kept in memory during training.
    precompute_ref_log_probs: bool = True
    peft: PeftField = None  # LoRA / QLoRA (harness/lora.py); null = full fine-tuning
    gradient_checkpointing: bool = False
    weight_decay: NonNegativeFloat = 0.0
    logging_steps: PositiveInt = 1


def train_kto(ctx: TrainContext) -> dict[str, float]:
    from trl import KTOConfig, KTOTrainer

    cfg: KTOAlgoConfig = ctx.config
    require_rows(ctx, ("prompt", "chosen", "rejected"), "kto")
    model, tok = load_policy(ctx)
    args = KTOConfig(
        **common_trainer_kwargs(ctx, cfg),
        beta=cfg.beta,
        desirable_weight=cfg.desirable_weight,
        undesirable_weight=cfg.undesirable_weight,
        max_length=cfg.max_length,
        precompute_ref_log_probs=cfg.precompute_ref_log_probs,
        # TRL requires sequential sampling for KTO's in-batch KL pairing; `unpaired_dataset` shuffles instead.
        train_sampling_strategy="sequential",
    )
    trainer = KTOTrainer(
        model=model, args=args, train_dataset=unpaired_dataset(ctx.train_rows, ctx.seed), processing_class=tok,
        callbacks=[history_callback(ctx.log)], **peft_kwargs(cfg),
    )
    return train_and_save(trainer, tok, ctx)


register(AlgorithmSpec(
    name="kto",
    config_cls=KTOAlgoConfig,
    data="unpaired",
    needs_reference=True,
    needs_reward=False,
    train=train_kto,
    kl_coefficient_field="beta",
    defaults_source="Ethayarajh et al. 2024 / HALOs configs (beta 0.1, lambda_D = lambda_U = 1, lr 5e-7); "
                    "schedule from Ivison et al. 2024 App. F.1",
    description="Kahneman-Tversky Optimisation on pairs split into desirable/undesirable examples",
    # each pair's two answers are its desirable and undesirable examples: the estimate's tokens are the pairs'
    uncounted_compute=("KTO's KL term (an extra policy and reference forward on mismatched pairs) is not counted",),
))
