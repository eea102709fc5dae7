"""`harness report EXPERIMENT [--out DIR] [--tables ...] [--figures ...] [--format md,tex,csv,png] [--no-ci]
[--device-profile NAME] [--no-mlflow]`.

Prints the grid summary table (as before) and where every table and figure was written; items the
experiment cannot support are listed with the reason (also in index.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.cli_errors import print_error

FORMATS = ("md", "tex", "csv", "png")


def _names(text: str | None) -> list[str] | None:
    if text is None:
        return None
    return [t.strip() for t in text.split(",") if t.strip()]


def cmd_list() -> int:
    from reports.build import items

    for kind in ("table", "figure"):
        for item in items(kind):
            print(f"{kind:<7} {item.name:<28} {item.title}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from harness.paths import results_dir
    from harness.registry import UnknownNameError

    if getattr(args, "list", False):
        return cmd_list()
    if not args.experiment:
        print("error: give an EXPERIMENT (or --list)", file=sys.stderr)
        return 2
    from reports.build import build_report

    out = Path(args.out) if getattr(args, "out", None) else results_dir() / "reports" / args.experiment
    formats = tuple(_names(getattr(args, "format", None)) or FORMATS)
    try:
        result = build_report(args.experiment, out, tables=_names(getattr(args, "tables", None)),
                              figures=_names(getattr(args, "figures", None)), formats=formats,
                              ci=not getattr(args, "no_ci", False), n_boot=getattr(args, "n_boot", 1000),
                              seed=getattr(args, "seed", 0), device_profile=getattr(args, "device_profile", None),
                              log_mlflow=not getattr(args, "no_mlflow", False))
    except (ValueError, UnknownNameError) as exc:
        print_error(exc, args)
        return 2
    print(result.summary_markdown)
    print()
    for name, paths in result.written.items():
        print(f"{name:<28} " + ", ".join(str(p.relative_to(out)) for p in paths))
    for name, reason in result.skipped.items():
        print(f"{name:<28} skipped: {reason}")
    print(f"\nwritten: {result.index} (and {out / 'summary.md'}, {out / 'summary.csv'})")
    if result.report_run_id:
        print(f"logged to MLflow: report run {result.report_run_id} of experiment {args.experiment}")
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    # No report imports here: matplotlib and the builders load only when a report is built.
    report = subparsers.add_parser(
        "report", help="build the report of an experiment from MLflow (tables, figures, index.md)")
    report.add_argument("experiment", nargs="?", help="MLflow experiment (the grid's `experiment:`)")
    report.add_argument("--list", action="store_true", help="list the table and figure names, then exit")
    report.add_argument("--out", default=None, help="output folder (default results/reports/<experiment>)")
    report.add_argument("--tables", default=None, metavar="NAMES",
                        help="comma-separated table names, 'all' (default) or 'none'")
    report.add_argument("--figures", default=None, metavar="NAMES",
                        help="comma-separated figure names, 'all' (default) or 'none'")
    report.add_argument("--format", default=",".join(FORMATS), help=f"comma-separated subset of {','.join(FORMATS)}")
    report.add_argument("--no-ci", action="store_true",
                        help="hide intervals and p-values (the paper's exact look); also skips the bootstrap")
    report.add_argument("--n-boot", type=int, default=1000, help="bootstrap replicates (default 1000)")
    report.add_argument("--seed", type=int, default=0, help="bootstrap random seed")
    report.add_argument("--device-profile", default=None, metavar="NAME",
                        help="device of the compute columns' estimates (default: the grid profile's, else cpu-2core)")
    report.add_argument("--no-mlflow", action="store_true",
                        help="write the files only; do not log them to the experiment as a report run")
    report.set_defaults(func=cmd_report)
