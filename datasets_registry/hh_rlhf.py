"""HH-RLHF (Bai et al. 2022): Anthropic/hh-rlhf, train split (App. B: used as published).

Each raw row is a pair of whole transcripts sharing every turn but the last assistant reply.
Curation: split the transcripts into messages; the prompt is every turn before the final assistant
reply; dropped (and counted): transcripts that do not parse, that do not end in an assistant turn,
whose roles do not alternate, whose chosen/rejected prompts differ, and the generic malformed rules
(empty turns, identical chosen and rejected).
"""

from __future__ import annotations

from typing import Any

from datasets_registry.core import preference_row
from datasets_registry.raw_files import text_field
from datasets_registry.raw_sources import source_spec, variant
from datasets_registry.spec import AUTHORS_SCRIPT, DropRow, register
from datasets_registry.transcripts import check_alternating, parse_transcript

SUBSETS = ("harmless-base", "helpful-base", "helpful-online", "helpful-rejection-sampled")
SIZE_MATCHED = 60_908  # Table 2 / App. B: HH-RLHF, StackExchange and Nectar downsampled to UltraFeedback's size


def curate(raw: dict[str, Any]) -> dict[str, Any]:
    chosen = parse_transcript(text_field(raw, "chosen"))
    rejected = parse_transcript(text_field(raw, "rejected"))
    if chosen[-1]["role"] != "assistant" or rejected[-1]["role"] != "assistant":
        raise DropRow("no_final_assistant_turn")
    check_alternating(chosen)
    prompt = chosen[:-1]
    if rejected[:-1] != prompt:
        raise DropRow("prompt_mismatch")
    return preference_row("hh-rlhf", prompt, chosen[-1]["content"], rejected[-1]["content"])


HH_RLHF = register(source_spec(
    name="hh-rlhf",
    kind="preference",
    source_type="human",
    group="table1",
    description="Anthropic HH-RLHF, all four train subsets; multi-turn transcripts split into messages.",
    curate=curate,
    hub_id="Anthropic/hh-rlhf",
    split="train",
    # main since 2023-05-26 (160,800 train rows); the previous pin 53bb19a... could not be found on the hub.
    revision="09be8c5bbc57cb3887f3a9732ad6aa7ec602a1fa",
    hub_files=tuple(f"{subset}/train.jsonl.gz" for subset in SUBSETS),
    license="MIT",
    paper_size=158_530,
    expected_size=158_530,
    rule="all four train subsets; transcripts split into messages, prompt = every turn before the final "
         "assistant reply; dropped: unparseable / non-alternating transcripts, chosen and rejected prompts that "
         "differ, empty turns, identical chosen and rejected",
    rule_source=f"App. B ('the publicly available HuggingFace train split'); {AUTHORS_SCRIPT} (Anthropic/hh-rlhf: split at "
                "the first differing turn; identical transcripts skipped)",
    deviation="the authors' script keeps the turns up to the first difference when transcripts differ earlier; "
              "here such pairs are dropped (prompt_mismatch)",
    released_as="tulu25-hh_rlhf",
    local_files=(
        "Anthropic/hh-rlhf/*/train.jsonl.gz",  # hub layout (red-team-attempts has no train.jsonl.gz)
        "hh-rlhf/*/train.jsonl.gz",
        "preferences/hh-rlhf/*/train_sample_100.jsonl.gz",  # ../shared/data: 4 x 100 real train rows
    ),
    how_to_get="download <subset>/train.jsonl.gz of the 4 subsets from the hub repo Anthropic/hh-rlhf "
               "into <data dir>/Anthropic/hh-rlhf/<subset>/",
))

register(variant(HH_RLHF, name="hh-rlhf-60k", group="variant", downsample_to=SIZE_MATCHED,
                 paper_size=SIZE_MATCHED, expected_size=SIZE_MATCHED, released_as="tulu25-hh_rlhf_60k",
                 rule="hh-rlhf's pairs, seeded random downsample to 60,908",
                 rule_source="App. B (size-matched splits for Table 2); released split hh_rlhf_60k",
                 description="HH-RLHF randomly downsampled to 60,908 pairs (size-matched, Table 2 / Table 6)."))

# Not in Table 1: held-out human pairs (e.g. reward-model accuracy on real data); the real file ships in
# ../shared/data, so this is the one full HH-RLHF split available offline.
register(variant(
    HH_RLHF, name="hh-rlhf-harmless-test", group="variant", split="test", paper_size=None, expected_size=None,
    released_as=None, rule="hh-rlhf's curation on the harmless-base test split", rule_source="not in the paper",
    deviation="",
    description="HH-RLHF harmless-base test split (2,312 raw pairs): held-out evaluation pairs.",
    hub_files=("harmless-base/test.jsonl.gz",),
    local_files=("Anthropic/hh-rlhf/harmless-base/test.jsonl.gz", "hh-rlhf/harmless-base/test.jsonl.gz",
                 "preferences/hh-rlhf/harmless-base/test.jsonl.gz"),
    how_to_get="download harmless-base/test.jsonl.gz of the hub repo Anthropic/hh-rlhf into "
               "<data dir>/Anthropic/hh-rlhf/harmless-base/",
))
