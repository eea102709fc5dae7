"""IFEval: the project's scoring == lm-eval's full IFEval pipeline on the same fixed responses."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.evaluation import ifeval

# Responses for the first 12 real prompts, written to hit loose-vs-strict differences: a chatty first
# line ("Sure, ..."), markdown asterisks, JSON in code fences, capitals, empty output.
RESPONSES = {
    1000: "Sure, here is a summary:\n*highlighted section one*\nRaymond was a count.",
    1001: "Sure, here is your itinerary:\nDay one thou shalt see Tokyo and its temples\nDay two Kyoto",
    1005: "[name] [address] [phone] [email] [school] [gpa] [skill1] [skill2] [skill3] [hobby] "
          "[reference1] [reference2]",
    1012: "Write an email to my boss telling him that I am quitting. The email must contain a title "
          "wrapped in double angular brackets, i.e. <<title>>.\n<<Resignation>>\nDear boss, I quit.",
    1019: "Sure!\nwhat are the two boys with toy guns and horns doing?",
    102: "* **hello** there\n* second point\n* third point",
    1021: "THIS IS BAD.\n***\nTHE LAW IS THE LAW.",
    1040: '"MATTHIAS ALGIERS is a GREAT engineer."',
    1051: "dear friend, please go and vote.",
    1069: "",
    1072: "Hammocks are great. " * 10,
    1075: '```json\n{"product": "diaper", "comfort": "high"}\n```',
}


@pytest.fixture(scope="module")
def rows():
    data = ifeval.load_rows(12)
    assert [r["key"] for r in data] == list(RESPONSES)
    return data


def test_metrics_and_loose_vs_strict(rows, shared_data: Path):
    result = ifeval.score_responses(rows, [RESPONSES[r["key"]] for r in rows])
    m = result.metrics
    assert m["ifeval/n"] == 12
    assert result.score == m["ifeval/prompt_level_loose_acc"]
    assert m["ifeval/prompt_level_loose_acc"] > m["ifeval/prompt_level_strict_acc"]
    by_key = {s["key"]: s for s in result.samples}
    # The comma is only in the chatty first line: loose (first line removed) passes, strict fails.
    assert by_key[1001]["prompt_level_loose_acc"] and not by_key[1001]["prompt_level_strict_acc"]
    assert by_key[1019]["prompt_level_loose_acc"] and not by_key[1019]["prompt_level_strict_acc"]
    assert not by_key[1069]["prompt_level_loose_acc"]  # empty response never follows anything
    assert by_key[1051]["prompt_level_strict_acc"]


def test_parity_with_lmeval_pipeline(rows, shared_data: Path):
    """lm-eval's simple_evaluate (built-in ifeval.yaml on the local data) on the same responses."""
    from harness.evaluation.lmeval_bridge import evaluate_fixed_outputs, lmeval_tasks_dir

    ours = ifeval.score_responses(rows, [RESPONSES[r["key"]] for r in rows]).metrics
    official = evaluate_fixed_outputs(
        lmeval_tasks_dir() / "ifeval" / "ifeval.yaml", "ifeval_parity", rows,
        lambda doc, _context: RESPONSES[doc["key"]],
    )
    for name in ("prompt_level_loose_acc", "prompt_level_strict_acc", "inst_level_loose_acc",
                 "inst_level_strict_acc"):
        assert ours[f"ifeval/{name}"] == pytest.approx(100 * official[f"{name},none"]), name


def test_missing_punkt_reports_how_to_fix(monkeypatch, tmp_path):
    import nltk

    from harness import paths

    monkeypatch.setenv("NLTK_DATA", str(tmp_path))
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path)])
    with pytest.raises(RuntimeError, match="punkt_tab"):
        paths.ensure_nltk_data()


def test_generation_budget_from_the_environment_is_used_and_logged(shared_data: Path, tiny_model: str,
                                                                    tmp_path: Path, monkeypatch):
    """HARNESS_IFEVAL_MAX_NEW_TOKENS lowers the 1280-token budget (CPU runs): the tiny model's answers stop
    at it and the budget used is a metric, so a table never hides that it differs from the paper's."""
    from harness.evaluation import EvalContext

    monkeypatch.setenv("NLTK_DATA", str(shared_data / "nltk_data"))
    monkeypatch.setenv(ifeval.MAX_NEW_TOKENS_ENV, "3")
    ctx = EvalContext(model_path=tiny_model, out_dir=tmp_path, limit=2, batch_size=2)
    result = ifeval.run(ctx)
    assert result.metrics["ifeval/max_new_tokens"] == 3.0
    tokenizer = ctx.generator.tokenizer
    assert all(len(tokenizer(s["output"], add_special_tokens=False)["input_ids"]) <= 4 for s in result.samples)


def test_rescoring_the_same_responses_gives_identical_results(shared_data: Path):
    """The official checker draws a random letter for prompts 1122 and 1129; seeded per prompt, scoring
    the same responses to all 541 real prompts twice (from different global random states) agrees
    exactly, and the caller's random state is left as it was."""
    import random

    from lm_eval.tasks.ifeval.utils import process_results

    rows = ifeval.load_rows(None)
    assert len(rows) == 541
    responses = [f"{row['prompt']}\n\nDone, as you asked." for row in rows]
    random.seed(1)
    first = ifeval.score_responses(rows, responses)
    random.seed(2)
    after_seed = random.random()
    random.seed(2)
    second = ifeval.score_responses(rows, responses)
    assert random.random() == after_seed  # scoring consumed nothing from the caller's random stream
    assert first.metrics == second.metrics and first.samples == second.samples
    # Without the seed the draw decides: the same response to 1122 or 1129 passes the letter check or not.
    for key in (1122, 1129):
        i = next(i for i, row in enumerate(rows) if row["key"] == key)
        letter_check = rows[i]["instruction_id_list"].index("keywords:letter_frequency")
        unseeded = set()
        for seed in range(40):
            random.seed(seed)
            unseeded.add(process_results(rows[i], [responses[i]])["inst_level_loose_acc"][letter_check])
        assert unseeded == {True, False}, key


def test_language_checks_are_seeded_too(shared_data: Path):
    """langdetect seeds its detectors from the OS on every call ("Ich bin ok" is German, Dutch or Swedish
    from one call to the next); the language checker, scored through `score_one`, always says the same."""
    import langdetect

    row = next(r for r in ifeval.load_rows(None) if r["instruction_id_list"] == ["language:response_language"]
               and r["kwargs"][0]["language"] == "de")
    assert len({langdetect.detect("Ich bin ok") for _ in range(40)}) > 1  # what the seeding is for
    verdicts = {ifeval.score_one(row, "Ich bin ok")["prompt_level_strict_acc"] for _ in range(40)}
    assert len(verdicts) == 1
