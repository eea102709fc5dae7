"""The layout's names: run types, `harness.*` tags, artifact names and limits; the fault points of the
crash tests; the one rule by which a run is chosen among a cell's runs (`latest_finished`)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterable
from typing import Any

RUN_TYPE_CELL = "cell"
RUN_TYPE_STAGE = "stage"
RUN_TYPE_STUDY = "study"
RUN_TYPE_TRIAL = "trial"
RUN_TYPE_JUDGE = "judge"
RUN_TYPE_EVAL = "eval"
RUN_TYPE_REPORT = "report"

TAG_PARENT = "mlflow.parentRunId"  # MLflow's own nesting tag
TAG_RUN_NAME = "mlflow.runName"
TAG_NOTE = "mlflow.note.content"
TAG_RUN_TYPE = "harness.run_type"
TAG_GIT_SHA = "harness.git_sha"
# cell runs
TAG_CELL = "harness.cell"
TAG_CELL_KEY = "harness.cell_key"
TAG_GRID = "harness.grid"
TAG_GRID_FILE = "harness.grid_file"
TAG_IS_BASELINE = "harness.is_baseline"
TAG_OVERRIDES = "harness.overrides"
TAG_POLICY_PATH = "harness.policy_path"
TAG_REWARD_MODEL_PATH = "harness.reward_model_path"
TAG_STAGE_KEY_PREFIX = "harness.stage."  # + <kind>[.<dataset>] = stage key
TAG_DATA_FINGERPRINT = "harness.data_fingerprint"  # on a stage run; + .<dataset> on a cell run
# stage runs
TAG_STAGE_KIND = "harness.stage_kind"
TAG_STAGE_HASH = "harness.stage_hash"
TAG_STAGE_DIR = "harness.stage_dir"
TAG_STAGE_SECONDS = "harness.stage_seconds"
TAG_STAGE_ATTEMPT = "harness.stage_attempt"
TAG_STAGE_ERROR = "harness.stage_error"
TAG_DEVICE = "harness.device"
TAG_MODEL_PATH = "harness.model_path"
TAG_ADAPTER_PATH = "harness.adapter_path"  # a LoRA run's adapter folder (harness.lora)
# the over-optimisation monitor's verdicts (harness.monitor), on the evaluate stage run and its cell run
TAG_MONITOR_PREFIX = "harness.monitor."
TAG_REWARDBENCH = "harness.rewardbench"  # written by the reward-model stage: scored, or skipped and why
# written by the evaluate stage (`evaluation_tags`), copied onto the cell run
TAG_EVAL_PREFIX = "harness.eval."
TAG_EVAL_BON_PREFIX = "harness.eval.bon."
# sweeps
TAG_STUDY = "harness.study"
TAG_OPTUNA_STORAGE = "harness.optuna_storage"
TAG_SWEEP_FILE = "harness.sweep_file"
TAG_TRIAL_NUMBER = "harness.trial_number"
TAG_TRIAL_STATE = "harness.trial_state"
TAG_KL_COEFFICIENT = "harness.kl_coefficient"
TAG_BEST_TRIAL = "harness.best_trial"
TAG_BEST_CELL = "harness.best_cell"
TAG_BEST_PARAM_PREFIX = "harness.best."  # + <searched field>
TAG_PARETO_FRONT_TRIALS = "harness.pareto_front_trials"
TAG_PARETO_FRONT = "harness.pareto_front"  # on a trial's cell run
# judge
TAG_JUDGE_REFERENCE = "harness.judge.reference"
# the grid's profile (cell runs and the experiment), and the experiment's grid file / default device
TAG_PROFILE = "harness.profile"
TAG_DEVICE_PROFILE = "harness.device_profile"
# report runs
TAG_REPORT_ITEMS = "harness.report.items"
TAG_REPORT_SKIPPED_PREFIX = "harness.report.skipped."  # + item name = why it was not built

RESOLVED_CONFIG_ARTIFACT = "resolved_config.json"
# Models bigger than this are not copied into the MLflow artifact store; `harness.model_path` points
# at the stage cache.
MAX_MODEL_ARTIFACT_BYTES = 50 * 1024 * 1024
_MAX_TAG_LEN = 5000
FAULT_ENV = "HARNESS_KILL_AT"


def fault_point(name: str) -> None:
    """SIGKILL this process here when `HARNESS_KILL_AT` names this point (tests of crash recovery)."""
    if os.environ.get(FAULT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def stage_key_tag(kind: str, dataset: str | None = None) -> str:
    return f"{TAG_STAGE_KEY_PREFIX}{kind}" + (f".{dataset}" if dataset else "")


def _now_ms() -> int:
    return int(time.time() * 1000)


def _clip(value: Any) -> str:
    return str(value)[:_MAX_TAG_LEN]


def latest_finished(runs: Iterable[Any]) -> Any | None:
    """The rule every reader uses to pick a cell's run: the latest FINISHED one (None if none is)."""
    finished = [r for r in runs if r.info.status == "FINISHED"]
    return max(finished, key=lambda r: (r.info.start_time or 0, r.info.run_id)) if finished else None
