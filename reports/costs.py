"""What a report's numbers cost to compute, from MLflow alone.

Each stage run records its measured cost (`cost/wall_seconds`, `cost/tokens_trained`, `cost/tokens_generated`,
`cost/gpu_hours` on GPU, and the device in `harness.device`; see `harness.usage`). A scope (the whole
experiment, or the cells one table reads) costs the sum over the distinct stages of its cells: a stage
shared by several cells (the data, a reward model, the SFT evaluation) ran once and is counted once.
Where stage runs also carry an estimate from `harness.cost` (`cost/estimated_seconds`,
`cost/estimated_device_hours`, logged by whoever estimated the stage before it ran), the estimate of the
same stages is shown beside the measurement, with how many stages it covers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from harness import mlflow_layout as layout
from harness.console import format_duration

ESTIMATED_SECONDS = "cost/estimated_seconds"
ESTIMATED_DEVICE_HOURS = "cost/estimated_device_hours"


@dataclass
class Cost:
    stages: int = 0
    wall_seconds: float = 0.0
    gpu_hours: float = 0.0
    tokens_trained: float = 0.0
    tokens_generated: float = 0.0
    devices: set[str] = field(default_factory=set)
    estimated_seconds: float = 0.0
    estimated_device_hours: float = 0.0
    estimated_stages: int = 0


def cost_of(cells: Iterable[layout.CellRun]) -> Cost:
    """The measured cost of the distinct stages the cells' runs logged (and their estimates, if any)."""
    total = Cost()
    seen: set[str] = set()
    for cell in cells:
        for stage in cell.stages:
            key = stage.tags.get(layout.TAG_STAGE_HASH, stage.run_id)
            if key in seen:
                continue
            seen.add(key)
            metrics = stage.metrics
            total.stages += 1
            total.wall_seconds += metrics.get("cost/wall_seconds", metrics.get("stage/seconds", 0.0))
            total.gpu_hours += metrics.get("cost/gpu_hours", 0.0)
            total.tokens_trained += metrics.get("cost/tokens_trained", 0.0)
            total.tokens_generated += metrics.get("cost/tokens_generated", 0.0)
            if stage.tags.get(layout.TAG_DEVICE):
                total.devices.add(stage.tags[layout.TAG_DEVICE])
            if ESTIMATED_SECONDS in metrics:
                total.estimated_stages += 1
                total.estimated_seconds += metrics[ESTIMATED_SECONDS]
                total.estimated_device_hours += metrics.get(ESTIMATED_DEVICE_HOURS, 0.0)
    return total


def _tokens(value: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:.1f}{unit}"
    return f"{value:.0f}"


def cost_section(cells: list[layout.CellRun], tables: dict[str, tuple[str, set[str]]]) -> list[str]:
    """Markdown lines: the measured cost of the whole experiment and of each table's cells
    (`tables`: name -> (title, the cell run ids its entries name))."""
    scopes = [("all cells", cost_of(cells))]
    for _name, (title, run_ids) in tables.items():
        used = [c for c in cells if c.run_id in run_ids]
        if used:
            scopes.append((title, cost_of(used)))
    with_estimate = any(cost.estimated_stages for _, cost in scopes)
    header = ["scope", "stages", "wall time", "GPU-hours", "tokens trained", "tokens generated", "device"]
    if with_estimate:
        header += ["estimate (stages estimated)"]
    lines = ["## Compute", "",
             "Measured while the stages ran (stage runs' `cost/*` metrics), summed over the distinct stages "
             "of each scope's cells: a stage shared by cells ran once and counts once.", "",
             "| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    for scope, cost in scopes:
        row = [scope, str(cost.stages), format_duration(cost.wall_seconds),
               f"{cost.gpu_hours:.2f}" if cost.gpu_hours else "—", _tokens(cost.tokens_trained),
               _tokens(cost.tokens_generated), ", ".join(sorted(cost.devices)) or "—"]
        if with_estimate:
            row.append(f"{format_duration(cost.estimated_seconds)}, {cost.estimated_device_hours:.2f} device-h "
                       f"({cost.estimated_stages} of {cost.stages})" if cost.estimated_stages else "—")
        lines.append("| " + " | ".join(row) + " |")
    return lines + [""]
