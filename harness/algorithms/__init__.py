"""Learning algorithms, registered by name. Adding one: a module that calls `register(...)`, imported here."""

from harness.algorithms import dpo, ppo  # noqa: F401
from harness.algorithms.base import ALGORITHMS, COMMON_METRICS, AlgorithmSpec, TrainContext, register

__all__ = ["ALGORITHMS", "COMMON_METRICS", "AlgorithmSpec", "TrainContext", "register"]
