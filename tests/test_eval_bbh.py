"""BBH: prompts, answer extraction and scorer parity on fixed generations (no model needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.evaluation import bbh

# (response, target, correct under App. D's rule, correct under lm-eval's get-answer filter)
CASES: list[tuple[str, str, bool, bool]] = [
    ("(A) is earlier than (B). So the answer is (A).", "(A)", True, True),
    ("So the answer is (a).", "(A)", True, False),  # lm-eval's exact_match is case-sensitive
    ("Thus True and False is False. So the answer is False.", "False", True, True),
    ("So the answer is Yes", "Yes", False, False),  # no closing period: the rule needs one
    ("So the answer is } ] >.", "} ] >", True, True),
    ("So the answer is apple banana cherry.", "apple banana cherry", True, True),  # multi-word target
    ("So the answer is -24.", "-24", True, True),
    ("The answer is False. So the answer is True.", "True", False, True),  # first match vs lowercase-only
    ("True", "True", True, False),  # no phrase: whole response (App. D) vs "[invalid]" (lm-eval)
    ("So the answer is valid. Wait, the answer is invalid.", "invalid", False, False),
    ("", "No", False, False),
]


def test_cot_prompts_are_official_and_canary_free(shared_data: Path):
    rows, prompts = bbh.load_rows(limit=27)
    assert sorted(prompts) == sorted(bbh.SUBTASKS) and len(bbh.SUBTASKS) == 27
    assert len(rows) == 27 and len({r["subtask"] for r in rows}) == 27
    for sub, text in prompts.items():
        assert "canary" not in text and "-----" not in text, sub
        assert text.count("Q: ") == 3 and text.count("A: Let's think step by step.") == 3, sub
    assert prompts["date_understanding"].startswith("Infer the date from context.")


def test_limit_is_per_subtask(shared_data: Path):
    assert bbh.per_subtask_limit(None) is None
    assert bbh.per_subtask_limit(20) == 1 and bbh.per_subtask_limit(28) == 2
    rows, _ = bbh.load_rows(limit=54)
    assert len(rows) == 54
    full, _ = bbh.load_rows(limit=None)
    assert len(full) == 6511


@pytest.mark.parametrize(("response", "target", "ours", "lmeval"), CASES)
def test_extraction_rules(response: str, target: str, ours: bool, lmeval: bool):
    assert bbh.is_correct(response, target) is ours
    assert bbh.lmeval_correct([response], [target]) == [lmeval]


def test_parity_with_hf_evaluate_exact_match():
    from lm_eval.api.metrics import exact_match_hf_evaluate

    preds = [bbh.extract_answer(r) for r, _, _, _ in CASES]
    targets = [t for _, t, _, _ in CASES]
    official = [
        bool(exact_match_hf_evaluate(predictions=[p], references=[t], ignore_case=True,
                                     ignore_punctuation=True)["exact_match"])
        for p, t in zip(preds, targets)
    ]
    assert official == [bbh.is_correct(r, t) for r, t, _, _ in CASES]


def test_lmeval_pattern_matches_installed_template():
    import yaml

    from harness.evaluation.lmeval_bridge import lmeval_tasks_dir

    cfg = yaml.safe_load((lmeval_tasks_dir() / "bbh/cot_fewshot/_cot_fewshot_template_yaml").read_text())
    assert cfg["filter_list"][0]["filter"][0]["regex_pattern"] == bbh.LMEVAL_PATTERN


def test_score_is_unweighted_mean_over_subtasks():
    rows = (
        [{"subtask": "navigate", "index": i, "input": "q", "target": "Yes"} for i in range(3)]
        + [{"subtask": "snarks", "index": 0, "input": "q", "target": "(A)"}]
    )
    responses = ["So the answer is Yes.", "So the answer is No.", "So the answer is Yes.",
                 "So the answer is (A)."]
    result = bbh.score_responses(rows, responses)
    assert result.metrics["bbh/navigate/exact_match"] == pytest.approx(200 / 3)
    assert result.metrics["bbh/snarks/exact_match"] == 100.0
    assert result.score == pytest.approx((200 / 3 + 100) / 2)  # not 75 (the example-weighted mean)
    assert result.metrics["bbh/n_subtasks"] == 2.0


@pytest.mark.slow
def test_secondary_metric_equals_lmeval_pipeline():
    """lm-eval's whole bbh_cot_fewshot pipeline (a sub-task yaml) on the same fixed responses."""
    from harness.evaluation.lmeval_bridge import evaluate_fixed_outputs, lmeval_tasks_dir

    rows = [{"input": f"question {i}", "target": t} for i, (_, t, _, _) in enumerate(CASES)]
    responses = {f"question {i}": r for i, (r, _, _, _) in enumerate(CASES)}
    official = evaluate_fixed_outputs(lmeval_tasks_dir() / "bbh" / "cot_fewshot" / "navigate.yaml",
                                      "bbh_parity", rows, lambda doc, _ctx: responses[doc["input"]])
    expected = [lm for _, _, _, lm in CASES]
    assert official["exact_match,get-answer"] == pytest.approx(sum(expected) / len(expected))
