"""What a stage consumes, counted where the work happens: tokens trained and generated, wall time, device.

Counters are per process and reset by `measuring()`, which `harness.executors.execute_stage` wraps around each
stage; they cost one tensor sum per training forward or generate call:
- tokens trained: the attention-mask sum of each forward of a model being trained (train mode, gradients
  on), hooked on the model by the TRL history callback and by PPO (`watch_training_forwards`): the
  policy's (or reward model's) training tokens, not the no-grad forwards (reference log-probs, old
  log-probs, scoring) and not PPO's value model;
- tokens generated: new tokens of every `transformers` `generate` call (each row up to its first EOS: the
  static engine, TRL's online trainers' rollouts, lm-eval), through one wrapper around
  `GenerationMixin.generate` installed while a stage is measured; the engines that decode without it add
  theirs with `count_generated` (`harness.hf_engine`'s compact and continuous batchings, the
  OpenAI-compatible engine from the server's reported completion tokens).
Not counted: evaluation's log-likelihood scoring (lm-eval multiple choice), reward-model scoring.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

_lock = threading.Lock()
_counts = {"tokens_trained": 0, "tokens_generated": 0}
_generate_wrapped = False


def count_trained(tokens: int) -> None:
    with _lock:
        _counts["tokens_trained"] += int(tokens)


def count_generated(tokens: int) -> None:
    with _lock:
        _counts["tokens_generated"] += int(tokens)


def counts() -> dict[str, int]:
    with _lock:
        return dict(_counts)


@dataclass
class StageUsage:
    """What one stage consumed; `gpu_hours` is None on CPU."""

    wall_seconds: float
    tokens_trained: int
    tokens_generated: int
    device: str  # "cpu" or the GPU's name
    gpus: int
    gpu_hours: float | None

    def metrics(self) -> dict[str, float]:
        """The `cost/*` metrics of the stage's MLflow run (summed on the cell run)."""
        out = {"cost/wall_seconds": self.wall_seconds, "cost/tokens_trained": float(self.tokens_trained),
               "cost/tokens_generated": float(self.tokens_generated)}
        if self.gpu_hours is not None:
            out["cost/gpu_hours"] = self.gpu_hours
        return out

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def device() -> tuple[str, int]:
    """(device kind, number of GPUs this stage uses): "cpu", 0 without CUDA."""
    try:
        import torch

        if torch.cuda.is_available():
            world = int(os.environ.get("WORLD_SIZE", "1"))  # accelerate ranks: one GPU each
            return torch.cuda.get_device_name(0), max(1, world)
    except Exception:  # noqa: BLE001 - no torch or a broken driver: the stage ran on the CPU
        pass
    return "cpu", 0


@dataclass
class Measurement:
    started: float  # epoch seconds
    usage: StageUsage | None = None


@contextmanager
def measuring(since: float | None = None) -> Iterator[Measurement]:
    """Count what the enclosed work consumes (counters start at zero); `usage` is set on exit. Its wall
    time runs from `since` (epoch seconds; default: now), e.g. the claim of the stage's working folder,
    so a stage's cost covers what its run's duration covers."""
    with _lock:
        for key in _counts:
            _counts[key] = 0
    measurement = Measurement(time.time() if since is None else since)
    _wrap_generate()
    try:
        yield measurement
    finally:
        seconds = max(0.0, time.time() - measurement.started)
        kind, gpus = device()
        now = counts()
        measurement.usage = StageUsage(seconds, now["tokens_trained"], now["tokens_generated"], kind, gpus,
                                       seconds * gpus / 3600.0 if gpus else None)


def watch_training_forwards(model: Any) -> Any:
    """Count the tokens of `model`'s training forwards (train mode, gradients on); returns the hook handle."""
    import torch

    def hook(module: Any, args: tuple, kwargs: dict[str, Any]) -> None:
        if not (module.training and torch.is_grad_enabled()):
            return
        mask = kwargs.get("attention_mask")
        ids = kwargs.get("input_ids", args[0] if args else None)
        if isinstance(mask, torch.Tensor):
            count_trained(int(mask.sum()))
        elif isinstance(ids, torch.Tensor):
            count_trained(ids.numel())

    return model.register_forward_pre_hook(hook, with_kwargs=True)


def _generated_tokens(output: Any, prompt_length: int, eos: Any, pad: Any) -> int:
    import torch

    sequences = output if isinstance(output, torch.Tensor) else getattr(output, "sequences", None)
    if not isinstance(sequences, torch.Tensor) or sequences.dim() != 2:
        return 0
    new = sequences[:, prompt_length:]
    if new.numel() == 0:
        return 0
    eos_ids = [eos] if isinstance(eos, int) else [int(e) for e in (eos or [])]
    if eos_ids:
        is_eos = torch.zeros_like(new, dtype=torch.bool)
        for e in eos_ids:
            is_eos |= new == e
        # Every token up to and including the first EOS of its row; what follows is padding.
        counted = (is_eos.cumsum(dim=1) - is_eos.long()) == 0
        if isinstance(pad, int) and pad not in eos_ids:
            counted &= new != pad  # rows stopped by a stop string are padded with it
        return int(counted.sum())
    if isinstance(pad, int):
        return int((new != pad).sum())
    return new.numel()


def _wrap_generate() -> None:
    """Wrap `transformers`' `GenerationMixin.generate` once per process to count generated tokens."""
    global _generate_wrapped
    if _generate_wrapped:
        return
    try:
        from transformers.generation.utils import GenerationMixin
    except ImportError:
        return
    original = GenerationMixin.generate

    def generate(self: Any, *args: Any, **kwargs: Any) -> Any:
        output = original(self, *args, **kwargs)
        try:
            ids = kwargs.get("input_ids", args[0] if args else None)
            prompt_length = int(ids.shape[1]) if getattr(ids, "dim", lambda: 0)() == 2 else 0
            config = kwargs.get("generation_config") or getattr(self, "generation_config", None)
            eos = kwargs.get("eos_token_id", getattr(config, "eos_token_id", None))
            pad = kwargs.get("pad_token_id", getattr(config, "pad_token_id", None))
            count_generated(_generated_tokens(output, prompt_length, eos, pad))
        except Exception:  # noqa: BLE001 - counting must never break generation
            pass
        return output

    generate.__wrapped__ = original  # type: ignore[attr-defined]
    generate.__doc__ = original.__doc__
    GenerationMixin.generate = generate  # type: ignore[method-assign]
    _generate_wrapped = True
