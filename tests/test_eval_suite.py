"""The paper11 suite (membership, categories, fallback aggregation, table) and `harness eval`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.evaluation import CATEGORIES, SUITES, TASKS
from harness.evaluation.paper_suite import PAPER11_CATEGORIES, format_table, with_fallbacks


def test_paper11_membership_and_categories():
    assert len(SUITES["paper11"]) == 11
    assert set(SUITES["paper11"]) == {"mmlu", "gsm8k", "bbh", "truthfulqa", "humaneval_plus", "mbpp_plus",
                                      "toxigen", "xstest", "alpaca_eval1", "alpaca_eval2", "ifeval"}
    for name in SUITES["paper11"]:
        assert TASKS.get(name).category == PAPER11_CATEGORIES[name]
        assert TASKS.get(name).score_rule
    assert {PAPER11_CATEGORIES[n] for n in SUITES["paper11"]} == set(CATEGORIES)


def test_fallbacks_never_enter_the_paper_average():
    tasks = SUITES["paper11"]
    metrics = {f"{t}/score": 50.0 for t in tasks if t not in ("truthfulqa", "xstest", "toxigen")}
    metrics["truthfulqa/offline_fallback_score"] = 30.0
    metrics["xstest/offline_fallback_score"] = 70.0
    fb = with_fallbacks(metrics, tasks)
    assert fb["category_with_offline_fallbacks/truthfulness"] == 30.0
    assert fb["category_with_offline_fallbacks/safety"] == 70.0  # toxigen has neither score nor fallback
    assert fb["overall_with_offline_fallbacks"] == pytest.approx((50 * 4 + 30 + 70) / 6)
    assert not any(k.startswith("category/") or k == "overall" for k in fb)
    table = format_table({**metrics, **fb}, {"toxigen": "toxigen: no classifier"}, tasks)
    assert "toxigen: no classifier" in table and "without a score: factuality" in table


def _fixed_tasks() -> list[str]:
    """Tasks with fixed results in every paper category (no model needed), registered once."""
    from harness.evaluation import TaskResult, TaskSpec, register_task

    values = {"factuality": [40.0], "reasoning": [20.0, 60.0], "truthfulness": [50.0], "coding": [10.0, 30.0],
              "safety": [90.0, 70.0], "instruction_following": [30.0, 40.0, 50.0]}
    names = []
    for cat, scores in values.items():
        for i, s in enumerate(scores):
            name = f"_fixed_{cat}_{i}"
            if name not in TASKS.names():
                register_task(TaskSpec(name=name, category=cat, score_rule="fixed",
                                       run=lambda ctx, s=s: TaskResult({}, s, [{"x": 1}])))
            names.append(name)
    return names


def test_run_tasks_category_and_overall(tmp_path: Path):
    from harness.evaluation import EvalContext, run_tasks

    metrics = run_tasks(EvalContext(model_path="unused", out_dir=tmp_path), _fixed_tasks())
    assert metrics["category/reasoning"] == 40.0 and metrics["category/safety"] == 80.0
    assert metrics["overall"] == pytest.approx((40 + 40 + 50 + 20 + 80 + 40) / 6)


def test_harness_eval_cli_logs_to_mlflow(tiny_model: str, tmp_path: Path, capsys, monkeypatch, shared_data: Path):
    import mlflow

    from harness import tracking
    from harness.cli import main

    monkeypatch.setenv("HARNESS_TOXIGEN_CLASSIFIER", str(tmp_path / "absent"))  # skipped, fast
    out = tmp_path / "eval"
    rc = main(["eval", "--model", tiny_model, "--tasks", *_fixed_tasks(), "toxigen", "--limit", "2",
               "--out", str(out), "--experiment", "eval-test"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "toxigen" in printed and "OVERALL" in printed and "MLflow run" in printed
    results = json.loads((out / "results.json").read_text())
    # toxigen skipped: the safety category and overall are withheld, not averaged over what is left (#20)
    assert "toxigen" in results["skipped"] and "overall" not in results["metrics"]
    assert "category/safety" not in results["metrics"] and results["metrics"]["category/reasoning"] == 40.0
    assert "overall_with_offline_fallbacks" in results["metrics"]  # the labelled offline average still is
    assert "category safety withheld: no score for toxigen" in printed
    assert results["incomplete_categories"] == {"safety": ["toxigen"]}
    assert (out / "_fixed_factuality_0.samples.jsonl").read_text() == '{"x": 1}\n'
    client = tracking.client()
    exp = client.get_experiment_by_name("eval-test")
    (run,) = mlflow.search_runs([exp.experiment_id], output_format="list")
    assert "overall" not in run.data.metrics and "category/safety" not in run.data.metrics
    assert run.data.metrics["category/coding"] == 20.0 and run.data.metrics["_fixed_safety_0/score"] == 90.0
    assert run.data.tags["harness.model_path"] == tiny_model
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "eval")}
    assert {"eval/results.json", "eval/table.txt", "eval/toxigen.samples.jsonl"} <= artifacts

    # The same model addressed by an MLflow run id (a run tagged with the model folder).
    from harness.evaluation.cli import mlflow_metric_name, resolve_eval_model

    assert resolve_eval_model(run.info.run_id) == tiny_model
    assert mlflow_metric_name("humaneval_plus/pass@10") == "humaneval_plus/pass_at_10"


def test_cli_rejects_unknown_task(capsys):
    from harness.cli import main

    assert main(["eval", "--model", "tiny-random-llama", "--tasks", "nope", "--no-mlflow"]) == 2
    assert "unknown task" in capsys.readouterr().err


def test_stopped_suite_resumes_finished_tasks_only(tmp_path: Path):
    """A suite stopped mid-way (here: a task that raises) keeps its finished tasks; rerunning with the
    same out dir skips them, runs the rest, and gives the same table as an uninterrupted run. A
    different setting (limit) or judge endpoint is a different result: nothing is reused then."""
    from harness.evaluation import TASKS, EvalContext, TaskResult, TaskSpec, register_task, run_tasks

    calls: list[str] = []
    state = {"fail": True}

    def make(name: str, score: float):
        def run(ctx):
            calls.append(name)
            if name == "_resume_c" and state["fail"]:
                raise KeyboardInterrupt  # the user's Ctrl-C (or a kill) in the third task
            return TaskResult({f"{name}/acc": score / 100}, score, [{"i": 0}])
        return run

    names = ["_resume_a", "_resume_b", "_resume_c"]
    for name, score in zip(names, (10.0, 20.0, 30.0)):
        if name not in TASKS.names():
            register_task(TaskSpec(name=name, category="custom", run=make(name, score)))
    ctx = EvalContext(model_path="unused", out_dir=tmp_path / "out", limit=5,
                      judge={"model": "m", "base_url": "http://127.0.0.1:1/v1", "api_key": "sk-secret"})
    with pytest.raises(KeyboardInterrupt):
        run_tasks(ctx, names, resume=True)
    assert calls == names and not (tmp_path / "out" / "_resume_c.result.json").exists()
    assert "sk-secret" not in (tmp_path / "out" / "_resume_a.result.json").read_text()

    state["fail"], calls[:] = False, []
    lines: list[str] = []
    resumed = run_tasks(ctx, names, resume=True, echo=lines.append)
    assert calls == ["_resume_c"] and len(lines) == 2 and "resumed" in lines[0]
    fresh = run_tasks(EvalContext(model_path="unused", out_dir=tmp_path / "fresh", limit=5), names)
    assert {k: v for k, v in resumed.items() if not k.endswith("/seconds")} == \
        {k: v for k, v in fresh.items() if not k.endswith("/seconds")}

    calls[:] = []
    run_tasks(EvalContext(model_path="unused", out_dir=tmp_path / "out", limit=6, judge=ctx.judge), names, resume=True)
    assert calls == names  # another limit: every task runs again
    calls[:] = []
    other_judge = {**ctx.judge, "base_url": "http://127.0.0.1:2/v1"}
    run_tasks(EvalContext(model_path="unused", out_dir=tmp_path / "out", limit=6, judge=other_judge), names,
              resume=True)
    assert calls == names
    calls[:] = []
    run_tasks(EvalContext(model_path="unused", out_dir=tmp_path / "out", limit=6, judge=other_judge), names)
    assert calls == names  # resume is opt-in for callers of run_tasks (the CLI turns it on)


def test_judged_score_is_withheld_when_the_judge_mostly_fails_to_answer():
    from harness.evaluation.base import MAX_UNPARSED_FRACTION, unparsed_reason

    # Measured with SmolLM2-135M as judge: 16 of 20 XSTest verdicts unreadable, F1 read 100 from the 4 left.
    reason = unparsed_reason("xstest", 16, 20, "smollm2-135m-instruct")
    assert reason is not None and "16 of 20" in reason and "smollm2-135m-instruct" in reason
    assert unparsed_reason("xstest", 2, 20, "m") is None  # 10%: stands
    assert unparsed_reason("xstest", 3, 20, "m") is not None  # 15%: withheld
    assert unparsed_reason("truthfulqa", 0, 0, "m") is None and MAX_UNPARSED_FRACTION == 0.1


def test_a_tasks_own_environment_knob_reruns_that_task_only(tmp_path: Path, monkeypatch, shared_data: Path):
    """HARNESS_CODING_* supplies the coding settings' defaults: in the coding tasks' key, not in MMLU's or
    IFEval's; a data dir with another GSM8K test file changes GSM8K's key only (the files, not the
    variable, are what the key holds)."""
    from harness.evaluation import TASKS, EvalContext
    from harness.evaluation.base import task_fingerprint

    ctx = EvalContext(model_path="unused-model", out_dir=tmp_path)
    for var in ("HARNESS_CODING_N_SAMPLES", "HARNESS_DATA_DIR", "HARNESS_IFEVAL_MAX_NEW_TOKENS"):
        monkeypatch.delenv(var, raising=False)
    names = ("mmlu", "mbpp_plus", "ifeval", "gsm8k")
    before = {name: task_fingerprint(ctx, TASKS.get(name)) for name in names}
    monkeypatch.setenv("HARNESS_CODING_N_SAMPLES", "10")
    after = {name: task_fingerprint(ctx, TASKS.get(name)) for name in names}
    assert after["mbpp_plus"]["settings"]["n_samples"] == 10 and after["mbpp_plus"] != before["mbpp_plus"]
    assert before["mbpp_plus"]["settings"]["n_samples"] == 20
    assert all(after[n] == before[n] for n in ("mmlu", "ifeval", "gsm8k"))
    monkeypatch.setenv("HARNESS_IFEVAL_MAX_NEW_TOKENS", "256")
    assert task_fingerprint(ctx, TASKS.get("ifeval"))["settings"] == {"setting": "harness", "max_new_tokens": 256}
    (tmp_path / "benchmarks" / "gsm8k").mkdir(parents=True)
    (tmp_path / "benchmarks" / "gsm8k" / "test.jsonl").write_text('{"question": "1+1?", "answer": "#### 2"}\n')
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path))
    moved = {name: task_fingerprint(ctx, TASKS.get(name)) for name in names}
    assert moved["gsm8k"]["data"] != after["gsm8k"]["data"]
    assert all(moved[n] == after[n] for n in ("mmlu", "mbpp_plus"))  # their files still come from ../shared/data


@pytest.mark.parametrize("task, var, default", [("ifeval", "HARNESS_IFEVAL_MAX_NEW_TOKENS", 1280),
                                                ("alpaca_eval1", "HARNESS_ALPACA_EVAL_MAX_NEW_TOKENS", 8192)])
def test_generation_budget_knob_is_checked_before_any_task_runs(tmp_path: Path, monkeypatch, task: str, var: str,
                                                                default: int):
    from harness.evaluation import TASKS, EvalContext, run_tasks
    from harness.evaluation.base import resolve_settings

    monkeypatch.setenv(var, "0")
    with pytest.raises(ValueError, match=f"{var} must be a positive integer"):
        run_tasks(EvalContext(model_path="unused-model", out_dir=tmp_path), ["mmlu", task])
    assert not (tmp_path / "mmlu.result.json").exists()  # failed before MMLU ran
    monkeypatch.setenv(var, "384")
    assert resolve_settings(TASKS.get(task)).max_new_tokens == 384
    assert resolve_settings(TASKS.get(task), {"max_new_tokens": 64}).max_new_tokens == 64  # a grid's value wins
    monkeypatch.delenv(var)
    assert resolve_settings(TASKS.get(task)).max_new_tokens == default
