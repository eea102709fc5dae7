"""Nectar (Zhu et al. 2023): berkeley-nest/Nectar, train split (App. B), plus the 60,908-pair
size-matched split of Table 2.

A raw row is an Anthropic-style transcript prompt (ending with an empty 'Assistant:' cue) and 7 answers
ranked by GPT-4 (rank 1 best). Pair: the rank-1 answer is chosen, a random lower-ranked answer rejected.
Dropped: prompts that do not parse, answers lists with no strictly lower rank, malformed turns.
"""

from __future__ import annotations

from typing import Any

from datasets_registry.core import preference_row, row_rng
from datasets_registry.raw_files import require_fields, text_field, where
from datasets_registry.raw_sources import source_spec, variant
from datasets_registry.spec import AUTHORS_SCRIPT, DataFormatError, DropRow, register
from datasets_registry.transcripts import check_alternating, parse_transcript

SIZE_MATCHED = 60_908


def curate(raw: dict[str, Any]) -> dict[str, Any]:
    require_fields(raw, ["prompt", "answers"], where(raw))
    messages = parse_transcript(text_field(raw, "prompt"))
    if messages[-1]["role"] == "assistant" and not messages[-1]["content"]:
        messages = messages[:-1]  # the empty "Assistant:" cue
    if not messages or messages[-1]["role"] != "user":
        raise DropRow("prompt_not_ending_in_user_turn")
    check_alternating(messages)
    answers = raw["answers"]
    if hasattr(answers, "tolist"):
        answers = answers.tolist()
    if not isinstance(answers, list):
        raise DataFormatError(f"{where(raw)}: field 'answers' should be a list of {{answer, model, rank}}")
    ranked = [a for a in answers if isinstance(a, dict) and isinstance(a.get("rank"), (int, float))]
    if len(ranked) < 2:
        raise DropRow("fewer_than_two_ranked_answers")
    best = min(a["rank"] for a in ranked)
    top = sorted((a for a in ranked if a["rank"] == best), key=lambda a: str(a.get("answer")))
    lower = sorted((a for a in ranked if a["rank"] > best), key=lambda a: (a["rank"], str(a.get("answer"))))
    if not lower:
        raise DropRow("tie")
    pick = row_rng("nectar", raw["prompt"])
    chosen, rejected = top[pick % len(top)], lower[(pick >> 20) % len(lower)]
    return preference_row("nectar", messages, chosen.get("answer"), rejected.get("answer"),
                          scores={"chosen_rank": chosen["rank"], "rejected_rank": rejected["rank"]})


NECTAR = register(source_spec(
    name="nectar",
    kind="preference",
    source_type="synthetic",
    group="table1",
    description="Nectar: GPT-4 7-wise rankings; rank-1 answer vs a random lower-ranked answer.",
    curate=curate,
    hub_id="berkeley-nest/Nectar",
    split="train",
    revision="4d713235890585261a631274742843c65434224c",
    license="Apache-2.0 (not to be used to compete with OpenAI)",
    paper_size=180_099,
    expected_size=180_099,
    rule="prompt transcript parsed into messages (empty final Assistant cue removed); rank-1 answer = chosen, "
         "a random lower-ranked answer = rejected; ties and malformed transcripts dropped",
    rule_source=f"App. B ('the publicly available HuggingFace train split'); {AUTHORS_SCRIPT} (berkeley-nest/Nectar: "
                "rank-sorted, chosen = answers[0], rejected = random of the rest)",
    released_as="tulu25-nectar",
    local_files=("berkeley-nest/Nectar/data/*.parquet", "berkeley-nest/Nectar/*.jsonl*", "nectar/*.jsonl*"),
    how_to_get="download data/rlaif.parquet of the hub repo berkeley-nest/Nectar into "
               "<data dir>/berkeley-nest/Nectar/data/",
))

register(variant(NECTAR, name="nectar-60k", group="variant", downsample_to=SIZE_MATCHED, paper_size=SIZE_MATCHED,
                 expected_size=SIZE_MATCHED, released_as="tulu25-nectar_60k",
                 rule="nectar's pairs, seeded random downsample to 60,908",
                 rule_source="App. B (size-matched splits for Table 2); released split nectar_60k",
                 description="Nectar downsampled to 60,908 pairs (size-matched, Table 2 / Table 6)."))
