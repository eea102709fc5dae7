"""Where PPO's time goes: rollout (generation) vs update (forward/backward), per Table 11 setting, with
the default engine against today's fp32 static one.

App. G reports rollouts take >95% of PPO's time on GPUs, which is what makes large prompt batches
(Table 11) attractive. This measures the split for this implementation on the local device, for the
Table 11 rows (scaled down) and for batch- vs minibatch-level forward passes, each with two engines
(`TrainContext.engine`), alternating (the order reversed on every other repeat):
- `default`: `EngineSettings()`, what PPO uses unless told otherwise: on a CPU with AMX/AVX-512 BF16,
  bf16 autocast for rollouts and forwards, finished-row compaction for rollouts;
- `fp32 static`: `EngineSettings(dtype="float32", batching="static")`, PPO's engine before the choice.

Prints one row per (setting, engine): seconds per rollout batch, seconds per update phase, rollout
share; then per setting the step-time ratio. The last line reads

    step-time ratio fp32-static/default: X.XX (rollout share: default A%, fp32 static B%)

Full size (an idle machine):

    nice .venv/bin/python benchmarks/bench_ppo.py --model smollm2-135m-instruct --only B8-b8-r1-g1 --steps 3 \
        --max-new-tokens 128 --repeats 2 --json results/bench_ppo.json

Development size: `--model tiny-random-llama --steps 2 --max-new-tokens 16 --repeats 1 --only B8-b8-r1-g1`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# (label, overrides): Table 11 rows / 8, and the App. G forward-pass switch at the large batch.
SETTINGS = [
    ("B8-b8-r1-g1", {"prompt_batch_size": 8, "minibatch_size": 8}),
    ("B64-b8-r1-g1", {"prompt_batch_size": 64, "minibatch_size": 8}),
    ("B64-b8-r2-g2", {"prompt_batch_size": 64, "minibatch_size": 8, "rollouts_per_prompt": 2,
                      "gradient_accumulation_steps": 2}),
    ("B32-b8-r4-g4", {"prompt_batch_size": 32, "minibatch_size": 8, "rollouts_per_prompt": 4,
                      "gradient_accumulation_steps": 4}),
    ("B64-b8-batch-forward", {"prompt_batch_size": 64, "minibatch_size": 8, "forward_at_minibatch_level": False}),
]


def run_setting(policy: str, prompts: list, overrides: dict, engine: object, args: argparse.Namespace) -> dict:
    from harness.algorithms import ALGORITHMS, TrainContext
    from harness.rewards import REWARD_FUNCTIONS

    spec = ALGORITHMS.get("ppo")
    cfg = spec.make_config({"max_steps": args.steps, "max_new_tokens": args.max_new_tokens,
                            "value_init": "policy", "generation_batch_size": 64, **overrides})
    logs: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        ctx = TrainContext(policy_path=policy, train_rows=prompts, config=cfg, out_dir=Path(tmp), seed=0,
                           reward_function=REWARD_FUNCTIONS.get("lowercase"), engine=engine,
                           log=lambda m, s, logs=logs: logs.append(m))
        cpu = time.process_time()
        spec.train(ctx)
        cpu = time.process_time() - cpu
    rollout = statistics.fmean(m["train/rollout_seconds"] for m in logs)
    update = statistics.fmean(m["train/update_seconds"] for m in logs)
    return {"rollouts_per_batch": cfg.prompt_batch_size * cfg.rollouts_per_prompt, "rollout_seconds": rollout,
            "update_seconds": update, "step_seconds": rollout + update, "rollout_share": rollout / (rollout + update),
            "response_length": statistics.fmean(m["train/response_length"] for m in logs),
            "run_cpu_seconds": cpu}  # the whole run, model loading included


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny-random-llama")
    parser.add_argument("--steps", type=int, default=2, help="rollout batches per setting")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--only", default=None, help="substring of the setting labels to run")
    parser.add_argument("--repeats", type=int, default=1, help="alternate the two engines this many times")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    from datasets_registry import prepare
    from harness.generation import EngineSettings
    from harness.models import resolve_model

    policy = resolve_model(args.model)
    prompts = prepare("smoke-lowercase", seed=0).rows
    engines = {"default": EngineSettings(), "fp32 static": EngineSettings(dtype="float32", batching="static")}
    default = EngineSettings().resolved()
    print(f"model {args.model}; default engine here: {default.key()} ({default.dtype_reason}); "
          f"load {os.getloadavg()[0]:.1f}")
    results = []
    for engine in engines.values():  # warm-up: imports, kernels (bf16 ones are built on first use), untimed
        run_setting(policy, prompts, {"prompt_batch_size": 2, "minibatch_size": 2, "max_steps": 1}, engine,
                    argparse.Namespace(**{**vars(args), "steps": 1, "max_new_tokens": 4}))
    print(f"{'setting':<22} {'engine':<12} {'rollouts':>8} {'rollout s':>10} {'update s':>10} {'rollout %':>10} "
          f"{'run cpu s':>10}")
    for label, overrides in SETTINGS:
        if args.only and args.only not in label:
            continue
        runs: dict[str, list[dict]] = {name: [] for name in engines}
        for repeat in range(args.repeats):
            for name in (list(engines) if repeat % 2 == 0 else list(reversed(engines))):
                row = run_setting(policy, prompts, overrides, engines[name], args)
                runs[name].append(row)
                print(f"{label:<22} {name:<12} {row['rollouts_per_batch']:>8} {row['rollout_seconds']:>10.2f} "
                      f"{row['update_seconds']:>10.2f} {100 * row['rollout_share']:>9.1f}% "
                      f"{row['run_cpu_seconds']:>10.1f}", flush=True)
        summary = {name: {k: statistics.fmean(r[k] for r in rows) for k in rows[0]} for name, rows in runs.items()}
        ratio = summary["fp32 static"]["step_seconds"] / summary["default"]["step_seconds"]
        cpu_ratio = summary["fp32 static"]["run_cpu_seconds"] / summary["default"]["run_cpu_seconds"]
        results.append({"setting": label, "model": args.model, "runs": runs, "summary": summary, "step_ratio": ratio,
                        "run_cpu_ratio": cpu_ratio, "load": os.getloadavg()[0]})
        print(f"whole-run cpu-time ratio fp32-static/default: {cpu_ratio:.2f}")
        print(f"step-time ratio fp32-static/default: {ratio:.2f} (rollout share: default "
              f"{100 * summary['default']['rollout_share']:.0f}%, fp32 static "
              f"{100 * summary['fp32 static']['rollout_share']:.0f}%)", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
