"""DPO step time under the engine's training precision: bf16 autocast (TRL `bf16=True`, on a CPU with
AMX/AVX-512 BF16 `use_cpu=True` + CPU autocast, fp32 master weights) against float32, both measured in
one run, alternating, on the same model, data and settings (TRL's DPOTrainer as `harness.algorithms.dpo`
builds it, reference log-probs precomputed as by default).

Per precision: seconds per optimizer step (wall and process CPU, `trainer.train()` only: the
construction and its reference pass are timed apart), and the first step's loss (the two precisions
agree to bf16 rounding, not exactly). The last line reads

    DPO step ratio float32/bfloat16: wall X.XX cpu Y.YY (> 1: bf16 autocast is faster)

Full size (an idle machine, a few minutes on 2 cores):

    nice .venv/bin/python benchmarks/bench_dpo_step.py --model smollm2-135m-instruct --pairs 64 --batch 8 \\
        --max-length 256 --repeats 2 --json results/bench_dpo_step.json

Development size: `--pairs 8 --batch 4 --max-length 64 --repeats 1` (tiny-random-llama: seconds).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def run_once(model_path: str, rows: list, dtype: str, args: argparse.Namespace, out: Path) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOTrainer

    from harness.algorithms.base import History, TrainContext, history_callback
    from harness.algorithms.dpo import DPOAlgoConfig, make_dpo_config
    from harness.algorithms.trl_common import preference_dataset, quiet_trainer
    from harness.generation import EngineSettings

    cfg = DPOAlgoConfig(learning_rate=args.lr, num_train_epochs=1.0, warmup_ratio=0.0,
                        per_device_train_batch_size=args.batch, gradient_accumulation_steps=1,
                        max_length=args.max_length)
    history = History(out / f"history-{dtype}.jsonl")
    ctx = TrainContext(policy_path=model_path, train_rows=rows, config=cfg, out_dir=out, seed=0, log=history.log,
                       engine=EngineSettings(dtype=dtype))
    tok = AutoTokenizer.from_pretrained(model_path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_path)
    config = make_dpo_config(cfg, ctx)
    start = time.perf_counter()
    trainer = DPOTrainer(model=model, args=config, train_dataset=preference_dataset(rows), processing_class=tok,
                         callbacks=[history_callback(ctx.log)])
    quiet_trainer(trainer)
    construct = time.perf_counter() - start
    wall, cpu = time.perf_counter(), time.process_time()
    result = trainer.train()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    steps = max(result.global_step, 1)
    return {"bf16_flag": config.bf16, "construct_s": construct, "step_wall_s": wall / steps, "step_cpu_s": cpu / steps,
            "steps": result.global_step, "first_loss": history.rows[0].get("train/loss") if history.rows else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct", help="zoo name or folder")
    parser.add_argument("--dataset", default="smoke-lowercase")
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--lr", type=float, default=5e-7)
    parser.add_argument("--repeats", type=int, default=2, help="alternate the two precisions this many times")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args(argv)
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ.setdefault(key, "1")

    import datasets
    import torch

    from datasets_registry import prepare
    from harness.generation import EngineSettings
    from harness.models import resolve_model

    datasets.disable_caching()  # each run pays its own reference pass (TRL caches it by fingerprint)
    model_path = resolve_model(args.model)
    rows = prepare(args.dataset, max_rows=args.pairs).rows
    detected = EngineSettings().resolved()
    print(f"model={args.model} pairs={len(rows)} batch={args.batch} max_length={args.max_length} "
          f"device={detected.device} threads={torch.get_num_threads()} detected dtype={detected.dtype} "
          f"({detected.dtype_reason}) load={os.getloadavg()[0]:.1f}")
    results: dict[str, list[dict]] = {"float32": [], "bfloat16": []}
    with tempfile.TemporaryDirectory() as tmp:
        run_once(model_path, rows[: args.batch], "float32", args, Path(tmp))  # warm-up: imports, allocator
        for r in range(args.repeats):
            for dtype in (("float32", "bfloat16") if r % 2 == 0 else ("bfloat16", "float32")):
                out = Path(tmp) / f"{r}-{dtype}"
                out.mkdir()
                results[dtype].append(run_once(model_path, rows, dtype, args, out))
                last = results[dtype][-1]
                print(f"  repeat {r + 1} {dtype:<8}: {last['step_wall_s']:.2f} s/step wall, "
                      f"{last['step_cpu_s']:.2f} s/step cpu ({last['steps']} steps)", flush=True)
    summary = {dtype: {k: statistics.median(x[k] for x in runs) for k in ("construct_s", "step_wall_s", "step_cpu_s")}
               | {"first_loss": runs[0]["first_loss"], "bf16_flag": runs[0]["bf16_flag"]}
               for dtype, runs in results.items()}
    for dtype, s in summary.items():
        print(f"{dtype:<8} (TRL bf16={s['bf16_flag']}): {s['step_wall_s']:.2f} s/step wall, {s['step_cpu_s']:.2f} "
              f"s/step cpu, construction {s['construct_s']:.1f} s, step-1 loss {s['first_loss']}")
    ratio_wall = summary["float32"]["step_wall_s"] / summary["bfloat16"]["step_wall_s"]
    ratio_cpu = summary["float32"]["step_cpu_s"] / summary["bfloat16"]["step_cpu_s"]
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "summary": summary,
                                         "runs": results, "ratio_wall": ratio_wall, "ratio_cpu": ratio_cpu}, indent=2))
    print(f"DPO step ratio float32/bfloat16: wall {ratio_wall:.2f} cpu {ratio_cpu:.2f} (> 1: bf16 autocast is faster)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
