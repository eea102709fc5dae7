"""Full fine-tuning vs LoRA / QLoRA: the `peft` block of every TRL-based algorithm (`algorithm.peft`), of
the project's PPO (policy and value model) and of reward-model training (`reward_model.train.peft`),
applied through the `peft` library.

    algorithm: {name: dpo, peft: {r: 16}}                 # LoRA, rank 16, other settings below
    axes: {algorithm.peft: [null, {r: 16}]}               # full fine-tuning vs LoRA in one grid

Settings (unset ones take these defaults, written into the resolved config so the stage key and the logged
params show them): `r` (rank, 16), `alpha` (scaling numerator, default 2 x r: the common alpha = 2r),
`dropout` (0.0: peft's default; PPO trains without dropout, Table 9, so it rejects any other value),
`target_modules` ("all-linear": every linear layer but the output head, as QLoRA recommends; or a list of
module names) and `quantization` ("none"; "4bit" = QLoRA: the frozen base weights loaded in 4-bit NF4
through bitsandbytes, which needs CUDA; it is rejected on a machine without CUDA or bitsandbytes, when
training starts, and it has not been run by this project: no GPU was available to test it).

What happens:
- the reference model of DPO-family methods, GRPO, RLOO and Online DPO is the adapter-disabled base (TRL
  does this whenever the model is a PeftModel), and PPO's reference is its policy with the adapter
  disabled: no second copy of the weights in memory;
- a reward model (and PPO's value model) is a sequence-classification model: LoRA on its backbone, its
  score head fully trainable (peft's SEQ_CLS task keeps it in `modules_to_save`);
- the trained stage saves the adapter alone under `adapter/` (small; logged to MLflow as an artifact) and
  the merged model (base + adapter, plain weights) under `model/`, which is what every consumer loads: the
  evaluate stage, checkpoint evaluations, best-of-N, PPO's reward model, the judge and any generation
  engine, unchanged. Merging keeps one model format across the harness; the adapter is there for users
  who want to ship or stack it. Intermediate checkpoints (`eval.checkpoint_every`) are merged the same way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, ConfigDict, Field
from typing_extensions import TypedDict

ADAPTER_DIR = "adapter"


class LoraSettings(TypedDict, total=False):
    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]
    r: Annotated[int, Field(ge=1)]
    alpha: Annotated[float, Field(gt=0, allow_inf_nan=False)]
    dropout: Annotated[float, Field(ge=0, lt=1)]
    target_modules: str | list[str]
    quantization: Literal["none", "4bit"]


DEFAULTS: dict[str, Any] = {"r": 16, "dropout": 0.0, "target_modules": "all-linear", "quantization": "none"}


def complete(settings: dict[str, Any] | None) -> dict[str, Any] | None:
    """Every setting, defaults filled in (alpha = 2 x r unless given); None stays None (full fine-tuning)."""
    if settings is None:
        return None
    out = {**DEFAULTS, **settings}
    out.setdefault("alpha", 2.0 * out["r"])
    out["alpha"] = float(out["alpha"])
    out["dropout"] = float(out["dropout"])
    if isinstance(out["target_modules"], tuple):
        out["target_modules"] = list(out["target_modules"])
    return {key: out[key] for key in ("r", "alpha", "dropout", "target_modules", "quantization")}


# The annotation of every `peft` config field (null = full fine-tuning); validation fills in the defaults.
PeftField = Annotated[LoraSettings | None, AfterValidator(complete)]


def lora_config(settings: dict[str, Any], task_type: Literal["CAUSAL_LM", "SEQ_CLS"]) -> Any:
    """peft's LoraConfig; SEQ_CLS keeps the score head trainable (peft adds it to `modules_to_save`)."""
    from peft import LoraConfig

    settings = complete(settings) or {}
    return LoraConfig(r=settings["r"], lora_alpha=settings["alpha"], lora_dropout=settings["dropout"],
                      target_modules=settings["target_modules"], task_type=task_type, bias="none")


def check_quantization(settings: dict[str, Any] | None) -> None:
    """QLoRA needs CUDA and bitsandbytes: say so before anything loads (this project could not test it)."""
    if settings is None or complete(settings)["quantization"] == "none":
        return
    import importlib.util

    import torch

    if not torch.cuda.is_available():
        raise ValueError("peft.quantization '4bit' (QLoRA) needs a CUDA GPU (bitsandbytes' 4-bit kernels); this "
                         "machine has none: use quantization 'none' (LoRA on full-precision weights) here")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ValueError("peft.quantization '4bit' (QLoRA) needs the bitsandbytes package: pip install bitsandbytes")


def load_kwargs(settings: dict[str, Any] | None) -> dict[str, Any]:
    """`from_pretrained` keyword arguments for the base weights: 4-bit NF4 for QLoRA (untested here)."""
    if settings is None or complete(settings)["quantization"] == "none":
        return {}
    import torch
    from transformers import BitsAndBytesConfig

    return {"quantization_config": BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16)}


def wrap(model: Any, settings: dict[str, Any], task_type: Literal["CAUSAL_LM", "SEQ_CLS"]) -> Any:
    """`model` with fresh LoRA adapters (only they, and a SEQ_CLS score head, are trainable)."""
    from peft import get_peft_model, prepare_model_for_kbit_training

    if complete(settings)["quantization"] != "none":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return get_peft_model(model, lora_config(settings, task_type))


def is_peft_model(model: Any) -> bool:
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(model, PeftModel)


def save_adapter_and_merged(model: Any, tokenizer: Any, out_dir: Path, settings: dict[str, Any], base_path: str,
                            task_type: Literal["CAUSAL_LM", "SEQ_CLS"] = "CAUSAL_LM") -> None:
    """The adapter alone to out_dir/adapter, the merged model to out_dir/model (what consumers load).
    Merging folds the adapter into `model`'s own weights: call it last. A 4-bit base is not merged into:
    the adapter goes onto a full-precision copy of the base instead."""
    adapter = out_dir / ADAPTER_DIR
    model.save_pretrained(str(adapter))
    (adapter / "harness_lora.json").write_text(json.dumps(complete(settings), indent=2))
    if complete(settings)["quantization"] != "none":
        merge_adapter_folder(adapter, base_path, out_dir / "model", task_type)
    else:
        model.merge_and_unload().save_pretrained(str(out_dir / "model"))
    tokenizer.save_pretrained(str(out_dir / "model"))


def merge_adapter_folder(adapter_dir: Path, base_path: str, out_dir: Path,
                         task_type: Literal["CAUSAL_LM", "SEQ_CLS"] = "CAUSAL_LM") -> None:
    """A saved adapter (e.g. a trainer checkpoint) merged into a fresh full-precision copy of its base."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    if task_type == "SEQ_CLS":
        base = AutoModelForSequenceClassification.from_pretrained(base_path, num_labels=1)
    else:
        base = AutoModelForCausalLM.from_pretrained(base_path)
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(str(out_dir))


def save_merged_copy(model: Any, base_path: str, out_dir: Path) -> None:
    """A LoRA model still in training, merged into a fresh copy of its base and saved to out_dir (the
    model itself keeps its adapter): the adapter goes through a temporary folder beside out_dir."""
    import shutil

    staging = out_dir.parent / f".{out_dir.name}.adapter"
    model.save_pretrained(str(staging))
    try:
        merge_adapter_folder(staging, base_path, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
