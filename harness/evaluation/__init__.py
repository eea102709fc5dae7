"""Evaluation suite. Adding a task: one module calling `register_task(...)` plus one import line here."""

import harness.evaluation.coding  # noqa: F401  (HumanEval+, MBPP+)
from harness.evaluation import gsm8k, smoke_lowercase  # noqa: F401
from harness.evaluation import bbh, ifeval  # noqa: F401  (paper suite)
from harness.evaluation.base import (
    CATEGORIES,
    SUITES,
    TASKS,
    EvalContext,
    TaskResult,
    TaskSpec,
    register_task,
    run_tasks,
)

__all__ = ["CATEGORIES", "SUITES", "TASKS", "EvalContext", "TaskResult", "TaskSpec", "register_task", "run_tasks"]
