"""Evaluation suite. Adding a task: one module calling `register_task(...)` plus one import line here."""

from harness.evaluation import gsm8k, smoke_lowercase  # noqa: F401
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
