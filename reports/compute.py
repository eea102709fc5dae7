"""What each configuration cost to train, beside what it scored (Tables 1, 2 and 4; the paper's
Limitations note that it never measured DPO's compute against PPO's).

Per row of this run: the estimated training FLOPs and device-hours of its cell (its reward model and its
policy; the SFT baseline trains nothing), priced by `harness.cost_plan` from the cell's own stage specs
(`resolved_config.json` on the cell run) and the rows its data stages kept (`data/kept_rows`), on the
report's device profile (`--device-profile`, else the one the grid's profile names, recorded on the
experiment, else cpu-2core); and beside it the measured wall time of those stages (their runs'
`stage/seconds`: measured on whatever machine ran them, so comparable with the estimate only on the
device it names). Shared stages (one reward model for a DPO and a PPO cell) are counted in every row
that uses them: a row is what that configuration costs from scratch.
"""

from __future__ import annotations

from typing import Any

from reports.data import CellRun
from reports.model import Entry, ReportTable

COMPUTE_TABLES = ("table1", "table2", "table4")
TRAINING_KINDS = ("train_reward_model", "train_policy")


def report_device(exp: Any, requested: str | None) -> str:
    from harness import mlflow_layout as layout
    from harness.cost_plan import DEFAULT_DEVICE

    if requested:
        return requested
    return layout.experiment_tags(exp.experiment_id).get(layout.TAG_DEVICE_PROFILE) or DEFAULT_DEVICE


def _kept_rows(cell: CellRun) -> dict[str, int]:
    return {s.params["name"]: int(s.metrics["data/kept_rows"]) for s in cell.stages
            if s.kind == "prepare_data" and "name" in s.params and "data/kept_rows" in s.metrics}


def cell_compute(exp: Any, cell: CellRun, device: str) -> tuple[Any, list[str]]:
    """(the estimate of the cell's training, notes); (None, [why]) when it cannot be priced."""
    from harness.cost_plan import cell_training_cost
    from harness.cost_profiles import CostInputError

    document = exp.json_artifact(cell.run_id, "resolved_config.json")
    if not document or not document.get("stages"):
        return None, [f"{cell.cell}: no resolved_config.json with stage specs on its run"]
    try:
        return cell_training_cost(document["stages"], device, _kept_rows(cell))
    except (CostInputError, KeyError, ValueError) as exc:
        return None, [f"{cell.cell}: {exc}"]


def measured_hours(cell: CellRun) -> tuple[float | None, tuple[str, ...]]:
    stages = [s for s in cell.stages if s.kind in TRAINING_KINDS and "stage/seconds" in s.metrics]
    if not stages:
        return None, ()
    return sum(s.metrics["stage/seconds"] for s in stages) / 3600.0, tuple(s.run_id for s in stages)


def add_compute_columns(table: ReportTable, exp: Any, device: str) -> None:
    """Append the estimated training FLOPs and device-hours, and the measured training wall hours, to
    every row of this run (paper rows and delta rows get blanks)."""
    from harness import cost

    if table.name not in COMPUTE_TABLES:
        return
    by_run = {c.run_id: c for c in exp.cells}
    notes: list[str] = []
    for row in table.rows:
        cells = list({c.run_id: c for e in row.entries for r in e.run_ids if (c := by_run.get(r))}.values())
        policy = next((c for c in cells if not c.is_baseline), None)
        if row.kind != "data" or policy is None:
            row.entries += [Entry(text="—" if row.kind == "baseline" else ""), Entry(text="—" if row.kind == "baseline" else ""),
                            Entry(text="—" if row.kind == "baseline" else "")]
            continue
        found, why = cell_compute(exp, policy, device)
        notes += why
        hours, runs = measured_hours(policy)
        if found is None:
            row.entries += [Entry(), Entry(), Entry()]
            continue
        row.entries += [
            Entry(value=found.flops, text=cost.human(found.flops), metric="cost/train_flops", run_ids=(policy.run_id,)),
            Entry(value=found.device_hours, text=f"{found.device_hours:.3g}", metric="cost/train_device_hours",
                  run_ids=(policy.run_id,)),
            Entry(value=hours, text=None if hours is None else f"{hours:.3g}", metric="stage/seconds", digits=3,
                  run_ids=runs) if hours is not None else Entry(),
        ]
    table.columns += [f"Train FLOPs (est., {device})", f"Train device-h (est., {device})", "Train wall h (measured)"]
    table.notes.append(
        f"Compute: training of each configuration's reward model and policy (shared stages counted in every row "
        f"that uses them), estimated from its stage configs and kept rows on `{device}` (harness/cost_plan.py; "
        "evaluation not included); measured: the wall time of those stage runs on the machine that ran them.")
    table.notes += [f"Compute not estimated for {n}" for n in dict.fromkeys(notes)]
