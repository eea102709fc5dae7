"""Build a whole report: every registered table and figure the experiment supports, written as
Markdown / LaTeX / CSV / PNG under `results/reports/<experiment>/`, plus one `index.md` showing them
all (and listing what was skipped, and why)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from harness import tracking
from reports import figures as _figures  # noqa: F401  (registers the figure builders)
from reports import monitor as _monitor  # noqa: F401  (the over-optimisation monitor and length-controlled views)
from reports import tables as _tables  # noqa: F401  (registers the table builders)
from reports.compute import add_compute_columns, report_device
from reports.costs import cost_section
from reports.data import Experiment
from reports.model import ReportTable, csv_rows, to_latex, to_markdown, write_csv
from reports.paper_beside import beside_paper
from reports.registry import ITEMS, FigureOutput, ReportContext, Skip, items
from reports.stats import DEFAULT_N_BOOT
from reports.summary import summary_table
from reports.summary import to_markdown as summary_markdown

log = logging.getLogger(__name__)
FORMATS = ("md", "tex", "csv", "png")


@dataclass
class ReportResult:
    out_dir: Path
    index: Path
    summary_markdown: str
    written: dict[str, list[Path]] = field(default_factory=dict)  # item -> files
    skipped: dict[str, str] = field(default_factory=dict)  # item -> reason
    tables: dict[str, ReportTable] = field(default_factory=dict)
    figures: dict[str, FigureOutput] = field(default_factory=dict)
    report_run_id: str | None = None  # the MLflow report run, when logged


def select(kind: str, names: list[str] | None) -> list[str]:
    """Item names of a kind: all when `names` is None, none for [] / ['none'], else the given ones
    (checked against the registry, so a typo lists the valid names)."""
    available = [item.name for item in items(kind)]
    if names is None or names == ["all"]:
        return available
    if names in ([], ["none"]):
        return []
    for name in names:
        if ITEMS.get(name).kind != kind:
            raise ValueError(f"{name!r} is a {ITEMS.get(name).kind}, not a {kind}; {kind}s: {', '.join(available)}")
    return names


def build_report(experiment: str, out_dir: Path, tables: list[str] | None = None, figures: list[str] | None = None,
                 formats: tuple[str, ...] = FORMATS, ci: bool = True, n_boot: int = DEFAULT_N_BOOT,
                 seed: int = 0, device_profile: str | None = None, log_mlflow: bool = False) -> ReportResult:
    """Every item the experiment supports, written under `out_dir`. Tables that the paper printed get its
    rows beside this run's and a "does the finding hold here" line per claim (`reports.paper_beside`);
    Tables 1, 2 and 4 a compute column (`reports.compute`, on `device_profile`, else the experiment's).
    `log_mlflow`: also log what was built to the experiment as a report run (`mlflow_layout.log_report_run`)."""
    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise ValueError(f"unknown format(s) {sorted(unknown)}; valid: {', '.join(FORMATS)}")
    table_names, figure_names = select("table", tables), select("figure", figures)
    if "png" not in formats:
        figure_names = []
    out_dir.mkdir(parents=True, exist_ok=True)
    with Experiment(experiment) as exp:
        ctx = ReportContext(exp, ci=ci, n_boot=n_boot, seed=seed)
        device = report_device(exp, device_profile)
        summary = summary_table(experiment)
        result = ReportResult(out_dir, out_dir / "index.md", summary_markdown(summary))
        (out_dir / "summary.md").write_text(result.summary_markdown + "\n")
        summary.to_csv(out_dir / "summary.csv", index=False)
        for name in table_names + figure_names:
            item = ITEMS.get(name)
            reason = item.needs.missing(exp)
            if reason is None:
                try:
                    built = item.build(ctx)
                except Skip as exc:
                    reason = str(exc)
            if reason is not None:
                result.skipped[name] = reason
                continue
            if isinstance(built, ReportTable):
                beside_paper(built, exp)
                add_compute_columns(built, exp, device)
                result.tables[name] = built
                result.written[name] = _write_table(built, out_dir / "tables", formats, exp.run_url, ci)
            else:
                result.figures[name] = built
                result.written[name] = _write_figure(name, built, out_dir / "figures")
        result.index.write_text(_index(exp, ctx, result, table_names + figure_names))
        if log_mlflow:
            result.report_run_id = log_report(exp, result, device)
    return result


def log_report(exp: Experiment, result: ReportResult, device: str) -> str:
    """The report as a run of its experiment: every file written, the items built and skipped."""
    from harness import mlflow_layout as layout

    built = {name: [str(p.relative_to(result.out_dir)) for p in paths] for name, paths in result.written.items()}
    return layout.log_report_run(exp.experiment_id, result.out_dir, built, result.skipped,
                                 result.index.read_text(), {"report.device_profile": device,
                                                            "report.cells": str(len(exp.cells))})


def _write_table(table: ReportTable, folder: Path, formats: tuple[str, ...], run_url, ci: bool) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    if "md" in formats:
        paths.append(folder / f"{table.name}.md")
        paths[-1].write_text(to_markdown(table, run_url, show_ci=ci))
    if "tex" in formats:
        paths.append(folder / f"{table.name}.tex")
        paths[-1].write_text(to_latex(table, show_ci=ci))
    if "csv" in formats:
        paths.append(folder / f"{table.name}.csv")
        write_csv(paths[-1], csv_rows(table, run_url))
    return paths


def _write_figure(name: str, output: FigureOutput, folder: Path) -> list[Path]:
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    png = folder / f"{name}.png"
    output.figure.savefig(png, dpi=110)  # layouts are tightened by the builders (a tight bbox draws twice)
    plt.close(output.figure)
    paths = [png]
    if output.data:
        fields = list(dict.fromkeys(k for row in output.data for k in row))
        write_csv(folder / f"{name}.csv", output.data, fields)
        paths.append(folder / f"{name}.csv")
    return paths


def _tasks_without_result(exp: Experiment) -> list[str]:
    """Evaluation tasks a cell asked for that have no score, and why (from the cell runs' tags)."""
    from harness.mlflow_layout import tasks_without_result

    rows = [f"- `{cell.cell}` · `{task}`: {status}: {reason}"
            for cell in exp.cells for task, status, reason in tasks_without_result(cell.tags)]
    if not rows:
        return []
    return ["## Evaluation tasks without a result", "",
            "Nothing is invented for them. A task whose input was missing was not run; the next `harness run` of the "
            "grid runs it once the input exists (the cell's other tasks are not rerun).", "", *rows, ""]


def _intervals_note(ctx: ReportContext, result: ReportResult) -> str:
    if not ctx.ci:
        return "Intervals hidden (`--no-ci`)."
    entries = [e for t in result.tables.values() for row in t.rows for e in row.entries]
    note = (f"Intervals: 95% percentile bootstrap over evaluation examples (and seeds where a configuration has "
            f"several), {ctx.bank.n_boot} replicates")
    return note + ("; Δ p-values from the paired bootstrap." if any(e.p_value is not None for e in entries) else ".")


def _index(exp: Experiment, ctx: ReportContext, result: ReportResult, order: list[str]) -> str:
    lines = [f"# Report: {exp.name}", "",
             f"Built from MLflow alone (`{tracking.tracking_uri()}`, experiment id {exp.experiment_id}): "
             f"{len(exp.cells)} cell runs. Every number links to the MLflow run it came from (footnotes; the CSV "
             "files carry the run ids).",
             "", _intervals_note(ctx, result), "", "## Grid summary", "", result.summary_markdown, ""]
    lines += _tasks_without_result(exp)
    lines += cost_section(exp.cells, {name: (table.title, {r for row in table.rows for e in row.entries for r in e.run_ids})
                                      for name, table in result.tables.items()})
    for name in order:
        if name in result.tables:
            table = result.tables[name]
            lines += [f"## {ITEMS.get(name).title}", "", to_markdown(table, exp.run_url, show_ci=ctx.ci),
                      "Files: " + ", ".join(f"[{p.name}]({p.relative_to(result.out_dir)})" for p in result.written[name]),
                      ""]
        elif name in result.figures:
            fig = result.figures[name]
            runs = list(dict.fromkeys(r for row in fig.data for r in str(row.get("mlflow_run_ids", "")).split(";") if r))
            lines += [f"## {ITEMS.get(name).title}", "", f"![{name}](figures/{name}.png)", "", fig.caption, ""]
            lines += [f"- {note}" for note in fig.notes]
            if runs:
                lines += ["Source runs: " + ", ".join(f"[`{r[:8]}`]({exp.run_url(r)})" for r in runs)
                          + f" (plotted values: [figures/{name}.csv](figures/{name}.csv))", ""]
    if result.skipped:
        lines += ["## Skipped", "", "Items this experiment cannot support (nothing is invented for them):", ""]
        lines += [f"- **{ITEMS.get(n).title}** (`{n}`): {reason}." for n, reason in result.skipped.items()]
    return "\n".join(lines) + "\n"
