"""What the coding sandbox costs honest code: the canonical solutions of N HumanEval+ and N MBPP+
problems, each checked S times (a model's samples), by two checkouts of the harness (e.g. main and a
branch), in alternating rounds.

Each measurement is a fresh interpreter with PYTHONPATH at one checkout, timing `CodeChecker.check_many`
(which reads the expected outputs from that checkout's own cache; they are computed beforehand, untimed).
Prints each round's seconds side by side and the ratio of medians.

    .venv/bin/python benchmarks/bench_coding_sandbox.py --roots /work/main . [--problems 20] [--samples 5] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

_WORKER = r"""
import json, sys, time
from harness.evaluation.coding import CodeChecker, CodingConfig
try:  # the problem loaders' home since coding.py was split; an older root has them in coding.py
    from harness.evaluation.coding_problems import load_humaneval_plus, load_mbpp_plus
except ImportError:
    from harness.evaluation.coding import load_humaneval_plus, load_mbpp_plus

n, samples, workers, warm = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "warm"
problems = load_humaneval_plus()[:n] + load_mbpp_plus()[:n]
checker = CodeChecker(CodingConfig(workers=workers))
items = [(p, p.reference_program) for p in problems for _ in range(samples)]
if warm:
    for p in problems:
        checker.expected(p)
    print(json.dumps({"seconds": 0.0, "failed": []}))
    raise SystemExit
start = time.perf_counter()
verdicts = checker.check_many(items)
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "failed": sorted({p.task_id for (p, _), v in zip(items, verdicts) if not v.passed})}))
"""


def _measure(root: Path, results_dir: Path, problems: int, samples: int, workers: int, warm: bool = False) -> dict:
    env = {**os.environ, "PYTHONPATH": str(root), "HARNESS_RESULTS_DIR": str(results_dir),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", _WORKER, str(problems), str(samples), str(workers),
                           "warm" if warm else "time"],
                          env=env, cwd=root, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{root}: worker failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--roots", nargs=2, type=Path, required=True, metavar=("A", "B"),
                        help="two checkouts of the harness (A is the reference, e.g. main)")
    parser.add_argument("--problems", type=int, default=20, help="first N problems of each of HumanEval+ and MBPP+")
    parser.add_argument("--samples", type=int, default=5, help="checks of each canonical solution")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    roots = [r.resolve() for r in args.roots]
    stores = {root: Path(tempfile.mkdtemp(prefix="bench-coding-sandbox-")) for root in roots}
    for root in roots:  # expected outputs, untimed
        _measure(root, stores[root], args.problems, args.samples, args.workers, warm=True)
    times: dict[Path, list[float]] = {root: [] for root in roots}
    print(f"{2 * args.problems} canonical solutions x {args.samples} checks, workers={args.workers}; "
          f"load {os.getloadavg()}")
    for i in range(args.rounds):
        order = roots if i % 2 == 0 else roots[::-1]
        row = {}
        for root in order:
            result = _measure(root, stores[root], args.problems, args.samples, args.workers)
            if result["failed"]:
                print(f"  {root}: canonical solutions failed: {result['failed']}")
            times[root].append(result["seconds"])
            row[root] = result["seconds"]
        print(f"round {i}: " + "  ".join(f"{root.name}={row[root]:.2f}s" for root in roots)
              + f"  load={os.getloadavg()[0]:.2f}")
    a, b = (statistics.median(times[root]) for root in roots)
    print(f"median {roots[0]}: {a:.2f}s  {roots[1]}: {b:.2f}s  ratio B/A = {b / a:.3f}")


if __name__ == "__main__":
    main()
