"""`harness serve-judge` and `harness judge` (added to the `harness` command through CLI_MODULES).

    harness serve-judge [--model smollm2-135m-instruct | --scripted longer|RULES.json] [--port 8001]
                        [--fail-first N --fail-status 429] [--delay-s S] [--require-key-env VAR]
    harness judge EXPERIMENT [--reference sft] [--prompts 150] [--dataset NAME]
                  [--judge-model M --judge-base-url URL --judge-api-key-env VAR | --local-judge MODEL]
                  [--pairs all|reference] [--max-new-tokens 256] [--workers 8]

Also runnable as `python -m harness.judge.cli ...`.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from harness.cli_errors import print_error


def cmd_serve_judge(args: argparse.Namespace) -> int:
    from harness.generation import EngineSettings
    from harness.judge.server import make_server, parse_faults

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.scripted is None and _use_vllm(args.engine):
        return _exec_vllm(args)
    faults = [args.fail_status] * args.fail_first if args.fail_first else parse_faults(
        os.environ.get("HARNESS_JUDGE_FAULTS"))
    try:
        server = make_server(
            model=None if args.scripted else args.model, scripted=args.scripted, served_name=args.served_name,
            host=args.host, port=args.port, require_key_env=args.require_key_env, delay_s=args.delay_s,
            faults=faults, max_batch=args.max_batch, max_new_tokens_cap=args.max_new_tokens_cap,
            retry_after=args.retry_after, engine=EngineSettings(dtype=args.dtype, batching=args.batching),
        )
    except (ValueError, FileNotFoundError) as exc:
        print_error(exc, args)
        return 2
    stop = threading.Event()

    def _shutdown(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _shutdown)
    signal.signal(signal.SIGINT, _shutdown)
    server.start()
    print(f"serving {server.state.served_model!r} at {server.base_url} (stats: "
          f"{server.base_url[:-3]}/stats)", flush=True)
    if args.ready_file:
        Path(args.ready_file).write_text(server.base_url)
    stop.wait()
    server.stop()
    return 0


def _use_vllm(engine: str) -> bool:
    if engine == "vllm":
        return True
    if engine == "auto":
        from harness.generation import vllm_available

        return vllm_available()
    return False


def _exec_vllm(args: argparse.Namespace) -> int:
    """Replace this process with vLLM's OpenAI server (no /stats or fault injection there)."""
    import importlib.util

    from harness.models import resolve_model
    from harness.openai_engine import vllm_serve_command

    if importlib.util.find_spec("vllm") is None:
        print("error: --engine vllm but vLLM is not installed", file=sys.stderr)
        return 2
    if args.require_key_env:
        key = os.environ.get(args.require_key_env)
        if not key:
            print(f"error: {args.require_key_env} is empty", file=sys.stderr)
            return 2
        os.environ["VLLM_API_KEY"] = key  # through the environment, never on the command line
    argv = vllm_serve_command(resolve_model(args.model), args.served_name or args.model, args.host, args.port or 8001,
                              args.dtype)
    print(f"exec vLLM OpenAI server for {args.model!r} on {args.host}:{args.port or 8001}", flush=True)
    os.execv(sys.executable, argv)
    return 0  # not reached


def settings_from_args(args: argparse.Namespace, cell_params: dict[str, str]) -> dict[str, Any]:
    """Judge endpoint: command-line flags first, then the grid's `judge:` config (flattened cell params),
    then GPT-4 on the OpenAI API."""
    from harness.judge.experiment import DEFAULT_JUDGE_MODEL

    def pick(flag: Any, param: str, default: Any) -> Any:
        if flag is not None:
            return flag
        value = cell_params.get(param)
        return default if value in (None, "", "None") else value

    return {
        "model": pick(args.judge_model, "judge.model", DEFAULT_JUDGE_MODEL),
        "base_url": pick(args.judge_base_url, "judge.base_url", None),
        "api_key_env": pick(args.judge_api_key_env, "judge.api_key_env", "OPENAI_API_KEY"),
    }


def cmd_judge(args: argparse.Namespace) -> int:
    from harness.judge.client import JudgeClient, JudgeError
    from harness.judge.experiment import DEFAULT_NUM_PROMPTS, find_policies, judge_experiment
    from harness.judge.server import make_server

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for name in ("httpx", "httpx2"):  # the openai client's HTTP library logs one line per request
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        _, policies = find_policies(args.experiment)
    except ValueError as exc:
        print_error(exc, args)
        return 2
    params = next((p.params for p in policies if p.params.get("judge.model")), {})
    server = None
    if args.local_judge:
        scripted = args.local_judge.removeprefix("scripted:") if args.local_judge.startswith("scripted:") else None
        server = make_server(model=None if scripted else args.local_judge, scripted=scripted).start()
        settings = {"model": server.state.served_model, "base_url": server.base_url, "api_key_env": ""}
        print(f"local judge {settings['model']!r} at {server.base_url}", flush=True)
    else:
        settings = settings_from_args(args, params)
    reference = args.reference or params.get("judge.reference") or "sft"
    num_prompts = args.prompts or int(params.get("judge.num_prompts") or DEFAULT_NUM_PROMPTS)
    # The grid's `judge.prompts` (e.g. a held-out split) unless --dataset names another prompt set.
    dataset = args.dataset or (params.get("judge.prompts.name") if params.get("judge.prompts.name") not in
                               (None, "", "None") else None)
    try:
        client = JudgeClient(settings["model"], base_url=settings["base_url"],
                             api_key_env=settings["api_key_env"], max_workers=args.workers,
                             max_retries=args.max_retries)
        report = judge_experiment(
            args.experiment, client, reference=reference, num_prompts=num_prompts, dataset=dataset,
            pairs=args.pairs, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
            n_boot=args.bootstrap, seed=args.seed, log_mlflow=not args.no_mlflow,
        )
    except (JudgeError, ValueError, FileNotFoundError) as exc:
        print_error(exc, args)
        return 1
    finally:
        if server is not None:
            server.stop()
    print(report.table())
    for model, usage in report.usage.items():
        cost = "unknown price" if usage["cost_usd"] is None else f"${usage['cost_usd']:.4f}"
        print(f"judge usage {model}: {usage['requests']} calls, {usage['cache_hits']} cached, "
              f"{usage['prompt_tokens']}+{usage['completion_tokens']} tokens, {cost}")
    if report.summary_run_id:
        print(f"logged to MLflow: judge run {report.summary_run_id} and judge/* metrics on each cell run")
    client.close()
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    serve = subparsers.add_parser(
        "serve-judge", help="OpenAI-compatible judge server on 127.0.0.1 (local model or scripted judge)")
    source = serve.add_mutually_exclusive_group()
    source.add_argument("--model", default="smollm2-135m-instruct", help="zoo name or model folder")
    source.add_argument("--scripted", default=None, metavar="longer|RULES.json",
                        help="deterministic stand-in judge: 'longer' or a JSON file of regex rules")
    serve.add_argument("--served-name", default=None, help="model name clients must request")
    serve.add_argument("--host", default="127.0.0.1", help="a loopback address")
    serve.add_argument("--port", type=int, default=8001, help="0 = any free port")
    serve.add_argument("--engine", default="hf", choices=["hf", "vllm", "auto"],
                       help="auto: vLLM's server when vLLM and a GPU are present (untested here)")
    serve.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"],
                       help="hf engine precision (auto: bf16 where the device computes it natively)")
    serve.add_argument("--batching", default="auto", choices=["auto", "static", "compact", "continuous"],
                       help="hf engine batching (auto: the measured fastest for the device)")
    serve.add_argument("--require-key-env", default=None, metavar="VAR",
                       help="answer 401 unless the Bearer key equals $VAR")
    serve.add_argument("--fail-first", type=int, default=0, metavar="N",
                       help="fault injection: the first N requests fail (also HARNESS_JUDGE_FAULTS=429,500)")
    serve.add_argument("--fail-status", type=int, default=429)
    serve.add_argument("--retry-after", type=float, default=None, help="Retry-After header on injected faults")
    serve.add_argument("--delay-s", type=float, default=0.0, help="added latency per request")
    serve.add_argument("--max-batch", type=int, default=8, help="requests generated together")
    serve.add_argument("--max-new-tokens-cap", type=int, default=512)
    serve.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    serve.add_argument("--ready-file", default=None, help="write the base URL here once serving")
    serve.set_defaults(func=cmd_serve_judge)

    judge = subparsers.add_parser(
        "judge", help="pairwise LLM-judge win rates (with CIs) and Bradley-Terry ranking of an experiment")
    judge.add_argument("experiment", help="MLflow experiment name (or id)")
    judge.add_argument("--reference", default=None, help="reference cell (default: sft)")
    judge.add_argument("--prompts", type=int, default=None, metavar="N", help="number of prompts (default 150)")
    judge.add_argument("--dataset", default=None, help="registered dataset to take prompts from "
                       "(default: the grid's judge.prompts, else AlpacaEval instructions from the local data dir)")
    judge.add_argument("--judge-model", default=None, help="endpoint model (default gpt-4-0613)")
    judge.add_argument("--judge-base-url", default=None, help="OpenAI-compatible base URL")
    judge.add_argument("--judge-api-key-env", default=None, help="environment variable holding the key")
    judge.add_argument("--local-judge", default=None, metavar="MODEL|scripted:SPEC",
                       help="serve this local model (or scripted judge) on 127.0.0.1 for the run")
    judge.add_argument("--pairs", default="all", choices=["all", "reference"],
                       help="judge every pair of policies (for Bradley-Terry) or only against the reference")
    judge.add_argument("--max-new-tokens", type=int, default=256)
    judge.add_argument("--batch-size", type=int, default=8, help="generation batch size")
    judge.add_argument("--workers", type=int, default=8, help="concurrent judge requests")
    judge.add_argument("--max-retries", type=int, default=5)
    judge.add_argument("--bootstrap", type=int, default=10_000, help="bootstrap resamples for the CI")
    judge.add_argument("--seed", type=int, default=0)
    judge.add_argument("--no-mlflow", action="store_true", help="print only; log nothing")
    judge.set_defaults(func=cmd_judge)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = argparse.ArgumentParser(prog="harness")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
