"""What stage sharing saves: a 4-cell grid whose cells share their data stage and the SFT evaluation.

Runs the grid once (fresh stores) and prints, side by side:
- the wall time of the whole grid run (planning, stages, MLflow logging), and
- the sum, over cells, of the durations of every stage each cell needs, i.e. what running the cells
  independently (no sharing, no cache) would cost in stage compute,
and their ratio. Then reruns the grid and prints the rerun's wall time (everything cached/logged).

    .venv/bin/python benchmarks/bench_grid_cache.py [--model tiny-random-llama] [--steps 4]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny-random-llama")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--eval-limit", type=int, default=16)
    args = parser.parse_args()

    os.environ["HARNESS_RESULTS_DIR"] = tempfile.mkdtemp(prefix="bench-grid-cache-")
    os.environ.setdefault("HARNESS_MODEL_DIR", str(Path(__file__).resolve().parent.parent / "results" / "models"))
    os.environ.pop("MLFLOW_TRACKING_URI", None)

    from harness import cache
    from harness.grid import build_grid
    from harness.models import resolve_model
    from harness.runner import plan_grid, run_grid

    resolve_model(args.model)  # build the model outside the timed region
    grid = build_grid({
        "experiment": "bench-grid-cache",
        "base": {
            "model": args.model,
            "dataset": {"name": "smoke-lowercase", "max_rows": 64},
            "algorithm": {"name": "dpo", "max_steps": args.steps, "per_device_train_batch_size": 4,
                          "gradient_accumulation_steps": 1, "max_length": 64, "learning_rate": 1e-5},
            "eval": {"tasks": ["smoke_lowercase"], "limit": args.eval_limit},
        },
        "axes": {"algorithm.beta": [0.05, 0.1, 0.2, 0.4]},
        "baseline": True,
    })

    start = time.perf_counter()
    run_grid(grid, echo=lambda _: None)
    grid_wall = time.perf_counter() - start

    # Every cell compared against the SFT baseline needs the baseline's evaluation too.
    plans = plan_grid(grid)
    baseline = next(p for p in plans if p.cell.is_baseline)
    per_cell = []
    for plan in plans:
        if plan.cell.is_baseline:
            continue
        stages = plan.stages + baseline.stages
        per_cell.append(sum(json.loads((s.path / cache.RECORD).read_text())["seconds"] for s in stages))
    independent = sum(per_cell)

    start = time.perf_counter()
    run_grid(grid, echo=lambda _: None)
    rerun_wall = time.perf_counter() - start

    print(f"cells (excluding the SFT baseline): {len(per_cell)}, model {args.model}, {args.steps} DPO steps each")
    print(f"sum of per-cell stage times (no sharing): {independent:8.2f} s")
    print(f"grid wall time (shared stages, incl. MLflow): {grid_wall:8.2f} s")
    print(f"ratio grid / independent: {grid_wall / independent:.3f}")
    print(f"rerun wall time (all cached and logged): {rerun_wall:8.2f} s  (ratio to first run {rerun_wall / grid_wall:.3f})")


if __name__ == "__main__":
    main()
