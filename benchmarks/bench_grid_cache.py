"""What stage sharing saves, measured on both sides: a grid of DPO cells (a beta axis) and the SFT baseline, run
as one grid vs each cell run alone in fresh stores.

The DPO cells share their data stage and their reference log-probs (one `reference_logps` stage for the grid,
harness/reference_logps.py); the baseline's evaluation is its own cell. Each run is `harness run` in a fresh
process with a fresh results dir (stage store, MLflow), so nothing is shared between runs, not even TRL's
per-process cache of reference log-probs:

- grid: the whole grid in one run;
- alone: one run per cell (`--only CELL`), each in its own fresh results dir; the side's time is their sum.

Both sides pay process start-up and imports (alone pays it once per cell, as a user running cells one by one
would); the grid's cached rerun is printed too, as the cost of that fixed part. With `--repeats N` the sides
alternate (grid first on odd repeats, alone first on even ones) so that load on a shared machine hits both.
The last line reads `ratio grid/alone: wall X.XX cpu Y.YY; reference passes grid G alone A`.

    .venv/bin/python benchmarks/bench_grid_cache.py [--model tiny-random-llama] [--steps 4] [--betas 0.1,0.3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def grid_spec(model: str, steps: int, betas: list[float], eval_limit: int, max_rows: int) -> dict:
    return {
        "experiment": "bench-grid-cache",
        "base": {
            "model": model,
            "dataset": {"name": "smoke-lowercase", "max_rows": max_rows},
            "algorithm": {"name": "dpo", "max_steps": steps, "per_device_train_batch_size": 4,
                          "gradient_accumulation_steps": 1, "max_length": 64, "learning_rate": 1e-5},
            "eval": {"tasks": ["smoke_lowercase"], "limit": eval_limit},
        },
        "axes": {"algorithm.beta": betas},
        "baseline": True,
    }


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed_run(grid_file: Path, results: Path, only: str | None = None) -> tuple[float, float]:
    """(wall, CPU) seconds of one `harness run` in a fresh process storing into `results`."""
    env = {**os.environ, "HARNESS_RESULTS_DIR": str(results), "PYTHONPATH": str(REPO)}
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [sys.executable, "-m", "harness.cli", "run", str(grid_file)] + (["--only", only] if only else [])
    cpu, start = children_cpu(), time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return wall, children_cpu() - cpu


def reference_passes(results: Path) -> int:
    """How many reference_logps stages a results dir computed (each published stage is one pass)."""
    from harness import cache

    os.environ["HARNESS_RESULTS_DIR"] = str(results)
    folder = cache.stage_dir("reference_logps", "x").parent
    return sum(1 for p in folder.iterdir() if (p / cache.RECORD).exists()) if folder.exists() else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny-random-llama")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--betas", default="0.05,0.1,0.2,0.4", help="the DPO cells (at least two share reference)")
    parser.add_argument("--eval-limit", type=int, default=16)
    parser.add_argument("--max-rows", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    betas = [float(b) for b in args.betas.split(",")]
    if len(betas) < 2:
        parser.error("--betas: at least two DPO cells, so that they share reference log-probs")

    os.environ.setdefault("HARNESS_MODEL_DIR", str(REPO / "results" / "models"))
    from harness.grid import build_grid
    from harness.models import resolve_model

    resolve_model(args.model)  # build the model outside the timed region
    work = Path(tempfile.mkdtemp(prefix="bench-grid-cache-"))
    spec = grid_spec(args.model, args.steps, betas, args.eval_limit, args.max_rows)
    grid_file = work / "grid.yaml"
    grid_file.write_text(yaml.safe_dump(spec))
    cells = [cell.name for cell in build_grid(spec).cells]

    grid_times: list[tuple[float, float]] = []
    alone_times: list[tuple[float, float]] = []
    rerun = (0.0, 0.0)
    passes = {"grid": 0, "alone": 0}
    for repeat in range(args.repeats):
        for side in ("grid", "alone") if repeat % 2 == 0 else ("alone", "grid"):
            if side == "grid":
                results = work / f"grid-{repeat}"
                grid_times.append(timed_run(grid_file, results))
                rerun = timed_run(grid_file, results)  # everything cached and logged: start-up, planning
                passes["grid"] = reference_passes(results)
                continue
            wall = cpu = 0.0
            passes["alone"] = 0
            for i, name in enumerate(cells):
                results = work / f"alone-{repeat}-{i}"
                cell_wall, cell_cpu = timed_run(grid_file, results, only=name)
                wall, cpu = wall + cell_wall, cpu + cell_cpu
                passes["alone"] += reference_passes(results)
            alone_times.append((wall, cpu))

    print(json.dumps({"grid": grid_times, "alone": alone_times, "grid_rerun": rerun}))
    grid_wall = sum(w for w, _ in grid_times) / len(grid_times)
    grid_cpu = sum(c for _, c in grid_times) / len(grid_times)
    alone_wall = sum(w for w, _ in alone_times) / len(alone_times)
    alone_cpu = sum(c for _, c in alone_times) / len(alone_times)
    print(f"cells: {len(cells)} ({', '.join(cells)}), model {args.model}, {args.steps} DPO steps each, "
          f"{args.repeats} repeat(s), load {os.getloadavg()[0]:.2f}")
    print(f"each cell alone, fresh stores (sum): wall {alone_wall:8.2f} s  cpu {alone_cpu:8.2f} s")
    print(f"one grid (shared stages):           wall {grid_wall:8.2f} s  cpu {grid_cpu:8.2f} s")
    print(f"grid rerun, all cached (start-up and planning): wall {rerun[0]:.2f} s  cpu {rerun[1]:.2f} s")
    print(f"ratio grid/alone: wall {grid_wall / alone_wall:.2f} cpu {grid_cpu / alone_cpu:.2f}; "
          f"reference passes grid {passes['grid']} alone {passes['alone']}")


if __name__ == "__main__":
    main()
