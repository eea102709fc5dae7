"""Multi-process training of one stage under `accelerate launch` (what the Ray backend runs for a kind
whose resources carry `accelerate: {num_processes: N}`), on CPU: two ranks train the reward model with
torch.distributed (gloo), rank 0 alone publishes the stage."""

from __future__ import annotations

import json
import socket

import pytest

from harness.backends.accelerate_launch import launch_stage
from harness.executors import execute_stage
from harness.grid import build_grid
from harness.planning import plan_cell


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_reward_model_stage_on_two_accelerate_ranks(tiny_model, isolated_results, capfd):
    grid = build_grid({"experiment": "acc", "baseline": False, "base": {
        "model": "tiny-random-llama", "dataset": {"name": "smoke-lowercase", "max_rows": 16},
        "reward_model": {"base": "tiny-random-llama", "dataset": {"name": "smoke-lowercase", "max_rows": 16},
                         "train": {"max_steps": 2, "per_device_train_batch_size": 2,
                                   "gradient_accumulation_steps": 1, "max_length": 128}},
        "algorithm": {"name": "ppo", "max_steps": 1, "prompt_batch_size": 2, "minibatch_size": 2,
                      "generation_batch_size": 2, "max_new_tokens": 8},
        "eval": {"tasks": ["smoke_lowercase"], "limit": 2}}})
    plan = plan_cell(grid.cells[0])
    for stage in plan.stages:
        if stage.kind == "prepare_data":
            execute_stage(stage.spec())
    rm = plan.stage("train_reward_model")
    # No GPU here: --multi_gpu only selects torchrun's multi-process launcher. On CPU, TRL's trainers see a
    # torch.distributed group of 2 but accelerate treats each process as standalone (TrainingArguments does
    # not ask for Accelerator(cpu=True)), so this checks the launch and rank-0 publishing, not gradient
    # all-reduce; the project's PPO does run DDP on CPU (tests/test_ppo_accelerate.py).
    out = launch_stage(rm.spec(), 2, ["--multi_gpu", "--main_process_port", str(_free_port())])
    assert rm.complete and out == str(rm.path)
    assert (rm.path / "model" / "config.json").exists()
    metrics = json.loads((rm.path / "metrics.json").read_text())
    assert 0.0 <= metrics["rm/accuracy"] <= 1.0
    err = capfd.readouterr().err
    # Both ranks really trained in one process group of 2.
    assert "rank 0 done, torch.distributed world size 2" in err
    assert "rank 1 done, torch.distributed world size 2" in err
    # Only rank 0 wrote into the store: one published folder, no working folder (or its lock) left.
    assert len(list((isolated_results / "stages" / "train_reward_model").iterdir())) == 1
    assert not list((isolated_results / "stages" / ".work").glob("*/*"))
