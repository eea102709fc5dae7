"""The Ray backend on a real local Ray instance (`ray.init(num_cpus=2)`, shared by this module):
the same MLflow results as the local backend, and a grid that survives a worker killed mid-stage."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from test_keep_going import HELPSTEER, grid_spec  # noqa: E402
from test_runner import mlflow_state, tiny_grid  # noqa: E402

from harness.backends import get_backend  # noqa: E402
from harness.grid import build_grid  # noqa: E402
from harness.runner import run_grid  # noqa: E402


@pytest.fixture(scope="module")
def ray_instance():
    # One local instance for the module: starting Ray costs seconds to tens of seconds.
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture
def shared_mlflow(tmp_path_factory, monkeypatch) -> str:
    """One SQLite MLflow store for the module's experiments (creating a store is the slow part);
    every test still gets its own stage cache from the autouse `isolated_results`."""
    path = tmp_path_factory.getbasetemp() / "ray_mlflow.db"
    uri = f"sqlite:///{path}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


def _small(experiment: str, steps: int, betas: tuple[float, ...]) -> dict:
    spec = tiny_grid(experiment, steps=steps, betas=betas)
    spec["base"]["dataset"]["max_rows"] = 8
    spec["base"]["eval"]["limit"] = 2
    return spec


def test_ray_grid_matches_local_backend(tiny_model, ray_instance, shared_mlflow, tmp_path, monkeypatch):
    # 4 cells: the SFT baseline and three DPO betas; 1 data + 1 shared reference pass + 3 train + 4 eval stages.
    betas = (0.1, 0.3, 0.5)
    monkeypatch.setenv("HARNESS_RESULTS_DIR", str(tmp_path / "local"))
    local = run_grid(build_grid(_small("ray_parity", 1, betas)), echo=lambda _: None)
    assert len(local.logged_cells) == 4
    local_state = mlflow_state("ray_parity")

    # Same grid, own stage cache, own experiment: everything recomputed on Ray workers.
    monkeypatch.setenv("HARNESS_RESULTS_DIR", str(tmp_path / "ray"))
    spec = _small("ray_parity_ray", 1, betas)
    lines: list[str] = []
    remote = run_grid(build_grid(spec), backend="ray", echo=lines.append)
    assert sorted(remote.logged_cells) == sorted(local.logged_cells)
    assert len(remote.executed_stages) == 9 and not remote.cached_stages
    assert sum(line.startswith("  submit ") for line in lines) == 9
    ray_state = mlflow_state("ray_parity_ray")
    assert ray_state == local_state

    # A rerun on Ray is a no-op (cells already FINISHED in MLflow).
    again = run_grid(build_grid(spec), backend="ray", echo=lambda _: None)
    assert again.executed_stages == [] and sorted(again.skipped_cells) == sorted(local.logged_cells)


def _kill_training_worker(stage_root: Path, killed: list[int], stop: threading.Event) -> None:
    """Wait for a train_policy working folder with logged steps, then SIGKILL the process writing it
    (named in its lock: see harness.cache.work_state)."""
    from harness import cache

    while not stop.is_set():
        for state in cache.running_work():
            history = state.path / "history.jsonl"
            if state.kind == "train_policy" and state.running and history.exists() and history.read_text().strip():
                pid = int(state.writer["pid"])
                assert pid != os.getpid()
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
        time.sleep(0.05)


def test_ray_worker_killed_mid_stage_grid_completes(tiny_model, ray_instance, shared_mlflow, isolated_results):
    spec = _small("ray_kill", 40, (0.1,))
    spec["baseline"] = False
    killed: list[int] = []
    stop = threading.Event()
    killer = threading.Thread(target=_kill_training_worker, args=(isolated_results / "stages", killed, stop))
    killer.start()
    try:
        summary = run_grid(build_grid(spec), backend="ray", echo=lambda _: None,
                           backend_options={"max_retries": 2})
    finally:
        stop.set()
        killer.join()
    assert len(killed) == 1, "the training worker was never seen (training finished too fast?)"
    with pytest.raises(ProcessLookupError):
        os.kill(killed[0], 0)
    # Ray retried the task in another worker, which published the stage; the grid finished.
    assert summary.logged_cells == ["algorithm.beta=0.1"]
    published = list((isolated_results / "stages" / "train_policy").iterdir())
    assert len(published) == 1 and (published[0] / "model" / "config.json").exists()
    metrics, children = mlflow_state("ray_kill")["algorithm.beta=0.1"]
    # prepare_data, reference_logps, train_policy, evaluate
    assert "smoke_lowercase/clean_success_rate" in metrics and len(children) == 4
    # The killed attempt's working folder was reclaimed by the retry (another writer), which published it.
    record = json.loads((published[0] / "stage.json").read_text())
    assert record["writer"]["pid"] != killed[0]
    assert not list((isolated_results / "stages" / ".work").glob("*/*"))


def test_ray_backend_rejects_bad_resources_and_reports_failed_stage(ray_instance, shared_mlflow, tmp_path,
                                                                    monkeypatch):
    with pytest.raises(ValueError, match="resources: unknown stage kind 'train'"):
        get_backend("ray", resources={"train": {"num_gpus": 1}})
    with pytest.raises(ValueError, match=r"resources.train_policy: unknown key\(s\) \['gpus'\]"):
        get_backend("ray", resources={"train_policy": {"gpus": 1}})
    monkeypatch.setenv("HARNESS_RAY_RESOURCES", '{"train_policy": {"num_cpus": 2, "memory": 1e9}}')
    backend = get_backend("ray")
    assert backend.resources["train_policy"] == {"num_cpus": 2, "memory": 1e9}
    assert backend.resources["evaluate"] == {"num_cpus": 1}
    monkeypatch.setenv("HARNESS_RAY_RESOURCES", "{num_gpus: 1}")
    with pytest.raises(ValueError, match="HARNESS_RAY_RESOURCES is not valid JSON"):
        get_backend("ray")
    monkeypatch.delenv("HARNESS_RAY_RESOURCES")
    # A folder that is not a model passes validation but fails when the worker loads it: the
    # error comes back to the driver naming the stage, and nothing is published or logged.
    not_a_model = tmp_path / "not_a_model"
    not_a_model.mkdir()
    spec = {"experiment": "ray_fail", "baseline": False,
            "base": {"model": str(not_a_model), "eval": {"tasks": ["smoke_lowercase"], "limit": 1}}}
    with pytest.raises(RuntimeError, match=r"1 stage\(s\) failed on Ray; first: evaluate/"):
        run_grid(build_grid(spec), backend="ray", echo=lambda _: None)
    assert not list((tmp_path / "results" / "stages").glob("evaluate/*"))


def test_ray_keep_going_reports_the_broken_data_file_and_logs_the_rest(ray_instance, shared_mlflow,
                                                                        broken_helpsteer, tiny_model):  # noqa: F811
    """The runner's keep-going on Ray: the data stage fails on a worker, its cell's training is never
    submitted, the independent baseline is logged, and the summary names the file and line."""
    lines: list[str] = []
    summary = run_grid(build_grid(grid_spec([HELPSTEER], experiment="ray_keep_going")), backend="ray",
                       echo=lines.append, keep_going=True)
    assert summary.logged_cells == ["sft"]
    assert list(summary.failed_cells) == ["dataset=helpsteer"]
    assert f"{broken_helpsteer}:3: not UTF-8 text" in summary.failed_cells["dataset=helpsteer"]
    assert not any("train_policy" in line for line in lines if line.startswith("  submit "))


def test_ray_stage_metrics_are_logged_live(tiny_model, ray_instance, shared_mlflow, isolated_results):
    """Under Ray, too, the driver follows the task's working folder: a step metric of the training stage
    is in MLflow before the stage is published, and that live run is the one finished at publication."""
    from harness import cache, tracking
    from harness import mlflow_layout as layout

    spec = _small("ray_live", 300, (0.1,))
    spec["baseline"] = False
    done: list = []
    client = tracking.client()  # the store is created before the run's thread uses it (migrations are not thread-safe)
    runner = threading.Thread(target=lambda: done.append(run_grid(build_grid(spec), backend="ray",
                                                                  echo=lambda _: None)))
    runner.start()
    read_live = None
    try:
        while runner.is_alive() and read_live is None:
            exp = client.get_experiment_by_name("ray_live")
            runs = client.search_runs([exp.experiment_id], "attributes.status = 'RUNNING'") if exp else []
            for run in runs:
                if run.data.tags.get(layout.TAG_STAGE_KIND) != "train_policy":
                    continue
                key = run.data.tags[layout.TAG_STAGE_HASH]
                if client.get_metric_history(run.info.run_id, "train/loss") and not cache.is_complete("train_policy", key):
                    read_live = run
            time.sleep(0.2)
    finally:
        runner.join()
    assert done and done[0].logged_cells == ["algorithm.beta=0.1"]
    assert read_live is not None, "no step metric was read while the Ray task trained"
    finished = client.get_run(read_live.info.run_id)
    record = cache.read_record("train_policy", read_live.data.tags[layout.TAG_STAGE_HASH])
    assert finished.info.status == "FINISHED" and finished.data.tags[layout.TAG_STAGE_ATTEMPT] == record["attempt"]
    assert sorted(m.step for m in client.get_metric_history(finished.info.run_id, "train/loss")) == list(range(1, 301))
