"""Does precomputing the reference log-probs make DPO faster? Both settings, measured in one run.

With `precompute_ref_log_probs=True`, TRL's DPOTrainer runs the reference model once over the training
set before training (inside the trainer's constructor) and stores the log-probs as dataset columns, so
each training step does no reference forward and no reference model is kept in memory. Without it,
every step runs the reference forward. The loss is the same either way (verified below on step 1).

Prints, for each setting: trainer construction time (includes the precompute pass), training time per
epoch, and the ratios: per-epoch (precomputed / live reference) and total for N epochs including the
one-off precompute pass (the paper's DPO recipe trains 3 epochs).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_dpo_precompute.py                # SmolLM2-135M, 32 pairs
    .venv/bin/python benchmarks/bench_dpo_precompute.py --model tiny-random-llama --pairs 64   # seconds
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path


def run_once(model_path: str, rows: list, precompute: bool, args: argparse.Namespace, out: Path) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOTrainer

    from harness.algorithms.base import History, TrainContext, history_callback
    from harness.algorithms.dpo import DPOAlgoConfig, make_dpo_config
    from harness.algorithms.trl_common import preference_dataset, quiet_trainer

    cfg = DPOAlgoConfig(
        learning_rate=args.lr, num_train_epochs=1.0, warmup_ratio=0.0, per_device_train_batch_size=args.batch,
        gradient_accumulation_steps=1, max_length=args.max_length, precompute_ref_log_probs=precompute,
    )
    history = History(out / f"history-{precompute}.jsonl")
    ctx = TrainContext(policy_path=model_path, train_rows=rows, config=cfg, out_dir=out, seed=0, log=history.log)
    tok = AutoTokenizer.from_pretrained(model_path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_path)
    start = time.perf_counter()
    trainer = DPOTrainer(model=model, args=make_dpo_config(cfg, ctx), train_dataset=preference_dataset(rows),
                         processing_class=tok, callbacks=[history_callback(ctx.log)])
    quiet_trainer(trainer)
    construct = time.perf_counter() - start
    start = time.perf_counter()
    result = trainer.train()
    epoch = time.perf_counter() - start
    first_loss = history.rows[0].get("train/loss") if history.rows else float("nan")
    return {"construct_s": construct, "epoch_s": epoch, "steps": result.global_step, "first_loss": first_loss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct", help="zoo name or folder (tiny-random-llama: fast)")
    parser.add_argument("--dataset", default="smoke-lowercase")
    parser.add_argument("--pairs", type=int, default=32)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--lr", type=float, default=5e-7)
    parser.add_argument("--repeats", type=int, default=1, help="alternate the two settings this many times")
    parser.add_argument("--epochs", type=float, default=3.0, help="epochs for the amortised total (App. F.1: 3)")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()

    import datasets
    import torch

    from datasets_registry import prepare

    # TRL caches precomputed log-probs by dataset fingerprint: with caching on, a repeat would reuse them
    # and time nothing. Disabled, every run pays its own precompute pass.
    datasets.disable_caching()
    from harness.models import resolve_model

    model_path = resolve_model(args.model)
    rows = prepare(args.dataset, max_rows=args.pairs).rows
    print(f"model={args.model} pairs={len(rows)} batch={args.batch} max_length={args.max_length} "
          f"device={'cuda' if torch.cuda.is_available() else 'cpu'} threads={torch.get_num_threads()}")
    results: dict[bool, list[dict]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as tmp:
        # Warm-up (imports, allocator, kernels) so neither setting pays one-off costs for the other.
        run_once(model_path, rows[: args.batch], False, args, Path(tmp))
        for r in range(args.repeats):
            for precompute in (False, True):
                out = Path(tmp) / f"{r}-{precompute}"
                out.mkdir()
                results[precompute].append(run_once(model_path, rows, precompute, args, out))
    live = {k: statistics.median(x[k] for x in results[False]) for k in ("construct_s", "epoch_s", "first_loss")}
    pre = {k: statistics.median(x[k] for x in results[True]) for k in ("construct_s", "epoch_s", "first_loss")}
    ratio = pre["epoch_s"] / live["epoch_s"]
    total_live = live["construct_s"] + args.epochs * live["epoch_s"]
    total_pre = pre["construct_s"] + args.epochs * pre["epoch_s"]
    print(f"live reference : construct {live['construct_s']:7.2f} s  epoch {live['epoch_s']:7.2f} s  "
          f"step-1 loss {live['first_loss']:.6f}")
    print(f"precomputed    : construct {pre['construct_s']:7.2f} s  epoch {pre['epoch_s']:7.2f} s  "
          f"step-1 loss {pre['first_loss']:.6f}  (construct includes the precompute pass)")
    print(f"per-epoch time ratio precomputed/live = {ratio:.3f}")
    print(f"total for {args.epochs:g} epochs incl. construction: live {total_live:.2f} s, "
          f"precomputed {total_pre:.2f} s, ratio {total_pre / total_live:.3f}")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "live": live,
                                         "precomputed": pre, "epoch_ratio": ratio,
                                         "total_ratio": total_pre / total_live}, indent=2))


if __name__ == "__main__":
    main()
