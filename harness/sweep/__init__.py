"""Optuna sweeps over any config field (the KL coefficient first), each trial a grid cell.

    harness sweep ablations/fig4_kl_sweep.yaml [--profile NAME] [--storage URL] [--workers N] [--n-trials N]
                  [--backend local|ray] [--set base.model=tiny-random-llama ...]

A sweep file is a grid file's `base` (and optional `axes`) plus a search block:

    experiment: kl_sweep
    base: {model: ..., algorithm: {name: ppo, ...}, reward_model: {...}, eval: {...}}
    axes: {reward_model.dataset.max_rows: [64, 1024]}   # optional: one study per combination
    search:
      algorithm.kl_coef: {type: float, low: 0.005, high: 0.5, log: true}
      algorithm.learning_rate: {type: float, low: 1.0e-6, high: 1.0e-4, log: true}
      algorithm.num_epochs: {type: int, low: 1, high: 3}
      algorithm.loss_type: {type: categorical, choices: [sigmoid, ipo]}
    objective: {metric: smoke_lowercase/clean_success_rate, direction: maximize}
    # or objectives: [{metric: rm_reward/mean, direction: maximize},
    #                 {metric: policy_kl/kl_mean, direction: minimize}]   -> Pareto front
    n_trials: 12                 # per study, counted over every run of the sweep (resumable)
    sampler: {name: tpe, seed: 0}            # tpe | random | grid | nsgaii | qmc (+ options)
    pruner: {name: median, metric: train/loss, direction: minimize,   # optional; median | percentile |
             options: {n_startup_trials: 2}}       # successive_halving | hyperband | threshold | none
    storage: null                # default: SQLite under results/optuna/
    baseline: true               # also log the SFT cell once (the "no training" reference)

How it maps onto the grid machinery (nothing of the runner is duplicated):
- a trial's parameters are set on `base` as single-valued axes, so `build_grid` validates the trial
  and names its cell like any grid cell (`algorithm.kl_coef=0.031`); its stages are planned by
  `plan_cell`, cached in the content-addressed store, executed by a backend and logged by `run_grid`
  / `log_cell`, i.e. the same MLflow cell run (with stage child runs) a grid would produce;
- that cell run is then nested under the study's parent run by setting `mlflow.parentRunId` and the
  trial tags. Both are plain tag writes, so a rerun after a crash at any point converges: the cell is
  found by (name, content key) and skipped or resumed by `log_cell`, the tags are written again;
- the study's parent run is created once per study, by the process that creates the Optuna study,
  before any worker starts (two workers racing to create either would duplicate it).

Resuming: rerunning the same command loads the study and runs only the trials still missing. Trials
left RUNNING by a stopped sweep are marked FAIL and their parameters queued again, so the same cell
is picked up (its finished stages are cached, its MLflow run is resumed). Only the process started
without `--join` does that, so never start one while `--join` workers still run on the study.

Pruning: when a `pruner` is set, the trial's train stage reports its steps while it trains
(`harness.sweep.trial.TrainingReporter`, the observer of `run_grid`'s live rows: the same values the driver logs to MLflow;
negated when `pruner.direction` differs from the study's, as Optuna compares in the study's direction).
When the pruner says prune, a stop request goes to the stage's working folder (`harness.resume`): the
trainer saves a resume checkpoint after the current step and ends, the stage is never published and the
evaluation never runs. A pruned trial is logged as a KILLED run under the study with its params and
reported values. Checkpoint evaluations (`eval.checkpoint_every`) come after training, in the evaluate
stage: they are not reported.

Several workers: `--workers N` starts N worker processes on the study after creating it (use a
JournalStorage file or PostgreSQL: `--storage journal:results/optuna/kl.journal` or
`--storage postgresql://...`); workers on other machines join with `--join --n-trials K`. Each worker's
sampler seed mixes the file's seed, the worker index and the study's trial count: identically seeded
workers (or a resumed sweep) would otherwise draw identical parameters. A trial whose parameters another trial already has waits for that one and reuses its
values instead of computing the same cell twice.

Modules, top-down (each imports only those below it):
- `cli`: `harness sweep` / `python -m harness.sweep`: arguments, `--dry-run`, output;
- `plan`: the plan of one trial per study, the inputs this machine lacks, the cost estimate (`--dry-run`);
- `workers`: `run_sweep`: create or join the studies, run the trials here or in worker processes;
- `trial`: `SweepWorker` (one study's trials in this process) and `TrainingReporter` (pruning while training);
- `study`: the studies' setup and re-queueing, and their MLflow bookkeeping (through `harness.mlflow_layout`);
- `optuna_factories`: Optuna storages, samplers, pruners, suggestions;
- `spec`: the sweep file's schema, loading and validation; a trial's one-cell grid.
"""
