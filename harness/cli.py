"""`harness` console command.

    harness run GRID.yaml [--profile NAME] [--dry-run [--device-profile NAME] [--usd-per-hour R]] [--only GLOB]
                          [--backend local|ray] [--workers N]
    harness status [GRID.yaml | EXPERIMENT]
    harness report EXPERIMENT [--out DIR] [--tables ...] [--figures ...] [--format md,tex,csv,png] [--no-ci]
    harness ui [--port 5000]
    harness models
    harness train-truthfulqa-judge --kind truth|info --base smollm2-135m-instruct --out DIR [--max-rows N ...]
plus the commands other modules add (see CLI_MODULES): data, eval, judge, serve-judge, sweep, ...

Anywhere on the line: `-v` (library warnings, progress bars and printers on, tracebacks with errors) and
`--offline` (Hugging Face offline flags set; without it they are set when the hub is unreachable,
`harness.hub`).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from harness.cli_errors import print_error

# Modules that add sub-commands: each exposes add_commands(subparsers).
CLI_MODULES: list[str] = [
    "datasets_registry.cli",
    "harness.evaluation.cli",  # harness eval
    "reports.cli",  # harness report
    "harness.judge.cli",  # harness judge, harness serve-judge
    "harness.sweep.cli",  # harness sweep
    "harness.status",  # harness status
]


def _quiet_env(verbose: bool = False, offline: bool = False) -> None:
    """Before any library is imported: the hub's offline flags (asked, or the hub unreachable) and the
    libraries' noise (off unless -v)."""
    from harness.console import quiet_libraries
    from harness.hub import set_offline_flags

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
    why = set_offline_flags(offline)
    if verbose and why in ("asked", "hub unreachable"):
        print(f"Hugging Face offline mode ({why})", file=sys.stderr)
    quiet_libraries(verbose)


def cmd_run(args: argparse.Namespace) -> int:
    from harness.grid import GridError, load_grid
    from harness.runner import describe_plan, plan_grid, run_grid

    try:
        check_cost_arguments(args)
        grid = load_grid(args.grid, only=args.only, profile=args.profile)
    except (GridError, ValueError) as exc:
        print_error(exc, args)
        return 2
    plans = plan_grid(grid)
    if args.dry_run:
        print(describe_plan(grid, plans))
        print(describe_profile_plan(grid, plans, args))
        return 0
    problem = preflight(grid, plans, args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    from harness.console import make_view

    options = {"workers": args.workers} if args.backend == "local" else {}
    if args.backend == "ray" and args.ray_address:
        options["address"] = args.ray_address
    options.update(launch_options(grid, args))
    view = make_view()
    try:
        summary = run_grid(grid, backend=args.backend, backend_options=options, keep_going=not args.fail_fast,
                           echo=view.event, view=view)
    finally:
        view.close()
    print(f"done: {len(summary.logged_cells)} cell(s) logged, {len(summary.skipped_cells)} already logged, "
          f"{len(summary.executed_stages)} stage(s) run, {len(summary.cached_stages)} cached")
    if summary.failed_cells:
        if args.verbose:
            for stage_id, text in summary.tracebacks.items():
                print(f"--- {stage_id}\n{text}", file=sys.stderr)
        print(summary.failure_report(), file=sys.stderr)
        return 1
    if args.report:
        from reports.cli import cmd_report

        return cmd_report(argparse.Namespace(experiment=grid.experiment, out=None))
    return 0


def describe_profile_plan(grid, plans, args: argparse.Namespace) -> str:
    """The `--dry-run` text after the stage list: the profile's launch settings, the inputs this machine
    lacks, and the cost estimate on the chosen device (`--device-profile`, else the profile's, else
    cpu-2core) at `--usd-per-hour` (else the device's list price)."""
    from harness import launch
    from harness.cost_plan import DEFAULT_DEVICE, describe_cost
    from harness.cost_profiles import CostInputError
    from harness.planning import unique_stages
    from harness.resolution import unresolved_inputs

    lines = [f"profile: {grid.profile or '(none: the file as written)'}"]
    if grid.launch:
        lines += ["launch settings per stage kind (applied with --backend ray):", *launch.describe(grid.launch)]
        lines += [f"  cannot run so: {p}" for p in launch.plan_problems(grid.launch, unique_stages(plans))]
    missing = unresolved_inputs(plans, full_data=grid.full_data)
    if missing:
        lines.append(f"inputs not available on this machine ({len(missing)}; `harness run` refuses to start):")
        lines += ["  " + m.replace("\n", "\n  ") for m in missing]
    device = args.device_profile or grid.device_profile or DEFAULT_DEVICE
    try:
        lines.append(describe_cost(plans, device, grid.launch, args.usd_per_hour, full_data=grid.full_data,
                                   kind_devices=args.device_profile is None))
    except CostInputError as exc:  # the plan is valid; only its price cannot be estimated
        lines.append(f"cost estimate on {device}: not available: {exc}")
    return "\n".join(lines)


def check_cost_arguments(args: argparse.Namespace) -> None:
    """--device-profile names a known device, --usd-per-hour is not negative (ValueError otherwise)."""
    from harness.cost_profiles import device_profile

    if args.device_profile is not None:
        device_profile(args.device_profile)  # CostInputError (a ValueError) listing the valid names
    if args.usd_per_hour is not None and not args.usd_per_hour >= 0:
        raise ValueError(f"--usd-per-hour must be >= 0, got {args.usd_per_hour}")


def preflight(grid, plans, args: argparse.Namespace) -> str | None:
    """Why the grid cannot start here (None when it can), before any compute: inputs this machine lacks,
    stages that cannot run under the profile's launch settings on the Ray backend."""
    from harness import launch
    from harness.planning import unique_stages
    from harness.resolution import format_unresolved, unresolved_inputs

    missing = unresolved_inputs(plans, full_data=grid.full_data)
    if missing:
        return format_unresolved(missing)
    if grid.launch and args.backend == "ray":
        problems = launch.plan_problems(grid.launch, unique_stages(plans))
        if problems:
            return (f"profile {grid.profile}: {len(problems)} stage(s) cannot run under its launch settings:\n  "
                    + "\n  ".join(problems))
    return None


def launch_options(grid, args: argparse.Namespace) -> dict:
    """The Ray backend's per-kind resources from the profile's launch block (HARNESS_RAY_RESOURCES, when
    set, wins); with the local backend the launch block does not apply, and a note says so."""
    from harness import launch
    from harness.backends.ray_backend import RESOURCES_ENV

    if not grid.launch:
        return {}
    if args.backend != "ray":
        print(f"note: profile {grid.profile}'s launch settings (accelerate configs, GPUs per stage kind) apply with "
              "--backend ray; the local backend runs every stage in-process", file=sys.stderr)
        return {}
    if os.environ.get(RESOURCES_ENV):
        print(f"note: {RESOURCES_ENV} is set and replaces profile {grid.profile}'s launch settings", file=sys.stderr)
        return {}
    return {"resources": launch.ray_resources(grid.launch)}


def cmd_ui(args: argparse.Namespace) -> int:
    """The MLflow UI over the tracking store; the server stops when this command stops (Ctrl-C, SIGTERM,
    even `kill -9`: `harness.processes.run_supervised`)."""
    from harness.processes import run_supervised
    from harness.tracking import ensure_sqlite_store, tracking_uri

    uri = tracking_uri()
    ensure_sqlite_store(uri)
    print(f"MLflow UI for {uri} on http://127.0.0.1:{args.port}", flush=True)
    return run_supervised([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
                           "--host", "127.0.0.1", "--port", str(args.port)])


def cmd_models(args: argparse.Namespace) -> int:
    from harness.models import MODEL_BUILDERS, model_cache_dir

    for name in MODEL_BUILDERS.names():
        built = (model_cache_dir() / name / "config.json").exists()
        print(f"{name:<28} {'built' if built else 'not built yet'}")
    print("(or any local folder, or a hub id owner/name)")
    return 0


def cmd_train_truthfulqa_judge(args: argparse.Namespace) -> int:
    """Fine-tune a TruthfulQA truth/info judge (the offline stand-in for GPT-judge / GPT-info)."""
    import json
    from pathlib import Path

    from harness.evaluation.truthfulqa import INFO_JUDGE_ENV, TRUTH_JUDGE_ENV
    from harness.evaluation.truthfulqa_judges import train_truthfulqa_judge

    try:
        meta = train_truthfulqa_judge(
            args.kind, args.base, Path(args.out), max_rows=args.max_rows, steps=args.steps,
            batch_size=args.batch_size, learning_rate=args.lr, seed=args.seed,
            heldout_fraction=args.heldout_fraction, max_length=args.max_length,
            data_path=Path(args.data) if args.data else None,
            log=lambda line: print(line, file=sys.stderr, flush=True))
    except (ValueError, FileNotFoundError) as err:
        print_error(err, args)
        return 2
    held = meta["heldout"]
    print(f"{args.kind} judge from {args.base}: {meta['n_train']} training rows ({meta['n_train_questions']} "
          f"questions), {meta['config']['steps']} steps, {meta['train_seconds']:.0f} s on {meta['device']}")
    print(f"held-out ({meta['n_heldout']} rows, {meta['n_heldout_questions']} unseen questions): "
          f"accuracy {held['accuracy']:.3f}, balanced accuracy {held['balanced_accuracy']:.3f}, "
          f"yes-rate {held['yes_rate']:.3f} (labels {held['label_yes_rate']:.3f})")
    print(json.dumps({"heldout": held}))
    var = TRUTH_JUDGE_ENV if args.kind == "truth" else INFO_JUDGE_ENV
    print(f"saved to {Path(args.out).resolve()}; use it with {var}={Path(args.out).resolve()} "
          f"(TruthfulQA needs both judges)")
    return 0


def add_profile_arguments(parser: argparse.ArgumentParser) -> None:
    """--profile, and the cost estimate's --device-profile / --usd-per-hour."""
    parser.add_argument("--profile", default=None, metavar="NAME",
                        help="the grid's profile (paper, gpu, cpu, tiny, ...): a partial override of the file")
    parser.add_argument("--device-profile", default=None, metavar="NAME",
                        help="device of the --dry-run cost estimate (harness/device_profiles.yaml: a100-80g, h100, "
                             "h200, tpu-v3-256, cpu-2core, ...); default: the profile's, else cpu-2core")
    parser.add_argument("--usd-per-hour", type=float, default=None, metavar="RATE",
                        help="price of one device-hour for the estimate (default: the device profile's list price)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="harness", description="Preference-learning ablation harness")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a YAML grid (cached stage DAG, logged to MLflow)")
    run.add_argument("grid")
    run.add_argument("--dry-run", action="store_true",
                     help="print cells, which stages are cached / will run, missing inputs and the cost estimate")
    add_profile_arguments(run)
    run.add_argument("--only", metavar="CELL_GLOB", help="only cells whose name matches this glob")
    run.add_argument("--backend", default="local", choices=["local", "ray"])
    run.add_argument("--workers", type=int, default=1, help="local backend: parallel stage processes")
    run.add_argument("--ray-address", default=None, help="ray backend: cluster address (default: local Ray)")
    run.add_argument("--report", action="store_true", help="print the summary report when done")
    run.add_argument("--fail-fast", action="store_true",
                     help="stop at the first failed stage (default: keep going with the cells that do not "
                          "depend on it, list the failures at the end and exit 1)")
    run.set_defaults(func=cmd_run)

    ui = sub.add_parser("ui", help="MLflow UI on 127.0.0.1 over the tracking store")
    ui.add_argument("--port", type=int, default=5000)
    ui.set_defaults(func=cmd_ui)

    models = sub.add_parser("models", help="list the model zoo")
    models.set_defaults(func=cmd_models)

    judge = sub.add_parser(
        "train-truthfulqa-judge",
        help="fine-tune a TruthfulQA truth/info judge on finetune_<kind>.jsonl (offline fallback judge)")
    judge.add_argument("--kind", required=True, choices=["truth", "info"])
    judge.add_argument("--base", default="smollm2-135m-instruct", help="zoo name, model folder or hub id")
    judge.add_argument("--out", required=True, help="judge folder to write (replaced if it holds a judge)")
    judge.add_argument("--max-rows", type=int, default=None, help="seeded random sample of the rows (default all)")
    judge.add_argument("--steps", type=int, default=1000, help="optimizer steps")
    judge.add_argument("--batch-size", type=int, default=16)
    judge.add_argument("--lr", type=float, default=1e-5, help="AdamW learning rate (constant)")
    judge.add_argument("--seed", type=int, default=0)
    judge.add_argument("--heldout-fraction", type=float, default=0.1, help="share of QUESTIONS held out")
    judge.add_argument("--max-length", type=int, default=512, help="prompt tokens kept (from the end)")
    judge.add_argument("--data", default=None,
                       help="training file (default: benchmarks/truthfulqa/finetune_<kind>.jsonl in the data dirs)")
    judge.set_defaults(func=cmd_train_truthfulqa_judge)

    for module_name in CLI_MODULES:
        importlib.import_module(module_name).add_commands(sub)
    return parser


# Errors a user can cause and fix (a bad file, value, name or path): one message, exit 2. Anything else is
# a bug or an environment problem: one message too, exit 1; `-v` prints the traceback for both.
# (UnknownNameError, pydantic's ValidationError and the harness's own errors are ValueErrors.)
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, IsADirectoryError,
                                                NotADirectoryError, PermissionError)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = _pop_verbose(argv)
    offline = _pop_flag(argv, ("--offline",))
    _quiet_env(verbose, offline)
    args = build_parser().parse_args(argv)
    args.verbose = verbose
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the one place where any error becomes a message
        return report_error(exc, verbose)


def _pop_verbose(argv: list[str]) -> bool:
    """`-v`/`--verbose` anywhere on the line (before or after the sub-command), removed from `argv`."""
    return _pop_flag(argv, ("-v", "--verbose"))


def _pop_flag(argv: list[str], names: tuple[str, ...]) -> bool:
    """Whether one of `names` is anywhere on the line (removed from `argv`)."""
    found = [a for a in argv if a in names]
    for flag in found:
        argv.remove(flag)
    return bool(found)


def report_error(exc: BaseException, verbose: bool) -> int:
    """Print `exc` as one `error: ...` message (the traceback too when `verbose`); returns the exit code:
    2 for a user error, 1 otherwise."""
    user = isinstance(exc, USER_ERRORS)
    print_error(exc, verbose, label="error" if user else f"error ({type(exc).__name__})")
    if not verbose:
        print("(run with -v for the full traceback)", file=sys.stderr)
    return 2 if user else 1


if __name__ == "__main__":
    sys.exit(main())
