"""Real small-scale demonstrations of PPO on SmolLM2-135M-Instruct, with the numbers logged.

--reward hh-rm (default): a reward model on real HH-RLHF, then PPO against it. Stages (each cached
under --out, so a rerun resumes after the last finished stage):
  1. rm:       Bradley-Terry RM (SmolLM2 backbone + new head) on part of the real HH-RLHF harmless-base
               test split; the rest is held out and never trained on (`split_heldout`).
  2. rm_eval:  held-out pairwise accuracy, reward mean/std, chosen/rejected means.
  3. sft:      the SFT policy's mean RM reward on held-out prompts (prompts of held-out pairs).
  4. ppo:      PPO (harness.algorithms.ppo) on prompts of the RM's training part.
  5. ppo_eval: the PPO policy's mean RM reward on the same held-out prompts (same seed) and its KL to
               the SFT policy.
--reward lowercase: the verifiable `lowercase` reward function instead of an RM (no stages 1-2), PPO
on the smoke-lowercase training prompts, evaluated on smoke-lowercase-eval (facts never trained on);
value model from the policy, EOS trick on (answers are short, so the cap is rarely hit).

Everything is logged to MLflow (experiment `bench-ppo-smollm2`, one run per invocation): the RM's
training curve, the PPO per-step metrics, before/after numbers, and the sample tables as artifacts.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_ppo_smollm2.py --out results/bench_ppo_smollm2
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_ppo_smollm2.py --reward lowercase \
        --out results/bench_ppo_lowercase --ppo-steps 16 --max-new-tokens 32 --eval-prompts 32
    # the run on one GPU (6 min on an H100; the reward-model issue's closing note has its numbers):
    python benchmarks/bench_ppo_smollm2.py --out results/bench_ppo_hh_gpu --rm-train-pairs 1024 \
        --rm-eval-pairs 512 --rm-batch 32 --rm-grad-accum 1 --rm-max-length 256 --max-prompt-length 128 \
        --max-new-tokens 64 --ppo-steps 48 --ppo-batch 32 --ppo-minibatch 8 --eval-prompts 128 --eval-samples 2

Small-scale choices (2 shared CPU cores) are flags, printed and logged; defaults are what was run for
the report. Learning rates are the paper's x 5 (RM) and x 10 (PPO, the project's scale-down rule for
a few steps); in hh-rm mode completions are capped at --max-new-tokens and the EOS trick is off unless
--eos-trick (with a 24-token cap nearly every HH answer is truncated and -10 would be the only signal).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reward", default="hh-rm", choices=["hh-rm", "lowercase"])
    p.add_argument("--out", type=Path, default=Path("results/bench_ppo_smollm2"))
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--heldout-fraction", type=float, default=0.5)
    p.add_argument("--rm-train-pairs", type=int, default=128)
    p.add_argument("--rm-eval-pairs", type=int, default=64)
    p.add_argument("--rm-max-length", type=int, default=80)
    p.add_argument("--rm-lr", type=float, default=5e-5)
    p.add_argument("--rm-batch", type=int, default=8)
    p.add_argument("--rm-grad-accum", type=int, default=2)
    p.add_argument("--eval-prompts", type=int, default=24)
    p.add_argument("--eval-samples", type=int, default=2)
    p.add_argument("--max-prompt-length", type=int, default=64)
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--ppo-steps", type=int, default=12)
    p.add_argument("--ppo-batch", type=int, default=8)
    p.add_argument("--ppo-minibatch", type=int, default=8)
    p.add_argument("--ppo-lr", type=float, default=1e-5)
    p.add_argument("--kl-coef", type=float, default=0.05)
    p.add_argument("--eos-trick", action="store_true")
    p.add_argument("--value-init", default=None, choices=["reward", "policy"],
                   help="default: reward (hh-rm), policy (lowercase: there is no RM)")
    return p.parse_args()


def single_turn_prompts(rows: list[dict[str, Any]], tokenizer: Any, max_tokens: int) -> list[list[dict[str, str]]]:
    """Distinct prompts that fit the PPO prompt budget, in row order."""
    from harness.generation import render_prompt

    seen, out = set(), []
    for row in rows:
        prompt = row["prompt"]
        key = json.dumps(prompt)
        if key in seen:
            continue
        seen.add(key)
        if len(tokenizer(render_prompt(tokenizer, prompt, True), add_special_tokens=False)["input_ids"]) <= max_tokens:
            out.append(prompt)
    return out


def paired_gain(sft_file: Path, ppo_file: Path, per_prompt: int) -> dict[str, float]:
    """Per-prompt (PPO mean - SFT mean) reward over the same held-out prompts: mean and standard error,
    so the gain can be read against its noise."""
    import statistics

    def per_prompt_means(path: Path) -> list[float]:
        scores = [json.loads(line)["score"] for line in path.read_text().splitlines()]
        return [statistics.fmean(scores[i : i + per_prompt]) for i in range(0, len(scores), per_prompt)]

    diffs = [b - a for a, b in zip(per_prompt_means(sft_file), per_prompt_means(ppo_file))]
    stderr = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else float("nan")
    return {"ppo/paired_gain_mean": statistics.fmean(diffs), "ppo/paired_gain_stderr": stderr,
            "eval/prompts": float(len(diffs))}


def cached(path: Path, compute) -> dict[str, Any]:
    if path.exists():
        return json.loads(path.read_text())
    start = time.perf_counter()
    result = compute()
    result["seconds"] = time.perf_counter() - start
    path.write_text(json.dumps(result, indent=2, default=float))
    return result


def main() -> None:
    args = parse_args()
    import mlflow

    from datasets_registry import prepare
    from harness.algorithms import ALGORITHMS, TrainContext
    from harness.algorithms.base import History
    from harness.algorithms.ppo import evaluate_policy_reward
    from harness.models import load_tokenizer, resolve_model
    from harness.reward_model import (
        RewardModelConfig,
        evaluate_reward_model,
        split_heldout,
        train_reward_model,
    )
    from harness.tracking import setup_experiment, tracking_uri

    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    sft = resolve_model(args.model)
    tokenizer = load_tokenizer(sft)
    rm_path: str | None = None
    rm_eval_metrics: dict[str, Any] = {}
    reward_function = None
    rm_history = History(out / "rm_history.jsonl")
    if args.reward == "lowercase":
        from harness.rewards import REWARD_FUNCTIONS

        reward_function = REWARD_FUNCTIONS.get("lowercase")
        ppo_prompts = [r["prompt"] for r in prepare("smoke-lowercase", seed=0).rows]
        eval_prompts = [r["prompt"] for r in prepare("smoke-lowercase-eval", seed=0).rows][: args.eval_prompts]
        print(f"{len(ppo_prompts)} PPO prompts (training facts), {len(eval_prompts)} held-out eval prompts "
              "(unseen facts)", flush=True)
    else:
        rows = prepare("hh-rlhf-harmless-test", seed=0).rows
        train_part, heldout_part = split_heldout(rows, args.heldout_fraction, seed=args.seed)
        rm_train = train_part[: args.rm_train_pairs]
        rm_eval = heldout_part[: args.rm_eval_pairs]
        ppo_prompts = single_turn_prompts(train_part, tokenizer, args.max_prompt_length)
        eval_prompts = single_turn_prompts(heldout_part, tokenizer, args.max_prompt_length)[: args.eval_prompts]
        assert not {json.dumps(p) for p in eval_prompts} & {json.dumps(r["prompt"]) for r in rm_train}
        print(f"{len(rows)} pairs: {len(train_part)} train part / {len(heldout_part)} held out; RM trains on "
              f"{len(rm_train)}, is evaluated on {len(rm_eval)}; {len(ppo_prompts)} PPO prompts, "
              f"{len(eval_prompts)} held-out eval prompts", flush=True)

        rm_dir = out / "rm"
        rm_cfg = RewardModelConfig(max_length=args.rm_max_length, learning_rate=args.rm_lr,
                                   min_learning_rate=args.rm_lr / 10, per_device_train_batch_size=args.rm_batch,
                                   gradient_accumulation_steps=args.rm_grad_accum)
        rm_train_metrics = cached(out / "rm_train.json", lambda: train_reward_model(
            rm_train, sft, rm_cfg, rm_dir, args.seed, rm_history.log))
        print("RM training:", rm_train_metrics, flush=True)
        rm_path = str(rm_dir / "model")
        rm_eval_metrics = cached(out / "rm_eval.json",
                                 lambda: evaluate_reward_model(rm_path, rm_eval, out / "rm_eval"))
        print("RM held-out:", rm_eval_metrics, flush=True)
    value_init = args.value_init or ("reward" if rm_path else "policy")

    def policy_eval(path: str, name: str, reference: str | None) -> dict[str, Any]:
        metrics, samples = evaluate_policy_reward(
            path, eval_prompts, reward_model_path=rm_path, reward_function=reward_function,
            reference_path=reference,
            max_new_tokens=args.max_new_tokens, temperature=0.7, samples_per_prompt=args.eval_samples,
            seed=args.seed, batch_size=8)
        with (out / f"{name}_samples.jsonl").open("w") as fh:
            for row in samples:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        return metrics

    sft_metrics = cached(out / "sft_eval.json", lambda: policy_eval(sft, "sft", None))
    print("SFT on held-out prompts:", sft_metrics, flush=True)

    spec = ALGORITHMS.get("ppo")
    ppo_cfg = spec.make_config({
        "prompt_batch_size": args.ppo_batch, "minibatch_size": args.ppo_minibatch, "max_steps": args.ppo_steps,
        "max_new_tokens": args.max_new_tokens, "max_prompt_length": args.max_prompt_length,
        "learning_rate": args.ppo_lr, "kl_coef": args.kl_coef,
        "eos_trick": args.eos_trick or args.reward == "lowercase",
        "value_init": value_init, "generation_batch_size": args.ppo_batch,
    })
    ppo_dir = out / "ppo"
    ppo_history = History(out / "ppo_history.jsonl")

    def run_ppo() -> dict[str, Any]:
        if ppo_history.path.exists():
            ppo_history.path.unlink()  # a crashed earlier attempt: restart the curve
        ctx = TrainContext(policy_path=sft, train_rows=[{"id": str(i), "prompt": p} for i, p in enumerate(ppo_prompts)],
                           config=ppo_cfg, out_dir=ppo_dir, seed=args.seed, reward_model_path=rm_path,
                           reward_function=reward_function,
                           log=lambda m, s: (ppo_history.log(m, s), print(s, {k: round(v, 4) for k, v in m.items()
                                                                          if k in SHOW}, flush=True)))
        return spec.train(ctx)

    ppo_metrics = cached(out / "ppo_train.json", run_ppo)
    print("PPO:", ppo_metrics, flush=True)
    ppo_eval = cached(out / "ppo_eval.json", lambda: policy_eval(str(ppo_dir / "model"), "ppo", sft))
    print("PPO on held-out prompts:", ppo_eval, flush=True)

    summary = {
        **({"rm/heldout_accuracy": rm_eval_metrics["rm/accuracy"], "rm/heldout_pairs": rm_eval_metrics["rm/n_pairs"]}
           if rm_eval_metrics else {}),
        "sft/reward_mean": sft_metrics["policy/reward_mean"],
        "ppo/reward_mean": ppo_eval["policy/reward_mean"],
        "ppo/reward_gain": ppo_eval["policy/reward_mean"] - sft_metrics["policy/reward_mean"],
        "ppo/kl_to_sft": ppo_eval["policy/kl_to_reference"],
        "sft/response_length": sft_metrics["policy/response_length"],
        "ppo/response_length": ppo_eval["policy/response_length"],
        "sft/truncated_frac": sft_metrics["policy/truncated_frac"],
        "ppo/truncated_frac": ppo_eval["policy/truncated_frac"],
        "eval/samples": ppo_eval["policy/n"],
        **paired_gain(out / "sft_samples.jsonl", out / "ppo_samples.jsonl", args.eval_samples),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print("SUMMARY:", json.dumps(summary, indent=2), flush=True)

    # MLflow: one run holding the whole demonstration.
    experiment_id = setup_experiment("bench-ppo-smollm2")
    mlflow.set_tracking_uri(tracking_uri())
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"{args.reward}-seed{args.seed}"):
        mlflow.log_params({k: str(v) for k, v in vars(args).items()})
        mlflow.log_metrics({k: float(v) for k, v in {**rm_eval_metrics, **summary}.items()
                            if isinstance(v, int | float)})
        mlflow.log_metrics({f"sft_eval/{k.split('/')[-1]}": v for k, v in sft_metrics.items() if k != "seconds"})
        mlflow.log_metrics({f"ppo_eval/{k.split('/')[-1]}": v for k, v in ppo_eval.items() if k != "seconds"})
        for history, prefix in ((rm_history, "rm_"), (ppo_history, "")):
            if history.path.exists():
                for line in history.path.read_text().splitlines():
                    row = json.loads(line)
                    step = int(row.pop("step"))
                    mlflow.log_metrics({f"{prefix}{k}": v for k, v in row.items()}, step=step)
        for name in ("summary.json", "sft_samples.jsonl", "ppo_samples.jsonl", "rm_eval/artifacts/rm_scores.jsonl",
                     "rm_eval/artifacts/rm_score_hist.png", "ppo/artifacts/ppo_samples.jsonl"):
            if (out / name).exists():
                mlflow.log_artifact(str(out / name), artifact_path=str(Path(name).parent) if "/" in name else None)
    print(f"logged to MLflow at {tracking_uri()} (experiment bench-ppo-smollm2)", flush=True)


SHOW = ("train/reward_mean", "train/kl", "train/reward_with_kl", "train/policy_loss", "train/value_loss",
        "train/entropy", "train/response_length", "train/truncated_frac", "train/rollout_seconds",
        "train/update_seconds")

if __name__ == "__main__":
    main()
