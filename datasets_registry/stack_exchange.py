"""StackExchange preferences (H4; Lambert et al. 2023): HuggingFaceH4/stack-exchange-preferences,
train split, one pair per question, randomly downsampled to 500,000 (App. B); plus the 60,908-pair
size-matched split of Table 2.

A raw row is a question with all its answers, each with `pm_score` (log2(1 + upvotes), +1 if accepted,
as in Askell et al. 2021). Pair: the highest-scored answer is chosen, a random answer with a strictly
lower score is rejected (the random-lower rule of the other binarised sets). Dropped: questions with
fewer than two non-empty answers, and ties (every answer with the same score).
"""

from __future__ import annotations

from typing import Any

from datasets_registry.core import (
    DataFormatError,
    DropRow,
    preference_row,
    register,
    require_fields,
    row_rng,
    source_spec,
    text_field,
    variant,
    where,
)

SIZE_MATCHED = 60_908


def curate(raw: dict[str, Any]) -> dict[str, Any]:
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
    return preference_row("stack-exchange", [{"role": "user", "content": question}], chosen["text"],
                          rejected["text"], scores={"chosen_pm_score": chosen["pm_score"],
                                                    "rejected_pm_score": rejected["pm_score"]})


STACK_EXCHANGE = register(source_spec(
    name="stack-exchange",
    kind="preference",
    source_type="web",
    group="table1",
    description="H4 StackExchange preferences: best-scored vs a random lower-scored answer, downsampled to 500k.",
    curate=curate,
    hub_id="HuggingFaceH4/stack-exchange-preferences",
    split="train",
    revision="2d5f5ce39da4fd64632d60da23b1d7e16f6ba6f1",
    license="CC BY-SA 4.0",
    paper_size=500_000,
    downsample_to=500_000,
    local_files=("HuggingFaceH4/stack-exchange-preferences/**/*.parquet",
                 "HuggingFaceH4/stack-exchange-preferences/**/*.jsonl*", "stack-exchange-preferences/*.jsonl*"),
    how_to_get="download the parquet files of the hub repo HuggingFaceH4/stack-exchange-preferences "
               "(about 20 GB) into <data dir>/HuggingFaceH4/stack-exchange-preferences/",
))

register(variant(STACK_EXCHANGE, name="stack-exchange-60k", group="variant", downsample_to=SIZE_MATCHED,
                 paper_size=SIZE_MATCHED,
                 description="StackExchange downsampled to 60,908 pairs (size-matched, Table 2 / Table 6)."))
