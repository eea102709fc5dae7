"""Learning algorithms, registered by name. Adding one: a module that calls `register(...)`, imported here."""

from harness.algorithms import (  # noqa: F401  (each module registers its algorithms on import)
    dpo,
    dpo_variants,
    grpo,
    kto,
    online_dpo,
    orpo,
    ppo,
    rloo,
    simpo,
)
from harness.algorithms.base import (
    ALGORITHMS,
    COMMON_METRICS,
    AlgorithmSpec,
    RolloutShape,
    TrainContext,
    register,
    spec_or_none,
)

__all__ = ["ALGORITHMS", "COMMON_METRICS", "AlgorithmSpec", "RolloutShape", "TrainContext", "register", "spec_or_none"]
