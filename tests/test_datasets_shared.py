"""Loaders on the real files in ../shared/data/preferences (skipped where that folder is absent).

The counts are measured on these real samples; full-scale counts (Table 1 '# Samples') need the full
releases, which cannot be downloaded here.
"""

from __future__ import annotations

import json

import pytest

from datasets_registry import DataFormatError, prepare

UF = "preferences/ultrafeedback"


def test_hh_rlhf_harmless_test_split(shared_data):
    split = prepare("hh-rlhf-harmless-test")
    assert split.raw_count == 2_312
    assert split.kept == 2_299
    # 4 transcripts end in an empty assistant reply, 8 have two consecutive turns of one role
    # (e.g. "Assistant: Human: ..." inside a reply), 1 pair's transcripts differ before the last reply.
    assert split.dropped == {"empty_turn_chosen": 4, "non_alternating_turns": 8, "prompt_mismatch": 1}
    row = split.rows[0]
    assert row["prompt"][0]["role"] == "user" and row["prompt"][-1]["role"] == "user"
    assert [m["role"] for m in row["chosen"]] == ["assistant"]
    assert split.sources == [str(shared_data / "preferences/hh-rlhf/harmless-base/test.jsonl.gz")]


def test_hh_rlhf_train_samples_are_found_locally(shared_data):
    split = prepare("hh-rlhf")  # the four train_sample_100 files (extra cleaning-tool columns ignored)
    assert split.raw_count == 400
    assert split.kept == 392
    assert split.dropped == {"identical_chosen_rejected": 6, "empty_turn_rejected": 1, "non_alternating_turns": 1}
    assert len(split.sources) == 4


def test_ultrafeedback_fg_argilla_sample_every_row_kept(shared_data):
    split = prepare("ultrafeedback-fg")
    assert split.sources == [str(shared_data / f"{UF}/argilla_cleaned_sample_1k.jsonl")]
    # Rule changed on purpose: the one identical pair is kept (the authors take Argilla's rows as they are).
    assert (split.raw_count, split.kept, split.dropped) == (1_000, 1_000, {})
    assert all(r["scores"]["chosen_fine_grained"] > r["scores"]["rejected_fine_grained"] for r in split.rows)


def test_ultrafeedback_overall_h4_sample_filtered_by_the_argilla_sample(shared_data):
    # The two real samples are independent 1k draws: only 10 H4 prompts are in the Argilla sample, so the
    # authors' prompt filter keeps 10 rows here (at full scale it keeps ~58.9k of 61,135).
    split = prepare("ultrafeedback-overall")
    assert split.sources == [str(shared_data / f"{UF}/binarized_sample_train_1k.jsonl"),
                             str(shared_data / f"{UF}/argilla_cleaned_sample_1k.jsonl")]
    assert (split.raw_count, split.kept, split.dropped) == (1_000, 10, {"prompt_not_in_argilla_cleaned": 990})
    argilla = {json.loads(line)["prompt"] for line in (shared_data / f"{UF}/argilla_cleaned_sample_1k.jsonl").open()}
    assert all(r["prompt"][0]["content"] in argilla for r in split.rows)


def test_ultrafeedback_overall_keeps_ties_on_real_h4_rows(shared_data, tmp_path):
    # The filter's own file built from the H4 sample's prompts (Argilla's schema), so every real H4 row passes
    # it and only the authors' per-row rules act: the 111 ties and 4 identical pairs stay, 2 empty turns go.
    h4 = shared_data / f"{UF}/binarized_sample_train_1k.jsonl"
    rows = [json.loads(line) for line in h4.open()]
    argilla = tmp_path / "argilla_prompts.jsonl"
    argilla.write_text("".join(json.dumps({"prompt": r["prompt"], "chosen-rating": 5.0, "rejected-rating": 1.0,
                                           "chosen": "x", "rejected": "y"}) + "\n" for r in rows))
    split = prepare("ultrafeedback-overall", files=[h4, argilla])
    assert (split.raw_count, split.kept) == (1_000, 998)
    assert split.dropped == {"empty_turn_chosen": 1, "empty_turn_rejected": 1}
    ties = [r for r in split.rows if r["scores"]["chosen_overall"] == r["scores"]["rejected_overall"]]
    assert len(ties) == 111
    eval_split = prepare("ultrafeedback-overall", files=[shared_data / f"{UF}/binarized_sample_eval_200.jsonl"])
    assert eval_split.raw_count == 200 and eval_split.kept + sum(eval_split.dropped.values()) == 200


def test_ultrafeedback_flavour_mismatch_is_an_error(shared_data):
    with pytest.raises(DataFormatError, match="H4's overall-score binarisation: use ultrafeedback-overall"):
        prepare("ultrafeedback-fg", files=[shared_data / f"{UF}/binarized_sample_train_1k.jsonl"])


def test_ultrafeedback_prompt_source_subset_from_argilla_sample(shared_data):
    split = prepare("ultrafeedback-src-sharegpt")
    assert split.kept == 310 and split.dropped == {"other_source": 690}


def test_chatbot_arena_2024_sample(shared_data):
    split = prepare("chatbot-arena-2024")
    assert (split.raw_count, split.kept) == (49, 24)
    assert split.dropped == {"multi_turn": 10, "tie": 15}


def test_orca_intel_sample_prompt_is_the_question_only(shared_data):
    path = shared_data / "preferences/orca_dpo_pairs/sample_100.csv"
    split = prepare("orca-pairs", files=[path])
    assert (split.raw_count, split.kept, split.dropped) == (100, 100, {})
    # Rule changed on purpose (authors' script): 92 of these rows have a system field; none becomes a message.
    assert all(r["prompt"] == [{"role": "user", "content": r["prompt"][0]["content"]}] for r in split.rows)
    import csv

    with path.open(newline="") as fh:
        raw = list(csv.DictReader(fh))
    assert sum(1 for r in raw if r["system"].strip()) == 92
    assert {r["prompt"][0]["content"] for r in split.rows} == {r["question"] for r in raw}


def test_helpsteer_loader_on_helpsteer2_sample(shared_data):
    # HelpSteer2 has HelpSteer's columns (2 responses per prompt here); 10 of the 50 prompts tie.
    split = prepare("helpsteer", files=[shared_data / "preferences/helpsteer/helpsteer2_sample_100.jsonl"])
    # Rule changed on purpose (authors' script): no tie filter, one pair per prompt with >= 2 responses.
    assert (split.raw_count, split.kept, split.dropped) == (50, 50, {})
    ties = [r for r in split.rows if r["scores"]["chosen_overall"] == r["scores"]["rejected_overall"]]
    assert len(ties) == 10
    assert all(r["scores"]["chosen_overall"] >= r["scores"]["rejected_overall"] for r in split.rows)


def test_gsm8k_train_prompts(shared_data):
    split = prepare("prompts-gsm8k-train")
    assert (split.raw_count, split.kept) == (7_473, 7_473)
    assert all(r["answer"].lstrip("-").replace(".", "").isdigit() for r in split.rows)
