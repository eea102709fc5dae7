"""Plumbing shared by the TRL-backed algorithms (everything but the loss): CPU/GPU trainer arguments,
policy loading, dataset conversion, saving and the summary every `train` returns.

Kept out of `base.py` because it imports nothing heavy at module level either, but is specific to TRL.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from harness import resume
from harness.algorithms.base import TrainContext
from harness.checkpoints import trainer_save_kwargs
from harness.config_fields import Problem

if TYPE_CHECKING:
    from harness.generation import EngineSettings


def device_kwargs(engine: EngineSettings | None = None) -> dict[str, Any]:
    """`use_cpu` without a GPU (TRL configs assume one); `bf16` (autocast over fp32 weights) where the
    engine's precision resolves to bf16: GPUs that support it, CPUs with AMX/AVX-512 BF16, unless pinned."""
    import torch

    from harness.generation import EngineSettings

    on_gpu = torch.cuda.is_available()
    resolved = (engine or EngineSettings()).resolved("cuda" if on_gpu else "cpu")
    return {"use_cpu": not on_gpu, "bf16": resolved.train_bf16}


def generation_backend_kwargs(cfg: Any, algorithm: str) -> dict[str, Any]:
    """TRL's generation backends, from the algorithm config's `use_vllm`, `vllm_mode` and (where TRL offers
    it) `use_transformers_paged`; vLLM is checked here (call it before loading models)."""
    from harness.generation import vllm_available

    if cfg.use_vllm and not vllm_available():
        raise ValueError(f"algorithm {algorithm!r}: use_vllm needs vLLM installed and a CUDA GPU; this machine "
                         "lacks one or both")
    kwargs: dict[str, Any] = {"use_vllm": cfg.use_vllm, "vllm_mode": cfg.vllm_mode}
    if getattr(cfg, "use_transformers_paged", False):
        import torch

        # TRL's name since 1.2 (`use_transformers_paged` is its deprecated alias). Its paged KV cache takes
        # a share of the device's free memory; on a CPU that is the machine's RAM (the transformers default
        # took 14 GB of a shared 24 GB machine and was OOM-killed), so a tenth of it there.
        kwargs["use_transformers_continuous_batching"] = True
        if not torch.cuda.is_available():
            kwargs["transformers_continuous_batching_config"] = {"max_memory_percent": 0.1}
    return kwargs


def common_trainer_kwargs(ctx: TrainContext, cfg: Any) -> dict[str, Any]:
    """TrainingArguments fields every algorithm sets the same way (fields read off the config dataclass).

    `warmup_steps` takes a float in [0, 1) as a ratio of total steps (transformers 5); `activation_checkpointing`
    is the non-deprecated name and overrides TRL's `gradient_checkpointing=True` default (slow on CPU).
    """
    return {
        "output_dir": str(ctx.out_dir / "trainer"),
        "learning_rate": cfg.learning_rate,
        "num_train_epochs": cfg.num_train_epochs,
        "max_steps": cfg.max_steps,
        "warmup_steps": cfg.warmup_ratio,
        "lr_scheduler_type": cfg.lr_scheduler_type,
        "per_device_train_batch_size": cfg.per_device_train_batch_size,
        "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
        "weight_decay": cfg.weight_decay,
        "logging_steps": cfg.logging_steps,
        "activation_checkpointing": cfg.gradient_checkpointing,
        **trainer_save_kwargs(ctx.checkpoint_every),
        "report_to": [],
        "seed": ctx.seed,
        "data_seed": ctx.seed,
        "dataloader_num_workers": 0,
        "disable_tqdm": True,
        **device_kwargs(ctx.engine),
    }


def whole_groups_problems(cfg: Any) -> list[Problem]:
    """GRPO/RLOO sample `num_generations` completions per prompt and compare them within the group: TRL needs
    every update (per_device_train_batch_size x gradient_accumulation_steps completions) to hold whole groups."""
    per_update = cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps
    if per_update % cfg.num_generations:
        return [("num_generations",
                 f"num_generations ({cfg.num_generations}) must divide per_device_train_batch_size x "
                 f"gradient_accumulation_steps ({cfg.per_device_train_batch_size} x {cfg.gradient_accumulation_steps}): "
                 "each update must hold whole groups (per_device_train_batch_size x gradient_accumulation_steps "
                 "must be a multiple of num_generations)")]
    return []


def load_policy(ctx: TrainContext):
    """(model, tokenizer) from the SFT policy folder; fp32 weights (TRL casts for bf16 training on GPU), or
    4-bit base weights for QLoRA (`peft.quantization`, checked first: it needs CUDA and bitsandbytes)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from harness import lora

    peft = getattr(ctx.config, "peft", None)
    lora.check_quantization(peft)
    tok = AutoTokenizer.from_pretrained(ctx.policy_path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(ctx.policy_path, **lora.load_kwargs(peft))
    return model, tok


def peft_kwargs(cfg: Any) -> dict[str, Any]:
    """The trainer's `peft_config` for a LoRA config (none for full fine-tuning). With it, TRL trains the
    adapters only and takes the reference model's log-probs with the adapter disabled (no second copy)."""
    from harness import lora

    return {"peft_config": lora.lora_config(cfg.peft, "CAUSAL_LM")} if getattr(cfg, "peft", None) else {}


def require_rows(ctx: TrainContext, keys: tuple[str, ...], algorithm: str) -> None:
    """Fail with a clear message (not a KeyError deep inside TRL) when rows lack what the algorithm reads."""
    if not ctx.train_rows:
        raise ValueError(f"algorithm {algorithm!r}: no training rows")
    missing = [k for k in keys if k not in ctx.train_rows[0]]
    if missing:
        raise ValueError(
            f"algorithm {algorithm!r} needs rows with {list(keys)}; the first row lacks {missing} "
            f"(it has {sorted(ctx.train_rows[0])})"
        )


def preference_dataset(rows: list[dict[str, Any]]):
    from datasets import Dataset

    return Dataset.from_list([{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]} for r in rows])


def unpaired_dataset(rows: list[dict[str, Any]], seed: int):
    """KTO data from pairs: chosen -> desirable (label True), rejected -> undesirable (label False).

    Shuffled here with the cell seed because TRL's KTO must sample sequentially (its KL term pairs each
    example with its batch neighbours), so without this every batch would hold both halves of one pair.
    """
    from datasets import Dataset

    out = []
    for r in rows:
        out.append({"prompt": r["prompt"], "completion": r["chosen"], "label": True})
        out.append({"prompt": r["prompt"], "completion": r["rejected"], "label": False})
    random.Random(f"unpair:{seed}").shuffle(out)
    return Dataset.from_list(out)


def reward_columns() -> tuple[str, ...]:
    """Row fields that verifiers read (TRL passes extra dataset columns as keyword arguments), plus
    `constraint` (the smoke prompts' label, kept for reward functions written against it)."""
    from harness.rewards import VERIFIERS

    return tuple(dict.fromkeys([c for name in VERIFIERS.names() for c in VERIFIERS.get(name).columns]
                               + ["constraint"]))


def prompt_dataset(rows: list[dict[str, Any]]):
    """Prompt-only data for online algorithms: `prompt` plus the reward-relevant columns all rows share.

    Preference rows are accepted too (their chosen/rejected answers are dropped): the online algorithms
    sample their own completions.
    """
    from datasets import Dataset

    keep = [c for c in reward_columns() if all(c in r for r in rows)]
    return Dataset.from_list([{"prompt": r["prompt"], **{c: r[c] for c in keep}} for r in rows])


@contextmanager
def generate_with_neutral_config(model: Any) -> Iterator[None]:
    """Within the block, every `model.generate` call (the online trainers' rollouts) ignores the sampling
    settings of the checkpoint's `generation_config.json` (`harness.generation.neutral_generation_config`).

    TRL passes its own GenerationConfig (temperature, top_k, top_p, ...), but transformers 5 fills each
    field left unset in it (min_p, no_repeat_ngram_size, typical_p, ...) from the model's: rollouts would
    be drawn from another distribution than the logits/temperature the loss and the KL use. Only the
    calls are wrapped: checkpoints saved during training keep the model's own generation config."""
    from harness.generation import neutral_generation_config

    generate = model.generate

    def neutral_generate(*args: Any, **kwargs: Any) -> Any:
        with neutral_generation_config(model):
            return generate(*args, **kwargs)

    model.generate = neutral_generate
    try:
        yield
    finally:
        del model.generate  # the instance attribute; the class's generate is visible again


def quiet_trainer(trainer: Any) -> None:
    """Drop transformers' stdout printer: the metrics go to history.jsonl and MLflow instead."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)


def train_and_save(trainer: Any, tok: Any, ctx: TrainContext) -> dict[str, float]:
    """Train (quietly: metrics go to the history, not stdout), save to out_dir/model, return the summary."""
    quiet_trainer(trainer)
    with generate_with_neutral_config(trainer.model):
        result = resume.train(trainer, ctx.out_dir, keep_every=ctx.checkpoint_every)
    save_policy(trainer, tok, ctx)
    runtime = float(result.metrics.get("train_runtime", 0.0))
    steps = float(result.global_step)
    return {
        "train/runtime_seconds": runtime,
        "train/final_loss": float(result.training_loss),
        "train/steps": steps,
        "train/steps_per_second": steps / runtime if runtime > 0 else 0.0,
    }


def save_policy(trainer: Any, tok: Any, ctx: TrainContext) -> None:
    """The trained policy to out_dir/model; with LoRA, the adapter to out_dir/adapter and the merged model to
    out_dir/model (`harness.lora`: what every consumer loads)."""
    from harness import lora
    from harness.generation import EngineSettings, record_engine

    # What the precision resolved to, beside the weights it produced (artifacts/engine.json).
    record_engine(ctx.out_dir, (ctx.engine or EngineSettings()).resolved())
    if lora.is_peft_model(trainer.model):
        lora.save_adapter_and_merged(trainer.model, tok, ctx.out_dir, ctx.config.peft, ctx.policy_path)
        return
    trainer.save_model(str(ctx.out_dir / "model"))
    tok.save_pretrained(str(ctx.out_dir / "model"))
