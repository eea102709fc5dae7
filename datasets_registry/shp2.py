"""SHP-2 (Ethayarajh et al. 2022): stanfordnlp/SHP-2, train split, randomly downsampled to 500,000 (App. B).

A raw row is a post (`history`) with two top-level comments; `labels` = 1 when comment A was preferred
(A written later than B but scored higher). Rows with a label other than 0/1 are dropped.
"""

from __future__ import annotations

from typing import Any

from datasets_registry.core import preference_row
from datasets_registry.raw_files import require_fields, text_field, where
from datasets_registry.raw_sources import source_spec
from datasets_registry.spec import AUTHORS_SCRIPT, DropRow, register


def curate(raw: dict[str, Any]) -> dict[str, Any]:
    require_fields(raw, ["history", "human_ref_A", "human_ref_B", "labels"], where(raw))
    label = raw["labels"]
    if label not in (0, 1):
        raise DropRow("invalid_label")
    a, b = text_field(raw, "human_ref_A"), text_field(raw, "human_ref_B")
    chosen, rejected = (a, b) if label == 1 else (b, a)
    scores = {}
    if isinstance(raw.get("score_A"), (int, float)) and isinstance(raw.get("score_B"), (int, float)):
        scores = {"chosen_upvotes": raw["score_A"] if label == 1 else raw["score_B"],
                  "rejected_upvotes": raw["score_B"] if label == 1 else raw["score_A"]}
    return preference_row("shp-2", [{"role": "user", "content": text_field(raw, "history")}], chosen, rejected,
                          scores=scores, domain=raw.get("domain"))


register(source_spec(
    name="shp-2",
    kind="preference",
    source_type="web",
    group="table1",
    description="Stanford Human Preferences 2 (Reddit + StackExchange), train split, downsampled to 500k.",
    curate=curate,
    hub_id="stanfordnlp/SHP-2",
    split="train",
    revision="bacea6264d733debecd4677d932e02f2579c0ff5",
    license="CC BY-SA (StackExchange part); Reddit part under the Reddit API terms",
    paper_size=500_000,
    expected_size=500_000,
    rule="prompt = history; labels == 1 -> human_ref_A chosen, else human_ref_B; seeded random downsample "
         "to 500,000",
    rule_source=f"App. B ('train split, randomly down-sample to 500,000'); {AUTHORS_SCRIPT} (stanfordnlp/SHP-2)",
    released_as="tulu25-shp_2",
    downsample_to=500_000,
    local_files=("stanfordnlp/SHP-2/**/train.json", "stanfordnlp/SHP-2/**/train.jsonl", "shp-2/train.jsonl*"),
    how_to_get="download the train.json files (reddit/<domain>/, stackexchange/<domain>/) of the hub repo "
               "stanfordnlp/SHP-2 into <data dir>/stanfordnlp/SHP-2/, keeping its folders",
))
