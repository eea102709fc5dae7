"""Each source's curation rules, on small fixtures written in the hub's published schema.

Fixtures (tests/fixtures/datasets/) and the schema version they follow:
  shp2_train.json                    stanfordnlp/SHP-2 dataset_info features (2023; JSON lines, as the hub's *.json)
  stack_exchange.jsonl               HuggingFaceH4/stack-exchange-preferences card (qid, question, answers[pm_score])
  stack_exchange_paired.jsonl        lvwerra/stack-exchange-paired (qid, question, date, metadata, response_j, response_k)
  prm800k_phase2.jsonl               openai/prm800k README (phase-2 label rows, commit 00811d6)
  chatbot_arena_conversations.jsonl  lmsys/chatbot_arena_conversations card (winner, conversation_a/b, turn)
  arena_55k_edge_cases.csv           lmsys-arena-human-preference-55k train.csv columns (edge cases the real sample lacks)
  alpaca_human_preference.json       tatsu-lab/alpaca_farm alpaca_human_preference.json (JSON array, rev e576524)
  helpsteer_train.jsonl              nvidia/HelpSteer train.jsonl.gz columns (rev 4d71588)
  capybara.jsonl                     argilla/distilabel-capybara-dpo-7k-binarized card
  orca_argilla.jsonl                 argilla/distilabel-intel-orca-dpo-pairs card (rev eda9b7b)
  nectar.jsonl                       berkeley-nest/Nectar features (prompt, answers[answer, model, rank], ...)
  ultrafeedback_raw.jsonl            openbmb/UltraFeedback features (rev 40b4365: completions with annotations)
  ultrafeedback_h4_train_prefs.jsonl HuggingFaceH4/ultrafeedback_binarized train_prefs (prompt, prompt_id, chosen,
                                     rejected, messages, score_chosen, score_rejected)
  ultrafeedback_argilla_cleaned.jsonl argilla/ultrafeedback-binarized-preferences-cleaned (source, prompt, chosen,
                                     chosen-rating, chosen-model, rejected, rejected-rating, rejected-model)
  wildchat.jsonl                     allenai/WildChat conversation schema
Each row is built to trigger one rule; every test checks the kept rows and the exact drop counts.
The rules' sources (App. B, the authors' EasyLM `convert_preference_data.py`) are on each spec (`rule`,
`rule_source`) and tabled in datasets_registry/README.md.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from datasets_registry import DATASETS, DataFormatError, prepare
from datasets_registry.prm800k import answers_match

FIXTURES = Path(__file__).parent / "fixtures" / "datasets"


def _prep(name: str, fixture: str):
    return prepare(name, files=[FIXTURES / fixture])


def _by_prompt(split) -> dict[str, dict]:
    return {row["prompt"][-1]["content"]: row for row in split.rows}


def test_shp2_label_picks_the_preferred_comment_and_malformed_rows_are_counted():
    split = _prep("shp-2", "shp2_train.json")
    assert split.raw_count == 6
    assert split.dropped == {"invalid_label": 1, "empty_turn_rejected": 1, "identical_chosen_rejected": 1,
                             "duplicate": 1}
    rows = _by_prompt(split)
    assert rows["Why is the sky blue?"]["chosen"][0]["content"] == "Rayleigh scattering of sunlight."  # labels=1 -> A
    assert rows["Do fish sleep?"]["chosen"][0]["content"].startswith("Yes")  # labels=0 -> B
    assert rows["Do fish sleep?"]["scores"] == {"chosen_upvotes": 9.0, "rejected_upvotes": 2.0}


def test_stack_exchange_is_the_paired_markdown_source_one_row_per_pair():
    split = _prep("stack-exchange", "stack_exchange_paired.jsonl")
    assert split.raw_count == 5
    assert split.dropped == {"empty_turn_rejected": 1, "missing_response_j": 1, "duplicate": 1}
    rows = [r for r in split.rows if r["qid"] == 1]
    assert len(rows) == 2  # two (response_j > response_k) pairs of one question, both kept
    assert {r["chosen"][0]["content"] for r in rows} == {"Use slicing:\n\n```python\nreversed_list = lst[::-1]\n```\n\n"
                                                          "or `lst.reverse()` to reverse in place."}  # Markdown as is
    assert {r["rejected"][0]["content"] for r in rows} == {"Write a `for` loop that prepends each item.",
                                                            "Call `sorted(lst)`."}
    assert rows[0]["prompt"] == [{"role": "user", "content": "How do I reverse a list in Python?"}]


def test_stack_exchange_rejects_raw_h4_rows_and_names_the_h4_loader():
    with pytest.raises(DataFormatError, match="use stack-exchange-h4"):
        _prep("stack-exchange", "stack_exchange.jsonl")


def test_stack_exchange_h4_best_vs_lower_scored_answer_ties_and_single_answers_dropped():
    # The raw H4 source, kept by name (renamed from `stack-exchange`; its rule is unchanged).
    split = _prep("stack-exchange-h4", "stack_exchange.jsonl")
    assert split.dropped == {"fewer_than_two_answers": 2, "tie": 1}
    (row,) = split.rows
    assert row["chosen"][0]["content"].startswith("Use `lst[::-1]`")
    assert row["scores"]["chosen_pm_score"] == 5 and row["scores"]["rejected_pm_score"] == 2


def test_prm800k_authors_script_ground_truth_vs_a_found_error_generation():
    split = _prep("prm800k", "prm800k_phase2.jsonl")
    # 4 problems; the two without a found_error generation (a bad_problem one and an all-solution one) dropped
    assert (split.raw_count, split.kept) == (4, 2)
    assert split.dropped == {"no_found_error_generation": 2}
    rows = {r["prompt"][0]["content"][:20]: r for r in split.rows}
    gcf = rows["What is the greatest"]
    assert gcf["chosen"][0]["content"].endswith("so the GCF is $\\boxed{40,\\!000}$.")  # ground_truth_solution
    assert gcf["rejected"][0]["content"] == "Guess.\nIt is $320,000$.\n\n# Answer\n\n320,000"  # the found_error one
    assert rows["What is $1+1$?"]["rejected"][0]["content"].endswith("3")


def test_prm800k_paper_text_one_correct_and_one_incorrect_generation_per_problem():
    # App. B's text, kept by name (renamed from `prm800k`; its rule is unchanged).
    split = _prep("prm800k-paper-text", "prm800k_phase2.jsonl")
    # 6 label rows: 2 dropped alone, 4 grouped into 2 problems (the GCF problem labelled twice).
    assert split.raw_count == 4
    assert split.dropped == {"bad_problem": 1, "missing_generation": 1, "no_correct_and_incorrect": 1}
    (row,) = split.rows
    assert row["chosen"][0]["content"].endswith("40,000") and row["rejected"][0]["content"].endswith("320,000")


def test_prm800k_answer_matching_normalises_latex_and_numbers():
    assert answers_match("40,000", "40,\\!000")
    assert answers_match("\\dfrac{1}{2}", "\\frac{1}{2}")
    assert answers_match("$5$", "5.0")
    assert not answers_match("320,000", "40,\\!000")


def test_chatbot_arena_2023_single_turn_without_ties():
    split = _prep("chatbot-arena-2023", "chatbot_arena_conversations.jsonl")
    assert split.dropped == {"tie": 2, "multi_turn": 1, "empty_turn_chosen": 1}
    rows = _by_prompt(split)
    assert rows["Name a prime."]["chosen"][0]["content"] == "7 is prime."  # winner model_a
    assert rows["Capital of Peru?"]["chosen"][0]["content"] == "Lima."  # winner model_b


def test_chatbot_arena_2024_edge_cases():
    split = _prep("chatbot-arena-2024", "arena_55k_edge_cases.csv")
    # null response (the model errored) -> empty turn; broken JSON; no winner flagged
    assert split.dropped == {"empty_turn_rejected": 1, "unparseable_json": 1, "invalid_winner": 1}
    assert split.rows[0]["chosen"][0]["content"] == "C-A-T"


def test_alpacafarm_preference_selects_output_and_joins_input():
    split = _prep("alpacafarm-human", "alpaca_human_preference.json")
    assert split.dropped == {"invalid_preference": 1, "identical_chosen_rejected": 1}
    rows = _by_prompt(split)
    assert rows["Translate to French.\n\nGood morning"]["chosen"][0]["content"] == "Bonjour"
    assert rows["Give a synonym of 'happy'."]["chosen"][0]["content"] == "Joyful"


def test_helpsteer_best_by_mean_without_verbosity_vs_a_random_other_and_ties_kept():
    split = _prep("helpsteer", "helpsteer_train.jsonl")
    assert split.raw_count == 4  # 1 unrated response dropped alone + 3 prompts
    # Rule changed on purpose (authors' script): no tie filter, rejected drawn among all the others.
    assert split.dropped == {"invalid_rating": 1, "single_response": 1}
    rows = _by_prompt(split)
    photo = rows["Explain photosynthesis."]
    # With verbosity in the mean the second response (3.2) would beat the first (2.8); without it 3.5 > 3.0.
    assert photo["chosen"][0]["content"].startswith("Plants turn light")
    assert photo["scores"]["chosen_overall"] == 3.5
    assert photo["rejected"][0]["content"] in {"It is about photos.", "Photosynthesis is a process. " * 5}
    tie = rows["Same scores"]  # both 3.0: kept, the first one in file order is chosen
    assert (tie["chosen"][0]["content"], tie["rejected"][0]["content"]) == ("Answer one.", "Answer two.")
    assert tie["scores"]["chosen_overall"] == tie["scores"]["rejected_overall"] == 3.0


def test_helpsteer_rejected_is_drawn_among_all_other_responses():
    from datasets_registry.helpsteer import curate

    responses = [{"response": f"r{i}", "helpfulness": 4 - i % 4, "correctness": 2, "coherence": 2,
                  "complexity": 2} for i in range(4)]
    rejected = {curate({"prompt": f"p{k}", "responses": responses})["rejected"][0]["content"] for k in range(60)}
    assert rejected == {"r1", "r2", "r3"}  # never the chosen r0, and not only the lowest-scored r3


def test_capybara_multi_turn_prompt_and_rating_ties_kept():
    split = _prep("capybara-7k", "capybara.jsonl")
    # Rule changed on purpose: Table 1 uses all 7,563 rows, so the rating tie is kept.
    assert split.dropped == {"prompt_mismatch": 1, "no_final_assistant_turn": 1}
    rows = _by_prompt(split)
    multi = next(r for r in split.rows if len(r["prompt"]) == 3)
    assert [m["role"] for m in multi["prompt"]] == ["user", "assistant", "user"]
    assert multi["chosen"][0]["content"] == "12."
    tie = rows["Tie please"]
    assert tie["scores"]["chosen_rating"] == tie["scores"]["rejected_rating"]


def test_orca_prompt_is_input_only_and_every_row_is_kept():
    split = _prep("orca-pairs", "orca_argilla.jsonl")
    # Rule changed on purpose (authors' script): prompt = input, no system message; Table 1 counts all
    # 12,859 rows, so the GPT-4 tie and the identical pair are kept.
    assert split.dropped == {}
    rows = _by_prompt(split)
    assert rows["Summarise: cats sleep a lot."]["prompt"] == [{"role": "user", "content": "Summarise: cats sleep a lot."}]
    assert rows["What is 3*3?"]["status"] == "tie"
    assert rows["Identical"]["chosen"] == rows["Identical"]["rejected"]


def test_nectar_rank_one_vs_lower_rank():
    split = _prep("nectar", "nectar.jsonl")
    assert split.dropped == {"tie": 1, "malformed_transcript": 1, "fewer_than_two_ranked_answers": 1}
    rows = _by_prompt(split)
    assert rows["Name a colour."]["chosen"][0]["content"] == "Blue."
    assert [m["role"] for m in rows["How are you?"]["prompt"]] == ["user", "assistant", "user"]


def test_ultrafeedback_overall_authors_way_h4_pairs_on_argilla_prompts_with_ties(tmp_path, monkeypatch):
    # The Argilla prompt set is looked up like any raw file: here the fixture in the hub layout.
    folder = tmp_path / "argilla" / "ultrafeedback-binarized-preferences-cleaned"
    folder.mkdir(parents=True)
    (folder / "train.jsonl").write_bytes((FIXTURES / "ultrafeedback_argilla_cleaned.jsonl").read_bytes())
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path))
    split = _prep("ultrafeedback-overall", "ultrafeedback_h4_train_prefs.jsonl")
    assert split.raw_count == 5
    assert split.dropped == {"prompt_not_in_argilla_cleaned": 1, "empty_turn_rejected": 1}
    rows = _by_prompt(split)
    assert set(rows) == {"Write a haiku about rain.", "Name a prime number.", "Say hello."}
    assert rows["Name a prime number."]["scores"] == {"chosen_overall": 7.0, "rejected_overall": 7.0}  # tie kept
    assert rows["Say hello."]["chosen"] == rows["Say hello."]["rejected"]  # identical kept, as the script does
    assert rows["Write a haiku about rain."]["chosen"][0]["content"] == "Soft rain on the roof"  # H4's, not Argilla's
    assert str(folder / "train.jsonl") in split.sources


def test_ultrafeedback_overall_takes_the_argilla_prompt_file_among_explicit_files():
    split = prepare("ultrafeedback-overall", files=[FIXTURES / "ultrafeedback_h4_train_prefs.jsonl",
                                                    FIXTURES / "ultrafeedback_argilla_cleaned.jsonl"])
    assert (split.raw_count, split.kept) == (5, 3)


def test_ultrafeedback_fg_is_argillas_release_as_is():
    split = _prep("ultrafeedback-fg", "ultrafeedback_argilla_cleaned.jsonl")
    # Rule changed on purpose: no tie or identical-text drop (the paper keeps them); no downsampling.
    assert (split.raw_count, split.kept, split.dropped) == (5, 5, {})
    rows = _by_prompt(split)
    assert rows["Name a prime number."]["scores"] == {"chosen_fine_grained": 4.0, "rejected_fine_grained": 4.0}
    assert rows["Say hello."]["chosen"] == rows["Say hello."]["rejected"]
    assert DATASETS.get("ultrafeedback-fg").downsample_to is None


@pytest.mark.parametrize("name", ["ultrafeedback-fg", "ultrafeedback-overall"])
def test_ultrafeedback_authors_way_refuses_raw_rows_and_names_the_rebinarised_loader(name):
    with pytest.raises(DataFormatError, match=f"{name}-rebinarised"):
        _prep(name, "ultrafeedback_raw.jsonl")


def test_ultrafeedback_overall_and_fine_grained_disagree_on_the_same_prompt():
    # Raw rows, re-binarised here (renamed from ultrafeedback-fg / -overall; the rules are unchanged).
    fg = _by_prompt(_prep("ultrafeedback-fg-rebinarised", "ultrafeedback_raw.jsonl"))
    ov = _by_prompt(_prep("ultrafeedback-overall-rebinarised", "ultrafeedback_raw.jsonl"))
    haiku = "Write a haiku about rain."
    assert fg[haiku]["chosen"][0]["content"] == "Soft rain on the roof"  # gpt-4: FG mean 5.0, overall 6
    assert ov[haiku]["chosen"][0]["content"] == "Rain is wet."  # alpaca-7b: FG mean 2.0, overall 9
    assert fg["Is 7 prime? Explain."]["scores"]["chosen_fine_grained"] == 4.0  # 'N/A' ratings ignored


@pytest.mark.parametrize("name", ["ultrafeedback-fg-rebinarised", "ultrafeedback-overall-rebinarised"])
def test_ultrafeedback_drops_truthfulqa_ties_and_unrated(name):
    split = _prep(name, "ultrafeedback_raw.jsonl")
    assert split.dropped == {"truthfulqa_removed": 1, "tie": 1, "fewer_than_two_rated_completions": 1}


def test_ultrafeedback_model_group_subsets_use_only_table8_models():
    top = _prep("ultrafeedback-top", "ultrafeedback_raw.jsonl")
    bottom = _prep("ultrafeedback-bottom", "ultrafeedback_raw.jsonl")
    (top_row,) = top.rows  # gpt-4 vs gpt-3.5-turbo; the haiku prompt has one top model only
    assert top_row["prompt"][0]["content"] == "Is 7 prime? Explain."
    (bottom_row,) = bottom.rows  # llama-2-7b-chat (3.0) vs alpaca-7b (2.0); gpt-4 excluded
    assert bottom_row["chosen"][0]["content"] == "Drip drop rain"
    assert bottom_row["rejected"][0]["content"] == "Rain is wet."


def test_ultrafeedback_prompt_source_subsets():
    truthful = _prep("ultrafeedback-src-truthfulqa", "ultrafeedback_raw.jsonl")
    assert truthful.dropped == {"other_source": 4}
    assert truthful.rows[0]["prompt"][0]["content"] == "Do vaccines cause autism?"
    flan = _prep("ultrafeedback-src-flan-v2", "ultrafeedback_raw.jsonl")
    assert [r["prompt_source"] for r in flan.rows] == ["flan_v2_cot"]


def test_prompt_pools_take_the_first_user_turn():
    split = _prep("prompts-wildchat", "wildchat.jsonl")
    assert split.dropped == {"no_user_turn": 1}
    assert {r["prompt"][0]["content"] for r in split.rows} == {
        "Write a Python function that reverses a string.", "Solve 3x + 5 = 20."}
    assert all(set(r) >= {"id", "prompt", "source"} and "chosen" not in r for r in split.rows)
