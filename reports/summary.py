"""The grid summary table: one row per cell (SFT baseline first), one column per metric.

Built from MLflow alone: the latest FINISHED run of each cell (`harness.mlflow_layout.read_cells`). Every row names the run id it
came from, so each number traces back to a run.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness import mlflow_layout as layout
from harness import tracking

# Columns shown first when present; then every `*/score`, `category/*` and `overall`.
KEY_COLUMNS = (
    "smoke_lowercase/clean_success_rate", "smoke_lowercase/constraint_rate", "smoke_lowercase/degenerate_rate",
    "smoke_lowercase/correct_rate", "gsm8k/exact_match", "policy_kl/kl_mean", "rm_reward/reward_mean",
    "rm/accuracy", "train/final_loss", "train/wall_seconds",
)


def cell_runs(experiment: str) -> pd.DataFrame:
    """The chosen (latest FINISHED) run of each cell: columns run_id, cell, is_baseline, params.*, metrics.*."""
    exp = layout.find_experiment(experiment)
    rows = []
    for cell in layout.read_cells(exp.experiment_id, with_stages=False):
        row: dict[str, object] = {"cell": cell.cell, "run_id": cell.run_id, "is_baseline": cell.is_baseline}
        row.update({f"params.{k}": v for k, v in cell.params.items()})
        row.update({f"metrics.{k}": v for k, v in cell.metrics.items()})
        rows.append(row)
    if not rows:
        raise ValueError(f"experiment {experiment!r} has no finished cell runs yet")
    frame = pd.DataFrame(rows)
    return frame.sort_values(["is_baseline", "cell"], ascending=[False, True]).reset_index(drop=True)


def summary_table(experiment: str, metrics: list[str] | None = None) -> pd.DataFrame:
    runs = cell_runs(experiment)
    available = [c.removeprefix("metrics.") for c in runs.columns if c.startswith("metrics.")]
    if metrics is None:
        metrics = [m for m in KEY_COLUMNS if m in available]
        metrics += sorted(m for m in available if (m.endswith("/score") or m.startswith("category/") or m == "overall")
                          and m not in metrics)
    table = pd.DataFrame({"cell": runs["cell"]})
    for param in ("algorithm.name", "dataset.name"):
        if f"params.{param}" in runs:
            table[param] = runs[f"params.{param}"].fillna("—")
    for metric in metrics:
        table[metric] = runs.get(f"metrics.{metric}")
    table["mlflow_run"] = runs["run_id"]
    return table


def to_markdown(table: pd.DataFrame) -> str:
    def fmt(value: object) -> str:
        if isinstance(value, float):
            return "—" if pd.isna(value) else f"{value:.2f}"
        return str(value)

    header = "| " + " | ".join(table.columns) + " |"
    sep = "| " + " | ".join("---" for _ in table.columns) + " |"
    body = ["| " + " | ".join(fmt(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, sep, *body])


def write_summary(experiment: str, out_dir: Path) -> tuple[Path, str]:
    out_dir.mkdir(parents=True, exist_ok=True)
    table = summary_table(experiment)
    markdown = (f"# {experiment}: grid summary\n\nOne row per cell; the SFT baseline first. Source: MLflow "
                f"`{tracking.tracking_uri()}`; `mlflow_run` is the run each row's numbers come from.\n\n"
                + to_markdown(table) + "\n")
    (out_dir / "summary.md").write_text(markdown)
    table.to_csv(out_dir / "summary.csv", index=False)
    return out_dir / "summary.md", to_markdown(table)
