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


@pytest.fixture
def root_only_canary():
    """A root-only file (0600) in /tmp holding a fresh secret, and the strings sandboxed code must never
    leak: that secret and the lines of /etc/shadow (when this process can read it)."""
    import secrets

    secret = secrets.token_hex(16)
    path = Path(f"/tmp/prefharness-canary-{secrets.token_hex(4)}")
    path.write_text(secret)
    path.chmod(0o600)
    try:
        shadow = [line for line in Path("/etc/shadow").read_text().splitlines() if ":" in line]
    except OSError:
        shadow = []
    yield path, [secret, *shadow]
    path.unlink()
