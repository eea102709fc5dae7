"""The authors' released splits: allenai/tulu-2.5-preference-data, read exactly as published.

Every split of the release is registered as `tulu25-<split>` (e.g. `tulu25-hh_rlhf`,
`tulu25-ultrafeedback_mean_aspects`): the only way to train on the exact subsets and sizes the paper's
models were trained on. Nothing is re-curated: no downsampling, no tie or identical-text drop, and
duplicate rows stay (each copy gets its own id); only rows that cannot be a pair in the registry's
schema are dropped and counted (no shared prompt, no final assistant turn, empty turns, which the
authors' script already removed).

A released row is `{"chosen": [messages], "rejected": [messages], "source"}`, both conversations
ending in the two candidate replies. The prompt is their longest shared prefix (at most all but the last
message of each); the rest of each conversation is the completion. The released `source` is kept as
`released_source`.

Choosing per dataset in a grid: name the split (`dataset: tulu25-hh_rlhf`) or keep the rebuilt name and
set `build: released` (`dataset: {name: hh-rlhf, build: released}`); `released_name` maps a rebuilt
name to its split (each rebuilt spec's `released_as`) and fails, before any compute, for a dataset the
authors did not release.

Pinned to 6e87e7ba11eeb2a21db459cf13267f62d1feea23 ("fix uf files", the main branch when the split sizes
below were read from the hub's datasets-server). That commit changed UltraFeedback files after the paper:
`ultrafeedback_overall` has 58,933 rows there (Table 1 prints 60,908).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

from datasets_registry.core import content_id
from datasets_registry.raw_files import require_fields, where
from datasets_registry.raw_sources import source_spec
from datasets_registry.spec import AUTHORS_SCRIPT, DATASETS, DataFormatError, DropRow, register

RELEASE = "allenai/tulu-2.5-preference-data"
RELEASED_REVISION = "6e87e7ba11eeb2a21db459cf13267f62d1feea23"
PREFIX = "tulu25-"
NON_COMMERCIAL = "CC-BY-NC-4.0 (AlpacaFarm)"

# split -> (rows at RELEASED_REVISION, source type, licence beyond the repository's ODC-BY)
RELEASED_SPLITS: dict[str, tuple[int, str, str]] = {
    "alpaca_farm_gpt4_pref": (19_465, "synthetic", NON_COMMERCIAL),
    "alpaca_farm_human_pref": (9_686, "human", NON_COMMERCIAL),
    "argilla_dpo_mix": (6_750, "synthetic", "Apache-2.0 (Argilla)"),
    "capybara": (7_563, "synthetic", "Apache-2.0"),
    "chatbot_arena_2023": (20_465, "human", "prompts CC-BY-4.0, outputs CC-BY-NC-4.0"),
    "chatbot_arena_2024": (34_269, "human", "Apache-2.0"),
    "helpsteer": (9_270, "human", "CC-BY-4.0"),
    "hh_rlhf": (158_530, "human", "MIT"),
    "hh_rlhf_60k": (60_908, "human", "MIT"),
    "nectar": (180_099, "synthetic", "Apache-2.0 (not to be used to compete with OpenAI)"),
    "nectar_60k": (60_908, "synthetic", "Apache-2.0 (not to be used to compete with OpenAI)"),
    "orca_dpo_pairs": (12_859, "synthetic", "Apache-2.0"),
    "preference_big_mixture": (259_851, "mixed", "per component"),
    "prm800k_pairs_phase2": (6_949, "human", "MIT"),
    "shp_2": (500_000, "web", "CC BY-SA (StackExchange part); Reddit API terms (Reddit part)"),
    "stack_exchange_60k": (60_908, "web", "CC BY-SA 4.0"),
    "stack_exchange_paired": (500_000, "web", "CC BY-SA 4.0"),
    "ultrafeedback_evol_instruct": (10_000, "synthetic", "MIT"),
    "ultrafeedback_false_qa": (2_339, "synthetic", "MIT"),
    "ultrafeedback_flan_v2": (20_939, "synthetic", "MIT"),
    "ultrafeedback_lower_10k": (10_000, "synthetic", "MIT"),
    "ultrafeedback_mean_aspects": (60_908, "synthetic", "MIT"),
    "ultrafeedback_middle_10k": (10_000, "synthetic", "MIT"),
    "ultrafeedback_overall": (58_933, "synthetic", "MIT"),
    "ultrafeedback_sharegpt": (19_948, "synthetic", "MIT"),
    "ultrafeedback_top_10k": (10_000, "synthetic", "MIT"),
    "ultrafeedback_truthful_qa": (811, "synthetic", "MIT"),
    "ultrafeedback_ultrachat": (9_929, "synthetic", "MIT"),
}

# What is known to differ in a released split from what the paper describes.
RELEASED_NOTES = {
    "helpsteer": "the authors' script takes chosen = samples[0] of an ascending sort (the lowest mean score), so "
                 "chosen and rejected may be swapped here relative to the paper's 'best = chosen'",
    "ultrafeedback_overall": f"58,933 rows at {RELEASED_REVISION[:7]} ('fix uf files', a commit after the paper that "
                             "changed UltraFeedback files); Table 1 prints 60,908",
    "ultrafeedback_mean_aspects": f"{RELEASED_REVISION[:7]} ('fix uf files', after the paper) changed UltraFeedback "
                                  "files; which ones is not recorded here",
    "prm800k_pairs_phase2": "ground-truth solution vs a found_error generation (the script), not App. B's correct vs "
                            "incorrect generation",
}


def _messages(raw: dict[str, Any], key: str) -> list[dict[str, str]]:
    value = raw[key]
    if hasattr(value, "tolist"):  # numpy arrays from parquet
        value = value.tolist()
    if not isinstance(value, list) or not all(isinstance(m, dict) and "role" in m and "content" in m
                                              for m in value):
        raise DataFormatError(f"{where(raw)}: field {key!r} should be a list of {{role, content}} messages")
    return [{"role": m["role"], "content": m["content"]} for m in value]


def number_copies(rows: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Mark the k-th copy of an identical (chosen, rejected) row, so that released duplicates keep distinct
    ids and survive the registry's de-duplication (the exact released size is the point of these splits)."""
    seen: Counter[str] = Counter()
    for raw in rows:
        require_fields(raw, ["chosen", "rejected"], where(raw))
        blob = json.dumps([raw["chosen"], raw["rejected"]], sort_keys=True, ensure_ascii=False, default=str)
        digest = hashlib.sha256(blob.encode("utf-8", "surrogatepass")).digest()[:16].hex()
        raw["_copy"] = seen[digest]
        seen[digest] += 1
        yield raw


def _curate(name: str):
    def curate(raw: dict[str, Any]) -> dict[str, Any]:
        chosen, rejected = _messages(raw, "chosen"), _messages(raw, "rejected")
        if not chosen or not rejected:
            raise DropRow("empty_conversation")
        shared = 0
        while shared < min(len(chosen), len(rejected)) - 1 and chosen[shared] == rejected[shared]:
            shared += 1
        if shared == 0:
            raise DropRow("no_shared_prompt")
        if chosen[-1]["role"] != "assistant" or rejected[-1]["role"] != "assistant":
            raise DropRow("no_final_assistant_turn")
        prompt, chosen_tail, rejected_tail = chosen[:shared], chosen[shared:], rejected[shared:]
        copy = raw.get("_copy", 0)
        row_id = content_id(name, prompt, json.dumps(chosen_tail, ensure_ascii=False),
                            json.dumps(rejected_tail, ensure_ascii=False), *([copy] if copy else []))
        row: dict[str, Any] = {"id": row_id, "prompt": prompt, "chosen": chosen_tail, "rejected": rejected_tail,
                               "source": name}
        if isinstance(raw.get("source"), str):
            row["released_source"] = raw["source"]
        return row

    return curate


def _rebuilt_counterparts() -> dict[str, list[str]]:
    """split -> the rebuilt registry names that declare it as their `released_as`."""
    out: dict[str, list[str]] = {}
    for name, spec in DATASETS.items():
        if spec.released_as and spec.group != "released":
            out.setdefault(spec.released_as, []).append(name)
    return out


def released_name(name: str) -> str:
    """The registry name of the released split for dataset `name` (itself when it already is one).

    Raises ValueError naming the datasets that have a released split when `name` has none."""
    spec = DATASETS.get(name)  # unknown name: UnknownNameError listing the valid names
    if spec.group == "released":
        return name
    if spec.released_as is None:
        having = sorted(n for names in _rebuilt_counterparts().values() for n in names)
        raise ValueError(f"dataset {name!r} has no released split in {RELEASE}; datasets with one: "
                         f"{', '.join(having)} (or name a tulu25-* split directly)")
    return spec.released_as


for _split, (_rows, _type, _licence) in RELEASED_SPLITS.items():
    _name = f"{PREFIX}{_split}"
    register(source_spec(
        name=_name,
        kind="preference",
        source_type=_type,
        group="released",
        description=f"The authors' released split `{_split}` of {RELEASE}, as published ({_rows:,} rows).",
        curate=_curate(_name),
        group_raw=number_copies,
        hub_id=RELEASE,
        split=_split,
        revision=RELEASED_REVISION,
        hub_files=(f"data/{_split}-00000-of-00001.jsonl",),
        license=f"ODC-BY (repository); {_licence}",
        expected_size=_rows,
        drop_identical=False,
        local_files=(f"{RELEASE}/data/{_split}-*.jsonl", f"{RELEASE}/{_split}.jsonl", f"tulu-2.5/{_split}.jsonl"),
        how_to_get=f"download data/{_split}-00000-of-00001.jsonl of the hub repo {RELEASE} into "
                   f"<data dir>/{RELEASE}/data/",
        rule="rows as released: prompt = the longest shared prefix of chosen and rejected, completions = the "
             "rest; duplicates kept; no downsampling",
        deviation=RELEASED_NOTES.get(_split, ""),
        rule_source=f"{RELEASE} at {RELEASED_REVISION[:7]} (dataset card: built with "
                    f"{AUTHORS_SCRIPT} for most splits)",
    ))
