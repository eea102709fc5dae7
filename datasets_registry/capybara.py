"""Capybara 7k (Daniele & Suphavadeeprasit 2023) as released by Argilla:
argilla/distilabel-capybara-dpo-7k-binarized, train split (App. B).

Raw rows carry `chosen` / `rejected` as full (possibly multi-turn) conversations ending in the two
candidate assistant replies, with GPT-4 ratings. The prompt is every message before the last. Every row
is kept as released (Table 1: all 7,563 rows; the authors' script takes `chosen` / `rejected` as they
are): no rating-tie or identical-text drop. Only rows that cannot be a pair in this schema are dropped
(no final assistant reply, conversations that differ before it), and the generic empty-turn rule.
"""

from __future__ import annotations

from typing import Any

from datasets_registry.core import preference_row
from datasets_registry.raw_files import require_fields, where
from datasets_registry.raw_sources import source_spec
from datasets_registry.spec import AUTHORS_SCRIPT, DataFormatError, DropRow, register


def _messages(raw: dict[str, Any], key: str) -> list[dict[str, Any]]:
    value = raw[key]
    if hasattr(value, "tolist"):
        value = value.tolist()
    if not isinstance(value, list) or not all(isinstance(m, dict) for m in value):
        raise DataFormatError(f"{where(raw)}: field {key!r} should be a list of {{role, content}} messages")
    return [{"role": m.get("role"), "content": m.get("content")} for m in value]


def curate(raw: dict[str, Any]) -> dict[str, Any]:
    require_fields(raw, ["chosen", "rejected"], where(raw))
    chosen, rejected = _messages(raw, "chosen"), _messages(raw, "rejected")
    if not chosen or not rejected or chosen[-1]["role"] != "assistant" or rejected[-1]["role"] != "assistant":
        raise DropRow("no_final_assistant_turn")
    if chosen[:-1] != rejected[:-1]:
        raise DropRow("prompt_mismatch")
    rc, rr = raw.get("rating_chosen"), raw.get("rating_rejected")
    scores = ({"chosen_rating": rc, "rejected_rating": rr}
              if isinstance(rc, (int, float)) and isinstance(rr, (int, float)) else {})
    return preference_row("capybara-7k", chosen[:-1], chosen[-1]["content"], rejected[-1]["content"], scores=scores)


register(source_spec(
    name="capybara-7k",
    kind="preference",
    source_type="synthetic",
    group="table1",
    description="Argilla's Capybara DPO 7k: multi-turn conversations, GPT-4-rated final replies.",
    curate=curate,
    hub_id="argilla/distilabel-capybara-dpo-7k-binarized",
    split="train",
    # A README-only commit made after the data's upload (it adds the `argilla` tag after the Jan 31, 2024
    # `distilabel` tag PR), so the data at this commit is the 7,563-row release.
    revision="801d1307f5c886088678a2353dedfa7b3ce1cf94",
    license="Apache-2.0",
    paper_size=7_563,
    expected_size=7_563,
    drop_identical=False,
    rule="every row: prompt = all messages before the last, chosen / rejected = the two final assistant replies; "
         "no rating-tie or identical-text drop",
    rule_source="App. B (Argilla's train split, 7,563 rows in Table 1); "
                f"{AUTHORS_SCRIPT} (argilla/distilabel-capybara-dpo-7k-binarized, rows as released)",
    deviation="before this change rating ties were dropped",
    released_as="tulu25-capybara",
    local_files=("argilla/distilabel-capybara-dpo-7k-binarized/data/*.parquet",
                 "argilla/distilabel-capybara-dpo-7k-binarized/*.jsonl*", "capybara/*.jsonl*"),
    how_to_get="download data/*.parquet of the hub repo argilla/distilabel-capybara-dpo-7k-binarized into "
               "<data dir>/argilla/distilabel-capybara-dpo-7k-binarized/data/",
))
