"""The project's PPO, data-parallel: whitening with statistics pooled over ranks (a real two-process gloo
group) equals whitening of the concatenated batch; batch sizes that do not split over the ranks are
refused before launching; and the PPO train stage runs on two CPU ranks under `accelerate launch`
(torch.distributed world size 2), rank 0 alone writing the stage."""

from __future__ import annotations

import json
import math
import socket
from pathlib import Path

import pytest
import torch

from harness.algorithms.ppo import all_reduce_sum, whiten
from harness.backends.accelerate_launch import launch_stage
from harness.executors import execute_stage
from harness.grid import build_grid
from harness.launch import check_launch
from harness.planning import plan_cell


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages of 5 rollouts of different lengths (mask = 1 on response tokens)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(5, 7, generator=gen, dtype=torch.float64) * 3 + 1
    lengths = torch.tensor([7, 2, 5, 1, 4])
    mask = (torch.arange(7)[None, :] < lengths[:, None]).double()
    return x, mask


def _whiten_on_rank(rank: int, world: int, init_file: str, out_dir: str) -> None:
    """One rank of a gloo group: whiten its own rows with pooled statistics, save the result."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        x, mask = _batch()
        rows = slice(0, 2) if rank == 0 else slice(2, 5)  # unequal shards: 2 and 3 rollouts
        out = {shift: whiten(x[rows], mask[rows], shift_mean=shift, sum_across_ranks=all_reduce_sum)
               for shift in (True, False)}
        torch.save(out, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_cross_rank_whitening_equals_whitening_of_the_concatenated_batch(tmp_path: Path):
    import torch.multiprocessing as mp

    mp.spawn(_whiten_on_rank, args=(2, str(tmp_path / "pg_init"), str(tmp_path)), nprocs=2, join=True)
    x, mask = _batch()
    for shift in (True, False):
        pooled = torch.cat([torch.load(tmp_path / f"rank{r}.pt")[shift] for r in (0, 1)])
        assert torch.allclose(pooled, whiten(x, mask, shift_mean=shift), atol=1e-12)
    # Per-rank statistics would not do: each shard whitened alone gives other advantages.
    per_rank = torch.cat([whiten(x[:2], mask[:2]), whiten(x[2:], mask[2:])])
    assert not torch.allclose(per_rank, whiten(x, mask), atol=1e-3)


def _ppo_grid(**algorithm):
    return build_grid({"experiment": "ppo-acc", "baseline": False, "base": {
        "model": "tiny-random-llama", "dataset": {"name": "smoke-lowercase", "max_rows": 16},
        "reward_function": "lowercase_fraction",
        "algorithm": {"name": "ppo", "value_init": "policy", "max_steps": 2, "prompt_batch_size": 4,
                      "minibatch_size": 2, "generation_batch_size": 2, "max_new_tokens": 8,
                      "learning_rate": 1e-4, **algorithm},
        "eval": {"tasks": ["smoke_lowercase"], "limit": 2}}})


def test_ppo_batch_sizes_must_split_over_the_ranks_before_launch():
    plan = plan_cell(_ppo_grid(prompt_batch_size=3, minibatch_size=3).cells[0])
    spec = plan.stage("train_policy").spec()
    problems = check_launch(spec, 2)
    assert len(problems) == 2
    assert "algorithm.prompt_batch_size (3) must be a multiple of the number of data-parallel processes (2)" \
        in problems[0]
    assert "algorithm.minibatch_size (3)" in problems[1]
    assert check_launch(spec, 3) == [] and check_launch(spec, 1) == []
    with pytest.raises(ValueError, match="prompt_batch_size"):
        launch_stage(spec, 4)  # refused before any process starts
    # Stages of other kinds (and other algorithms) are not PPO's business.
    assert check_launch(plan.stage("prepare_data").spec(), 4) == []


def test_ppo_stage_on_two_accelerate_ranks(tiny_model, isolated_results, capfd):
    plan = plan_cell(_ppo_grid().cells[0])
    for stage in plan.stages:
        if stage.kind == "prepare_data":
            execute_stage(stage.spec())
    policy = plan.stage("train_policy")
    # No GPU here: --multi_gpu only selects torchrun's multi-process launcher; PPO's DDP runs on CPU (gloo).
    out = launch_stage(policy.spec(), 2, ["--multi_gpu", "--main_process_port", str(_free_port())])
    assert policy.complete and out == str(policy.path)
    assert (policy.path / "model" / "config.json").exists()
    history = [json.loads(line) for line in (policy.path / "history.jsonl").read_text().splitlines()]
    # One writer: one history row per step (two writers would append two).
    assert [row["step"] for row in history] == [1, 2]
    for row in history:
        assert all(math.isfinite(v) for v in row.values())
        assert row["train/world_size"] == 2.0
        assert 1 <= row["train/response_length"] <= 8 and 0.0 <= row["train/reward_mean"] <= 1.0
    metrics = json.loads((policy.path / "metrics.json").read_text())
    # The schedule is global, as with one process: 4 prompts x 2 steps, 4/2 minibatches x 2 steps.
    assert metrics["train/world_size"] == 2.0
    assert metrics["train/episodes"] == 8.0 and metrics["train/optimizer_steps"] == 4.0
    samples = (policy.path / "artifacts" / "ppo_samples.jsonl").read_text().splitlines()
    assert len(samples) == 2 * 2  # rank 0's 2 rollouts per step, written once
    err = capfd.readouterr().err
    assert "rank 0 done, torch.distributed world size 2" in err
    assert "rank 1 done, torch.distributed world size 2" in err
    # Only rank 0 wrote into the store: one published folder, no working folder (or its lock) left.
    assert len(list((isolated_results / "stages" / "train_policy").iterdir())) == 1
    assert not list((isolated_results / "stages" / ".work").glob("*/*"))


def test_ray_backend_refuses_a_ppo_stage_whose_batch_does_not_split_before_submitting_anything():
    pytest.importorskip("ray")
    from harness.backends.ray_backend import RayBackend

    plan = plan_cell(_ppo_grid(prompt_batch_size=3, minibatch_size=3).cells[0])
    backend = RayBackend(resources={"train_policy": {"accelerate": {"num_processes": 2, "args": ["--multi_gpu"]}}})
    # `_run` checks every stage before its first submission: no Ray instance is needed to get the error.
    with pytest.raises(ValueError, match=r"algorithm\.prompt_batch_size \(3\) must be a multiple"):
        backend._run(plan.stages, on_done=lambda stage: None, echo=lambda line: None)
    assert not any(stage.complete for stage in plan.stages)
