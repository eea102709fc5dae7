"""`harness eval`: run a suite (or chosen tasks) on a model and log everything to MLflow.

    harness eval --model smollm2-135m-instruct --suite paper11 --limit 20
    harness eval --model results/stages/.../model --tasks gsm8k ifeval --out /tmp/eval
    harness eval --model <mlflow run id> --suite paper11 --judge-model gpt-4o --judge-base-url URL
    harness eval --model smollm2-135m-instruct --tasks humaneval_plus --set coding.n_samples=10
    harness eval --model smollm2-135m-instruct --tasks gsm8k mmlu --engine openai \
        --base-url http://127.0.0.1:8000/v1 --engine-model smollm2   # any OpenAI-compatible server
    harness eval --model <tulu-2 folder> --suite paper11 --setting paper      # open-instruct 2024, as the paper
    harness eval --suite paper11 --setting paper --dry-run                     # what each task will do; runs nothing

`--model` is a zoo name, a model folder, a hub id, or an MLflow run id whose run carries the
trained model's folder (a stage run's model, or a cell run's policy: `mlflow_layout.model_path_of_run`).
Writes `<out>/<task>.samples.jsonl` (every generation, so any metric can be recomputed),
`<out>/results.json`, `<out>/table.txt`; prints the per-benchmark, per-category and overall table;
logs params, metrics (including `*_with_offline_fallbacks`) and the output folder as artifacts.

Task settings: `--set GROUP.FIELD=VALUE` (repeatable; GROUP as in a grid's `eval.settings`, e.g.
`coding.n_samples=10`), on top of the defaults and the environment's (HARNESS_CODING_*, ...): resolved
once at start by the same code as a grid's (`harness.evaluation.base.resolve_settings`), logged as
`settings.<group>.<field>` params, and part of each task's resume key (`task_fingerprint`). A task whose
input is missing (data, classifier, judge) is not run and says why; `--out` resume reruns it once the
input is there.

The engine (`harness.generation.EngineSettings`): `--engine hf` (default; `--dtype`, `--batching`, by
default the detected fastest for the device), `--engine openai` (a running server: `--base-url`,
`--engine-model` = the name it serves; `--model` still names the model, whose tokenizer renders the
prompts) or `--engine vllm` (the harness starts `vllm serve`; untested here). What it resolved to is
logged (`engine.*` params, `engine.json` in the output folder); resuming into a folder written by
another engine is refused.

`--setting paper|harness` sets every benchmark's `setting` at once (a grid's `eval.setting`); a `--set
GROUP.setting=...` still wins for its group. `--dry-run` prints, per task, its subset and size, seed,
prompt source, decoding, judge and whether its inputs are there, then exits without loading a model
(`--model` is optional then; given, it says whether the model's tokenizer adds a BOS token).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import re
import sys
import time
from pathlib import Path
from typing import Any

from harness.cli_errors import print_error

_RUN_ID = re.compile(r"^[0-9a-f]{32}$")
_MLFLOW_BAD = re.compile(r"[^A-Za-z0-9_\-. :/]")


def mlflow_metric_name(name: str) -> str:
    """MLflow accepts only alphanumerics, _ - . space : / in metric names ("pass@10" -> "pass_at_10")."""
    return _MLFLOW_BAD.sub("_", name.replace("@", "_at_"))


def resolve_eval_model(name: str) -> str:
    """A loadable model path/id for `name` (zoo name, folder, hub id, or MLflow run id)."""
    from harness.models import is_known_model, resolve_model

    if _RUN_ID.match(name) and not Path(name).exists():
        from harness.mlflow_layout import model_path_of_run

        return resolve_model(model_path_of_run(name))
    if not is_known_model(name):
        raise ValueError(f"--model {name!r}: not a zoo name, a folder, a hub id or an MLflow run id")
    return resolve_model(name)


@contextlib.contextmanager
def _progress(task_names: list[str]):
    """Print each task's start and end to stderr while `run_tasks` runs them (evaluations can take
    hours on a CPU); the registry entries are restored afterwards."""
    from harness.evaluation import TASKS

    originals = {}
    for i, name in enumerate(task_names, 1):
        spec = TASKS.get(name)
        if name in originals:
            continue
        originals[name] = spec.run

        def wrapped(ctx, _run=spec.run, _name=name, _i=i):
            print(f"[{time.strftime('%H:%M:%S')}] ({_i}/{len(task_names)}) {_name} ...", file=sys.stderr, flush=True)
            start = time.perf_counter()
            result = _run(ctx)
            status = f"score {result.score:.1f}" if result.score is not None else f"skipped: {result.skipped_reason}"
            print(f"[{time.strftime('%H:%M:%S')}]   {_name}: {status} ({time.perf_counter() - start:.0f} s)",
                  file=sys.stderr, flush=True)
            return result

        wrapped.__wrapped__ = spec.run  # type: ignore[attr-defined]  # the task's own code, for resume keys
        spec.run = wrapped
    try:
        yield
    finally:
        for name, run in originals.items():
            TASKS.get(name).run = run


def parse_settings(assignments: list[str]) -> dict[str, dict[str, Any]]:
    """`["coding.n_samples=10", ...]` -> {"coding": {"n_samples": 10}} (values read as YAML scalars)."""
    import yaml

    out: dict[str, dict[str, Any]] = {}
    for item in assignments:
        target, sep, value = item.partition("=")
        group, dot, name = target.partition(".")
        if not sep or not dot or not group or not name:
            raise ValueError(f"--set {item!r}: expected GROUP.FIELD=VALUE, e.g. coding.n_samples=10")
        out.setdefault(group, {})[name] = yaml.safe_load(value) if value else None
    return out


def _judge_settings(args: argparse.Namespace) -> dict[str, Any] | None:
    if not args.judge_model:
        return None
    return {"model": args.judge_model, "base_url": args.judge_base_url, "api_key_env": args.judge_api_key_env}


def _engine_settings(args: argparse.Namespace) -> Any:
    """EngineSettings from the flags; a bad combination raises ValueError naming the flags."""
    from pydantic import ValidationError

    from harness.generation import EngineSettings

    flags = {"base_url": "--base-url", "model": "--engine-model", "batching": "--batching", "kind": "--engine",
             "max_concurrency": "--max-concurrency", "dtype": "--dtype"}
    given = {"kind": args.engine, "dtype": args.dtype, "batching": args.batching, "base_url": args.base_url,
             "model": args.engine_model, "max_concurrency": args.max_concurrency}
    try:
        return EngineSettings(**{k: v for k, v in given.items() if v is not None})
    except ValidationError as err:
        text = "; ".join(e["msg"].removeprefix("Value error, ") for e in err.errors())
        for field, flag in flags.items():
            text = text.replace(f"{field}:", f"{flag}:")
        raise ValueError(f"--engine {args.engine}: {text}") from None


def _log_mlflow(args: argparse.Namespace, model_path: str, tasks: list[str], metrics: dict[str, float],
                out: Path, settings: dict[str, dict[str, Any]], engine_params: dict[str, str]) -> str | None:
    from harness import tracking
    from harness.mlflow_layout import log_eval_run

    experiment_id = tracking.setup_experiment(args.experiment)
    finite = {mlflow_metric_name(k): float(v) for k, v in metrics.items()
              if isinstance(v, (int, float)) and not math.isnan(v)}
    params = {"model": args.model, "model_path": model_path, "suite": args.suite or "", "tasks": ",".join(tasks),
              "setting": args.setting or "",
              "limit": str(args.limit), "seed": str(args.seed), "batch_size": str(args.batch_size),
              "judge_model": args.judge_model or "", **tracking.flatten({"settings": settings}), **engine_params}
    return log_eval_run(experiment_id, f"eval {Path(args.model).name}", model_path, params, finite, out)


def _bos_line(model: str) -> str:
    """Whether `model`'s tokenizer adds a BOS token (what the paper setting's prompts then start with)."""
    from harness.evaluation.open_instruct import tokenizer_adds_bos
    from harness.models import load_tokenizer

    tokenizer = load_tokenizer(resolve_eval_model(model))
    if tokenizer_adds_bos(tokenizer):
        return f"model {model}: its tokenizer adds BOS {tokenizer.bos_token!r}: the paper setting's prompts start with it"
    return f"model {model}: its tokenizer adds no BOS token: the paper setting's prompts have none"


def format_dry_run(tasks: list[str], settings: dict[str, dict[str, Any]], limit: int | None,
                   judge: dict[str, Any] | None) -> str:
    """Per task: setting, subset and size, seed, prompt source, decoding, judge, notes, and whether its
    inputs resolve now (`plan_tasks`, the grid's own check); nothing is loaded or run."""
    from harness.evaluation import TASKS
    from harness.evaluation.base import CATEGORIES, aggregation_plan, plan_tasks, settings_from_config

    resolved = settings_from_config(settings, tasks)
    _, missing = plan_tasks(tasks, settings, judge=judge, has_reference=False, has_reward_model=False)
    lines = []
    unscored: set[str] = set()
    for name in tasks:
        spec = TASKS.get(name)
        task_settings = resolved.get(spec.group)
        lines.append(f"{name} ({spec.category})" + (f", setting {task_settings.setting}"  # type: ignore[union-attr]
                                                    if hasattr(task_settings, "setting") else ""))
        if spec.describe is not None:
            plan = spec.describe(task_settings, limit)
            rows = [("subset", plan.subset), ("size", "unknown (data missing)" if plan.size is None else str(plan.size)),
                    ("seed", "-" if plan.seed is None else str(plan.seed)), ("prompt", plan.prompt),
                    ("decoding", plan.decoding), ("judge", plan.judge or "-")]
            rows += [("note", note) for note in plan.notes]
        else:
            rows = [("about", spec.description or spec.score_rule or "-")]
        if task_settings is not None:
            rows.append(("settings", ", ".join(f"{k}={v!r}" for k, v in task_settings.model_dump().items())))
        if name in missing:
            rows.append(("inputs", f"MISSING, not run: {missing[name]}"))
            unscored.add(name)
        elif "judge" in spec.used_inputs and not (judge and judge.get("model")):
            rows.append(("inputs", "ready, but no judge configured (--judge-model): offline fallbacks only, no score"))
            unscored.add(name)
        else:
            rows.append(("inputs", "ready" + (f"; judge {judge['model']}" if "judge" in spec.used_inputs else "")))
        lines += [f"  {key:<9} {value}" for key, value in rows]
    averaged, incomplete, with_overall = aggregation_plan(tasks, unscored)
    if averaged or incomplete:
        lines.append("averages: a category, and overall, only when every benchmark in them has a score")
        lines += [f"  category/{c:<22} mean of {', '.join(averaged[c])}" if c in averaged else
                  f"  category/{c:<22} WITHHELD: no score from {', '.join(incomplete[c])}"
                  for c in CATEGORIES if c in averaged or c in incomplete]
        if with_overall:
            lines.append(f"  {'overall':<31} mean of the {len(CATEGORIES)} categories")
        else:
            absent = [c for c in CATEGORIES if c not in averaged and c not in incomplete]
            why = [f"{len(incomplete)} categor{'y' if len(incomplete) == 1 else 'ies'} withheld"] if incomplete else []
            why += [f"not evaluated: {', '.join(absent)}"] if absent else []
            lines.append(f"  {'overall':<31} WITHHELD ({'; '.join(why)})")
    return "\n".join(lines)


def cmd_eval(args: argparse.Namespace) -> int:
    from harness.evaluation import SUITES, TASKS, EvalContext, run_tasks
    from harness.evaluation.base import resolve_eval_settings, settings_from_config
    from harness.evaluation.paper_suite import format_table, with_fallbacks
    from harness.paths import results_dir

    tasks: list[str] = []
    if args.suite:
        if args.suite not in SUITES:
            print(f"error: unknown suite {args.suite!r}; suites: {', '.join(sorted(SUITES))}", file=sys.stderr)
            return 2
        tasks += SUITES[args.suite]
    for name in args.tasks or []:
        if name not in tasks:
            tasks.append(name)
    if not tasks:
        print("error: give --suite and/or --tasks", file=sys.stderr)
        return 2
    unknown = [t for t in tasks if t not in TASKS.names()]
    if unknown:
        print(f"error: unknown task(s) {unknown}; tasks: {', '.join(TASKS.names())}", file=sys.stderr)
        return 2
    try:  # the settings, resolved once (defaults, environment, --set, --setting): a bad one fails now
        settings = resolve_eval_settings(tasks, parse_settings(args.set or []), setting=args.setting)
    except ValueError as err:
        print_error(err, args)
        return 2
    if args.dry_run:
        try:
            header = [_bos_line(args.model)] if args.model else []
        except (ValueError, FileNotFoundError, OSError) as err:
            print_error(err, args)
            return 2
        print("\n".join([*header, format_dry_run(tasks, settings, args.limit, _judge_settings(args)),
                         "(dry run: nothing was loaded or run)"]))
        return 0
    if not args.model:
        print("error: give --model (only --dry-run runs without one)", file=sys.stderr)
        return 2
    try:
        model_path = resolve_eval_model(args.model)
    except (ValueError, FileNotFoundError) as err:
        print_error(err, args)
        return 2
    try:
        engine = _engine_settings(args)
    except ValueError as err:
        print_error(err, args)
        return 2
    resolved = engine.resolved()
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(args.model).name)
    out = Path(args.out) if args.out else results_dir() / "eval" / f"{slug}-{time.strftime('%Y%m%d-%H%M%S')}"
    # Task resume keys name the engine, so another engine's results would not be reused anyway; say so now
    # rather than silently redo every task into a folder that then mixes two engines' files.
    engine_file = out / "engine.json"
    if not args.no_resume and engine_file.exists() and json.loads(engine_file.read_text()) != resolved.key():
        print(f"error: {out} holds results from engine {engine_file.read_text().strip()}, this run uses "
              f"{json.dumps(resolved.key())}: give another --out, or --no-resume to redo every task", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    engine_file.write_text(json.dumps(resolved.key()))
    generator = None
    if engine != type(engine)():  # the default engine is built lazily, by the first task that generates
        from harness.engines import make_generator

        generator = make_generator(model_path, batch_size=args.batch_size, engine=engine)
    ctx = EvalContext(model_path=model_path, out_dir=out, limit=args.limit, seed=args.seed,
                      batch_size=args.batch_size, judge=_judge_settings(args),
                      settings=settings_from_config(settings, tasks), engine=engine, _generator=generator)
    start = time.perf_counter()
    try:
        with _progress(tasks):
            metrics = run_tasks(ctx, tasks, resume=not args.no_resume,
                                echo=lambda line: print(f"[{time.strftime('%H:%M:%S')}] {line}", file=sys.stderr,
                                                        flush=True))
    finally:
        if ctx._generator is not None:
            ctx._generator.close()  # a server the engine started (kind vllm) stops here
    metrics.update(with_fallbacks(metrics, tasks))
    metrics["eval/wall_seconds"] = time.perf_counter() - start  # this invocation
    metrics["eval/task_seconds_total"] = sum(metrics.get(f"{t}/seconds", 0.0) for t in tasks)  # incl. resumed
    saved = json.loads((out / "results.json").read_text())
    skipped, notes = saved.get("skipped", {}), saved.get("notes", {})
    (out / "results.json").write_text(json.dumps({"metrics": metrics, "skipped": skipped, "notes": notes,
                                                  "categories": saved.get("categories", {}),
                                                  "incomplete_categories": saved.get("incomplete_categories", {}),
                                                  "tasks": tasks, "model": args.model, "model_path": model_path,
                                                  "limit": args.limit, "setting": args.setting,
                                                  "engine": resolved.params()},
                                                 indent=2, default=float))
    table = format_table(metrics, skipped, tasks, notes)
    table += (f"\nwall time: {metrics['eval/wall_seconds']:.0f} s this run, {metrics['eval/task_seconds_total']:.0f} s "
              f"summed over tasks (resumed ones included); outputs in {out}")
    (out / "table.txt").write_text(table + "\n")
    print(table)
    if not args.no_mlflow:
        run_id = _log_mlflow(args, model_path, tasks, metrics, out, settings, resolved.params())
        print(f"MLflow run {run_id} (experiment {args.experiment!r})")
    return 0


def add_commands(subparsers: Any) -> None:
    p = subparsers.add_parser("eval", help="evaluate a model on a suite / tasks (paper11: the paper's 11)")
    p.add_argument("--model", help="zoo name, model folder, hub id or MLflow run id (required unless --dry-run)")
    p.add_argument("--suite", help="e.g. paper11")
    p.add_argument("--tasks", nargs="*", help="task names (added to the suite's)")
    p.add_argument("--limit", type=int, default=None,
                   help="examples per benchmark (spread over sub-tasks/groups; see each task's docs)")
    p.add_argument("--out", help="output folder (default results/eval/<model>-<time>)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--experiment", default="eval", help="MLflow experiment name")
    p.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    p.add_argument("--no-resume", action="store_true",
                   help="rerun every task even if --out holds a matching finished result (<task>.result.json)")
    p.add_argument("--set", action="append", metavar="GROUP.FIELD=VALUE",
                   help="a task setting, e.g. coding.n_samples=10 (as a grid's eval.settings; repeatable)")
    p.add_argument("--setting", choices=("harness", "paper"),
                   help="every benchmark's setting: 'paper' = open-instruct's 2024 evaluation as the paper ran it, "
                        "'harness' = this project's (the default); --set GROUP.setting=... wins for its group")
    p.add_argument("--dry-run", action="store_true",
                   help="print each task's subset, seed, prompt, decoding and judge, and whether its inputs are "
                        "there; load and run nothing")
    p.add_argument("--judge-model", help="judge model name at an OpenAI-compatible endpoint")
    p.add_argument("--judge-base-url", help="judge endpoint, e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--judge-api-key-env", default="OPENAI_API_KEY",
                   help="environment variable holding the judge API key")
    engine = p.add_argument_group("engine (harness.generation.EngineSettings)")
    engine.add_argument("--engine", default="hf", choices=["hf", "openai", "vllm"],
                        help="hf: in-process; openai: a running OpenAI-compatible server; vllm: start `vllm serve`")
    engine.add_argument("--dtype", default=None, choices=["auto", "float32", "bfloat16"],
                        help="in-process precision (default auto: bf16 where the device computes it natively)")
    engine.add_argument("--batching", default=None, choices=["auto", "static", "compact", "continuous"],
                        help="hf engine batching (default auto: the measured fastest for the device)")
    engine.add_argument("--base-url", default=None, help="--engine openai: the server, e.g. http://127.0.0.1:8000/v1")
    engine.add_argument("--engine-model", default=None, help="--engine openai/vllm: the model name the server serves")
    engine.add_argument("--max-concurrency", type=int, default=None, help="--engine openai/vllm: requests in flight")
    p.set_defaults(func=cmd_eval)
