"""What every backend shares (the interface is described in `harness/backends/__init__.py`): the registry
backends add themselves to, the keep-going callback's type, and the rule that leaves out the stages of a
failed input. Below the backend modules, which import it; `get_backend` imports them."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from harness.registry import Registry

if TYPE_CHECKING:
    from harness.planning import Stage

BACKENDS: Registry[Any] = Registry("backend")

OnFailed = Callable[["Stage", BaseException], None]


def blocked_by(stage: Stage, failed: set[str]) -> bool:
    """Whether one of `stage`'s inputs is among the `failed` (or left-out) stage ids."""
    return any(dep.id in failed for dep in stage.inputs.values())
