"""Verifiable reward functions, by name, in TRL `reward_funcs` style: f(completions, **kw) -> list[float]."""

from __future__ import annotations

from collections.abc import Callable

from datasets_registry.smoke_lowercase import lowercase_reward
from harness.registry import Registry

REWARD_FUNCTIONS: Registry[Callable[..., list[float]]] = Registry("reward function")
REWARD_FUNCTIONS.register("lowercase", lowercase_reward)
