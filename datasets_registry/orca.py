"""Orca DPO pairs (Mukherjee et al. 2023) as cleaned by Argilla: argilla/distilabel-intel-orca-dpo-pairs,
train split (App. B: 'cleaned by Argilla, as we found it had better performance').

Argilla re-rated every pair with GPT-4 and swapped chosen/rejected where it disagreed (`status`). Table 1
counts all 12,859 rows, so every row is kept: GPT-4 ties (the `status` is kept on the row for filtering)
and pairs with identical texts alike.
The prompt is the `input` field alone, as in the authors' script: the `system` field (a system prompt on
most rows) is not used. The Intel original (columns system, question, chosen, rejected) is read too, for
the shared sample, with `question` as the prompt.
"""

from __future__ import annotations

from typing import Any

from datasets_registry.core import preference_row
from datasets_registry.raw_files import text_field, where
from datasets_registry.raw_sources import source_spec
from datasets_registry.spec import AUTHORS_SCRIPT, DataFormatError, register


def curate(raw: dict[str, Any]) -> dict[str, Any]:
    if "input" in raw:
        question = text_field(raw, "input")
    elif "question" in raw:
        question = text_field(raw, "question")
    else:
        raise DataFormatError(f"{where(raw)}: missing field 'input' (Argilla) or 'question' (Intel); "
                              f"present: {sorted(k for k in raw if not k.startswith('_'))}")
    extra = {"status": raw["status"]} if isinstance(raw.get("status"), str) else {}
    return preference_row("orca-pairs", [{"role": "user", "content": question}], text_field(raw, "chosen"),
                          text_field(raw, "rejected"), **extra)


register(source_spec(
    name="orca-pairs",
    kind="preference",
    source_type="synthetic",
    group="table1",
    description="Argilla-cleaned Intel Orca DPO pairs (GPT-4 re-rated, swapped where it disagreed).",
    curate=curate,
    hub_id="argilla/distilabel-intel-orca-dpo-pairs",
    split="train",
    revision="eda9b7b7ef07bf96b22ec0e5a5267f49dfc55ccd",
    license="Apache-2.0",
    paper_size=12_859,
    expected_size=12_859,
    drop_identical=False,
    rule="every row: prompt = input (no system message), chosen / rejected as Argilla released them; "
         "only empty turns dropped",
    rule_source="App. B (the Argilla-cleaned train split); "
                f"{AUTHORS_SCRIPT} (argilla/distilabel-intel-orca-dpo-pairs: prompt = input)",
    deviation="before this change the system field was added as a system message (92 of 100 shared sample rows) "
              "and identical pairs were dropped",
    released_as="tulu25-orca_dpo_pairs",
    # ../shared/data/preferences/orca_dpo_pairs/ holds Intel's original (not Argilla's cleaned) rows: it is
    # not substituted here; pass it explicitly with `harness data prepare orca-pairs --file ...`.
    local_files=("argilla/distilabel-intel-orca-dpo-pairs/data/*.parquet",
                 "argilla/distilabel-intel-orca-dpo-pairs/*.jsonl*", "orca-pairs/*.jsonl*"),
    how_to_get="download data/*.parquet of the hub repo argilla/distilabel-intel-orca-dpo-pairs into "
               "<data dir>/argilla/distilabel-intel-orca-dpo-pairs/data/",
))
