"""Prompt sets for policy training (§3.4, App. J): UltraFeedback prompts, the 20K random UltraFeedback
prompts of Fig. 3, GSM8K train prompts, the candidate pools the math/code prompts are mined from
(WildChat, LMSYS-Chat-1M), and the remixed 60,908-prompt set. The mined math / code sets themselves are
in `tagging.py`.

Prompt rows: {"id", "prompt": [user message], "source", optional "answer"}. The id hashes only the
prompt text, so the same prompt from two pools is one row in a mix (counted as a duplicate).
"""

from __future__ import annotations

import re
from typing import Any

from datasets_registry.core import content_id
from datasets_registry.raw_files import text_field, where
from datasets_registry.raw_sources import source_spec, variant
from datasets_registry.spec import DataFormatError, DropRow, mix_spec, register
from datasets_registry.ultrafeedback import (
    ARGILLA_FILES,
    ARGILLA_REVISION,
    RAW_FILES,
    SHARED_ARGILLA,
    prompt_source,
)

REMIX_SIZE = 60_908
MINED_PER_DOMAIN = 20_000
FIG3_PROMPTS = 20_000  # Fig. 3: '20K random prompts from UltraFeedback'



def prompt_row(source: str, text: str, **extra: Any) -> dict[str, Any]:
    return {"id": content_id("prompt", [], text.strip()), "prompt": [{"role": "user", "content": text}],
            "source": source, **extra}


def curate_ultrafeedback_prompt(raw: dict[str, Any]) -> dict[str, Any]:
    if prompt_source(raw) == "truthful_qa":
        raise DropRow("truthfulqa_removed")  # same cleaning as the preference data (App. B fn. 9)
    key = "instruction" if "instruction" in raw else "prompt"
    return prompt_row("ultrafeedback", text_field(raw, key), prompt_source=prompt_source(raw))


_GSM8K_ANSWER = re.compile(r"####\s*(.+?)\s*$")


def curate_gsm8k(raw: dict[str, Any]) -> dict[str, Any]:
    question, solution = text_field(raw, "question"), text_field(raw, "answer")
    match = _GSM8K_ANSWER.search(solution.strip())
    if not match:
        raise DropRow("no_final_answer")
    return prompt_row("gsm8k-train", question, answer=match.group(1).replace(",", ""))


def curate_first_user_turn(source: str):
    def curate(raw: dict[str, Any]) -> dict[str, Any]:
        conversation = raw.get("conversation")
        if hasattr(conversation, "tolist"):
            conversation = conversation.tolist()
        if not isinstance(conversation, list):
            raise DataFormatError(f"{where(raw)}: field 'conversation' should be a list of messages")
        for message in conversation:
            if isinstance(message, dict) and message.get("role") == "user":
                content = message.get("content")
                if not isinstance(content, str):
                    raise DropRow("missing_prompt")
                return prompt_row(source, content, language=raw.get("language"))
        raise DropRow("no_user_turn")

    return curate


PROMPTS_ULTRAFEEDBACK = register(source_spec(
    name="prompts-ultrafeedback",
    kind="prompts",
    source_type="synthetic",
    group="prompts",
    description="UltraFeedback prompts (the PPO prompt set of §3.4), TruthfulQA prompts removed.",
    curate=curate_ultrafeedback_prompt,
    hub_id="argilla/ultrafeedback-binarized-preferences-cleaned",
    split="train",
    revision=ARGILLA_REVISION,
    license="MIT",
    paper_size=REMIX_SIZE,
    local_files=(*ARGILLA_FILES, *RAW_FILES, SHARED_ARGILLA),
    how_to_get="as for ultrafeedback-fg: argilla/ultrafeedback-binarized-preferences-cleaned (or raw "
               "openbmb/UltraFeedback) under <data dir>",
    rule="the prompt of every UltraFeedback row (Argilla's cleaned release; raw rows: TruthfulQA prompts removed)",
    rule_source="§3.4 (PPO prompts = the UltraFeedback prompts); Tulu 2.5 PPO model cards (prompts of the "
                "ultrafeedback_mean_aspects split)",
))

register(variant(
    PROMPTS_ULTRAFEEDBACK, name="prompts-ultrafeedback-20k", downsample_to=FIG3_PROMPTS, paper_size=FIG3_PROMPTS,
    expected_size=FIG3_PROMPTS,
    description="20,000 random UltraFeedback prompts: the UltraFeedback prompt set of Fig. 3.",
    rule="prompts-ultrafeedback, seeded random downsample to 20,000",
    rule_source="§3.4 / Fig. 3 ('20K random prompts from UltraFeedback')",
))

register(source_spec(
    name="prompts-gsm8k-train",
    kind="prompts",
    source_type="human",
    group="prompts",
    description="GSM8K train questions with their final numeric answer (verifiable reward, §3.4).",
    curate=curate_gsm8k,
    hub_id="openai/gsm8k",
    hub_config="main",
    split="train",
    revision="740312add88f781978c0658806c59bc2815b9866",  # main (7,473 / 1,319 rows), pinned by public code
    license="MIT",
    paper_size=7_473,
    expected_size=7_473,
    rule="every train question, with the number after '####' as the answer (commas removed)",
    rule_source="§3.4 / Fig. 3 (prompts from the GSM train set)",
    local_files=("openai/gsm8k/main/train-*.parquet", "benchmarks/gsm8k/train.jsonl", "gsm8k/train.jsonl"),
    how_to_get="download main/train-*.parquet of the hub repo openai/gsm8k into <data dir>/openai/gsm8k/main/",
))

register(source_spec(
    name="prompts-wildchat",
    kind="prompts",
    source_type="human",
    group="prompts",
    description="WildChat first user turns: a candidate pool for mining math/code prompts (App. J).",
    curate=curate_first_user_turn("wildchat"),
    hub_id="allenai/WildChat",
    split="train",
    revision="f66566ceaaeb619dd98ffb0f3bf3ce1f86775ac4",  # the tree a public project links as its pinned source
    rule="the first user turn of every conversation",
    rule_source="App. J (prompts mined from WildChat)",
    license="ODC-BY (earlier releases: AI2 ImpACT low-risk)",
    local_files=("allenai/WildChat/data/*.parquet", "allenai/WildChat/*.jsonl*"),
    how_to_get="download data/*.parquet of the hub repo allenai/WildChat into <data dir>/allenai/WildChat/data/",
))

register(source_spec(
    name="prompts-lmsys-chat-1m",
    kind="prompts",
    source_type="human",
    group="prompts",
    description="LMSYS-Chat-1M first user turns: a candidate pool for mining math/code prompts (App. J).",
    curate=curate_first_user_turn("lmsys-chat-1m"),
    hub_id="lmsys/lmsys-chat-1m",
    split="train",
    revision="200748d9d3cddcc9d782887541057aca0b18c5da",  # pinned by two public projects' code
    rule="the first user turn of every conversation",
    rule_source="App. J (prompts mined from LMSYS-1M)",
    license="LMSYS-Chat-1M Dataset License Agreement",
    local_files=("lmsys/lmsys-chat-1m/data/*.parquet", "lmsys/lmsys-chat-1m/*.jsonl*"),
    how_to_get="accept the terms of the gated hub repo lmsys/lmsys-chat-1m, then download data/*.parquet "
               "into <data dir>/lmsys/lmsys-chat-1m/data/",
))

register(mix_spec(
    name="prompts-remix",
    kind="prompts",
    source_type="mixed",
    group="prompts",
    description="Remixed prompts (Table 4): 20k mined math + 20k mined code + UltraFeedback, downsampled to 60,908.",
    components=(("prompts-mined-math", MINED_PER_DOMAIN), ("prompts-mined-code", MINED_PER_DOMAIN),
                ("prompts-ultrafeedback", None)),
    downsample_to=REMIX_SIZE,
    paper_size=REMIX_SIZE,
    expected_size=REMIX_SIZE,
    license="per component",
    rule="20k mined math + 20k mined code + all UltraFeedback prompts pooled (duplicates once), seeded random "
         "downsample to 60,908",
    rule_source="§3.4 (remixed prompts, Table 4), App. J",
))
