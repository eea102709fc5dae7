"""The local MLflow store survives a process killed while it was being created."""

from __future__ import annotations

import os
import subprocess
import sys

# Build the initial tables, then die before MLflow's migrations run: the moment a real SIGKILL hit in
# CI (the next run then failed with "table ... already exists").
_KILLED_MID_CREATION = """
import os, signal
import mlflow.store.db.utils as db_utils
db_utils._upgrade_db = lambda engine: os.kill(os.getpid(), signal.SIGKILL)
from harness.tracking import client
client()
"""


def test_store_killed_during_creation_is_not_left_half_built(tmp_path):
    env = {**os.environ, "HARNESS_RESULTS_DIR": str(tmp_path)}
    env.pop("MLFLOW_TRACKING_URI", None)
    killed = subprocess.run([sys.executable, "-c", _KILLED_MID_CREATION], env=env, capture_output=True)
    assert killed.returncode == -9
    assert not (tmp_path / "mlflow.db").exists()  # the half-built schema stayed private
    ok = subprocess.run(
        [sys.executable, "-c", "from harness.tracking import setup_experiment; print(setup_experiment('e'))"],
        env=env, capture_output=True, text=True,
    )
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert ok.stdout.strip().splitlines()[-1].isdigit()
    assert (tmp_path / "mlflow.db").exists()
