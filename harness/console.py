"""What `harness` shows in a terminal, and the library noise it keeps out of it.

`harness run` shows one live line per running stage (cell, stage, step/total, main metric, throughput,
ETA) under the run's event lines (`  run ...`, `  done ... in 2m13s: train/final_loss 0.41`, `  FAILED ...`,
`cell ...: logged ...`) when stdout is a terminal (`RichView`, with rich), and a plain line-per-event log
otherwise, e.g. in CI (`PlainView`: the event lines, plus one progress line per running stage every
`HARNESS_PROGRESS_INTERVAL` seconds, 30 by default). `HARNESS_PROGRESS=plain|live|off` overrides the choice.

Library noise (Python warnings of the ML libraries, their loggers below ERROR, every tqdm bar, datasets'
map bars, transformers' and TRL's printers) is off unless `-v`: `quiet_libraries` applies it in this
process and through the environment (`HARNESS_QUIET=1` and the libraries' own variables) in the stage
processes it starts; `apply_quiet_from_env` re-applies the Python-level part there.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Protocol, TextIO

PROGRESS_ENV = "HARNESS_PROGRESS"
_BAR_WIDTH = 16
INTERVAL_ENV = "HARNESS_PROGRESS_INTERVAL"
QUIET_ENV = "HARNESS_QUIET"

# Shown on a running stage's line (the first two found), and as a finished stage's key metric.
LIVE_METRICS = ("train/reward_mean", "train/loss", "train/kl", "train/margins", "train/accuracy")
_FINAL_METRICS = {
    "prepare_data": ("data/kept_rows",),
    "train_reward_model": ("rm/accuracy", "rm/heldout_accuracy", "rm_train/final_loss"),
    "train_policy": ("train/final_reward_mean", "train/final_loss"),
}


@dataclass
class StageLine:
    """One running stage, as the terminal shows it."""

    label: str  # e.g. train_policy[dpo]
    key: str
    cells: list[str]  # the cells using it (the first holds its live MLflow run)
    done: float | None = None
    total: float | None = None
    unit: str = "step"
    phase: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    rate: float | None = None  # units per second
    tokens_rate: float | None = None  # tokens (trained + generated) per second
    eta_seconds: float | None = None
    elapsed_seconds: float = 0.0

    @property
    def cell_text(self) -> str:
        if not self.cells:
            return ""
        return self.cells[0] + (f" (+{len(self.cells) - 1} cells)" if len(self.cells) > 1 else "")

    @property
    def shown_metrics(self) -> list[tuple[str, float]]:
        return [(k, self.metrics[k]) for k in LIVE_METRICS if k in self.metrics][:2]

    def text(self) -> str:
        """The line as plain text (also the plain log's progress line)."""
        parts = [f"{self.label} {self.key[:8]}", self.cell_text]
        if self.done is not None and self.total:
            parts.append(f"{self.unit} {int(self.done)}/{int(self.total)}"
                         + (f" {self.phase}" if self.unit == "task" and self.phase else ""))
        elif self.phase:
            parts.append(self.phase)
        parts += [f"{k} {_number(v)}" for k, v in self.shown_metrics]
        if self.rate:
            parts.append(_rate(self.rate, self.unit))
        if self.tokens_rate:
            parts.append(f"{_si(self.tokens_rate)} tok/s")
        parts.append(f"elapsed {format_duration(self.elapsed_seconds)}")
        if self.eta_seconds is not None:
            parts.append(f"ETA {format_duration(self.eta_seconds)}")
        return "  ".join(p for p in parts if p)


class ProgressView(Protocol):
    def event(self, text: str) -> None: ...

    def running(self, lines: list[StageLine]) -> None: ...

    def close(self) -> None: ...


def format_duration(seconds: float) -> str:
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{seconds:.0f}s"
    minutes, sec = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _number(value: float) -> str:
    return f"{value:.4g}"


def _rate(per_second: float, unit: str) -> str:
    """`3.20 step/s`, or `79.0 s/step` when a unit takes longer than a second."""
    return f"{per_second:.2f} {unit}/s" if per_second >= 1 else f"{1 / per_second:.1f} s/{unit}"


def _si(value: float) -> str:
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:.1f}{unit}"
    return f"{value:.0f}"


def key_metric(kind: str, metrics: dict[str, float]) -> tuple[str, float] | None:
    """The one number a finished stage's summary line shows."""
    for name in _FINAL_METRICS.get(kind, ()):
        if name in metrics:
            return name, metrics[name]
    if kind == "evaluate":
        scores = sorted(k for k in metrics if k.endswith(("/score", "/clean_success_rate", "/accuracy")))
        if scores:
            return scores[0], metrics[scores[0]]
    return None


def stage_summary(label: str, key: str, cells: list[str], seconds: float, kind: str,
                  metrics: dict[str, float]) -> str:
    """The line for a finished stage: `  done train_policy[dpo] <key> in 2m13s: train/final_loss 0.41 (cell ...)`."""
    found = key_metric(kind, metrics)
    text = f"  done {label} {key} in {format_duration(seconds)}"
    if found:
        text += f": {found[0]} {_number(found[1])}"
    if cells:
        text += f" ({'cell' if len(cells) == 1 else 'cells'} {', '.join(cells[:3])}{', ...' if len(cells) > 3 else ''})"
    return text


class PlainView:
    """A line per event, and a progress line per running stage every `interval` seconds (CI logs)."""

    def __init__(self, stream: TextIO | None = None, interval: float | None = None):
        self.stream = stream
        self.interval = float(os.environ.get(INTERVAL_ENV, 30) if interval is None else interval)
        self._last: dict[str, float] = {}

    def _print(self, text: str) -> None:
        print(text, file=self.stream or sys.stdout, flush=True)

    def event(self, text: str) -> None:
        self._print(text)

    def running(self, lines: list[StageLine]) -> None:
        now = time.monotonic()
        for line in lines:
            # A stage's first progress line once it has run for an interval: quick stages print none.
            if now - self._last.setdefault(line.key, now) >= self.interval:
                self._last[line.key] = now
                self._print(f"  ... {line.text()}")

    def close(self) -> None:
        pass


class RichView:
    """The run's events scrolling above one live line per running stage (rich's Live display)."""

    def __init__(self, console: Any = None):
        from rich.console import Console
        from rich.live import Live

        self.console = console or Console()
        self.live = Live(console=self.console, refresh_per_second=4, transient=True,
                         redirect_stdout=True, redirect_stderr=True)
        self.live.start()

    def event(self, text: str) -> None:
        from rich.text import Text

        self.live.console.print(Text(text))

    def running(self, lines: list[StageLine]) -> None:
        from rich.console import Group
        from rich.text import Text

        rows = []
        for line in lines:
            text = Text(no_wrap=True, overflow="ellipsis")
            text.append(line.label, style="bold")
            text.append(f"  {line.cell_text}  ", style="cyan")
            if line.done is not None and line.total:
                filled = int(round(_BAR_WIDTH * min(1.0, line.done / line.total)))
                text.append("━" * filled, style="magenta")
                text.append("━" * (_BAR_WIDTH - filled), style="grey37")
                text.append(f" {line.unit} {int(line.done)}/{int(line.total)}"
                            + (f" {line.phase}" if line.unit == "task" and line.phase else ""))
            elif line.phase:
                text.append(line.phase, style="dim")
            text.append(f"  ETA {format_duration(line.eta_seconds)}" if line.eta_seconds is not None
                        else f"  {format_duration(line.elapsed_seconds)}")
            for key, value in line.shown_metrics:
                text.append(f"  {key.split('/')[-1]} {_number(value)}")
            if line.rate:
                text.append(f"  {_rate(line.rate, line.unit)}", style="dim")
            if line.tokens_rate:
                text.append(f"  {_si(line.tokens_rate)} tok/s", style="dim")
            rows.append(text)
        self.live.update(Group(*rows))

    def close(self) -> None:
        self.live.stop()


class NoView:
    def event(self, text: str) -> None:
        print(text, flush=True)

    def running(self, lines: list[StageLine]) -> None:
        pass

    def close(self) -> None:
        pass


def make_view(stream: TextIO | None = None) -> ProgressView:
    """The view for this terminal: live lines on a TTY, a plain log otherwise (`HARNESS_PROGRESS` decides
    when set)."""
    stream = stream or sys.stdout
    mode = os.environ.get(PROGRESS_ENV, "").lower()
    if mode == "off":
        return NoView()
    if mode == "plain" or (mode != "live" and not stream.isatty()):
        return PlainView(stream)
    return RichView()


# -- library noise ------------------------------------------------------------------------------------

_NOISY_MODULES = r"(transformers|trl|torch|accelerate|datasets|peft|lm_eval|huggingface_hub|mlflow|optuna|sklearn)(\..*)?$"
_NOISY_LOGGERS = ("transformers", "trl", "datasets", "accelerate", "peft", "lm-eval", "lm_eval", "huggingface_hub",
                  "alembic", "optuna", "torch", "mlflow", "urllib3")
_QUIET_ENVIRONMENT = {
    "TRANSFORMERS_VERBOSITY": "error",
    "DATASETS_VERBOSITY": "error",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TQDM_DISABLE": "1",  # every tqdm bar: transformers' loading/saving bars, lm-eval's, datasets' map
    "MLFLOW_LOGGING_LEVEL": "WARNING",  # MLflow sets its loggers' level when imported
    "TOKENIZERS_PARALLELISM": "false",
}


def quiet_libraries(verbose: bool) -> None:
    """Library noise off (the default) or left as the libraries make it (`-v`), in this process and,
    through the environment, in the processes it starts."""
    if verbose:
        os.environ.pop(QUIET_ENV, None)
        return
    os.environ[QUIET_ENV] = "1"
    for name, value in _QUIET_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    apply_quiet_from_env()


def apply_quiet_from_env() -> None:
    """In a stage process: the Python-level part of `quiet_libraries` (warnings filters, logger levels),
    when the driver asked for quiet (`HARNESS_QUIET=1`)."""
    if os.environ.get(QUIET_ENV) != "1":
        return
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module=_NOISY_MODULES)
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    for module, call in (("transformers.utils.logging", "set_verbosity_error"),
                         ("datasets.utils.logging", "set_verbosity_error"),
                         ("datasets.utils.logging", "disable_progress_bar")):
        loaded = sys.modules.get(module)
        if loaded is not None and hasattr(loaded, call):
            getattr(loaded, call)()
