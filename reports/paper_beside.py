"""The paper's numbers beside this run's, and whether its findings hold here.

After a table is built, `beside_paper(table, ctx)` adds, under each of this run's rows that has a
counterpart in the paper's table of the same name (`reports/paper_numbers.yaml`), a *paper* row with the
printed numbers in the same columns; a note names the paper's setting and its documented caveats; and one
line per claim of the paper says whether it holds here (`reports.findings`, with paired-bootstrap
p-values where this run's numbers carry replicates).

Matching is by settings, not by scale (a 135M model on a few hundred pairs stands for Tulu 2 13B):
- the SFT cell is the paper's baseline row, `Avg. Δ` rows the paper's delta row; reference rows (other
  groups' models) are never matched;
- a cell matches a data row when every setting of the row's key is the cell's, where the policy model is
  ignored, a reward model's base is compared by size (with two RM sizes in the experiment, the smaller
  stands for 13B and the larger for 70B; with one, it stands for 13B, the paper's default RM), and PPO's
  batch shape (B, b) by its ratio B/b (Table 11 at 1/8 scale keeps B/b, r and g);
- a row of several cells takes the paper row most of them match.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from reports.data import CellRun
from reports.model import Entry, ReportTable, Row
from reports.paper_numbers import PaperRow, PaperTable, paper_numbers

PAPER_SIZES = ("allenai/tulu-2-13b", "allenai/tulu-2-70b")  # the paper's RM bases, smaller first
BATCH = ("algorithm.prompt_batch_size", "algorithm.minibatch_size")
# This run's metric (an Entry's `metric`) -> the paper's column, where they are named differently.
COLUMN_OF: dict[str, str] = {
    "bon/*/score": "bon/average", "bon/*/score − sft": "bon/delta_over_sft",
    "train/episodes": "relative/training_examples",
    "algorithm.minibatch_size*gradient_accumulation_steps": "relative/gradient_batch",
    "train/optimizer_steps": "relative/gradient_updates", "train/wall_seconds": "train/hours",
}
RELATIVE = ("relative/training_examples", "relative/gradient_batch", "relative/gradient_updates")


def paper_column(metric: str | None, columns: Sequence[str]) -> str | None:
    if not metric:
        return None
    name = COLUMN_OF.get(metric, metric)
    if name not in columns and name.startswith("bon/") and name.count("/") == 2:
        name = name[4:]  # Table 12: bon/gsm8k/score is the paper's gsm8k/score column
    return name if name in columns else None


def _size_map(cells: Sequence[CellRun]) -> dict[str, str]:
    """This experiment's RM bases -> the paper size each stands for (by parameter count)."""
    from harness import cost_profiles

    bases = sorted({c.param("reward_model.base") for c in cells if c.param("reward_model.base")})

    def params(name: str) -> float:
        try:
            return float(cost_profiles.model_shape(name).params)
        except Exception:  # an RM whose shape is unknown here: keep the name order
            return float("inf")

    bases.sort(key=lambda name: (params(name), name))
    if not bases:
        return {}
    if len(bases) == 1:
        return {bases[0]: PAPER_SIZES[0]}
    return {bases[0]: PAPER_SIZES[0], bases[-1]: PAPER_SIZES[1]}


def _scale_free(key: dict[str, Any]) -> dict[str, str]:
    out = {k: str(v) for k, v in key.items() if k != "model"}
    if all(k in out for k in BATCH):
        b, m = float(out.pop(BATCH[0])), float(out.pop(BATCH[1]))
        out["algorithm.batch_ratio"] = f"{b / m:g}"
    return out


def _cell_key(cell: CellRun, sizes: dict[str, str], wanted: set[str]) -> dict[str, str]:
    params: dict[str, Any] = {k: cell.param(k) for k in wanted | set(BATCH) if cell.param(k) is not None}
    if "reward_model.base" in params:
        params["reward_model.base"] = sizes.get(params["reward_model.base"], "?")
    for k in ("algorithm.prompt_batch_size", "algorithm.minibatch_size", "algorithm.rollouts_per_prompt",
              "algorithm.gradient_accumulation_steps"):
        if k in params:
            params[k] = f"{float(params[k]):g}"
    return _scale_free(params)


def match_row(table: PaperTable, cell: CellRun, sizes: dict[str, str]) -> PaperRow | None:
    """The paper's data row for a cell (the most specific whose scale-free key the cell has), or None."""
    hits = []
    for row in table.rows:
        if row.kind != "data" or not row.key:
            continue
        key = _scale_free(row.key)
        normalised = {k: (_number_text(v) if k.startswith("algorithm.") else v) for k, v in key.items()}
        ours = _cell_key(cell, sizes, set(row.key))
        if all(ours.get(k) == v for k, v in normalised.items()):
            hits.append((len(key), row))
    return max(hits, key=lambda h: h[0])[1] if hits else None


def _number_text(text: str) -> str:
    """A number as the cells' keys print it ("0.10" -> "0.1"); other text as it is."""
    try:
        return f"{float(text):g}"
    except ValueError:
        return text


def _row_cells(row: Row, by_run: dict[str, CellRun]) -> list[CellRun]:
    return list({id(c): c for e in row.entries for r in e.run_ids if (c := by_run.get(r)) is not None}.values())


def _paper_entry(entry: Entry, row: PaperRow, column: str) -> Entry:
    value = row.values.get(column)
    if value is None:
        return Entry(metric=f"paper:{column}", digits=entry.digits)
    text = None
    if column in RELATIVE:
        text = f"{value:g}x"
    elif column == "train/hours":
        text = f"{value:g} h"
    return Entry(value=value, text=text, metric=f"paper:{column}", digits=entry.digits, signed=entry.signed)


def beside_paper(table: ReportTable, exp: Any) -> None:
    """Add the paper's rows, caveats and findings to `table` (in place); nothing when the paper has no
    table of this name."""
    numbers = paper_numbers()
    if table.name not in numbers.tables:
        return
    paper = numbers.table(table.name)
    by_run: dict[str, CellRun] = {}
    for cell in exp.cells:
        by_run[cell.run_id] = cell
        for stage in cell.stages:
            by_run.setdefault(stage.run_id, cell)
    sizes = _size_map(exp.policies)
    rows: list[Row] = []
    ours: dict[str, dict[str, Any]] = {}
    matched: dict[str, str] = {}
    for row in table.rows:
        rows.append(row)
        found: PaperRow | None = None
        if row.kind == "baseline":
            found = paper.baseline
        elif row.kind == "delta" and row.labels and row.labels[0].startswith("Avg."):
            found = next((r for r in paper.rows if r.kind == "delta"), None)
        elif row.kind == "data":
            votes = Counter(hit.label for c in _row_cells(row, by_run) if (hit := match_row(paper, c, sizes)))
            if votes:
                label = votes.most_common(1)[0][0]
                found = paper.row(label)
        if found is None:
            continue
        key = "baseline" if found.kind == "baseline" else found.label
        if found.kind == "data" and found.label in matched:
            continue  # two of this run's rows stand for one paper row: the first one speaks for it
        matched[found.label] = " / ".join(row.labels)
        entries = []
        for entry in row.entries:
            column = paper_column(entry.metric, paper.columns)
            entries.append(_paper_entry(entry, found, column) if column else Entry(text="", digits=entry.digits))
            if column and entry.is_number and found.kind != "delta":
                ours.setdefault(key, {})[column] = _measured(entry)
        if any(e.is_number for e in entries):
            rows.append(Row([f"paper: {found.label}", *([""] * (len(row.labels) - 1))], entries, kind="paper"))
    if not matched:
        table.notes.append(f"No row here has a counterpart in the paper's {paper.title.split(':')[0]} "
                           "(settings compared: data, algorithm, reward-model data and relative size, prompts).")
    else:
        table.rows = rows
        table.notes.append(f"*paper* rows: {paper.title} as printed in Ivison et al. (2024) ({paper.model_size}; "
                           f"{paper.setting.strip()}). Levels differ with scale: compare directions.")
        table.notes += numbers.caveats(table.name)
    table.notes += [f"Does the paper's finding hold here? {line}" for line in finding_lines(table.name, ours)]


def _measured(entry: Entry) -> Any:
    from reports.findings import Measured

    return Measured(float(entry.value), entry.reps)  # type: ignore[arg-type]


def finding_lines(table: str, ours: dict[str, dict[str, Any]]) -> list[str]:
    from reports.findings import CHECKS, findings

    if table not in CHECKS:
        return []
    return [f.line() for f in findings(table, ours)]
