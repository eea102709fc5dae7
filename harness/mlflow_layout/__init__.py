"""The MLflow layout: what the harness writes to MLflow and how it reads it back. This package is the
only one that names a `harness.*` tag or a run type; `harness.tracking` below it is the plain plumbing
(store, client, batching).

Layout, per MLflow experiment (one per grid):
- cell run (`harness.run_type=cell`), one per grid cell. Tags: `harness.cell` (name),
  `harness.cell_key` (content key of its final stage), `harness.grid`, `harness.grid_file`,
  `harness.is_baseline`, `harness.git_sha`, `harness.overrides` (the cell's grid overrides, JSON),
  `harness.policy_path`, `harness.reward_model_path` (a JSON list for an RM ensemble),
  `harness.stage.<kind>[.<dataset>]` (stage keys; `train_reward_model.<i>` per ensemble member),
  `harness.data_fingerprint.<dataset>`, the evaluation's `harness.eval.*` tags (below) and the
  over-optimisation monitor's verdicts `harness.monitor.*` (harness/monitor.py). Params: the flattened
  resolved config. Artifact `resolved_config.json`. Metrics: every non-data stage's metrics; checkpoint
  evaluations as histories; `cost/*` summed over its stages (a stage shared by cells counts in each).
  Inputs and outputs: its stages' datasets and its trained policy's logged model. It starts with its
  first stage (created when that stage starts, or at logging time from the stage records when all were
  cached) and ends with its last stage's end.
- stage run (`harness.run_type=stage`), nested (`mlflow.parentRunId`) under each cell run that uses the
  stage. Tags: `harness.stage_kind`, `harness.stage_hash`, `harness.stage_dir`, `harness.stage_attempt`
  (the working-folder claim whose curve a live run shows), `harness.stage_seconds`, `harness.device`,
  `harness.data_fingerprint`, `harness.model_path`, `harness.adapter_path` (LoRA), `harness.stage_error`
  (a FAILED run's error), plus the stage's own tags (e.g. `harness.rewardbench`; the evaluate stage's
  `harness.eval.missing` (comma list: tasks not run because an input was missing),
  `harness.eval.skipped.<task>` (why a task has no score), `harness.eval.reused` (comma list: tasks taken
  from the task store instead of rerun), and the same three under `harness.eval.bon.` for best-of-N;
  `harness.monitor.*`). Params: the stage config. Metrics: final values, step histories (training curves,
  logged live while the stage runs), checkpoint evaluations over steps, its cost (`cost/wall_seconds`,
  `cost/tokens_trained`, `cost/tokens_generated`, `cost/gpu_hours` on GPU). Inputs: its training data
  (context `training`), evaluation data (`evaluation`) or raw source (`source`) as MLflow datasets with
  their digests. Outputs: a trained policy or reward model as an MLflow logged model (one per stage key
  and experiment; it points at the stage folder, `harness.model_path`, weights are not copied).
  Artifacts: `config.json`, the stage's `artifacts/` folder (e.g. `samples/<task>.samples.jsonl`,
  `rm_scores.jsonl`), `model/` when small, `adapter/` (LoRA). Start and end times are the stage's own
  work's.
- study run (`harness.run_type=study`) per Optuna study; a trial's cell run is re-parented under it
  and tagged `harness.study`, `harness.trial_number`, `harness.trial_state`, `harness.kl_coefficient`;
  a pruned trial is its own KILLED run (`harness.run_type=trial`).
- judge: `judge/*` metrics appended (next free step) on cell runs, one `harness.run_type=judge` run.
- `harness eval`: one `harness.run_type=eval` run per invocation.
- report run (`harness.run_type=report`), one per `harness report`: the index, tables and figures it built
  as artifacts (`report/`), the built and skipped items as params and tags, the index as its description.
- the experiment itself: its description (`mlflow.note.content`) says which grid file and profile made it;
  tags `harness.grid_file`, `harness.profile`, `harness.device_profile` (the device the report's compute
  columns are estimated on by default), written by `describe_experiment` whenever a grid runs.

Reading: "the latest FINISHED run wins" (`latest_finished`) is the one rule by which a cell's run is
chosen, for the runner's resume and skip, the sweep, the judge and the reports alike.

Lifecycle (so that a run can be created when its work starts and finished when it ends): `open_*`
creates or resumes a run and writes what is known up front (identity tags, params), `log_steps`
appends step metrics, `finish_*` writes the results and terminates it; `start_time_ms`/`end_time_ms`
set the run's times to the work's. Every writer is idempotent: rerun after a crash at any point, it
converges to the state an uninterrupted run leaves.

Fault injection (tests only): with `HARNESS_KILL_AT=<point>` the process SIGKILLs itself at that
point, so a test can stop a real run exactly there. Points: `cell_run_created` (right after a cell
run is created, before its params, tags and artifacts are written), `history_step:<n>` (right after a
training stage wrote step n's row to its history.jsonl: `harness.algorithms.base.History`).

Modules (this package re-exports their public names: use `from harness import mlflow_layout as layout`):
`names` (run types, tags, fault points, `latest_finished`), `stage_runs`, `cells` (cell runs and the
evaluation tags), `sweeps` (study and trial runs), `experiment` (judge, `harness eval` and report runs, the experiment's
description), `reader` (`read_cells`, artifacts, metric histories).
"""

from __future__ import annotations

from harness.mlflow_layout.cells import (
    CellRunInfo,
    cell_runs,
    evaluation_tags,
    evaluation_tags_of,
    finish_cell_run,
    logged_cell_run,
    open_cell_run,
    tasks_without_result,
)
from harness.mlflow_layout.experiment import (
    ExperimentInfo,
    append_metrics,
    describe_experiment,
    experiment_tags,
    log_eval_run,
    log_judge_run,
    log_report_run,
    model_path_of_run,
    report_runs,
)
from harness.mlflow_layout.names import (
    FAULT_ENV,
    MAX_MODEL_ARTIFACT_BYTES,
    RESOLVED_CONFIG_ARTIFACT,
    RUN_TYPE_CELL,
    RUN_TYPE_EVAL,
    RUN_TYPE_JUDGE,
    RUN_TYPE_REPORT,
    RUN_TYPE_STAGE,
    RUN_TYPE_STUDY,
    RUN_TYPE_TRIAL,
    TAG_ADAPTER_PATH,
    TAG_BEST_CELL,
    TAG_BEST_PARAM_PREFIX,
    TAG_BEST_TRIAL,
    TAG_CELL,
    TAG_CELL_KEY,
    TAG_DATA_FINGERPRINT,
    TAG_DEVICE,
    TAG_DEVICE_PROFILE,
    TAG_EVAL_BON_PREFIX,
    TAG_EVAL_PREFIX,
    TAG_GIT_SHA,
    TAG_GRID,
    TAG_GRID_FILE,
    TAG_IS_BASELINE,
    TAG_JUDGE_REFERENCE,
    TAG_KL_COEFFICIENT,
    TAG_MODEL_PATH,
    TAG_MONITOR_PREFIX,
    TAG_NOTE,
    TAG_OPTUNA_STORAGE,
    TAG_OVERRIDES,
    TAG_PARENT,
    TAG_PARETO_FRONT,
    TAG_PARETO_FRONT_TRIALS,
    TAG_POLICY_PATH,
    TAG_PROFILE,
    TAG_REPORT_ITEMS,
    TAG_REPORT_SKIPPED_PREFIX,
    TAG_REWARD_MODEL_PATH,
    TAG_REWARDBENCH,
    TAG_RUN_NAME,
    TAG_RUN_TYPE,
    TAG_STAGE_ATTEMPT,
    TAG_STAGE_DIR,
    TAG_STAGE_ERROR,
    TAG_STAGE_HASH,
    TAG_STAGE_KEY_PREFIX,
    TAG_STAGE_KIND,
    TAG_STAGE_SECONDS,
    TAG_STUDY,
    TAG_SWEEP_FILE,
    TAG_TRIAL_NUMBER,
    TAG_TRIAL_STATE,
    fault_point,
    latest_finished,
    stage_key_tag,
)
from harness.mlflow_layout.reader import (
    CellRun,
    ExperimentRef,
    StageRun,
    fetch_artifact,
    find_experiment,
    metric_history,
    read_cells,
)
from harness.mlflow_layout.stage_runs import (
    DataInput,
    StageResult,
    StageRunInfo,
    end_unfinished_run,
    fail_stage_run,
    finish_stage_run,
    link_models,
    log_data_inputs,
    log_stage_run,
    log_steps,
    logged_model_of,
    open_stage_run,
    stage_attempt,
    stage_run_under,
)
from harness.mlflow_layout.sweeps import (
    StudySummary,
    log_pruned_trial,
    log_study_summary,
    nest_trial,
    open_study_run,
    study_run_id,
    study_runs,
)

__all__ = [
    "CellRun", "CellRunInfo", "DataInput", "ExperimentInfo", "ExperimentRef", "FAULT_ENV",
    "MAX_MODEL_ARTIFACT_BYTES", "RESOLVED_CONFIG_ARTIFACT", "RUN_TYPE_CELL", "RUN_TYPE_EVAL",
    "RUN_TYPE_JUDGE", "RUN_TYPE_REPORT", "RUN_TYPE_STAGE", "RUN_TYPE_STUDY", "RUN_TYPE_TRIAL",
    "StageResult", "StageRun", "StageRunInfo", "StudySummary", "TAG_ADAPTER_PATH", "TAG_BEST_CELL",
    "TAG_BEST_PARAM_PREFIX", "TAG_BEST_TRIAL", "TAG_CELL", "TAG_CELL_KEY", "TAG_DATA_FINGERPRINT",
    "TAG_DEVICE", "TAG_DEVICE_PROFILE", "TAG_EVAL_BON_PREFIX", "TAG_EVAL_PREFIX", "TAG_GIT_SHA", "TAG_GRID",
    "TAG_GRID_FILE", "TAG_IS_BASELINE", "TAG_JUDGE_REFERENCE", "TAG_KL_COEFFICIENT", "TAG_MODEL_PATH",
    "TAG_MONITOR_PREFIX", "TAG_NOTE", "TAG_OPTUNA_STORAGE", "TAG_OVERRIDES", "TAG_PARENT",
    "TAG_PARETO_FRONT", "TAG_PARETO_FRONT_TRIALS", "TAG_POLICY_PATH", "TAG_PROFILE", "TAG_REPORT_ITEMS",
    "TAG_REPORT_SKIPPED_PREFIX", "TAG_REWARDBENCH", "TAG_REWARD_MODEL_PATH", "TAG_RUN_NAME", "TAG_RUN_TYPE",
    "TAG_STAGE_ATTEMPT", "TAG_STAGE_DIR", "TAG_STAGE_ERROR", "TAG_STAGE_HASH", "TAG_STAGE_KEY_PREFIX",
    "TAG_STAGE_KIND", "TAG_STAGE_SECONDS", "TAG_STUDY", "TAG_SWEEP_FILE", "TAG_TRIAL_NUMBER",
    "TAG_TRIAL_STATE", "append_metrics", "cell_runs", "describe_experiment", "end_unfinished_run",
    "evaluation_tags", "evaluation_tags_of", "experiment_tags", "fail_stage_run", "fault_point",
    "fetch_artifact", "find_experiment", "finish_cell_run", "finish_stage_run", "latest_finished",
    "link_models", "log_data_inputs", "log_eval_run", "log_judge_run", "log_pruned_trial", "log_report_run",
    "log_stage_run", "log_steps", "log_study_summary", "logged_cell_run", "logged_model_of",
    "metric_history", "model_path_of_run", "nest_trial", "open_cell_run", "open_stage_run",
    "open_study_run", "read_cells", "report_runs", "stage_attempt", "stage_key_tag", "stage_run_under",
    "study_run_id", "study_runs", "tasks_without_result",
]
