"""Where PPO's time goes: rollout (generation) vs update (forward/backward), per Table 11 setting.

App. G reports rollouts take >95% of PPO's time on GPUs, which is what makes large prompt batches
(Table 11) attractive. This measures the split for this implementation on the local device, for the
Table 11 rows (scaled down) and for batch- vs minibatch-level forward passes, on a model of choice:

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_ppo.py --model tiny-random-llama --steps 3
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_ppo.py --model smollm2-135m-instruct --steps 1

Prints one row per setting (seconds per rollout batch, seconds per update phase, rollout share) and
writes them as JSON with --json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny-random-llama")
    parser.add_argument("--steps", type=int, default=2, help="rollout batches per setting")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--only", default=None, help="substring of the setting labels to run")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    from datasets_registry import prepare
    from harness.algorithms import ALGORITHMS, TrainContext
    from harness.models import resolve_model
    from harness.rewards import REWARD_FUNCTIONS

    policy = resolve_model(args.model)
    prompts = prepare("smoke-lowercase", seed=0).rows
    spec = ALGORITHMS.get("ppo")
    results = []
    print(f"{'setting':<22} {'rollouts':>8} {'rollout s':>10} {'update s':>10} {'rollout %':>10}")
    for label, overrides in SETTINGS:
        if args.only and args.only not in label:
            continue
        cfg = spec.make_config({"max_steps": args.steps, "max_new_tokens": args.max_new_tokens,
                                "value_init": "policy", "generation_batch_size": 64, **overrides})
        logs: list[dict[str, float]] = []
        with tempfile.TemporaryDirectory() as tmp:
            ctx = TrainContext(policy_path=policy, train_rows=prompts, config=cfg, out_dir=Path(tmp), seed=0,
                               reward_function=REWARD_FUNCTIONS.get("lowercase"),
                               log=lambda m, s, logs=logs: logs.append(m))
            spec.train(ctx)
        rollout = statistics.fmean(m["train/rollout_seconds"] for m in logs)
        update = statistics.fmean(m["train/update_seconds"] for m in logs)
        n = cfg.prompt_batch_size * cfg.rollouts_per_prompt
        row = {"setting": label, "model": args.model, "rollouts_per_batch": n, "rollout_seconds": rollout,
               "update_seconds": update, "rollout_share": rollout / (rollout + update),
               "optimizer_steps_per_batch": n // (cfg.minibatch_size * cfg.gradient_accumulation_steps)}
        results.append(row)
        print(f"{label:<22} {n:>8} {rollout:>10.2f} {update:>10.2f} {100 * row['rollout_share']:>9.1f}%", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
