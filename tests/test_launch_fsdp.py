"""The paper profiles' FSDP launch file on this CPU machine (slow: two `torch.distributed` launches).

What runs here and what it shows (docs/scale-out.md, "What was run"):
- torch itself shards parameters with FSDP2 over two CPU processes (gloo): each rank holds a part;
- one TRL stage of a `tiny` profile (table1's DPO) launched by `accelerate launch` with
  ablations/launch/fsdp_13b_policy.yaml on two CPU processes: both ranks train in one process group of 2
  and rank 0 publishes the stage; accelerate does not select FSDP for CPU processes (it shards only on GPU
  backends), which each rank reports, so on this machine the file's sharding is not exercised.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

import pytest

from harness.paths import PROJECT_ROOT

pytestmark = pytest.mark.slow

FSDP2_SCRIPT = textwrap.dedent("""
    import torch, torch.distributed as dist
    from torch.distributed.fsdp import fully_shard
    dist.init_process_group("gloo")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.Linear(16, 1))
    for layer in model:
        fully_shard(layer)
    fully_shard(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(torch.randn(4, 16)).pow(2).mean().backward()
    optimizer.step()
    local = sum(p.to_local().numel() for p in model.parameters())
    print(f"rank {dist.get_rank()} world {dist.get_world_size()} local {local} total {sum(p.numel() for p in model.parameters())}")
    dist.destroy_process_group()
""")


def test_torch_fsdp2_shards_parameters_over_two_cpu_processes(tmp_path):
    script = tmp_path / "fsdp2.py"
    script.write_text(FSDP2_SCRIPT)
    # --standalone: a free port of its own (the machine is shared; 29500 may be taken by someone else's run)
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script)],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    ranks = [line.split() for line in done.stdout.splitlines() if line.startswith("rank ")]
    assert sorted(r[1] for r in ranks) == ["0", "1"] and all(r[3] == "2" for r in ranks)
    local = [int(r[5]) for r in ranks]
    total = int(ranks[0][7])
    assert sum(local) == total and all(0 < part < total for part in local)  # each rank holds only its shard


def test_a_tiny_trl_stage_under_accelerate_launch_with_the_fsdp_config_on_two_cpu_processes(
        tmp_path, monkeypatch, tiny_model, capfd):
    from conftest import use_results

    from harness import cache
    from harness.backends.accelerate_launch import launch_stage
    from harness.executors import execute_stage
    from harness.grid import load_grid
    from harness.resolution import unresolved_inputs
    from harness.runner import plan_grid

    use_results(monkeypatch, tmp_path / "results")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    grid = load_grid(PROJECT_ROOT / "ablations" / "table1_datasets.yaml", profile="tiny", only="dataset=hh-rlhf")
    (plan,) = [p for p in plan_grid(grid) if not p.cell.is_baseline]
    if unresolved_inputs([plan]):
        pytest.skip("needs the HH-RLHF sample in ../shared/data")
    for kind in ("prepare_data", "reference_logps"):  # the training stage's inputs, run in this process
        execute_stage(plan.stage(kind).spec())
    train = plan.stage("train_policy")
    with socket.socket() as probe:  # a free port: the machine is shared, 29500 may be taken
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    published = launch_stage(train.spec(), 2, ["--config_file", str(PROJECT_ROOT / "ablations/launch/fsdp_13b_policy.yaml"),
                                               "--mixed_precision", "no", "--main_process_port", str(port)])
    assert cache.is_complete("train_policy", train.key) and published == str(train.path)
    assert (train.path / "model" / "config.json").is_file()
    err = capfd.readouterr().err
    for rank in (0, 1):
        line = next(x for x in err.splitlines() if f"rank {rank} done, torch.distributed world size" in x)
        assert "world size 2" in line
        # accelerate 1.15 picks FSDP only for GPU-type backends; on CPU ranks it says NO: the documented gap.
        assert "accelerate distributed type" in line and "FSDP" not in line, line
