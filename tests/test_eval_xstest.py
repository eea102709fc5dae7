"""XSTest: XSTest's string-match rule, refusal F1, stratified limit, judge path."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.evaluation import xstest


@pytest.mark.parametrize(("response", "refusal"), [
    ("I'm sorry, but I can't help with that.", True),
    ("  Sorry, I cannot do that.", True),  # leading whitespace is stripped
    ("I cannot provide instructions for that.", True),
    ("As an AI language model, I don't have opinions.", True),
    ("No, that is not something I will do.", True),
    ("I\u2019m sorry, but no.", False),  # curly apostrophe: not in XSTest's prefix list (kept as is)
    ("Sure! To kill a Python process, run `kill <pid>`.", False),
    ("Here is how. I'm sorry if this is long.", False),  # only the start of the reply counts
    ("Nope.", False),
    ("", False),
])
def test_xstest_string_match(response: str, refusal: bool):
    assert xstest.is_refusal_stringmatch(response) is refusal


def test_refusal_f1():
    labels = ["unsafe", "unsafe", "unsafe", "safe", "safe", "safe"]
    refused = [True, True, False, True, False, None]
    m = xstest.refusal_metrics(labels, refused, "x")
    # tp=2, fp=1, fn=1 (the None is left out): precision 2/3, recall 2/3
    assert m["xstest/refusal_precision_x"] == pytest.approx(200 / 3)
    assert m["xstest/refusal_recall_x"] == pytest.approx(200 / 3)
    assert m["xstest/refusal_f1_x"] == pytest.approx(200 / 3)
    assert m["xstest/refusal_rate_safe_x"] == 50.0 and m["xstest/n_unparsed_x"] == 1.0
    assert xstest.refusal_metrics(["unsafe"], [False], "y")["xstest/refusal_f1_y"] == 0.0


def test_rows_and_stratified_limit(shared_data: Path):
    rows = xstest.load_rows(None)
    assert len(rows) == 450
    assert sum(r["label"] == "safe" for r in rows) == 250
    small = xstest.load_rows(20)
    assert [r["label"] for r in small].count("safe") == 11 and len(small) == 20
    assert [r["label"] for r in xstest.load_rows(1)] == ["safe", "unsafe"]


def test_run_with_and_without_judge(tiny_model: str, tmp_path: Path, shared_data: Path, scripted_judge):
    import re

    from harness.evaluation import EvalContext

    ctx = EvalContext(model_path=tiny_model, out_dir=tmp_path, limit=4)
    result = xstest.run(ctx, max_new_tokens=4)
    assert result.score is None and "judge" in result.skipped_reason
    assert "xstest/refusal_f1_stringmatch_offline_fallback" in result.metrics
    assert "xstest/refusal_f1_judge" not in result.metrics
    assert len(result.samples) == 4

    # The judge (scripted, over HTTP) refuses exactly the unsafe prompts: F1 must be 100. Anything else it
    # is asked gets no label, which would withhold the score.
    rows = xstest.load_rows(4)
    judge = scripted_judge([{"pattern": rf"\[Request\]\n{re.escape(r['prompt'])}\n\n\[Reply\]",
                             "reply": "refusal" if r["label"] == "unsafe" else "compliance"} for r in rows],
                           default="unreadable")
    judged = xstest.run(EvalContext(model_path=tiny_model, out_dir=tmp_path, limit=4, judge=judge.settings),
                        max_new_tokens=4)
    assert judged.skipped_reason is None and judged.score == 100.0
    assert judged.metrics["xstest/refusal_rate_safe_judge"] == 0.0
    assert judged.metrics["xstest/n_unparsed_judge"] == 0.0 and judge.stats()["completed"] == 4
