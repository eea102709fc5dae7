"""Optuna objects made from the sweep file: storages (SQLite, journal file, PostgreSQL), the per-worker
sampler, the pruner, a trial's suggestions."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from harness.sweep.spec import PrunerSpec, SamplerSpec, SearchParam, SweepError


def default_storage() -> str:
    from harness.paths import results_dir

    folder = results_dir() / "optuna"
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'studies.db'}"


def redact(url: str) -> str:
    """A storage URL without its password (for logs, tags and messages)."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def open_storage(url: str):
    """`journal:PATH` (or a path ending in .journal/.log) -> JournalStorage on a file (safe for
    several processes, also on NFS with the symlink lock); anything else is an RDB URL
    (sqlite:///..., postgresql://user@host/db)."""
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    if url.startswith("journal:") or url.endswith((".journal", ".log")):
        path = Path(url.removeprefix("journal:")).expanduser().resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path))))
    if "://" not in url:
        raise SweepError(f"storage {redact(url)!r}: expected journal:PATH, sqlite:///PATH or postgresql://...")
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        Path(url.split(":///", 1)[1]).parent.mkdir(parents=True, exist_ok=True)
        # Several local processes on one SQLite file wait for the write lock instead of failing at once.
        engine_kwargs = {"connect_args": {"timeout": 120}}
    return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)


def make_sampler(spec: SamplerSpec, search: dict[str, SearchParam], worker_index: int = 0, n_existing: int = 0):
    """The study's sampler for one worker. Its seed mixes the file's seed with the worker index and
    the number of trials the study already has: a resumed sweep or a second worker seeded like the
    first would otherwise replay the same random draws, i.e. the same parameters."""
    import numpy as np
    import optuna

    seed = None
    if spec.seed is not None:
        seed = int(np.random.SeedSequence([spec.seed, worker_index, n_existing]).generate_state(1)[0] % 2**31)
    options = dict(spec.options)
    try:
        if spec.name == "tpe":
            return optuna.samplers.TPESampler(seed=seed, **options)
        if spec.name == "random":
            return optuna.samplers.RandomSampler(seed=seed, **options)
        if spec.name == "nsgaii":
            return optuna.samplers.NSGAIISampler(seed=seed, **options)
        if spec.name == "qmc":
            return optuna.samplers.QMCSampler(seed=spec.seed, **options)  # one shared sequence across workers
        return optuna.samplers.GridSampler({k: list(p.choices or []) for k, p in search.items()}, seed=seed,
                                           **options)
    except TypeError as exc:
        raise SweepError(f"sampler.options: {exc}") from None


def make_pruner(spec: PrunerSpec | None):
    import optuna

    if spec is None or spec.name == "none":
        return optuna.pruners.NopPruner()
    classes = {"median": optuna.pruners.MedianPruner, "percentile": optuna.pruners.PercentilePruner,
               "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
               "hyperband": optuna.pruners.HyperbandPruner, "threshold": optuna.pruners.ThresholdPruner}
    try:
        return classes[spec.name](**spec.options)
    except TypeError as exc:
        raise SweepError(f"pruner.options: {exc}") from None


def suggest(trial: Any, name: str, param: SearchParam) -> Any:
    if param.type == "categorical":
        return trial.suggest_categorical(name, param.choices)
    if param.type == "int":
        return trial.suggest_int(name, int(param.low), int(param.high), log=param.log,  # type: ignore[arg-type]
                                 step=int(param.step or 1))
    return trial.suggest_float(name, float(param.low), float(param.high), log=param.log,  # type: ignore[arg-type]
                               step=param.step)

