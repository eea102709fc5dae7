"""Execution backends for the grid runner. A backend runs a list of stages (already in dependency
order) and calls `on_done(stage)` as each is published; the runner does all MLflow logging."""

from __future__ import annotations

from typing import Any

from harness.registry import Registry

BACKENDS: Registry[Any] = Registry("backend")


def get_backend(name: str, **options: Any):
    if name == "local" and "local" not in BACKENDS:
        from harness.backends import local  # noqa: F401
    if name == "ray" and "ray" not in BACKENDS:
        from harness.backends import ray_backend  # noqa: F401
    return BACKENDS.get(name)(**options)
