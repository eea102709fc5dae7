"""StackExchange preferences (App. B: 'the publicly available HuggingFace train split, randomly
down-sampled to 500,000 samples'), plus the 60,908-pair size-matched split of Table 2.

`stack-exchange` (the default) is what the authors built from: `lvwerra/stack-exchange-paired`, the
H4 questions with their answers already converted from HTML to Markdown and paired as up to 10
(`response_j` better than `response_k`) pairs per question (EasyLM `convert_preference_data.py`,
branch `lvwerra/stack-exchange-paired`; `create_preference_data.sh`). A row is one pair: prompt =
`question`, chosen = `response_j`, rejected = `response_k`; nothing else is filtered beyond the
generic malformed-row rules. The paper cites the H4 dataset (ref. [25]) it was derived from.

`stack-exchange-h4` keeps the raw H4 source (`HuggingFaceH4/stack-exchange-preferences`): answers are
HTML, and a question becomes one pair (the highest-`pm_score` answer vs a random strictly lower one;
questions with fewer than two answers or all-tied scores dropped). It is not what the paper trained
on: HTML-tagged answers skew every StackExchange number (Tables 1, 2, 6).
"""

from __future__ import annotations

from typing import Any

from datasets_registry.core import preference_row, row_rng
from datasets_registry.raw_files import require_fields, text_field, where
from datasets_registry.raw_sources import source_spec, variant
from datasets_registry.spec import AUTHORS_SCRIPT, DataFormatError, DropRow, register

SIZE_MATCHED = 60_908
PAPER_SIZE = 500_000


def curate_paired(raw: dict[str, Any]) -> dict[str, Any]:
    if "answers" in raw and "response_j" not in raw:
        raise DataFormatError(f"{where(raw)}: a raw H4 stack-exchange-preferences row (question + answers); "
                              "stack-exchange reads lvwerra/stack-exchange-paired (use stack-exchange-h4 for H4 rows)")
    require_fields(raw, ["question", "response_j", "response_k"], where(raw))
    extra = {"qid": raw["qid"]} if isinstance(raw.get("qid"), (int, str)) else {}
    return preference_row("stack-exchange", [{"role": "user", "content": text_field(raw, "question")}],
                          text_field(raw, "response_j"), text_field(raw, "response_k"), **extra)


def curate_h4(raw: dict[str, Any]) -> dict[str, Any]:
    require_fields(raw, ["question", "answers"], where(raw))
    question = text_field(raw, "question")
    if not isinstance(raw["answers"], list):
        raise DataFormatError(f"{where(raw)}: field 'answers' should be a list, got {type(raw['answers']).__name__}")
    answers = [a for a in raw["answers"]
               if isinstance(a, dict) and isinstance(a.get("text"), str) and a["text"].strip()
               and isinstance(a.get("pm_score"), (int, float))]
    if len(answers) < 2:
        raise DropRow("fewer_than_two_answers")
    best = max(a["pm_score"] for a in answers)
    top = sorted((a for a in answers if a["pm_score"] == best), key=lambda a: a["text"])
    lower = sorted((a for a in answers if a["pm_score"] < best), key=lambda a: a["text"])
    if not lower:
        raise DropRow("tie")
    pick = row_rng("stack-exchange", question)
    chosen, rejected = top[pick % len(top)], lower[(pick >> 20) % len(lower)]
    return preference_row("stack-exchange-h4", [{"role": "user", "content": question}], chosen["text"],
                          rejected["text"], scores={"chosen_pm_score": chosen["pm_score"],
                                                    "rejected_pm_score": rejected["pm_score"]})


# The paired repo's `train` split is every file outside data/evaluation/ (the datasets library maps an
# `evaluation` folder to the test split): data/finetune, data/reward and data/rl.
PAIRED_TRAIN_DIRS = ("data/finetune", "data/reward", "data/rl")

STACK_EXCHANGE = register(source_spec(
    name="stack-exchange",
    kind="preference",
    source_type="web",
    group="table1",
    description="StackExchange pairs (lvwerra/stack-exchange-paired: Markdown answers, up to 10 pairs per "
                "question), downsampled to 500k.",
    curate=curate_paired,
    hub_id="lvwerra/stack-exchange-paired",
    split="train",
    revision=None,
    unpinned_reason="no commit id of lvwerra/stack-exchange-paired was found in the stored hub pages, "
                    "issues or code (the hub lists its last update as 2023-03-13)",
    hub_files=tuple(f"{folder}/*.parquet" for folder in PAIRED_TRAIN_DIRS),
    license="CC BY-SA 4.0",
    paper_size=PAPER_SIZE,
    downsample_to=PAPER_SIZE,
    expected_size=PAPER_SIZE,
    # One pattern (the first matching pattern wins): every data/ folder but evaluation/.
    local_files=("lvwerra/stack-exchange-paired/data/[!e]*/*.parquet", "lvwerra/stack-exchange-paired/*.jsonl*",
                 "stack-exchange-paired/*.jsonl*"),
    how_to_get="download data/finetune, data/reward and data/rl (parquet) of the hub repo "
               "lvwerra/stack-exchange-paired into <data dir>/lvwerra/stack-exchange-paired/, keeping the folders",
    rule="one row per pair: prompt = question, chosen = response_j, rejected = response_k (answers already "
         "Markdown, up to 10 pairs per question in the source); seeded random downsample to 500,000",
    rule_source=f"App. B ('train split, randomly down-sample to 500,000'); {AUTHORS_SCRIPT}",
    deviation="the paper cites HuggingFaceH4/stack-exchange-preferences; the authors' script and the released "
              "split `stack_exchange_paired` use lvwerra/stack-exchange-paired (followed here). The 500k sample "
              "is this harness's seeded hash sample, not the script's shuffle(seed=42).",
    released_as="tulu25-stack_exchange_paired",
))

register(variant(STACK_EXCHANGE, name="stack-exchange-60k", group="variant", downsample_to=SIZE_MATCHED,
                 paper_size=SIZE_MATCHED, expected_size=SIZE_MATCHED,
                 rule="stack-exchange's pairs, seeded random downsample to 60,908",
                 rule_source="App. B (size-matched splits for Table 2); released split `stack_exchange_60k`",
                 released_as="tulu25-stack_exchange_60k",
                 description="StackExchange pairs downsampled to 60,908 (size-matched, Table 2 / Table 6)."))

register(source_spec(
    name="stack-exchange-h4",
    kind="preference",
    source_type="web",
    group="other",
    description="Raw H4 StackExchange preferences (HTML answers): best-scored vs a random lower-scored answer, "
                "one pair per question, downsampled to 500k. Not what the paper trained on.",
    curate=curate_h4,
    hub_id="HuggingFaceH4/stack-exchange-preferences",
    split="train",
    revision="2d5f5ce39da4fd64632d60da23b1d7e16f6ba6f1",
    license="CC BY-SA 4.0",
    downsample_to=PAPER_SIZE,
    local_files=("HuggingFaceH4/stack-exchange-preferences/**/*.parquet",
                 "HuggingFaceH4/stack-exchange-preferences/**/*.jsonl*", "stack-exchange-preferences/*.jsonl*"),
    how_to_get="download the parquet files of the hub repo HuggingFaceH4/stack-exchange-preferences "
               "(about 20 GB) into <data dir>/HuggingFaceH4/stack-exchange-preferences/",
    rule="one pair per question: highest pm_score answer vs a random strictly lower-scored one (HTML kept); "
         "fewer than two answers or all tied: dropped; downsample to 500,000",
    rule_source="paper ref. [25] (the dataset the paper cites); rule is this harness's own binarisation",
    deviation="not the authors' build (they used lvwerra/stack-exchange-paired, see stack-exchange)",
))
