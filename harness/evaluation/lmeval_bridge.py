"""Run lm-evaluation-harness's own pipeline (prompting, filters, metrics, aggregation) on fixed outputs.

Why: the parity tests need the official scorer's number on exactly the generations the project
scored. `FixedOutputLM` is an lm-eval `LM` that answers every `generate_until` request from a
function of the request's document, so `simple_evaluate` runs lm-eval's filters and metrics
unchanged on those outputs. Tasks are lm-eval's built-in yamls `include:`d with the data redirected
to local files (`dataset_path: json` + `data_files`), which works offline.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml


def lmeval_tasks_dir() -> Path:
    """lm-eval's built-in task configs, found without importing lm-eval (seconds; plans read these files)."""
    import importlib.util

    spec = importlib.util.find_spec("lm_eval")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("lm-eval (lm_eval) is not installed")
    return Path(spec.origin).resolve().parent / "tasks"


def make_fixed_output_lm(respond: Callable[[dict[str, Any], str], str]):
    """An lm-eval LM whose generation for a request is `respond(doc, context)`; no log-likelihoods."""
    from lm_eval.api.model import LM

    class FixedOutputLM(LM):
        def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
            return [respond(req.doc, req.args[0]) for req in requests]

        def loglikelihood(self, requests, disable_tqdm: bool = False):
            raise NotImplementedError("FixedOutputLM only replays generations")

        def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
            raise NotImplementedError("FixedOutputLM only replays generations")

    return FixedOutputLM()


def evaluate_local(
    base_yaml: Path,
    task_name: str,
    rows: list[dict[str, Any]],
    lm: Any,
    overrides: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(lm-eval's results for the task, its per-document samples) for the built-in config `base_yaml`
    run by `lm` (an lm-eval LM, e.g. `HFLM(pretrained=model, tokenizer=tok)`) on `rows`.

    The rows are written to a temporary JSONL file used as the task's test split; `overrides` replace
    top-level yaml keys (e.g. `description`).
    """
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    with tempfile.TemporaryDirectory(prefix="lmeval-local-") as tmp:
        tmpdir = Path(tmp)
        data = tmpdir / "test.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in rows))
        config: dict[str, Any] = {
            "include": str(base_yaml),
            "task": task_name,
            "dataset_path": "json",
            "dataset_name": None,
            "dataset_kwargs": {"data_files": {"test": str(data)}},
            "test_split": "test",
            "validation_split": None,
            "training_split": None,
            "fewshot_split": None,
        }
        config.update(overrides or {})
        (tmpdir / f"{task_name}.yaml").write_text(yaml.safe_dump(config))
        manager = TaskManager(include_path=str(tmpdir), include_defaults=False)
        out = simple_evaluate(
            model=lm, tasks=[task_name], task_manager=manager, bootstrap_iters=0, log_samples=True,
            random_seed=0, numpy_random_seed=0, torch_random_seed=0, fewshot_random_seed=0,
        )
    samples = sorted(out["samples"][task_name], key=lambda s: s["doc_id"])
    return out["results"][task_name], samples


def evaluate_fixed_outputs(
    base_yaml: Path,
    task_name: str,
    rows: list[dict[str, Any]],
    respond: Callable[[dict[str, Any], str], str],
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """lm-eval's results dict for task `base_yaml` on `rows` when the model's outputs are
    `respond(doc, context)`."""
    results, _ = evaluate_local(base_yaml, task_name, rows, make_fixed_output_lm(respond), overrides)
    return results
