"""Mid-stage resume (harness/resume.py): a training stage killed with SIGKILL in the middle of training goes on
from its last resume checkpoint when the grid is rerun, and ends as an uninterrupted run does (the same step
history, each step once in history.jsonl and in MLflow, the same final weights on CPU with fixed seeds).
Real `harness run` subprocesses, real TRL / the project's PPO on the tiny model, the real MLflow store; the
kill comes from the `HARNESS_KILL_AT=history_step:<n>` fault point (right after step n is logged)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness import cache, resume, tracking
from harness import mlflow_layout as layout

TINY_DPO = {"name": "dpo", "max_steps": 6, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1,
            "max_length": 48, "learning_rate": 1e-4, "logging_steps": 1}
TINY_PPO = {"name": "ppo", "value_init": "policy", "max_steps": 5, "prompt_batch_size": 2, "minibatch_size": 2,
            "generation_batch_size": 2, "max_new_tokens": 6, "learning_rate": 1e-4}


def grid(experiment: str, algorithm: dict, **base: object) -> dict:
    return {"experiment": experiment, "baseline": False,
            "base": {"model": "tiny-random-llama", "dataset": {"name": "smoke-lowercase", "max_rows": 16},
                     "algorithm": algorithm, "train": {"checkpoint_steps": 2},
                     "eval": {"tasks": ["smoke_lowercase"], "limit": 2}, **base}}


def run_cli(grid_file: Path, results: Path, **env: str) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", layout.FAULT_ENV)}
    full_env.update({"HARNESS_RESULTS_DIR": str(results), "OMP_NUM_THREADS": "1", **env})
    return subprocess.run([sys.executable, "-m", "harness.cli", "run", str(grid_file)], env=full_env,
                          capture_output=True, text=True, timeout=900)


def history(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "history.jsonl").read_text().splitlines() if line.strip()]


def weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model" / "model.safetensors"))


def _killed_then_resumed_equals_uninterrupted(tmp_path: Path, monkeypatch, experiment: str, algorithm: dict,
                                              label: str, metric: str, **base: object) -> None:
    grid_file = tmp_path / "grid.yaml"
    grid_file.write_text(yaml.safe_dump(grid(experiment, algorithm, **base)))
    killed, clean = tmp_path / "killed", tmp_path / "clean"

    # Killed right after step 3 is logged: its last checkpoint is step 2 (checkpoint_steps: 2).
    died = run_cli(grid_file, killed, **{layout.FAULT_ENV: "history_step:3"})
    assert died.returncode == -9, died.stderr[-3000:]
    monkeypatch.setenv("HARNESS_RESULTS_DIR", str(killed))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (left,) = [s for s in cache.running_work() if s.kind == "train_policy"]
    work = cache.work_dir("train_policy", left.key)
    assert resume.latest(work)[0] == 2 and [r["step"] for r in history(work)][-1] == 3

    rerun = run_cli(grid_file, killed)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"resumed {label} {left.key} from step 2" in rerun.stdout, rerun.stdout
    assert cache.is_complete("train_policy", left.key)
    published = cache.stage_dir("train_policy", left.key)
    assert not (published / resume.CHECKPOINT_ROOT).exists(), "resume checkpoints are not published"

    # The same curve in MLflow: each step once, none missing (history.jsonl was cut back to step 2).
    client = tracking.client()
    exp = client.get_experiment_by_name(experiment)
    (train_run,) = [r for r in client.search_runs([exp.experiment_id])
                    if r.data.tags.get(layout.TAG_STAGE_KIND) == "train_policy"]
    logged = sorted(m.step for m in client.get_metric_history(train_run.info.run_id, metric))
    steps = algorithm["max_steps"]
    assert logged == list(range(1, steps + 1)), logged

    # The uninterrupted run of the same grid.
    assert run_cli(grid_file, clean).returncode == 0
    reference = clean / "stages" / "train_policy" / left.key
    assert reference.is_dir(), "the checkpoint settings must not change the stage key"
    resumed_rows, clean_rows = history(published), history(reference)
    assert [r["step"] for r in resumed_rows] == [r["step"] for r in clean_rows]
    assert [r["step"] for r in resumed_rows if metric in r] == list(range(1, steps + 1))
    for got, want in zip(resumed_rows, clean_rows, strict=True):
        # Timings differ between runs; every training quantity is the same.
        same = {k for k in want if k in got and not k.endswith(("seconds", "runtime", "per_second", "wall_time"))}
        assert {k: got[k] for k in same} == pytest.approx({k: want[k] for k in same}, rel=1e-6, abs=1e-9), want["step"]
    got_weights, want_weights = weights(published), weights(reference)
    assert got_weights.keys() == want_weights.keys()
    for name, tensor in want_weights.items():
        assert (got_weights[name] == tensor).all(), f"{name} differs after the resume"


@pytest.mark.slow
def test_dpo_stage_killed_mid_training_resumes_from_its_checkpoint(tmp_path, tiny_model, monkeypatch):
    _killed_then_resumed_equals_uninterrupted(tmp_path, monkeypatch, "resume_dpo", dict(TINY_DPO),
                                              "train_policy[dpo]", "train/loss")


@pytest.mark.slow
def test_ppo_stage_killed_mid_training_resumes_from_its_checkpoint(tmp_path, tiny_model, monkeypatch):
    _killed_then_resumed_equals_uninterrupted(tmp_path, monkeypatch, "resume_ppo", dict(TINY_PPO),
                                              "train_policy[ppo]", "train/loss", reward_function="lowercase_fraction")


def test_checkpoint_settings_are_validated_and_stay_out_of_stage_keys(tiny_model):
    from harness.grid import GridError, build_grid
    from harness.planning import plan_cell

    def train_stage(train: dict):
        cell = build_grid(grid("keys", dict(TINY_DPO), train=train)).cells[0]
        return plan_cell(cell).stage("train_policy")

    default, every_step = train_stage({}), train_stage({"checkpoint_steps": 1, "checkpoint_minutes": 5})
    assert default.key == every_step.key
    assert default.spec()["checkpointing"] == {"minutes": 30.0, "steps": None}
    assert every_step.spec()["checkpointing"] == {"minutes": 5, "steps": 1}
    for bad, field in (({"checkpoint_minutes": 0}, "checkpoint_minutes"), ({"checkpoint_steps": 0}, "checkpoint_steps"),
                       ({"checkpoint_every": 3}, "checkpoint_every")):
        with pytest.raises(GridError, match=f"train.{field}"):
            train_stage(bad)


def test_a_reclaimed_folder_is_cut_back_to_its_last_complete_checkpoint(tmp_path, monkeypatch):
    """`resume.prepare`: the newest checkpoint with its completion marker wins (a save cut short by the kill
    is dropped), history.jsonl keeps the steps up to it, a stop request and the failure record go."""
    monkeypatch.setenv("HARNESS_RESULTS_DIR", str(tmp_path))
    claim = cache.claim_work_dir("train_policy", "k1")
    out = claim.path
    for step in (2, 4, 6):
        folder = out / resume.CHECKPOINT_ROOT / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        if step < 6:
            resume.mark_complete(folder, step)
    (out / "history.jsonl").write_text("".join(json.dumps({"step": s, "train/loss": 1.0 / s}) + "\n"
                                               for s in range(1, 7)) + '{"step": 7, "tra')
    resume.request_stop(out, "pruned")
    cache.record_failure("train_policy", "k1", "StageStopped: stopped at step 4: pruned", attempt=claim.attempt)
    claim.release()

    again = cache.claim_work_dir("train_policy", "k1")
    assert again.previous is not None
    assert resume.prepare(again) == 4
    assert [r["step"] for r in history(out)] == [1, 2, 3, 4]
    assert not (out / resume.CHECKPOINT_ROOT / "checkpoint-6").exists()
    assert resume.stop_reason(out) is None and not (out / cache.FAILURE_FILE).exists()
    assert again.started_at == claim.started_at
    resume.discard(out)
    assert resume.latest(out) is None
    again.release()


@pytest.mark.slow
def test_a_stop_request_ends_ppo_after_its_step_and_the_next_claim_goes_on(tmp_path, tiny_model, monkeypatch, capsys):
    """The pruner's stop request to the project's PPO (in this process, as `harness sweep` with the local backend
    runs it): the stage ends after the update in progress with a resume checkpoint, is recorded as stopped, not
    published; executing it again resumes from that checkpoint and publishes every update once."""
    import threading
    import time

    from harness.executors import execute_stage
    from harness.grid import build_grid
    from harness.planning import plan_cell

    monkeypatch.setenv("HARNESS_RESULTS_DIR", str(tmp_path))
    algorithm = {**TINY_PPO, "max_steps": 12}
    plan = plan_cell(build_grid(grid("stop_ppo", algorithm, train={},
                                     reward_function="lowercase_fraction")).cells[0])
    for stage in plan.stages:
        if stage.kind == "prepare_data":
            execute_stage(stage.spec())
    train = plan.stage("train_policy")
    work = cache.work_dir("train_policy", train.key)

    def stop_after_the_first_update() -> None:
        while not (work / "history.jsonl").exists() or not (work / "history.jsonl").read_text():
            time.sleep(0.05)
        resume.request_stop(work, "pruned by a test")

    stopper = threading.Thread(target=stop_after_the_first_update, daemon=True)
    stopper.start()
    with pytest.raises(resume.StageStopped, match="pruned by a test") as stopped:
        execute_stage(train.spec())
    stopper.join(timeout=5)
    step = stopped.value.step
    assert 1 <= step <= 3 and resume.latest(work)[0] == step  # the update in progress when the request came
    assert not cache.is_complete("train_policy", train.key)
    state = cache.work_state("train_policy", train.key)
    assert "StageStopped: stopped at step" in state.failure["error"]

    capsys.readouterr()
    execute_stage(train.spec())
    assert f"resumed train_policy[ppo] {train.key} from step {step}" in capsys.readouterr().out
    published = cache.stage_dir("train_policy", train.key)
    assert [r["step"] for r in history(published)] == list(range(1, algorithm["max_steps"] + 1))
    samples = [json.loads(line)["step"] for line in (published / "artifacts" / "ppo_samples.jsonl").read_text().splitlines()]
    assert sorted(set(samples)) == list(range(1, algorithm["max_steps"] + 1)) and samples == sorted(samples)
    assert not (published / resume.CHECKPOINT_ROOT).exists() and not (published / resume.STOP_FILE).exists()
