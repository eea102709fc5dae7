"""The team setup: a real `mlflow server` process on 127.0.0.1 (SQLite-backed by default; PostgreSQL-
backed, with the Optuna study in the same PostgreSQL, when the Debian `postgresql` package and
psycopg 3 are installed). The harness runs against it unchanged, through MLFLOW_TRACKING_URI only."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import tracking
from harness.grid import build_grid
from harness.runner import run_grid


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, timeout: float, log: Path) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout} s:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen) -> None:
    """Stop a server and everything it started (mlflow server forks uvicorn and a job runner)."""
    if proc.poll() is None:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


def start_mlflow_server(backend_store_uri: str, artifacts: Path, log: Path) -> tuple[str, subprocess.Popen]:
    port = free_port()
    # Its own process group, so stopping it also stops the workers it forks.
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", backend_store_uri, "--artifacts-destination", str(artifacts), "--workers", "1"],
        stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/health", proc, timeout=600, log=log)  # seconds normally; minutes on a loaded machine
    except BaseException:
        stop(proc)
        raise
    return url, proc


TINY = {"experiment": "team", "base": {
    "model": "tiny-random-llama", "dataset": {"name": "smoke-lowercase", "max_rows": 8},
    "algorithm": {"name": "dpo", "max_steps": 1, "per_device_train_batch_size": 4,
                  "gradient_accumulation_steps": 1, "max_length": 64, "learning_rate": 1e-4},
    "eval": {"tasks": ["smoke_lowercase"], "limit": 2}}, "axes": {"algorithm.beta": [0.1]}}


def check_grid_against_server(url: str) -> None:
    summary = run_grid(build_grid(TINY), echo=lambda _: None)
    assert sorted(summary.logged_cells) == ["algorithm.beta=0.1", "sft"]
    assert tracking.tracking_uri() == url
    client = tracking.client()
    exp = client.get_experiment_by_name("team")
    # The server chose the artifact location (proxied artifacts), not a local folder of ours.
    assert exp.artifact_location.startswith("mlflow-artifacts:")
    runs = client.search_runs([exp.experiment_id], max_results=100)
    cell = next(r for r in runs if r.data.tags.get("harness.cell") == "algorithm.beta=0.1")
    assert cell.info.status == "FINISHED" and cell.data.params["algorithm.beta"] == "0.1"
    assert "smoke_lowercase/clean_success_rate" in cell.data.metrics
    evaluate = next(r for r in runs if r.data.tags.get("harness.stage_kind") == "evaluate"
                    and r.data.tags.get("mlflow.parentRunId") == cell.info.run_id)
    # Artifacts went through the server and come back from it.
    local = client.download_artifacts(evaluate.info.run_id, "samples/smoke_lowercase.samples.jsonl")
    assert Path(local).read_text().strip()
    # Idempotent against the server too: a rerun logs nothing new.
    again = run_grid(build_grid(TINY), echo=lambda _: None)
    assert again.logged_cells == [] and len(client.search_runs([exp.experiment_id], max_results=100)) == len(runs)


@pytest.mark.slow  # ~45 s: a real MLflow server process
def test_harness_against_sqlite_backed_mlflow_server(tiny_model, tmp_path, monkeypatch):
    url, proc = start_mlflow_server(f"sqlite:///{tmp_path / 'server.db'}", tmp_path / "artifacts",
                                    tmp_path / "server.log")
    try:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        check_grid_against_server(url)
        # The artifacts live in the server's store, not under our results dir.
        assert list((tmp_path / "artifacts").rglob("smoke_lowercase.samples.jsonl"))
    finally:
        stop(proc)
    assert proc.poll() is not None


def _postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


@pytest.fixture
def postgres() -> Iterator[str]:
    """A throw-away PostgreSQL cluster on 127.0.0.1 (trust auth), stopped and removed afterwards."""
    pg_bin = _postgres_bin()
    if pg_bin is None:
        pytest.skip("PostgreSQL server binaries not installed (apt-get install -y postgresql)")
    pytest.importorskip("psycopg", reason="psycopg (3) not installed: pip install 'psycopg[binary]' (SQLAlchemy 2.1 default driver)")
    # Not under pytest's tmp_path: its parents are private to root, and PostgreSQL refuses to run as root.
    root = Path(tempfile.mkdtemp(prefix="harness-pg-"))
    data, sockets = root / "pgdata", root / "sock"
    sockets.mkdir()
    as_user: list[str] = []
    if os.geteuid() == 0:
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres")
        shutil.chown(sockets, "postgres")
    subprocess.run([*as_user, str(pg_bin / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                    "-E", "UTF8"], check=True, capture_output=True)
    port = free_port()
    subprocess.run([*as_user, str(pg_bin / "pg_ctl"), "-D", str(data), "-l", str(root / "pg.log"), "-w",
                    "-t", "300", "-o", f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1", "start"],
                   check=True, capture_output=True)
    try:
        for db in ("mlflow", "optuna"):
            subprocess.run([*as_user, str(pg_bin / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
                            db], check=True, capture_output=True)
        yield f"postgresql://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run([*as_user, str(pg_bin / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_team_setup_postgres_mlflow_server_and_optuna_storage(tiny_model, tmp_path, monkeypatch, postgres):
    from harness.sweep.spec import parse_sweep
    from harness.sweep.workers import run_sweep

    url, proc = start_mlflow_server(f"{postgres}/mlflow", tmp_path / "artifacts", tmp_path / "server.log")
    try:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        check_grid_against_server(url)
        sweep = {"experiment": "team_sweep", "base": TINY["base"], "n_trials": 1,
                 "search": {"algorithm.beta": {"type": "float", "low": 0.05, "high": 0.5, "log": True}},
                 "objective": {"metric": "smoke_lowercase/clean_success_rate", "direction": "maximize"}}
        summary = run_sweep(parse_sweep(sweep), storage_url=f"{postgres}/optuna", echo=lambda _: None)
        assert [t["state"] for t in summary["team_sweep"]["trials"]] == ["COMPLETE"]
        client = tracking.client()
        runs = client.search_runs([client.get_experiment_by_name("team_sweep").experiment_id])
        parent = next(r for r in runs if r.data.tags.get("harness.run_type") == "study")
        # The storage URL is recorded without credentials.
        assert parent.data.tags["harness.optuna_storage"] == f"{postgres}/optuna"
    finally:
        stop(proc)
