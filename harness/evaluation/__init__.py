"""Evaluation suite. Adding a task: one module calling `register_task(...)` plus one import line here."""

import harness.evaluation.alpaca_eval  # noqa: F401
import harness.evaluation.bbh  # noqa: F401
import harness.evaluation.coding  # noqa: F401  (HumanEval+, MBPP+)
import harness.evaluation.gsm8k  # noqa: F401
import harness.evaluation.ifeval  # noqa: F401
import harness.evaluation.mmlu  # noqa: F401
import harness.evaluation.paper_suite  # noqa: F401
import harness.evaluation.policy_metrics  # noqa: F401
import harness.evaluation.toxigen  # noqa: F401
import harness.evaluation.truthfulqa  # noqa: F401
import harness.evaluation.xstest  # noqa: F401
from harness.evaluation import smoke_lowercase  # noqa: F401
from harness.evaluation.base import (
    CATEGORIES,
    SUITES,
    TASKS,
    EvalContext,
    TaskResult,
    TaskSpec,
    register_task,
)
from harness.evaluation.runner import run_tasks

__all__ = ["CATEGORIES", "SUITES", "TASKS", "EvalContext", "TaskResult", "TaskSpec", "register_task", "run_tasks"]
