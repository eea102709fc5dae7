"""Intermediate policy checkpoints (`eval.checkpoint_every`): where train_policy leaves them and how the
evaluate stage finds them, for the paper's Figs. 6-7 (benchmark scores over training steps).

Layout inside a train_policy stage folder:

    checkpoints/step-<N>/   weights, config and tokenizer of the policy after step N (N < final step)
    checkpoints/index.json  {"every": N, "final_step": S, "steps": [...]}

The final step has no folder: it is `model/` itself, whose evaluation is the stage's normal one, so the
last point of a curve is the cell's reported number by construction (not a second, equal evaluation).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

CHECKPOINTS_DIR = "checkpoints"
INDEX_FILE = "index.json"
# Written by the evaluate stage: one JSON row per evaluated step, {"step": s, "<task>/<metric>": value}.
HISTORY_FILE = "checkpoint_history.jsonl"
_TRAINER_CHECKPOINT = re.compile(r"checkpoint-(\d+)$")
# Trainer files a checkpoint does not need to be evaluated (save_only_model already drops the optimizer).
_TRAINER_STATE_FILES = ("trainer_state.json", "training_args.bin", "rng_state.pth", "scheduler.pt", "optimizer.pt")


def trainer_save_kwargs(every: int | None) -> dict[str, Any]:
    """TrainingArguments fields: no saving (as before), or weights only every `every` optimizer steps."""
    if not every:
        return {"save_strategy": "no"}
    return {"save_strategy": "steps", "save_steps": every, "save_only_model": True, "save_total_limit": None}


def checkpoint_dir(stage_dir: Path, step: int) -> Path:
    return stage_dir / CHECKPOINTS_DIR / f"step-{step}"


def finalize(stage_dir: Path, every: int, final_step: int, base_model: str | None = None) -> list[int]:
    """Move TRL's `trainer/checkpoint-N` folders to `checkpoints/step-N` (weights and tokenizer only),
    drop the one at the final step (it is `model/`), write the index; returns the kept steps.

    A LoRA run's trainer checkpoints hold the adapter only: each is merged into `base_model` (the policy
    it was trained from), as the final model is (`harness.lora`), so every checkpoint loads like a model."""
    trainer = stage_dir / "trainer"
    if trainer.is_dir():
        for folder in trainer.iterdir():
            match = _TRAINER_CHECKPOINT.match(folder.name)
            if match and folder.is_dir():
                target = checkpoint_dir(stage_dir, int(match.group(1)))
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.rmtree(target, ignore_errors=True)
                shutil.move(str(folder), str(target))
    root = stage_dir / CHECKPOINTS_DIR
    root.mkdir(exist_ok=True)
    model = stage_dir / "model"
    steps: list[int] = []
    for step, folder in list_checkpoints(stage_dir):
        if step >= final_step:
            shutil.rmtree(folder)  # identical to model/ (or past it): evaluated as the final model
            continue
        if (folder / "adapter_config.json").exists():
            if base_model is None:
                raise RuntimeError(f"{folder} holds a LoRA adapter, and no base model was given to merge it into")
            from harness.lora import merge_adapter_folder

            merged = folder.with_name(folder.name + ".merged")
            merge_adapter_folder(folder, base_model, merged)
            shutil.rmtree(folder)
            merged.rename(folder)
        for name in _TRAINER_STATE_FILES:
            (folder / name).unlink(missing_ok=True)
        # Some trainers save no processing class into checkpoints: the final model's tokenizer is the same one.
        if not (folder / "tokenizer_config.json").exists() and model.is_dir():
            for file in model.iterdir():
                if file.name.startswith(("tokenizer", "special_tokens", "vocab", "merges", "chat_template")):
                    shutil.copy2(file, folder / file.name)
        steps.append(step)
    (root / INDEX_FILE).write_text(json.dumps({"every": every, "final_step": final_step, "steps": steps}, indent=2))
    return steps


def list_checkpoints(stage_dir: Path) -> list[tuple[int, Path]]:
    """(step, folder) of the saved intermediate checkpoints, in step order."""
    root = stage_dir / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    found = [(int(p.name.removeprefix("step-")), p) for p in root.iterdir()
             if p.is_dir() and re.fullmatch(r"step-\d+", p.name)]
    return sorted(found)


def final_step(stage_dir: Path) -> int:
    index = stage_dir / CHECKPOINTS_DIR / INDEX_FILE
    if not index.exists():
        raise RuntimeError(f"{stage_dir} has no {CHECKPOINTS_DIR}/{INDEX_FILE}: it was trained without "
                           "checkpoint_every (its key should have differed: re-plan the grid)")
    return int(json.loads(index.read_text())["final_step"])
