"""Report tables as data (every number carries the MLflow runs it came from) and their renderings:
Markdown (footnote links to the runs), LaTeX (booktabs, paper colouring) and CSV (one line per number).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

Colour = Literal["up", "down"] | None


@dataclass
class Entry:
    """One table cell: a number with its interval / p-value and source runs, or a text label."""

    value: float | None = None
    ci: tuple[float, float] | None = None
    p_value: float | None = None
    run_ids: tuple[str, ...] = ()
    metric: str | None = None
    scale: float = 1.0  # value = scale x logged metric (RewardBench accuracies are shown x100)
    text: str | None = None
    digits: int = 1
    signed: bool = False  # differences print with a sign, as the paper's Δ row
    colour: Colour = None
    n_examples: int | None = None
    n_seeds: int | None = None
    reps: np.ndarray | None = field(default=None, repr=False)  # bootstrap replicates, for differences

    @property
    def is_number(self) -> bool:
        return self.value is not None and not math.isnan(self.value)

    def fmt_value(self) -> str:
        if self.text is not None:
            return self.text
        if not self.is_number:
            return "—"
        return f"{self.value:+.{self.digits}f}" if self.signed else f"{self.value:.{self.digits}f}"

    def fmt_ci(self) -> str:
        if self.ci is None:
            return ""
        return f"[{self.ci[0]:.{self.digits}f}, {self.ci[1]:.{self.digits}f}]"

    def fmt_p(self) -> str:
        if self.p_value is None:
            return ""
        return "p<0.001" if self.p_value < 0.001 else f"p={self.p_value:.3f}"


@dataclass
class Row:
    labels: list[str]
    entries: list[Entry]
    # "paper": the paper's printed numbers for the row above (reports/paper_beside.py)
    kind: Literal["baseline", "data", "delta", "reference", "paper"] = "data"


@dataclass
class ReportTable:
    name: str
    title: str
    caption: str
    label_columns: list[str]
    columns: list[str]
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def entry(self, row_label: str, column: str) -> Entry:
        """The entry at (row with label or joined labels == row_label, column), first match."""
        j = self.columns.index(column)
        for row in self.rows:
            if row_label in row.labels or " / ".join(row.labels) == row_label:
                return row.entries[j]
        raise KeyError(f"{self.name}: no row {row_label!r}; rows: {[r.labels for r in self.rows]}")


# ------------------------------------------------------------------------------------------------
# Markdown
# ------------------------------------------------------------------------------------------------

_MARK = {"up": " ▲", "down": " ▼", None: ""}


def display_labels(labels: list[str], previous: list[str]) -> list[str]:
    """A group label (first column) repeated from the row above is shown blank, as in the paper."""
    if len(labels) > 1 and previous and labels[0] == previous[0]:
        return ["", *labels[1:]]
    return labels


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def legend_text(table: ReportTable, show_ci: bool = True) -> str:
    """What the table's marks mean, for the marks it shows (no promise of a column it does not have)."""
    shown = [e for row in table.rows for e in row.entries if e.is_number]
    parts = []
    if show_ci and any(e.ci is not None for e in shown):
        parts.append("Brackets: 95% bootstrap interval over evaluation examples (and seeds where a row has several).")
    if show_ci and any(e.p_value is not None for e in shown):
        parts.append("p: two-sided paired bootstrap p-value of the difference.")
    if any(e.colour is not None for e in shown):
        parts.append("▲/▼: above/below the SFT baseline.")
    return " ".join(parts)


def to_markdown(table: ReportTable, run_url: Callable[[str], str], show_ci: bool = True,
                footnote_prefix: str | None = None) -> str:
    """The table, its notes and one footnote per distinct set of source runs (linked to MLflow).

    When every number of a row comes from the same runs the marker sits on the row label; otherwise
    each number carries its own marker.
    """
    prefix = footnote_prefix or table.name
    footnotes: dict[tuple[str, ...], str] = {}

    def marker(run_ids: tuple[str, ...]) -> str:
        if not run_ids:
            return ""
        if run_ids not in footnotes:
            footnotes[run_ids] = f"{prefix}-{len(footnotes) + 1}"
        return f"[^{footnotes[run_ids]}]"

    def cell(entry: Entry, with_marker: bool) -> str:
        text = entry.fmt_value() + (_MARK[entry.colour] if entry.is_number else "")
        if show_ci and entry.is_number:
            extra = " ".join(x for x in (entry.fmt_ci(), entry.fmt_p()) if x)
            text += f" {extra}" if extra else ""
        if with_marker and entry.is_number:
            text += marker(entry.run_ids)
        return _md_escape(text)

    header = "| " + " | ".join(table.label_columns + table.columns) + " |"
    sep = "|" + "|".join([" --- "] * len(table.label_columns) + [" ---: "] * len(table.columns)) + "|"
    lines = [header, sep]
    previous: list[str] = []
    for row in table.rows:
        sources = {e.run_ids for e in row.entries if e.is_number}
        shared = len(sources) == 1
        labels = [_md_escape(x) for x in display_labels(row.labels, previous)]
        previous = row.labels
        if shared and labels:
            labels[-1] += marker(next(iter(sources)))
        if row.kind in ("baseline", "delta", "paper"):
            labels = [f"*{x}*" if x and x != "—" else x for x in labels]
        lines.append("| " + " | ".join(labels + [cell(e, not shared) for e in row.entries]) + " |")
    out = [f"**{table.title}.** {table.caption}", "", *lines, ""]
    legend = legend_text(table, show_ci)
    if legend:
        out.append(legend)
    out.extend(f"- {note}" for note in table.notes)
    out.append("")
    for run_ids, label in footnotes.items():
        links = ", ".join(f"[`{r[:8]}`]({run_url(r)})" for r in run_ids)
        out.append(f"[^{label}]: MLflow run{'s' if len(run_ids) > 1 else ''} {links}")
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------------------------
# LaTeX
# ------------------------------------------------------------------------------------------------

_TEX_ESCAPE = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
               "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "—": "--", "Δ": r"$\Delta$",
               "−": "-", "▲": "", "▼": ""}


def tex_escape(text: str) -> str:
    return "".join(_TEX_ESCAPE.get(ch, ch) for ch in text)


def to_latex(table: ReportTable, show_ci: bool = True) -> str:
    """booktabs tabular; improvements over SFT in blue, degradations in orange (the paper's colouring).
    Needs \\usepackage{booktabs} and \\usepackage[table]{xcolor}."""
    n_lab, n_col = len(table.label_columns), len(table.columns)
    lines = [
        f"% {table.title}: generated from MLflow by `harness report`; source runs listed per row below.",
        "% needs \\usepackage{booktabs} and \\usepackage[table]{xcolor}",
        r"\begin{table}[t]", r"\centering", r"\small",
        r"\begin{tabular}{" + "l" * n_lab + "r" * n_col + "}", r"\toprule",
        " & ".join(tex_escape(c) for c in table.label_columns + table.columns) + r" \\", r"\midrule",
    ]
    previous: list[str] = []
    for i, row in enumerate(table.rows):
        if row.kind == "delta" and i > 0 and table.rows[i - 1].kind != "delta":
            lines.append(r"\midrule")
        labels, previous = display_labels(row.labels, previous), row.labels
        cells = []
        for entry in row.entries:
            text = tex_escape(entry.fmt_value())
            if show_ci and entry.is_number and (entry.ci or entry.p_value is not None):
                extra = " ".join(x for x in (entry.fmt_ci(), entry.fmt_p()) if x)
                text += r" {\scriptsize " + tex_escape(extra) + "}"
            if entry.colour == "up":
                text = r"\cellcolor{blue!12}" + text
            elif entry.colour == "down":
                text = r"\cellcolor{orange!20}" + text
            cells.append(text)
        runs = sorted({r for e in row.entries for r in e.run_ids})
        lines.append(" & ".join([tex_escape(x) for x in labels] + cells) + r" \\"
                     + (f"  % runs: {' '.join(runs)}" if runs else ""))
        if row.kind == "baseline":
            lines.append(r"\midrule")
    lines += [r"\bottomrule", r"\end{tabular}",
              r"\caption{" + tex_escape(f"{table.title}. {table.caption}") + "}",
              r"\label{tab:" + table.name + "}", r"\end{table}"]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------
# CSV: one line per number, with the runs it came from
# ------------------------------------------------------------------------------------------------

CSV_FIELDS = ["table", "row", "row_kind", "column", "metric", "value", "text", "ci_low", "ci_high", "p_value",
              "n_examples", "n_seeds", "mlflow_run_ids", "mlflow_urls"]


def csv_rows(table: ReportTable, run_url: Callable[[str], str]) -> list[dict[str, Any]]:
    out = []
    for row in table.rows:
        for column, entry in zip(table.columns, row.entries):
            out.append({
                "table": table.name, "row": " / ".join(row.labels), "row_kind": row.kind, "column": column,
                "metric": entry.metric or "", "value": entry.value if entry.is_number else "",
                "text": entry.text or "",
                "ci_low": entry.ci[0] if entry.ci else "", "ci_high": entry.ci[1] if entry.ci else "",
                "p_value": "" if entry.p_value is None else entry.p_value,
                "n_examples": entry.n_examples or "", "n_seeds": entry.n_seeds or "",
                "mlflow_run_ids": ";".join(entry.run_ids), "mlflow_urls": ";".join(run_url(r) for r in entry.run_ids),
            })
    return out


def write_csv(path: Path, rows: list[dict[str, Any]], fields: list[str] | None = None) -> None:
    fields = fields or (list(rows[0]) if rows else CSV_FIELDS)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
