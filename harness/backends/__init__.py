"""Execution backends for the grid runner. A backend runs a list of stages (already in dependency
order) and calls `on_done(stage)` as each is published; the runner does all MLflow logging.

The interface, `backend.run(stages, on_done, echo, on_failed=None)` inside `with backend.session():`
(a session may span several `run` calls, e.g. Ray's connection): a stage that raises stops the run, or,
when `on_failed(stage, exc)` is given (the runner's keep-going), is reported to it while every stage not
depending on it still runs; stages depending on a failed one are left out without being reported."""

from __future__ import annotations

from typing import Any

from harness.backends.base import BACKENDS


def get_backend(name: str, **options: Any):
    if name == "local" and "local" not in BACKENDS:
        from harness.backends import local  # noqa: F401
    if name == "ray" and "ray" not in BACKENDS:
        from harness.backends import ray_backend  # noqa: F401
    return BACKENDS.get(name)(**options)
