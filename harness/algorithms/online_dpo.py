"""Online DPO (Guo et al., 2024, "Direct Language Model Alignment from Online AI Feedback") through TRL's
experimental `OnlineDPOTrainer`: for each prompt the current policy samples two completions, the judge
(a reward model, EOS trick applied, or a verifiable reward function) picks the better one, and the pair
gets the DPO loss against the frozen reference.

Defaults: the DPO side is Ivison et al. (2024) App. F.1 (β 0.1, lr 5e-7, 10% warm-up, linear decay, 32
pairs per update); the sampling side is their PPO Table 9 (temperature 0.7, continuation up to 1024
tokens, 1 epoch over the prompts), so online DPO sits between the offline-DPO and PPO cells it is
compared with. The pair size (2 samples per prompt) is fixed by the method.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from harness.algorithms.base import AlgorithmSpec, RolloutShape, TrainContext, history_callback, register
from harness.algorithms.reward_wrappers import EosTrickMode, build_reward
from harness.algorithms.trl_common import (
    common_trainer_kwargs,
    generation_backend_kwargs,
    load_policy,
    peft_kwargs,
    prompt_dataset,
    require_rows,
    train_and_save,
)
from harness.config_fields import (
    CheckedConfig,
    FiniteFloat,
    LRSchedulerType,
    MaxSteps,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    WarmupRatio,
)
from harness.lora import PeftField

# TRL's OnlineDPOTrainer samples two answers per prompt, the pair its judge ranks.
SAMPLES_PER_PROMPT = 2


@dataclass
class OnlineDPOAlgoConfig(CheckedConfig):
    OMITTED_AT_DEFAULT = ("peft",)  # added later: left out of the stage key while null (older keys unchanged)

    beta: PositiveFloat = 0.1  # App. F.1 (DPO β)
    loss_type: Literal["sigmoid", "ipo"] = "sigmoid"  # DPO; the other of TRL 1.16 OnlineDPOConfig's choices is IPO
    learning_rate: PositiveFloat = 5e-7  # App. F.1
    temperature: PositiveFloat = 0.7  # Table 9 rollout temperature
    max_new_tokens: PositiveInt = 1024  # Table 9: L_c
    max_length: PositiveInt = 2048  # prompt + completion budget (Table 9: 1024 + 1024)
    per_device_train_batch_size: PositiveInt = 8  # prompts per micro-batch (2 samples each)
    gradient_accumulation_steps: PositiveInt = 4  # 8 x 4 = 32 pairs per update, App. F.1's batch
    num_train_epochs: PositiveFloat = 1.0  # Table 9: one pass over the prompts
    warmup_ratio: WarmupRatio = 0.1  # App. F.1
    lr_scheduler_type: LRSchedulerType = "linear"  # App. F.1
    max_steps: MaxSteps = -1
    eos_trick: EosTrickMode = "reward_model"  # reward_model | always | never
    eos_penalty_reward: FiniteFloat = -10.0  # App. E.2
    peft: PeftField = None  # LoRA / QLoRA (harness/lora.py); null = full fine-tuning
    gradient_checkpointing: bool = False
    weight_decay: NonNegativeFloat = 0.0
    logging_steps: PositiveInt = 1
    # TRL's vLLM generation (`vllm_mode` as TRL's; GPU only: untested here; the precision comes from
    # `ctx.engine`). TRL's Online DPO offers no transformers continuous batching.
    use_vllm: bool = False
    vllm_mode: Literal["colocate", "server"] = "colocate"


def train_online_dpo(ctx: TrainContext) -> dict[str, float]:
    from trl.experimental.online_dpo import OnlineDPOConfig, OnlineDPOTrainer

    cfg: OnlineDPOAlgoConfig = ctx.config
    require_rows(ctx, ("prompt",), "online-dpo")
    backends = generation_backend_kwargs(cfg, "online-dpo")  # checked before any model loads
    model, tok = load_policy(ctx)
    reward_fn, stats = build_reward(ctx, tok, model, cfg.eos_trick, cfg.eos_penalty_reward)
    args = OnlineDPOConfig(
        **common_trainer_kwargs(ctx, cfg),
        beta=[cfg.beta],
        loss_type=cfg.loss_type,
        temperature=cfg.temperature,
        top_k=0,
        top_p=1.0,
        max_new_tokens=cfg.max_new_tokens,
        max_length=cfg.max_length,
        missing_eos_penalty=None,  # the EOS trick lives in the reward wrapper, identical for all online methods
        **backends,
    )
    trainer = OnlineDPOTrainer(
        model=model, reward_funcs=[reward_fn], args=args, train_dataset=prompt_dataset(ctx.train_rows),
        processing_class=tok, callbacks=[history_callback(ctx.log, extra=stats.drain)], **peft_kwargs(cfg),
    )
    return train_and_save(trainer, tok, ctx)


def rollout_shape(algo: dict[str, Any], processes: int) -> RolloutShape:
    """TRL's OnlineDPOTrainer: a step takes per-device x accumulation x processes prompts (2 samples each),
    up to `max_new_tokens` each, for the cost estimate."""
    prompts = algo.get("per_device_train_batch_size", 1) * algo.get("gradient_accumulation_steps", 1) * processes
    return RolloutShape(
        prompt_batch_size=prompts, samples_per_prompt=SAMPLES_PER_PROMPT, max_new_tokens=algo["max_new_tokens"],
        max_prompt_length=algo.get("max_prompt_length", 1024), epochs=algo.get("num_train_epochs", 1.0),
        max_steps=algo.get("max_steps", -1), inner_epochs=algo.get("num_iterations", 1),
        reference=algo.get("beta", 0.0) > 0, generation_batch_size=prompts * SAMPLES_PER_PROMPT)


register(AlgorithmSpec(
    name="online-dpo",
    config_cls=OnlineDPOAlgoConfig,
    data="prompts",
    needs_reference=True,
    needs_reward=True,
    train=train_online_dpo,
    kl_coefficient_field="beta",
    defaults_source="Guo et al. 2024 (2 samples/prompt, judge picks); DPO settings Ivison et al. 2024 App. F.1, "
                    "sampling settings Table 9",
    description="Online DPO: DPO on pairs of the policy's own samples ranked by a reward model or function",
    samples_per_prompt=SAMPLES_PER_PROMPT,
    rollout_shape=rollout_shape,
))
