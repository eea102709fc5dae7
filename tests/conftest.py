"""Shared fixtures. Every test gets its own results dir (MLflow store, stage cache); built zoo models
are shared across tests and runs through `HARNESS_MODEL_DIR` (building them is the slow part)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("HARNESS_MODEL_DIR", str(REPO / "results" / "models"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")

SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def isolated_results(tmp_path, monkeypatch):
    """A fresh results dir per test; MLFLOW_TRACKING_URI unset so the default local store is used."""
    results = tmp_path / "results"
    results.mkdir()
    monkeypatch.setenv("HARNESS_RESULTS_DIR", str(results))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return results


def use_results(monkeypatch: pytest.MonkeyPatch, results: Path) -> Path:
    """Point the harness (stage store, MLflow) at `results`. MLFLOW_TRACKING_URI is unset because
    `mlflow.set_tracking_uri` (called by tracking.client) exports it: it would keep naming the store of
    whichever test ran before."""
    monkeypatch.setenv("HARNESS_RESULTS_DIR", str(results))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return results


def run_grids_in(results: Path, *specs: dict) -> list:
    """Run grid specs into the stores under `results` (one thread for torch), returning their summaries:
    a module-wide runner-made store that a module's tests then read."""
    from harness.grid import build_grid
    from harness.runner import run_grid

    with pytest.MonkeyPatch.context() as mp:
        use_results(mp, results)
        mp.setenv("OMP_NUM_THREADS", "1")
        return [run_grid(build_grid(spec), echo=lambda _: None) for spec in specs]


@pytest.fixture(scope="session")
def tiny_model() -> str:
    from harness.models import resolve_model

    return resolve_model("tiny-random-llama")


@pytest.fixture(scope="session")
def smollm2() -> str:
    from harness.models import resolve_model

    return resolve_model("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present on this machine")
    return SHARED_DATA
