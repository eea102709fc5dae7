"""Run one stage in several processes (one per GPU) with `accelerate launch`.

The TRL trainers the algorithms use (DPO, KTO, ORPO, SimPO, GRPO, RLOO, Online DPO, the reward
model's RewardTrainer) take their distributed setup from the environment `accelerate launch`
creates (RANK, WORLD_SIZE, MASTER_ADDR, ...): the same code trains with data parallelism, each
rank on its own GPU. What the harness adds is who writes the stage: every rank runs the stage's
executor, but only rank 0 writes into the stage's working folder and publishes it (TRL saves the
model from the main process only); the other ranks work in a scratch folder that is removed.

Selected by config through the Ray backend's per-kind resources (see docs/scale-out.md):

    HARNESS_RAY_RESOURCES='{"train_policy": {"num_gpus": 4,
                                             "accelerate": {"num_processes": 4, "args": ["--mixed_precision", "bf16"]}}}'
    harness run GRID --backend ray

Ray gives the task its 4 GPUs (CUDA_VISIBLE_DEVICES) and the task starts
`accelerate launch --num_processes 4 -m harness.backends.accelerate_launch SPEC.json`.

The project's own PPO (`harness/algorithms/ppo.py`) runs the same way: it creates an
`accelerate.Accelerator`, wraps policy + value model in DDP, and each rank samples and scores its
share of every prompt batch (`prompt_batch_size` and `minibatch_size` stay global, so both must be
multiples of `num_processes`; `harness.launch.check_launch` says so before any process starts). Advantages are
whitened with statistics pooled over all ranks, metrics are averaged over ranks, and rank 0 alone
writes the history, samples and model.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from harness import cache
from harness.launch import check_launch


def launch_stage(spec: dict[str, Any], num_processes: int, args: list[str] | tuple[str, ...] = ()) -> str:
    """Execute `spec` under `accelerate launch` with `num_processes` ranks; returns the published folder."""
    problems = check_launch(spec, num_processes)
    if problems:
        raise ValueError("; ".join(problems))
    kind, key = spec["kind"], spec["key"]
    if cache.is_complete(kind, key):
        return str(cache.stage_dir(kind, key))
    with tempfile.TemporaryDirectory(prefix="harness-launch-") as tmp:
        spec_path = Path(tmp) / "spec.json"
        spec_path.write_text(json.dumps(spec))
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(num_processes),
               *args, "-m", "harness.backends.accelerate_launch", str(spec_path)]
        result = subprocess.run(cmd)
    if result.returncode != 0:
        raise RuntimeError(f"stage {kind}/{key}: `accelerate launch` ({num_processes} processes) exited with "
                           f"{result.returncode}")
    if not cache.is_complete(kind, key):
        raise RuntimeError(f"stage {kind}/{key}: accelerate ranks finished but rank 0 published nothing")
    return str(cache.stage_dir(kind, key))


def _run_rank(spec: dict[str, Any]) -> None:
    from harness.executors import EXECUTORS, execute_stage, executor_config

    rank = int(os.environ.get("RANK", "0"))
    if rank == 0:
        execute_stage(spec)
        _report(rank)
        return
    # Other ranks: the same executor on the same inputs with the same seeds (the trainer's collective
    # operations need every rank), writing to a scratch folder nobody reads.
    import numpy as np
    import torch

    inputs = {role: cache.stage_dir(ref["kind"], ref["key"]) for role, ref in spec["inputs"].items()}
    seed = int(spec["config"].get("seed", 0) or 0)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    scratch = Path(tempfile.mkdtemp(prefix=f"harness-rank{rank}-"))
    try:
        (scratch / "artifacts").mkdir()
        EXECUTORS[spec["kind"]](executor_config(spec), inputs, scratch)
    except Exception as exc:
        # These ranks only take part in the collective training. What an executor does after it
        # (e.g. scoring the saved model, which only rank 0 writes) can fail here and is not needed:
        # if rank 0 publishes the stage, the stage succeeded. If rank 0 fails, the launcher stops
        # every rank, this one included.
        if not _wait_published(spec["kind"], spec["key"]):
            raise
        print(f"harness.accelerate_launch: rank {rank} ignored {type(exc).__name__} after training "
              f"(rank 0 published the stage): {exc}", file=sys.stderr)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    _report(rank)


def _wait_published(kind: str, key: str, timeout: float = 3600.0) -> bool:
    import time

    deadline = time.time() + timeout
    while time.time() < deadline:
        if cache.is_complete(kind, key):
            return True
        time.sleep(1.0)
    return False


def _report(rank: int) -> None:
    """One line per rank: the process group the trainer really used (1 = it ran undistributed) and the
    distributed type accelerate chose (FSDP / DEEPSPEED only when it sharded the model)."""
    import torch.distributed as dist

    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    kind = "not initialised"
    try:
        from accelerate.state import PartialState

        if PartialState._shared_state:
            kind = str(getattr(PartialState().distributed_type, "value", PartialState().distributed_type))
    except ImportError:
        pass
    print(f"harness.accelerate_launch: rank {rank} done, torch.distributed world size {world}, "
          f"accelerate distributed type {kind}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m harness.backends.accelerate_launch SPEC.json  (started by accelerate launch)",
              file=sys.stderr)
        return 2
    _run_rank(json.loads(Path(argv[0]).read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
