"""`run_sweep`: start (or resume) a sweep, creating its studies, then run the trials in this process or in
`--join` worker processes that split each study's remaining trials; or join a running sweep."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.grid import build_grid
from harness.sweep.optuna_factories import default_storage, open_storage
from harness.sweep.spec import SweepError, SweepFile, study_names
from harness.sweep.study import create_studies, log_study_summary
from harness.sweep.trial import SweepWorker


def run_sweep(spec: SweepFile, storage_url: str | None = None, workers: int = 1, join: bool = False,
              worker_index: int = 0, n_trials: int | None = None, backend: str = "local",
              backend_options: dict[str, Any] | None = None, source: Path | None = None,
              worker_argv: list[str] | None = None, quotas: dict[str, int] | None = None,
              echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or resume, or join) a sweep. Returns {study name: summary} (empty for a --join worker).

    Without `join`: creates the studies and their parent runs, re-queues stale trials, logs the SFT
    baseline if asked, runs the trials in this process (workers=1) or in `workers` subprocesses, then
    logs the summaries. With `join`: runs up to `n_trials` trials per study on existing studies
    (`quotas`: per-study counts, set by the starting process for its subprocesses).
    `worker_argv` is the sweep's command line for the subprocesses (file and --set options).
    """
    storage_url = storage_url or spec.storage or default_storage()
    storage = open_storage(storage_url)
    backend_options = dict(backend_options or {})
    studies = study_names(spec)
    if join:
        for study_name, partition in studies:
            worker = SweepWorker(spec, study_name, partition, storage, storage_url, backend, backend_options,
                                 worker_index, echo)
            if quotas is not None:
                quota = int(quotas.get(study_name, 0))
            else:
                quota = n_trials if n_trials is not None else _remaining(worker.study, spec.n_trials)
            worker.optimize(quota)
        return {}

    remaining = create_studies(spec, storage, storage_url, source, echo)
    if n_trials is not None:
        remaining = {name: min(left, n_trials) for name, left in remaining.items()}
    if spec.baseline:
        _log_baseline(spec, backend, backend_options, echo)
    if workers <= 1:
        for study_name, partition in studies:
            SweepWorker(spec, study_name, partition, storage, storage_url, backend, backend_options, worker_index,
                        echo).optimize(remaining[study_name])
    else:
        if worker_argv is None:
            raise SweepError("workers > 1 needs the sweep's command line (worker_argv) to start the workers")
        _run_worker_processes(worker_argv, storage_url, workers, remaining, backend, backend_options, echo)
    return {name: log_study_summary(spec, storage, name) for name, _ in studies}


def _remaining(study: Any, target: int) -> int:
    from optuna.trial import TrialState

    return max(0, target - len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))))


def _split(total: int, workers: int) -> list[int]:
    return [total // workers + (1 if i < total % workers else 0) for i in range(workers)]


def _log_baseline(spec: SweepFile, backend: str, backend_options: dict[str, Any], echo: Callable[[str], None]) -> None:
    from harness.runner import run_grid

    config = {k: copy.deepcopy(v) for k, v in spec.base.items() if k in ("model", "eval", "seed", "judge")}
    grid = build_grid({"experiment": spec.experiment, "base": config, "baseline": True}, only="sft")
    run_grid(grid, backend=backend, echo=echo, backend_options=backend_options)


def _run_worker_processes(worker_argv: list[str], storage_url: str, workers: int, remaining: dict[str, int],
                          backend: str, backend_options: dict[str, Any], echo: Callable[[str], None]) -> None:
    """Start `workers` `python -m harness.sweep ... --join` processes, splitting each study's
    remaining trials between them (so the total is exact), and wait for all of them."""
    quotas = {name: _split(left, workers) for name, left in remaining.items()}
    procs: list[subprocess.Popen] = []
    try:
        for index in range(workers):
            # Studies run one after another in a worker; a worker's quota is the same for each study
            # only when the splits agree, so pass the per-study quotas explicitly.
            per_study = json.dumps({name: q[index] for name, q in quotas.items()})
            cmd = [sys.executable, "-m", "harness.sweep", *worker_argv, "--join", "--worker-index", str(index),
                   "--storage", storage_url, "--quotas", per_study, "--backend", backend]
            if backend_options.get("address"):
                cmd += ["--ray-address", str(backend_options["address"])]
            procs.append(subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}))
            echo(f"worker {index}: pid {procs[-1].pid}, trials {per_study}")
        codes = [p.wait() for p in procs]
    except BaseException:
        for p in procs:  # do not leave workers running on the study
            if p.poll() is None:
                p.terminate()
        for p in procs:
            p.wait()
        raise
    failed = [i for i, code in enumerate(codes) if code != 0]
    if failed:
        raise RuntimeError(f"sweep worker(s) {failed} exited with codes {[codes[i] for i in failed]}")
