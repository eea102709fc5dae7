"""AlpacaEval tasks: skipped without a judge (nothing generated), outputs generated once for 1 and 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.evaluation import alpaca_eval


def test_skipped_without_judge(tmp_path: Path, shared_data: Path):
    from harness.evaluation import EvalContext

    ctx = EvalContext(model_path="tiny-random-llama", out_dir=tmp_path, limit=3)
    for version in (1, 2):
        result = alpaca_eval.run_version(ctx, version)
        assert result.score is None and result.metrics == {} and "judge" in result.skipped_reason
    assert ctx._generator is None


# The scripted judge prefers whichever output is the model's (the test's model outputs start with
# "model answer"), in whichever slot the annotator's template shows it.
PREFER_MODEL = [
    {"pattern": r'"model_identifier": "m",\s*"output": """model answer', "reply": "m"},
    {"pattern": r'"model_identifier": "M",\s*"output": """model answer', "reply": "M"},
    {"pattern": r'"model": "model_1",\s*"answer": """model answer',
     "reply": "[{'model': 'model_1', 'rank': 1}, {'model': 'model_2', 'rank': 2}]"},
    {"pattern": r'"model": "model_2",\s*"answer": """model answer',
     "reply": "[{'model': 'model_2', 'rank': 1}, {'model': 'model_1', 'rank': 2}]"},
]


def _counting_generator(ctx, monkeypatch) -> list[int]:
    """The real generator, its outputs prefixed "model answer i: " and its calls counted."""
    calls: list[int] = []
    real_generate = ctx.generator.generate

    def counting_generate(prompts, params, chat=True):
        calls.append(len(prompts))
        return [[f"model answer {i}: " + o[0]] for i, o in enumerate(real_generate(prompts, params, chat))]

    monkeypatch.setattr(ctx.generator, "generate", counting_generate)
    return calls


def test_outputs_shared_between_versions(tiny_model: str, tmp_path: Path, shared_data: Path, monkeypatch,
                                         scripted_judge):
    from harness.evaluation import EvalContext

    judge = scripted_judge(PREFER_MODEL, default="unreadable")
    ctx = EvalContext(model_path=tiny_model, out_dir=tmp_path, limit=3, judge=judge.settings)
    calls = _counting_generator(ctx, monkeypatch)
    r1 = alpaca_eval.run_version(ctx, 1, max_new_tokens=4)
    r2 = alpaca_eval.run_version(ctx, 2, max_new_tokens=4)
    assert calls == [3]  # generated once, reused by AlpacaEval 2
    assert judge.stats()["completed"] == 6  # 3 instructions x 2 versions, over HTTP
    assert r1.skipped_reason is None and r1.score == pytest.approx(100.0)
    assert r1.metrics["alpaca_eval1/n"] == 3
    assert r2.metrics["alpaca_eval2/win_rate"] == pytest.approx(100.0)
    # The LC GLM's files are in ../shared/data: the score is the leaderboard's length-controlled win rate.
    assert r2.score == r2.metrics["alpaca_eval2/lc_win_rate"]
    assert r2.metrics["alpaca_eval2/score_is_length_controlled"] == 1.0 and r2.note is None
    assert all(a["output_2"].startswith("model answer") for a in r2.samples)


def test_without_lc_files_the_score_is_the_labelled_raw_win_rate(tiny_model: str, tmp_path: Path,
                                                                 shared_data: Path, data_dir_without_shared: Path,
                                                                 hub_off: Path, monkeypatch, scripted_judge):
    """Only the reference outputs are local (not df_gamed.csv) and the hub is off: AlpacaEval 2 scores the
    raw win rate, says so (metric label, results.json note, the eval table) and logs no LC number."""
    from harness.evaluation import EvalContext, run_tasks
    from harness.evaluation.paper_suite import format_table
    from harness.judge.alpaca import LC_DATA_DIR, REFERENCE_FILES

    (data_dir_without_shared / LC_DATA_DIR).mkdir(parents=True)
    for rel in REFERENCE_FILES.values():
        (data_dir_without_shared / rel).symlink_to(shared_data / rel)
    judge = scripted_judge(PREFER_MODEL, default="unreadable")
    out = tmp_path / "eval"
    ctx = EvalContext(model_path=tiny_model, out_dir=out, limit=3, judge=judge.settings)
    _counting_generator(ctx, monkeypatch)
    monkeypatch.setenv(alpaca_eval.MAX_NEW_TOKENS_ENV, "4")
    metrics = run_tasks(ctx, ["alpaca_eval2"])
    assert metrics["alpaca_eval2/score"] == metrics["alpaca_eval2/win_rate"] == pytest.approx(100.0)
    assert metrics["alpaca_eval2/score_is_length_controlled"] == 0.0
    assert not any("lc" in name for name in metrics)
    saved = json.loads((out / "results.json").read_text())
    note = saved["notes"]["alpaca_eval2"]
    assert "raw win rate, not length-controlled" in note and "df_gamed.csv is in no local data dir" in note
    assert saved["skipped"] == {}
    assert note in format_table(metrics, saved["skipped"], ["alpaca_eval2"], saved["notes"])
