"""Long runs you can watch and stop: live step metrics in MLflow while a stage trains (a real `harness run`
in a subprocess, real TRL training on the tiny model, the real SQLite MLflow store read from this process),
one curve without repeated or missing steps after `kill -9` and a rerun, run times that span the work,
MLflow's own datasets / logged models / costs, the plain log, and `harness status` while a run works."""

from __future__ import annotations

import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from harness import cache, tracking
from harness import mlflow_layout as layout

LIVE_DPO = {"name": "dpo", "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1, "max_length": 48,
            "learning_rate": 1e-4, "logging_steps": 1}


def live_grid(experiment: str, steps: int, betas: tuple[float, ...] = (0.1,)) -> dict:
    return {"experiment": experiment, "baseline": False,
            "base": {"model": "tiny-random-llama", "dataset": {"name": "smoke-lowercase", "max_rows": 16},
                     "algorithm": {**LIVE_DPO, "max_steps": steps}, "eval": {"tasks": ["smoke_lowercase"], "limit": 2}},
            "axes": {"algorithm.beta": list(betas)}}


def harness_env(results: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "HARNESS_RESULTS_DIR": str(results), "OMP_NUM_THREADS": "1", **extra}


class Harness:
    """`harness ...` in a subprocess, its output collected by threads (a full pipe would stall it)."""

    def __init__(self, args: list[str], env: dict[str, str]):
        self.proc = subprocess.Popen([sys.executable, "-m", "harness.cli", *args], env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.out: list[str] = []
        self.err: list[str] = []
        self._readers = [threading.Thread(target=self._read, args=(s, buf), daemon=True)
                         for s, buf in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream, buf: list[str]) -> None:
        for line in stream:
            buf.append(line)

    def wait(self, timeout: float = 600) -> int:
        code = self.proc.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(timeout=10)
        return code

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.wait()

    @property
    def stdout(self) -> str:
        return "".join(self.out)

    @property
    def stderr(self) -> str:
        return "".join(self.err)


def _quietly(read):
    """A read of the SQLite store while another process writes it (a locked database is retried)."""
    for _ in range(50):
        try:
            return read()
        except Exception as exc:  # noqa: BLE001 - sqlite3.OperationalError wrapped by MLflow/SQLAlchemy
            if "locked" not in str(exc) and "no such table" not in str(exc):
                raise
            time.sleep(0.1)
    return read()


def stage_runs(experiment: str, kind: str) -> list:
    client = tracking.client()
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return [r for r in client.search_runs([exp.experiment_id], max_results=1000)
            if r.data.tags.get(layout.TAG_STAGE_KIND) == kind]


def wait_for(condition, what: str, proc: Harness | None = None, timeout: float = 600, every: float = 0.2):
    deadline = time.time() + timeout
    while True:
        found = condition()
        if found:
            return found
        if proc is not None:
            assert proc.proc.poll() is None, f"harness exited before {what}:\n{proc.stdout}\n{proc.stderr[-3000:]}"
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(every)


def test_step_metrics_reach_mlflow_while_the_stage_trains(tmp_path, tiny_model, isolated_results):
    """The must-show: a grid started in a subprocess; before its training stage is published, its step
    metrics are read from the stage's MLflow run. Also: the delay from a step's production to its being
    readable in MLflow, the finished run (the same one) with every step once and the stage's times, and
    the plain (non-terminal) log."""
    steps = 300
    grid_file = tmp_path / "grid.yaml"
    grid_file.write_text(yaml.safe_dump(live_grid("live", steps)))
    env = harness_env(isolated_results, HARNESS_PROGRESS_INTERVAL="2")
    run = Harness(["run", str(grid_file)], env)

    def live_run():
        running = [r for r in _quietly(lambda: stage_runs("live", "train_policy")) if r.info.status == "RUNNING"]
        return running[0] if running else None

    train = wait_for(live_run, "the live train_policy run", run)
    key = train.data.tags[layout.TAG_STAGE_HASH]
    client = tracking.client()
    delays: list[float] = []
    seen: set[int] = set()
    first_read_while_training = None
    while run.proc.poll() is None and not cache.is_complete("train_policy", key):
        history = _quietly(lambda: client.get_metric_history(train.info.run_id, "train/loss"))
        now = time.time()
        new = [m for m in history if m.step not in seen]
        if new and not cache.is_complete("train_policy", key):
            state = cache.work_state("train_policy", key)
            if state is not None and state.running and first_read_while_training is None:
                first_read_while_training = (len(history), max(m.step for m in history))
            delays += [now - m.timestamp / 1000 for m in new]  # each step's own delay
            seen.update(m.step for m in new)
        time.sleep(0.2)
    assert first_read_while_training is not None, "no step metric was read while the stage trained"
    assert run.wait() == 0, run.stderr[-3000:]

    # The live run is the one that was finished: its whole curve, each step once, no other train run.
    runs = stage_runs("live", "train_policy")
    assert [r.info.run_id for r in runs] == [train.info.run_id]
    finished = client.get_run(train.info.run_id)
    assert finished.info.status == "FINISHED"
    logged_steps = [m.step for m in client.get_metric_history(train.info.run_id, "train/loss")]
    assert sorted(logged_steps) == list(range(1, steps + 1))
    record = cache.read_record("train_policy", key)
    assert finished.info.start_time == int(record["started_at"] * 1000)
    assert finished.info.end_time == int(record["ended_at"] * 1000)
    assert finished.data.tags[layout.TAG_STAGE_ATTEMPT] == record["attempt"]

    # Delay from a step's production (its history row's time) to its being readable here.
    median, worst = statistics.median(delays), max(delays)
    print(f"\nstep -> MLflow delay over {len(delays)} steps: median {median:.2f} s, max {worst:.2f} s "
          f"(first read at step {first_read_while_training[1]} of {steps})")
    assert worst < 10.0

    # The plain log: events, progress lines with step/total and ETA, a summary per finished stage; no noise.
    out = run.stdout
    assert re.search(rf"^  run  train_policy\[dpo\] {key}$", out, re.M)
    assert re.search(rf"^  \.\.\. train_policy\[dpo\] {key[:8]}  algorithm\.beta=0\.1  step \d+/{steps}  "
                     r"train/loss [-\d.e]+  train/margins [-\d.e]+  [\d.]+ step/s  .*ETA ", out, re.M), out
    assert re.search(rf"^  done train_policy\[dpo\] {key} in [\dms.]+: train/final_loss [-\d.e]+ "
                     r"\(cell algorithm\.beta=0\.1\)$", out, re.M), out
    assert re.search(r"^cell algorithm\.beta=0\.1: logged to MLflow run \w+$", out, re.M)
    # A stage's summary comes before the stages waiting on it start (not when its MLflow run is finished).
    done_at = out.index(f"  done train_policy[dpo] {key}")
    assert done_at < out.index("  run  evaluate "), out
    assert f"  ... train_policy[dpo] {key[:8]}" not in out[done_at:], out  # nor a progress line after it
    noise = run.stdout + run.stderr
    for text in ("FutureWarning", "DeprecationWarning", "Map:", "Loading weights", "it/s]", "INFO mlflow"):
        assert text not in noise, f"library noise {text!r} in the output:\n{noise[-3000:]}"


@pytest.mark.slow
def test_kill_9_mid_training_then_rerun_leaves_one_curve_without_gaps_or_repeats(tmp_path, tiny_model,
                                                                                   isolated_results):
    steps = 250
    grid_file = tmp_path / "grid.yaml"
    grid_file.write_text(yaml.safe_dump(live_grid("killed_live", steps)))
    env = harness_env(isolated_results)
    run = Harness(["run", str(grid_file)], env)
    client = tracking.client()

    def partly_logged():
        for r in _quietly(lambda: stage_runs("killed_live", "train_policy")):
            if r.info.status == "RUNNING" and len(client.get_metric_history(r.info.run_id, "train/loss")) >= 5:
                return r
        return None

    killed_run = wait_for(partly_logged, "a partly logged live run", run)
    run.kill()
    key = killed_run.data.tags[layout.TAG_STAGE_HASH]
    assert not cache.is_complete("train_policy", key), "training finished before the kill"
    left = cache.work_state("train_policy", key)
    assert left is not None and not left.running and left.failure is None  # the writer died with the driver
    partial = [m.step for m in client.get_metric_history(killed_run.info.run_id, "train/loss")]
    assert 5 <= len(partial) < steps

    from harness.grid import load_grid
    from harness.runner import plan_grid
    from harness.status import format_status, grid_status

    status = format_status("killed_live", grid_status("killed_live", plan_grid(load_grid(grid_file))))
    assert re.search(r"train_policy\[dpo\]\s+\w{8}  interrupted: its writer \S+ stopped", status), status
    assert "cell algorithm.beta=0.1: pending (run " in status  # its run is resumed by the next run

    rerun = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(grid_file)], env=env,
                           capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    runs = stage_runs("killed_live", "train_policy")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].info.run_id != killed_run.info.run_id
    assert client.get_run(killed_run.info.run_id).info.lifecycle_stage == "deleted"
    logged = [m.step for m in client.get_metric_history(runs[0].info.run_id, "train/loss")]
    assert sorted(logged) == list(range(1, steps + 1)), "a step is missing or logged twice"
    assert runs[0].data.tags[layout.TAG_STAGE_ATTEMPT] == cache.read_record("train_policy", key)["attempt"]
    assert runs[0].data.tags[layout.TAG_STAGE_ATTEMPT] != left.attempt
    assert cache.work_state("train_policy", key) is None and not cache.running_work()


def test_runs_span_their_work_and_carry_datasets_models_and_costs(tiny_model, isolated_results):
    """Stage runs start and end with their stage (also the copy of a shared stage logged under a second
    cell), cell runs span their stages; the training data and the eval samples are run inputs, the
    trained policy a logged model shown on its stage and cell runs; costs per stage, summed per cell."""
    from harness.grid import build_grid
    from harness.runner import run_grid

    observed: dict[str, list[int]] = {}  # what an observer of the live rows (a pruner) sees

    def observe(stage, attempt: str, rows: list[dict]) -> None:
        observed.setdefault(stage.id, []).extend(int(r["step"]) for r in rows)

    summary = run_grid(build_grid(live_grid("spans", 10, betas=(0.1, 0.3))), echo=lambda _: None, on_rows=observe)
    assert sorted(observed) == sorted(f"train_policy/{r}" for r in
                                      {p.name for p in (isolated_results / "stages" / "train_policy").iterdir()})
    for stage_id, steps in observed.items():  # every row of each history, once, in order
        rows = tracking.read_metric_rows(isolated_results / "stages" / stage_id / "history.jsonl")
        assert steps == [int(r["step"]) for r in rows] and steps[0] == 1 and steps[-1] == 10, (stage_id, steps)
    assert sorted(summary.logged_cells) == ["algorithm.beta=0.1", "algorithm.beta=0.3"]
    client = tracking.client()
    exp = client.get_experiment_by_name("spans")
    assert exp.tags[tracking.EXPERIMENT_KIND_TAG] == "custom_model_development"
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    cells = {r.data.tags["harness.cell"]: r for r in runs if r.data.tags.get(layout.TAG_RUN_TYPE) == "cell"}
    for name, cell in cells.items():
        children = [r for r in runs if r.data.tags.get(layout.TAG_PARENT) == cell.info.run_id]
        assert {c.data.tags[layout.TAG_STAGE_KIND] for c in children} == {"prepare_data", "reference_logps", "train_policy", "evaluate"}
        for child in children:
            record = cache.read_record(child.data.tags[layout.TAG_STAGE_KIND], child.data.tags[layout.TAG_STAGE_HASH])
            assert child.info.start_time == int(record["started_at"] * 1000), (name, child.data.tags)
            assert child.info.end_time == int(record["ended_at"] * 1000)
        assert cell.info.start_time == min(c.info.start_time for c in children)
        assert cell.info.end_time == max(c.info.end_time for c in children)
        train = next(c for c in children if c.data.tags[layout.TAG_STAGE_KIND] == "train_policy")
        assert train.info.end_time - train.info.start_time >= 1000 * float(train.data.metrics["train/runtime_seconds"])

        # Costs: each stage's, the cell's the sum; tokens counted where they were trained and generated.
        for metric in ("cost/wall_seconds", "cost/tokens_trained", "cost/tokens_generated"):
            assert cell.data.metrics[metric] == pytest.approx(sum(c.data.metrics[metric] for c in children))
        assert train.data.metrics["cost/tokens_trained"] > 0 and train.data.tags[layout.TAG_DEVICE] == "cpu"
        evaluate = next(c for c in children if c.data.tags[layout.TAG_STAGE_KIND] == "evaluate")
        assert evaluate.data.metrics["cost/tokens_generated"] > 0
        assert "cost/gpu_hours" not in cell.data.metrics  # on CPU

        # The data as run inputs: the training rows (digest: the data stage's fingerprint) on the train
        # stage, the eval task's data on the evaluate stage, both on the cell; the raw source on the data stage.
        data_stage = next(c for c in children if c.data.tags[layout.TAG_STAGE_KIND] == "prepare_data")
        fingerprint = data_stage.data.tags[layout.TAG_DATA_FINGERPRINT]

        def inputs_of(run) -> list[tuple[str, str, str]]:
            found = client.get_run(run.info.run_id).inputs.dataset_inputs
            return sorted((i.dataset.name, i.dataset.digest, {t.key: t.value for t in i.tags}["mlflow.data.context"])
                          for i in found)

        training = ("smoke-lowercase", fingerprint[:36], "training")
        (evaluation,) = inputs_of(evaluate)
        assert evaluation[0] == "smoke_lowercase" and evaluation[2] == "evaluation" and len(evaluation[1]) == 36
        assert inputs_of(train) == [training]
        assert inputs_of(cell) == sorted([training, evaluation])
        assert [(name, context) for name, _, context in inputs_of(data_stage)] == [("smoke-lowercase", "source")]
        # The policy as a logged model, the output of its stage run and of its cell run.
        models = client.search_logged_models([exp.experiment_id],
                                             filter_string=f"tags.`{layout.TAG_STAGE_HASH}` = '{train.data.tags[layout.TAG_STAGE_HASH]}'")
        assert len(models) == 1 and models[0].tags[layout.TAG_MODEL_PATH].endswith("/model")
        assert Path(models[0].tags[layout.TAG_MODEL_PATH], "config.json").exists()
        for run in (train, cell):
            assert [o.model_id for o in client.get_run(run.info.run_id).outputs.model_outputs] == [models[0].model_id]
    # The shared data stage: one publication, logged under both cells with the same times.
    data_runs = [r for r in runs if r.data.tags.get(layout.TAG_STAGE_KIND) == "prepare_data"]
    assert len(data_runs) == 2 and len({(r.info.start_time, r.info.end_time) for r in data_runs}) == 1

    # The report's compute section: the distinct stages (the shared data stage once), measured.
    from reports.build import build_report
    from reports.costs import cost_of

    index = build_report("spans", isolated_results / "report", tables=[], figures=[]).index.read_text()
    distinct = {r.data.tags[layout.TAG_STAGE_HASH]: r for r in runs if r.data.tags.get(layout.TAG_RUN_TYPE) == "stage"}
    assert len(distinct) == 6  # 1 data + 1 reference log-probs (both betas) + 2 train + 2 evaluate
    total = cost_of(layout.read_cells(exp.experiment_id))
    assert total.stages == 6 and total.devices == {"cpu"}
    assert total.wall_seconds == pytest.approx(sum(r.data.metrics["cost/wall_seconds"] for r in distinct.values()))
    assert total.tokens_trained == sum(r.data.metrics["cost/tokens_trained"] for r in distinct.values()) > 0
    assert "## Compute" in index and re.search(r"^\| all cells \| 6 \| [\dms.]+ \| — \| [\d.]+k? \| [\d.]+k? \| cpu \|$",
                                               index, re.M), index


def test_status_after_a_failure_and_the_failed_run_in_mlflow(broken_helpsteer, tmp_path, tiny_model, capsys):
    from harness.cli import main

    spec = {"experiment": "status_fail", "baseline": False,
            "base": {"model": "tiny-random-llama", "dataset": {"name": "smoke-lowercase", "max_rows": 8},
                     "algorithm": {**LIVE_DPO, "max_steps": 1}, "eval": {"tasks": ["smoke_lowercase"], "limit": 2}},
            "axes": {"dataset": [{"name": "smoke-lowercase", "max_rows": 8}, {"name": "helpsteer", "max_rows": 8}]}}
    grid_file = tmp_path / "grid.yaml"
    grid_file.write_text(yaml.safe_dump(spec))
    assert main(["run", str(grid_file)]) == 1
    capsys.readouterr()
    assert main(["status", str(grid_file)]) == 0
    out = capsys.readouterr().out
    assert "experiment status_fail (grid " in out and "2 cell(s), 1 logged, 1 failed" in out
    assert "cell dataset=smoke-lowercase: logged (run " in out
    assert "cell dataset=helpsteer: failed" in out
    failed_line = next(line for line in out.splitlines() if "prepare_data[helpsteer]" in line)
    assert re.search(r"failed: DataFormatError: .*train\.jsonl\.gz:3: not UTF-8 text", failed_line), failed_line
    assert re.search(r"train_policy\[dpo\]\s+\w{8}  blocked: prepare_data\[helpsteer\] failed", out), out
    # The same from the experiment's name (its cell runs name the grid file), and from the store alone.
    assert main(["status", "status_fail"]) == 0
    assert "cell dataset=helpsteer: failed" in capsys.readouterr().out
    assert main(["status"]) == 0
    assert re.search(r"prepare_data \w+  failed: DataFormatError", capsys.readouterr().out)
    # MLflow: the failed stage is a FAILED run with its error, under its FAILED cell run.
    failed = [r for r in stage_runs("status_fail", "prepare_data") if r.info.status == "FAILED"]
    assert len(failed) == 1 and "not UTF-8 text" in failed[0].data.tags[layout.TAG_STAGE_ERROR]
    parent = tracking.client().get_run(failed[0].data.tags[layout.TAG_PARENT])
    assert parent.info.status == "FAILED" and parent.data.tags["harness.cell"] == "dataset=helpsteer"


@pytest.mark.slow
def test_workers_die_with_a_killed_driver_and_published_stages_stay(tmp_path, tiny_model, isolated_results):
    """`harness run --workers 2` killed with SIGKILL: its pool workers die too (they used to finish their
    stage and stay alive); the rerun keeps the stages published before the kill. Meanwhile, `harness
    status` from another process shows the two running stages."""
    grid_file = tmp_path / "grid.yaml"
    grid_file.write_text(yaml.safe_dump(live_grid("pool_kill", 2000, betas=(0.1, 0.3))))
    env = harness_env(isolated_results)
    run = Harness(["run", str(grid_file), "--workers", "2"], env)

    def two_trainers():
        from harness import progress

        busy = [s for s in cache.running_work() if s.running and s.kind == "train_policy"
                and progress.read(s.path).get("done") and (s.path / "history.jsonl").exists()]
        return busy if len(busy) == 2 else None

    trainers = wait_for(two_trainers, "two training workers", run)
    workers = {int(s.writer["pid"]) for s in trainers}
    assert run.proc.pid not in workers and len(workers) == 2
    # `harness status` in another process while the run works: both trainings, their progress and writers.
    status = subprocess.run([sys.executable, "-m", "harness.cli", "status", str(grid_file)], env=env,
                            capture_output=True, text=True, timeout=120)
    assert status.returncode == 0, status.stderr
    assert "2 cell(s), 2 running" in status.stdout, status.stdout
    training = [line for line in status.stdout.splitlines() if "train_policy[dpo]" in line]
    assert len(training) == 2
    for line in training:
        found = re.search(r"running: step (\d+)/2000, train/loss [-\d.e]+, train/margins [-\d.e]+, for [\dms.]+ by "
                          r"[^:]+:(\d+)$", line)
        assert found and int(found.group(2)) in workers, status.stdout
    data = next((isolated_results / "stages" / "prepare_data").iterdir())
    published_at = cache.read_record("prepare_data", data.name)["published_at"]
    run.kill()

    def gone(pid: int) -> bool:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        return state in ("Z", "X")  # a zombie waits to be reaped: it runs nothing, holds no memory

    wait_for(lambda: all(gone(pid) for pid in workers), "the workers to die", timeout=15)
    assert all(not s.running for s in cache.running_work())
    # A rerun (a short grid sharing the data stage: the killed one's training would take minutes) reuses
    # the stage published before the kill.
    short = tmp_path / "short.yaml"
    short.write_text(yaml.safe_dump(live_grid("pool_kill_short", 5, betas=(0.1,))))
    again = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(short), "--workers", "2"], env=env,
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert cache.read_record("prepare_data", data.name)["published_at"] == published_at


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


@pytest.mark.slow  # ~60 s, most of it the MLflow server starting
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL],
                         ids=["sigterm", "sigkill"])
def test_stopping_harness_ui_stops_its_mlflow_server(stop, isolated_results):
    import urllib.request

    port = _free_port()
    ui = Harness(["ui", "--port", str(port)], harness_env(isolated_results))

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    wait_for(healthy, "the MLflow server", ui, timeout=120, every=0.5)
    server = _descendants(ui.proc.pid)
    assert server, "the server runs in child processes"
    ui.proc.send_signal(stop)
    ui.wait(timeout=60)
    wait_for(lambda: not any(_alive(pid) for pid in server), "the server's processes to stop", timeout=30)
    assert not healthy()


def test_offline_flags_are_set_when_the_hub_is_unreachable_or_asked(monkeypatch):
    from harness import hub

    for flag in hub.OFFLINE_FLAGS:
        monkeypatch.delenv(flag, raising=False)
    monkeypatch.delenv(hub.OFFLINE_ENV, raising=False)
    for proxy in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(proxy, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_free_port()}")  # nothing listens there
    hub.hub_reachable.cache_clear()
    started = time.time()
    assert hub.set_offline_flags() == "hub unreachable"
    assert time.time() - started < hub.CHECK_TIMEOUT_S + 0.5
    assert all(os.environ[flag] == "1" for flag in hub.OFFLINE_FLAGS)

    # Flags the user set are left alone; --offline (or HARNESS_OFFLINE=1) sets them whatever the hub.
    for flag in hub.OFFLINE_FLAGS:
        monkeypatch.setenv(flag, "0")
    assert hub.set_offline_flags() == "set by the environment" and os.environ["HF_HUB_OFFLINE"] == "0"
    assert hub.set_offline_flags(asked=True) == "asked" and os.environ["HF_HUB_OFFLINE"] == "1"

    import socket

    with socket.socket() as server:  # a reachable endpoint: online, no flag set
        server.bind(("127.0.0.1", 0))
        server.listen()
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
        for flag in hub.OFFLINE_FLAGS:
            monkeypatch.delenv(flag)
        hub.hub_reachable.cache_clear()
        assert hub.set_offline_flags() == "online" and "HF_HUB_OFFLINE" not in os.environ
    hub.hub_reachable.cache_clear()


def test_a_working_folder_has_one_writer_and_outlives_a_killed_one(tmp_path):
    """The claim's lock: a second claimer gets nothing while the writer lives; a writer killed with SIGKILL
    leaves its folder and its name, and the next claim takes both over (a new attempt)."""
    claim = cache.claim_work_dir("train_policy", "k1")
    assert claim is not None and claim.previous is None and claim.path == cache.work_dir("train_policy", "k1")
    assert cache.claim_work_dir("train_policy", "k1") is None  # same process, another claimer: refused
    state = cache.work_state("train_policy", "k1")
    assert state.running and state.writer["pid"] == os.getpid() and state.attempt == claim.attempt
    claim.release()

    script = ("import os, signal; from harness import cache; c = cache.claim_work_dir('train_policy', 'k2'); "
              "(c.path / 'history.jsonl').write_text('{\"step\": 1}\\n'); print(os.getpid(), flush=True); "
              "os.kill(os.getpid(), signal.SIGKILL)")
    died = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=os.environ.copy())
    assert died.returncode == -signal.SIGKILL, died.stderr
    dead_pid = int(died.stdout.split()[0])
    left = cache.work_state("train_policy", "k2")
    assert left is not None and not left.running and left.failure is None and left.writer["pid"] == dead_pid
    retry = cache.claim_work_dir("train_policy", "k2")
    assert retry.previous["pid"] == dead_pid and retry.attempt != left.attempt
    assert (retry.path / "history.jsonl").exists()  # handed over as it was; the executor decides what to keep
    cache.reset_work_dir(retry)
    assert not any(retry.path.iterdir())
    (retry.path / "stage.marker").write_text("x")
    published = cache.publish(retry, {"seconds": 1.0})
    retry.release()
    assert cache.is_complete("train_policy", "k2") and (published / "stage.marker").exists()
    assert cache.work_state("train_policy", "k2") is None and cache.claim_work_dir("train_policy", "k2") is None
    record = cache.read_record("train_policy", "k2")
    assert record["attempt"] == retry.attempt and record["started_at"] <= record["ended_at"]


def test_a_failed_stage_says_why_in_its_working_folder(tmp_path):
    from harness.executors import execute_stage

    spec = {"kind": "prepare_data", "key": "broken", "config": {"name": "no-such-dataset", "seed": 0, "max_rows": 2},
            "inputs": {}}
    with pytest.raises(Exception) as raised:
        execute_stage(spec)
    state = cache.work_state("prepare_data", "broken")
    assert state is not None and not state.running
    assert state.failure["error"].startswith(type(raised.value).__name__)
    assert state.failure["attempt"] == state.attempt and "Traceback" in state.failure["details"]
    assert not cache.is_complete("prepare_data", "broken")


def test_library_noise_is_off_unless_verbose(monkeypatch):
    import warnings

    from harness import console

    for name in (console.QUIET_ENV, *console._QUIET_ENVIRONMENT):  # restored after the test
        monkeypatch.delenv(name, raising=False)
    with warnings.catch_warnings():
        console.quiet_libraries(verbose=True)
        assert console.QUIET_ENV not in os.environ and "TQDM_DISABLE" not in os.environ
        console.quiet_libraries(verbose=False)
        assert os.environ[console.QUIET_ENV] == "1" and os.environ["TQDM_DISABLE"] == "1"
        assert os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] == "1"
        with warnings.catch_warnings(record=True) as caught:
            warnings.warn_explicit("gradient_checkpointing is deprecated", FutureWarning, "training_args.py", 1,
                                   module="transformers.training_args")
            warnings.warn_explicit("a harness warning", UserWarning, "x.py", 1, module="harness.executors")
        assert [str(w.message) for w in caught] == ["a harness warning"]


def test_plain_view_prints_events_and_a_progress_line_per_interval():
    import io

    from harness.console import PlainView, StageLine, stage_summary

    out = io.StringIO()
    view = PlainView(out, interval=0.0)
    view.event("  run  train_policy[dpo] 0123456789abcdef0123")
    line = StageLine("train_policy[dpo]", "0123456789abcdef0123", ["algorithm.beta=0.1", "other"], done=40, total=150,
                     metrics={"train/loss": 0.6913, "train/margins": 0.02}, rate=3.2, tokens_rate=1500.0,
                     eta_seconds=34.4, elapsed_seconds=12.0)
    view.running([line])
    view.event(stage_summary("train_policy[dpo]", "0123456789abcdef0123", ["algorithm.beta=0.1"], 133.0,
                             "train_policy", {"train/final_loss": 0.412}))
    assert out.getvalue().splitlines() == [
        "  run  train_policy[dpo] 0123456789abcdef0123",
        "  ... train_policy[dpo] 01234567  algorithm.beta=0.1 (+1 cells)  step 40/150  train/loss 0.6913  "
        "train/margins 0.02  3.20 step/s  1.5k tok/s  elapsed 12s  ETA 34s",
        "  done train_policy[dpo] 0123456789abcdef0123 in 2m13s: train/final_loss 0.412 (cell algorithm.beta=0.1)",
    ]


@pytest.mark.parametrize("batching", ["static", "compact"])
def test_generated_tokens_are_counted_once_whatever_the_batching(batching, tiny_model):
    """The cost's generated tokens: each sample's tokens up to its first EOS, counted once, whether the
    engine calls `generate` (static: the harness.usage wrapper) or decodes itself (compact)."""
    from harness import usage
    from harness.generation import SamplingParams
    from harness.hf_engine import HFGenerator
    from harness.models import load_causal_lm

    model, tok = load_causal_lm(tiny_model)
    generator = HFGenerator(model, tok, batch_size=3, batching=batching)
    prompts = ["hello there", "what is two plus two?", "name a colour", "say nothing", "a"]
    with usage.measuring() as measured:
        samples = generator.generate_samples(prompts, SamplingParams(max_new_tokens=12, temperature=0.0))
    expected = sum(len(s.completion_ids) for row in samples for s in row)
    assert expected > 0 and measured.usage.tokens_generated == expected
    assert measured.usage.tokens_trained == 0 and measured.usage.device == "cpu" and measured.usage.gpu_hours is None
