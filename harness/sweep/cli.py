"""`harness sweep ...` (harness.cli adds it through CLI_MODULES) and `python -m harness.sweep ...`; usage
in `harness.sweep`'s docstring and docs/scale-out.md."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from harness.cli_errors import print_error
from harness.sweep.plan import describe_sweep_plan, unresolved_sweep_inputs
from harness.sweep.spec import SweepError, load_sweep, study_names
from harness.sweep.workers import run_sweep


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sweep", help="sweep YAML (a grid's base + search/objective blocks)")
    parser.add_argument("--storage", default=None, help="Optuna storage: journal:PATH, sqlite:///PATH or "
                        "postgresql://... (default: the file's `storage`, else SQLite under results/optuna/)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes on the study (use a journal "
                        "or PostgreSQL storage for more than one)")
    parser.add_argument("--n-trials", type=int, default=None, help="run at most this many trials per study now "
                        "(the file's n_trials stays the study's target)")
    parser.add_argument("--join", action="store_true", help="join an existing sweep as an extra worker")
    parser.add_argument("--worker-index", type=int, default=0, help="offsets the sampler seed of this worker")
    parser.add_argument("--quotas", default=None, help=argparse.SUPPRESS)  # per-study trial counts (internal)
    parser.add_argument("--backend", default="local", choices=["local", "ray"])
    parser.add_argument("--ray-address", default=None, help="ray backend: cluster address (default: local Ray)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a field of the sweep file (YAML value), e.g. base.model=tiny-random-llama")
    parser.add_argument("--dry-run", action="store_true", help="validate and print the studies, run nothing")
    parser.add_argument("--profile", default=None, metavar="NAME",
                        help="apply the file's profile NAME (paper, gpu, cpu, tiny, ...) before --set")
    parser.add_argument("--device-profile", default=None, metavar="NAME",
                        help="device of the --dry-run cost estimate (default: the profile's, else cpu-2core)")
    parser.add_argument("--usd-per-hour", type=float, default=None, metavar="RATE",
                        help="price of one device-hour for the estimate (default: the device's list price)")


def cmd_sweep(args: argparse.Namespace) -> int:
    try:
        spec = load_sweep(args.sweep, args.overrides, profile=args.profile)
    except SweepError as exc:
        print_error(exc, args)
        return 2
    if args.workers < 1:
        print("error: --workers must be >= 1", file=sys.stderr)
        return 2
    if args.dry_run:
        for name, partition in study_names(spec):
            print(f"study {name}: axes {partition or '-'}, search {sorted(spec.search)}, "
                  f"{spec.n_trials} trial(s), objectives {[o.metric for o in spec.objective_list]}")
        print(describe_sweep_plan(spec, args.device_profile, args.usd_per_hour))
        return 0
    if not args.join:
        from harness.resolution import format_unresolved

        missing = unresolved_sweep_inputs(spec)
        if missing:
            print(f"error: {format_unresolved(missing)}", file=sys.stderr)
            return 2
    options: dict[str, Any] = {}
    if args.backend == "ray" and args.ray_address:
        options["address"] = args.ray_address
    worker_argv = [args.sweep, *([f"--profile={args.profile}"] if args.profile else []),
                   *(f"--set={o}" for o in args.overrides)]
    try:
        summaries = run_sweep(spec, storage_url=args.storage, workers=args.workers, join=args.join,
                              worker_index=args.worker_index, n_trials=args.n_trials, backend=args.backend,
                              backend_options=options, source=Path(args.sweep), worker_argv=worker_argv,
                              quotas=json.loads(args.quotas) if args.quotas else None)
    except SweepError as exc:
        print_error(exc, args)
        return 2
    for name, summary in summaries.items():
        if "best" in summary:
            print(f"study {name}: best trial {summary['best']['number']} value {summary['best']['value']:.4g} "
                  f"params {summary['best']['params']}")
        elif "pareto_front" in summary:
            print(f"study {name}: Pareto front of {len(summary['pareto_front'])} trial(s): "
                  + "; ".join(f"#{t['number']} {t['params']} -> {t['values']}" for t in summary["pareto_front"]))
    return 0


def add_commands(subparsers: Any) -> None:
    parser = subparsers.add_parser("sweep", help="Optuna sweep over config fields (each trial a grid cell)")
    _add_arguments(parser)
    parser.set_defaults(func=cmd_sweep)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
    parser = argparse.ArgumentParser(prog="harness sweep")
    _add_arguments(parser)
    return cmd_sweep(parser.parse_args(argv))
