"""Mid-stage resume and stop requests of the training stages (train_policy, train_reward_model).

A training stage saves a *resume checkpoint* into its working folder (`stages/.work/<kind>/<key>/`,
`harness.cache`) every `train.checkpoint_minutes` (default 30) and/or every `train.checkpoint_steps`
optimizer steps (PPO: updates):

    <work>/trainer/checkpoint-<k>/              everything needed to go on after step k
    <work>/trainer/checkpoint-<k>/resume.json   {"step": k, "saved_at": t}: written last, so a folder
                                                 without it (a kill mid-save) is never resumed from

TRL trainers (DPO family, SFT-style, GRPO/RLOO/Online DPO, the reward model) save through the Trainer's
own `_save_checkpoint` (weights, optimizer, scheduler, RNG states, trainer state with the data position)
and resume through `trainer.train(resume_from_checkpoint=...)`: `train(trainer, out)` does both. The
project's PPO (harness/algorithms/ppo.py) writes its own state with `Checkpointer`.

When a later writer claims a folder its predecessor left (killed, failed or stopped),
`harness.executors.execute_stage` calls `prepare(claim)` instead of starting over: the newest complete
checkpoint is kept, `history.jsonl` is cut to the rows of steps <= k (the driver replays it into a fresh
live MLflow run: no step twice, none missing), and the stage goes on from step k. Without a checkpoint
the folder is emptied as before. Resume checkpoints are removed before a stage is published
(`discard`); the intermediate policies `eval.checkpoint_every` asks for are kept (`harness.checkpoints`).

Stop requests (`request_stop`): a file `stop.json` in the working folder, written by whoever wants the
stage to end now (the sweep's pruner). The trainer checks it after every optimizer step (PPO: update),
saves a resume checkpoint and raises `StageStopped`; the stage is then recorded as failed
(`failure.json`, "stopped: ..."), never published, and a later claim resumes it from that checkpoint.

The checkpoint settings change when work is saved, never what is computed: they are not part of any
stage key (`Stage.checkpointing`, carried in the stage's spec beside its config).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHECKPOINT_ROOT = "trainer"  # TRL's output_dir inside the working folder; PPO saves there too
MARKER_FILE = "resume.json"
STOP_FILE = "stop.json"
HISTORY_FILE = "history.jsonl"
_CHECKPOINT = re.compile(r"checkpoint-(\d+)$")
# Trainer files only resuming needs: dropped from an intermediate policy kept for the checkpoint evaluations.
_RESUME_ONLY_FILES = ("optimizer.pt", "scheduler.pt", "rng_state.pth", "scaler.pt", MARKER_FILE)
DEFAULT_MINUTES = 30.0


class StageStopped(RuntimeError):
    """The stage ended early on a stop request; its work up to `step` is kept as a resume checkpoint."""

    def __init__(self, step: int, reason: str):
        self.step, self.reason = step, reason
        super().__init__(f"stopped at step {step}: {reason}")


@dataclass(frozen=True)
class Settings:
    """When a training stage saves a resume checkpoint: every `minutes` of training and/or every `steps`
    optimizer steps (PPO: updates); both None = never (a stop request still saves one)."""

    minutes: float | None = DEFAULT_MINUTES
    steps: int | None = None

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> Settings:
        given = spec.get("checkpointing") or {}
        return cls(minutes=given.get("minutes", DEFAULT_MINUTES), steps=given.get("steps"))

    def due(self, step: int, last_save: float, now: float) -> bool:
        if self.steps and step % self.steps == 0:
            return True
        return bool(self.minutes) and now - last_save >= self.minutes * 60.0


_current: Settings = Settings()


@contextmanager
def stage_settings(settings: Settings) -> Iterator[None]:
    """Within the block, the trainers of this process checkpoint as `settings` say (set per stage by
    `execute_stage`, like `harness.progress.stage_folder`)."""
    global _current
    previous, _current = _current, settings
    try:
        yield
    finally:
        _current = previous


def current_settings() -> Settings:
    return _current


# ---------------------------------------------------------------------------------------------
# Checkpoint folders
# ---------------------------------------------------------------------------------------------

def checkpoint_root(out: Path) -> Path:
    return out / CHECKPOINT_ROOT


def _checkpoints(out: Path) -> list[tuple[int, Path]]:
    root = checkpoint_root(out)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _CHECKPOINT.match(p.name))]
    return sorted(found)


def latest(out: Path) -> tuple[int, Path] | None:
    """(step, folder) of the newest complete resume checkpoint of a working folder, None when there is none."""
    complete = [(step, path) for step, path in _checkpoints(out) if (path / MARKER_FILE).exists()]
    return complete[-1] if complete else None


def mark_complete(folder: Path, step: int, counters: dict[str, float] | None = None) -> None:
    """The last write of a checkpoint: from now on it can be resumed from. `counters`: running totals a
    trainer keeps outside its saved state (restored by `train`)."""
    tmp = folder / f".{MARKER_FILE}.{os.getpid()}"
    tmp.write_text(json.dumps({"step": step, "saved_at": time.time(), "counters": counters or {}}))
    os.replace(tmp, folder / MARKER_FILE)


def prune_older(out: Path, keep_every: int | None) -> None:
    """Keep only the newest complete checkpoint whole: older ones are removed, except the intermediate
    policies `eval.checkpoint_every` asks for (step % keep_every == 0), which lose their resume-only files."""
    newest = latest(out)
    if newest is None:
        return
    for step, path in _checkpoints(out):
        if step >= newest[0]:
            continue
        _keep_policy_or_remove(path, step, keep_every)


def _keep_policy_or_remove(path: Path, step: int, keep_every: int | None) -> None:
    """An intermediate policy `eval.checkpoint_every` asks for (a TRL checkpoint holding a model) loses its
    resume-only files; any other checkpoint (PPO's state files) is removed."""
    holds_policy = (path / "config.json").exists() or (path / "adapter_config.json").exists()
    if keep_every and step % keep_every == 0 and holds_policy:
        for name in _RESUME_ONLY_FILES:
            (path / name).unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


def discard(out: Path, keep_every: int | None = None) -> None:
    """Before publication: remove the resume checkpoints (and any stop request); with `keep_every`, the
    intermediate policies `eval.checkpoint_every` asked for stay (as weights, for `harness.checkpoints`)."""
    for step, path in _checkpoints(out):
        _keep_policy_or_remove(path, step, keep_every)
    (out / STOP_FILE).unlink(missing_ok=True)


def truncate_rows(path: Path, step: int) -> None:
    """Keep the JSON lines of `path` whose `step` is <= `step` (and drop a half-written last line)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if int(row.get("step", 0)) <= step:
            kept.append(line + "\n")
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text("".join(kept))
    os.replace(tmp, path)


def prepare(claim: Any) -> int | None:
    """Make a reclaimed working folder (`cache.WorkClaim` with `previous` set) ready to go on: returns the
    step of the checkpoint the stage resumes from, or None when it has none (the caller starts over)."""
    from harness import cache

    out: Path = claim.path
    found = latest(out)
    if found is None:
        return None
    step, folder = found
    for other_step, path in _checkpoints(out):
        if other_step > step:  # a save the kill cut short
            shutil.rmtree(path, ignore_errors=True)
    (out / STOP_FILE).unlink(missing_ok=True)
    (out / cache.FAILURE_FILE).unlink(missing_ok=True)
    truncate_rows(out / HISTORY_FILE, step)
    started = (claim.previous or {}).get("started_at")
    if started:
        claim.set_started_at(float(started))
    return step


# ---------------------------------------------------------------------------------------------
# Stop requests
# ---------------------------------------------------------------------------------------------

def request_stop(out: Path, reason: str) -> bool:
    """Ask the stage writing `out` (its working folder) to stop now; False when the folder is gone (the
    stage was published or never claimed)."""
    if not out.is_dir():
        return False
    tmp = out / f".{STOP_FILE}.{os.getpid()}"
    try:
        tmp.write_text(json.dumps({"reason": reason, "at": time.time()}))
        os.replace(tmp, out / STOP_FILE)
    except OSError:
        return False
    return True


def stop_reason(out: Path) -> str | None:
    try:
        return str(json.loads((out / STOP_FILE).read_text()).get("reason", "stop requested"))
    except (OSError, json.JSONDecodeError):
        return None


# ---------------------------------------------------------------------------------------------
# TRL trainers
# ---------------------------------------------------------------------------------------------

# Running totals a Trainer keeps outside its checkpoints, kept in the marker and set back on resume (at
# train begin, after transformers reset them): TRL's `num_tokens` metric (DPO, KTO, the reward trainer, GRPO,
# RLOO, SFT count from 0 in __init__), and the loss sum behind the final `train_loss` (transformers averages
# it over the steps of the current `train()` call only; with the sum and a start of 0 it covers the whole run).
_TRAINER_COUNTERS = ("_total_train_tokens", "_total_loss_scalar")


def _counters(trainer: Any) -> dict[str, float]:
    found = {name: float(getattr(trainer, name)) for name in _TRAINER_COUNTERS if hasattr(trainer, name)}
    if "_total_loss_scalar" in found and hasattr(trainer, "_tr_loss"):
        found["_total_loss_scalar"] += float(trainer._tr_loss)  # the part not yet logged (drained) at the save
    return found


def _restore_counters(trainer: Any, counters: dict[str, float]) -> None:
    for name, value in counters.items():
        setattr(trainer, name, int(value) if isinstance(getattr(trainer, name, None), int) else value)
    if "_total_loss_scalar" in counters:
        trainer._initial_global_step = 0


def trainer_callback(out: Path, keep_every: int | None, trainer: Any = None,
                     restore: dict[str, float] | None = None):
    """A transformers `TrainerCallback`: saves when `Settings` say so or a stop is requested (and then stops
    training), marks each saved checkpoint complete (with `trainer`'s running totals) and drops the older ones;
    `restore`: the totals of the checkpoint training resumes from."""
    from transformers import TrainerCallback

    settings = current_settings()

    class _Checkpointing(TrainerCallback):
        last_save = time.monotonic()
        stopping = False

        def on_train_begin(self, args, state, control, **kwargs):
            self.last_save = time.monotonic()
            if restore:
                _restore_counters(trainer, restore)

        def on_step_end(self, args, state, control, **kwargs):
            if stop_reason(out) is not None:
                self.stopping = True
                control.should_training_stop = True
                control.should_save = True
            elif settings.due(state.global_step, self.last_save, time.monotonic()):
                control.should_save = True

        def on_save(self, args, state, control, **kwargs):
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if folder.is_dir():
                mark_complete(folder, state.global_step, _counters(trainer) if trainer is not None else None)
                prune_older(out, keep_every)
            self.last_save = time.monotonic()

    return _Checkpointing()


def train(trainer: Any, out: Path, keep_every: int | None = None) -> Any:
    """`trainer.train()` that checkpoints into `out/trainer` (the trainer's output_dir), resumes from the
    newest complete checkpoint there, and raises `StageStopped` when a stop request ended it."""
    # Full checkpoints (optimizer, scheduler, RNG): `eval.checkpoint_every` alone asked for weights only.
    trainer.args.save_only_model = False
    found = latest(out)
    restore = json.loads((found[1] / MARKER_FILE).read_text()).get("counters", {}) if found else None
    trainer.add_callback(trainer_callback(out, keep_every, trainer, restore))
    result = trainer.train(resume_from_checkpoint=str(found[1]) if found else None)
    reason = stop_reason(out)
    if reason is not None:
        raise StageStopped(int(trainer.state.global_step), reason)
    return result


# ---------------------------------------------------------------------------------------------
# Loops of the project's own (PPO)
# ---------------------------------------------------------------------------------------------

class Checkpointer:
    """Resume checkpoints of a training loop the project writes itself: `due(step)` after each step,
    `save(step, write)` with a function that writes the loop's state into a folder, `resume()` the
    (step, folder) to load, None for a fresh start."""

    def __init__(self, out: Path, keep_every: int | None = None):
        self.out, self.keep_every = out, keep_every
        self.settings = current_settings()
        self.last_save = time.monotonic()

    def resume(self) -> tuple[int, Path] | None:
        return latest(self.out)

    def stop_requested(self) -> str | None:
        return stop_reason(self.out)

    def due(self, step: int) -> bool:
        return self.stop_requested() is not None or self.settings.due(step, self.last_save, time.monotonic())

    def save(self, step: int, write: Callable[[Path], None]) -> Path:
        folder = checkpoint_root(self.out) / f"checkpoint-{step}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        write(folder)
        mark_complete(folder, step)
        prune_older(self.out, None)
        self.last_save = time.monotonic()
        return folder


def capture_rng() -> dict[str, Any]:
    """Every RNG a training loop draws from (python, numpy, torch CPU and CUDA), to save in a checkpoint."""
    import random

    import numpy as np
    import torch

    state: dict[str, Any] = {"python": random.getstate(), "numpy": np.random.get_state(),
                             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    import random

    import numpy as np
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
