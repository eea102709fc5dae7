"""`harness` console command.

    harness run GRID.yaml [--dry-run] [--only GLOB] [--backend local|ray] [--workers N]
    harness report EXPERIMENT [--out DIR] [--tables ...] [--figures ...] [--format md,tex,csv,png] [--no-ci]
    harness ui [--port 5000]
    harness models
plus the commands other modules add (see CLI_MODULES): data, eval, judge, serve-judge, sweep, ...
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# Modules that add sub-commands: each exposes add_commands(subparsers).
CLI_MODULES: list[str] = [
    "datasets_registry.cli",
    "harness.evaluation.cli",  # harness eval
    "reports.cli",  # harness report
    "harness.judge.cli",  # harness judge, harness serve-judge
    "harness.sweep",  # harness sweep
]


def _quiet_env() -> None:
    # Offline by default: nothing at run time may wait on the hub; users with hub access unset these.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")


def cmd_run(args: argparse.Namespace) -> int:
    from harness.grid import GridError, load_grid
    from harness.runner import describe_plan, plan_grid, run_grid

    try:
        grid = load_grid(args.grid, only=args.only)
    except GridError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(describe_plan(grid, plan_grid(grid)))
        return 0
    options = {"workers": args.workers} if args.backend == "local" else {}
    if args.backend == "ray" and args.ray_address:
        options["address"] = args.ray_address
    summary = run_grid(grid, backend=args.backend, backend_options=options)
    print(f"done: {len(summary.logged_cells)} cell(s) logged, {len(summary.skipped_cells)} already logged, "
          f"{len(summary.executed_stages)} stage(s) run, {len(summary.cached_stages)} cached")
    if args.report:
        from reports.cli import cmd_report

        return cmd_report(argparse.Namespace(experiment=grid.experiment, out=None))
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    import subprocess

    from harness.tracking import tracking_uri

    uri = tracking_uri()
    print(f"MLflow UI for {uri} on http://127.0.0.1:{args.port}")
    return subprocess.call([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
                            "--host", "127.0.0.1", "--port", str(args.port)])


def cmd_models(args: argparse.Namespace) -> int:
    from harness.models import MODEL_BUILDERS, model_cache_dir

    for name in MODEL_BUILDERS.names():
        built = (model_cache_dir() / name / "config.json").exists()
        print(f"{name:<28} {'built' if built else 'not built yet'}")
    print("(or any local folder, or a hub id owner/name)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="harness", description="Preference-learning ablation harness")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a YAML grid (cached stage DAG, logged to MLflow)")
    run.add_argument("grid")
    run.add_argument("--dry-run", action="store_true", help="print cells and which stages are cached / will run")
    run.add_argument("--only", metavar="CELL_GLOB", help="only cells whose name matches this glob")
    run.add_argument("--backend", default="local", choices=["local", "ray"])
    run.add_argument("--workers", type=int, default=1, help="local backend: parallel stage processes")
    run.add_argument("--ray-address", default=None, help="ray backend: cluster address (default: local Ray)")
    run.add_argument("--report", action="store_true", help="print the summary report when done")
    run.set_defaults(func=cmd_run)

    ui = sub.add_parser("ui", help="MLflow UI on 127.0.0.1 over the tracking store")
    ui.add_argument("--port", type=int, default=5000)
    ui.set_defaults(func=cmd_ui)

    models = sub.add_parser("models", help="list the model zoo")
    models.set_defaults(func=cmd_models)

    for module_name in CLI_MODULES:
        importlib.import_module(module_name).add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    _quiet_env()
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
