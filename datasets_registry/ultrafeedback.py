"""UltraFeedback (Cui et al. 2023): the overall-score and fine-grained binarisations of Table 1 and the
subsets of Table 7 / Table 8 (App. B, App. E).

Raw UltraFeedback (openbmb/UltraFeedback) has, per prompt, 4 completions from different models, each with
GPT-4 ratings on 4 aspects (helpfulness, honesty, instruction following, truthfulness; 1-5) and an
`overall_score` from the critique (1-10). Binarisation (as in Zephyr / Argilla): the best-scored completion
is chosen, a random completion with a strictly lower score rejected; prompts where all tie are dropped.
  * overall (OV):      score = overall_score
  * fine-grained (FG): score = mean of the 4 aspect ratings ('N/A' ignored)
The paper used Argilla's cleaned release (TruthfulQA prompts removed, App. B fn. 9), which is the FG
binarisation: `ultrafeedback-fg` reads it directly; from raw rows both flavours drop TruthfulQA prompts.
Already-binarised files are accepted when they match the flavour: Argilla's (FG ratings 1-5) for FG,
H4's ultrafeedback_binarized (overall scores 1-10) for OV; a file of the other flavour is an error.

Table 7 subsets (raw rows needed for the model groups):
  * ultrafeedback-{top,middle,bottom}: only completions of the Table 8 model group, FG binarisation,
    10,000 prompts each;
  * ultrafeedback-src-*: prompts from one source (UltraFeedback's own `source` annotation), FG binarisation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from datasets_registry.core import (
    DataFormatError,
    DropRow,
    preference_row,
    register,
    row_rng,
    source_spec,
    where,
)

FG_ASPECTS = ("helpfulness", "honesty", "instruction_following", "truthfulness")
RAW_REVISION = "40b436560ca83a8dba36114c22ab3c66e43f6d5e"  # the release with the fixed overall_score
RAW_FILES = ("openbmb/UltraFeedback/**/*.jsonl", "openbmb/UltraFeedback/**/*.parquet")
ARGILLA_FILES = ("argilla/ultrafeedback-binarized-preferences-cleaned/data/*.parquet",
                 "argilla/ultrafeedback-binarized-preferences-cleaned/*.jsonl*")
SHARED_ARGILLA = "preferences/ultrafeedback/argilla_cleaned_sample_1k.jsonl"
H4_FILES = ("HuggingFaceH4/ultrafeedback_binarized/data/train_prefs-*.parquet",
            "HuggingFaceH4/ultrafeedback_binarized/train_prefs*.jsonl*")
SHARED_H4 = "preferences/ultrafeedback/binarized_sample_train_1k.jsonl"
PAPER_SIZE = 60_908
SUBSET_SIZE = 10_000

# Table 8: models bucketed by their average fine-grained score.
MODEL_GROUPS: dict[str, tuple[str, ...]] = {
    "top": ("gpt-4", "gpt-3.5-turbo", "wizardlm-70b", "bard"),
    "middle": ("vicuna-33b", "mpt-30b-chat", "llama-2-70b-chat", "wizardlm-13b", "llama-2-13b-chat",
               "ultralm-65b", "ultralm-13b"),
    "bottom": ("wizardlm-7b", "llama-2-7b-chat", "starchat", "alpaca-7b", "pythia-12b", "falcon-40b-instruct"),
}
# Table 7 prompt subsets -> UltraFeedback `source` values.
PROMPT_SOURCES: dict[str, tuple[str, ...]] = {
    "falseqa": ("false_qa",),
    "evol-instruct": ("evol_instruct",),
    "truthfulqa": ("truthful_qa",),
    "flan-v2": ("flan_v2_niv2", "flan_v2_cot", "flan_v2_p3", "flan_v2_flan2021"),
    "sharegpt": ("sharegpt",),
    "ultrachat": ("ultrachat",),
}


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None  # 'N/A' ratings
    return number


def fine_grained_score(completion: dict[str, Any]) -> float | None:
    annotations = completion.get("annotations") or {}
    ratings = []
    for aspect in FG_ASPECTS:
        note = annotations.get(aspect) if isinstance(annotations, dict) else None
        if isinstance(note, list):
            note = note[0] if note else None
        rating = _number(note.get("Rating")) if isinstance(note, dict) else None
        if rating is not None:
            ratings.append(rating)
    if ratings:
        return sum(ratings) / len(ratings)
    return _number(completion.get("fine-grained_score"))


def overall_score(completion: dict[str, Any]) -> float | None:
    return _number(completion.get("overall_score"))


def prompt_source(raw: dict[str, Any]) -> str | None:
    if isinstance(raw.get("source"), str):
        return raw["source"]
    metadata = raw.get("metadata")
    return metadata.get("source") if isinstance(metadata, dict) else None


def _completions(raw: dict[str, Any]) -> list[dict[str, Any]]:
    value = raw["completions"]
    if hasattr(value, "tolist"):
        value = value.tolist()
    if not isinstance(value, list):
        raise DataFormatError(f"{where(raw)}: field 'completions' should be a list")
    return [c for c in value if isinstance(c, dict)]


def binarise_raw(raw: dict[str, Any], score: Callable[[dict[str, Any]], float | None], flavour: str,
                 name: str, models: tuple[str, ...] | None = None) -> dict[str, Any]:
    instruction = raw.get("instruction")
    if not isinstance(instruction, str):
        raise DataFormatError(f"{where(raw)}: raw UltraFeedback row without a string 'instruction'")
    scored = []
    for completion in _completions(raw):
        if models is not None and completion.get("model") not in models:
            continue
        value = score(completion)
        if value is not None and isinstance(completion.get("response"), str):
            scored.append((value, completion))
    if len(scored) < 2:
        raise DropRow("fewer_than_two_rated_completions")
    best = max(v for v, _ in scored)
    top = sorted((c for v, c in scored if v == best), key=lambda c: (str(c.get("model")), c["response"]))
    lower = sorted(((v, c) for v, c in scored if v < best), key=lambda vc: (str(vc[1].get("model")), vc[1]["response"]))
    if not lower:
        raise DropRow("tie")
    pick = row_rng("ultrafeedback", flavour, instruction, models)
    chosen = top[pick % len(top)]
    rejected_score, rejected = lower[(pick >> 20) % len(lower)]
    scores = {f"chosen_{flavour}": best, f"rejected_{flavour}": rejected_score}
    return preference_row(name, [{"role": "user", "content": instruction}], chosen["response"],
                          rejected["response"], scores=scores, prompt_source=prompt_source(raw))


def _last_content(value: Any) -> Any:
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, list):
        return value[-1].get("content") if value and isinstance(value[-1], dict) else None
    return value


def prebinarised(raw: dict[str, Any], flavour: str, name: str) -> dict[str, Any]:
    """Argilla (FG, keys chosen-rating / metadata.rating_chosen) or H4 (OV, score_chosen) binarised rows."""
    metadata = raw.get("metadata") if isinstance(raw.get("metadata"), dict) else {}
    fg = (raw.get("chosen-rating"), raw.get("rejected-rating"))
    if fg == (None, None):
        fg = (metadata.get("rating_chosen"), metadata.get("rating_rejected"))
    ov = (raw.get("score_chosen"), raw.get("score_rejected"))
    if ov == (None, None):
        ov = (metadata.get("score_chosen"), metadata.get("score_rejected"))
    has_fg, has_ov = fg != (None, None), ov != (None, None)
    if flavour == "fine_grained" and not has_fg:
        raise DataFormatError(f"{where(raw)}: not an FG-binarised row (no chosen-rating / metadata.rating_chosen)"
                              + ("; this looks like H4's overall-score binarisation: use ultrafeedback-overall"
                                 if has_ov else ""))
    if flavour == "overall" and not has_ov:
        raise DataFormatError(f"{where(raw)}: not an overall-score-binarised row (no score_chosen)"
                              + ("; this looks like Argilla's fine-grained binarisation: use ultrafeedback-fg"
                                 if has_fg else ""))
    chosen_score, rejected_score = (_number(x) for x in (fg if flavour == "fine_grained" else ov))
    if chosen_score is None or rejected_score is None:
        raise DropRow("missing_rating")
    if chosen_score == rejected_score:
        raise DropRow("tie")
    if chosen_score < rejected_score:
        raise DropRow("chosen_rated_lower")
    prompt = raw.get("prompt")
    if not isinstance(prompt, str):
        raise DataFormatError(f"{where(raw)}: binarised UltraFeedback row without a string 'prompt'")
    return preference_row(name, [{"role": "user", "content": prompt}], _last_content(raw["chosen"]),
                          _last_content(raw["rejected"]),
                          scores={f"chosen_{flavour}": chosen_score, f"rejected_{flavour}": rejected_score},
                          prompt_source=prompt_source(raw))


def curate_ultrafeedback(raw: dict[str, Any], flavour: str, name: str, *, drop_truthfulqa: bool = True,
                         models: tuple[str, ...] | None = None) -> dict[str, Any]:
    if "completions" in raw:
        if drop_truthfulqa and prompt_source(raw) == "truthful_qa":
            raise DropRow("truthfulqa_removed")
        score = fine_grained_score if flavour == "fine_grained" else overall_score
        return binarise_raw(raw, score, flavour, name, models)
    if models is not None:
        raise DataFormatError(f"{where(raw)}: {name} needs raw openbmb/UltraFeedback rows (all completions per "
                              "prompt, with their models); this file is already binarised")
    if "chosen" in raw and "rejected" in raw:
        return prebinarised(raw, flavour, name)
    raise DataFormatError(f"{where(raw)}: neither a raw UltraFeedback row ('completions') nor a binarised one "
                          f"('chosen', 'rejected'); present: {sorted(k for k in raw if not k.startswith('_'))}")


def curate_fg(raw: dict[str, Any]) -> dict[str, Any]:
    return curate_ultrafeedback(raw, "fine_grained", "ultrafeedback-fg")


def curate_overall(raw: dict[str, Any]) -> dict[str, Any]:
    return curate_ultrafeedback(raw, "overall", "ultrafeedback-overall")


register(source_spec(
    name="ultrafeedback-fg",
    kind="preference",
    source_type="synthetic",
    group="table1",
    description="UltraFeedback binarised by the mean of the 4 fine-grained ratings (Argilla's cleaned release).",
    curate=curate_fg,
    hub_id="argilla/ultrafeedback-binarized-preferences-cleaned",
    split="train",
    revision="d4ade186a32a67516f0b41c021d1e837062724dc",
    license="MIT",
    paper_size=PAPER_SIZE,
    downsample_to=PAPER_SIZE,
    local_files=(*ARGILLA_FILES, *RAW_FILES, SHARED_ARGILLA),
    how_to_get="download data/*.parquet of the hub repo argilla/ultrafeedback-binarized-preferences-cleaned "
               "into <data dir>/argilla/ultrafeedback-binarized-preferences-cleaned/data/ (or raw "
               "openbmb/UltraFeedback into <data dir>/openbmb/UltraFeedback/)",
))

register(source_spec(
    name="ultrafeedback-overall",
    kind="preference",
    source_type="synthetic",
    group="table1",
    description="UltraFeedback binarised by the critique's overall score (TruthfulQA prompts removed).",
    curate=curate_overall,
    hub_id="openbmb/UltraFeedback",
    split="train",
    revision=RAW_REVISION,
    license="MIT",
    paper_size=PAPER_SIZE,
    downsample_to=PAPER_SIZE,
    local_files=(*RAW_FILES, *H4_FILES, SHARED_H4),
    how_to_get="download the hub repo openbmb/UltraFeedback (jsonl or parquet) into <data dir>/openbmb/UltraFeedback/",
))


def _group_curate(group: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    models = MODEL_GROUPS[group]

    def curate(raw: dict[str, Any]) -> dict[str, Any]:
        return curate_ultrafeedback(raw, "fine_grained", f"ultrafeedback-{group}", models=models)

    return curate


def _source_curate(label: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    sources = PROMPT_SOURCES[label]

    def curate(raw: dict[str, Any]) -> dict[str, Any]:
        if prompt_source(raw) not in sources:
            raise DropRow("other_source")
        return curate_ultrafeedback(raw, "fine_grained", f"ultrafeedback-src-{label}", drop_truthfulqa=False)

    return curate


for _group, _models in MODEL_GROUPS.items():
    register(source_spec(
        name=f"ultrafeedback-{_group}",
        kind="preference",
        source_type="synthetic",
        group="variant",
        description=f"UltraFeedback FG pairs using only {_group}-group models (Table 8), 10,000 prompts (Table 7).",
        curate=_group_curate(_group),
        hub_id="openbmb/UltraFeedback",
        split="train",
        revision=RAW_REVISION,
        license="MIT",
        paper_size=SUBSET_SIZE,
        downsample_to=SUBSET_SIZE,
        local_files=RAW_FILES,
        how_to_get="download the hub repo openbmb/UltraFeedback (jsonl or parquet) into "
                   "<data dir>/openbmb/UltraFeedback/ (binarised releases lack the per-model completions)",
    ))

for _label in PROMPT_SOURCES:
    # TruthfulQA prompts exist only in the raw release (the cleaned ones removed them).
    _files = RAW_FILES if _label == "truthfulqa" else (*RAW_FILES, *ARGILLA_FILES, SHARED_ARGILLA)
    register(source_spec(
        name=f"ultrafeedback-src-{_label}",
        kind="preference",
        source_type="synthetic",
        group="variant",
        description=f"UltraFeedback FG pairs whose prompts come from {_label} (Table 7).",
        curate=_source_curate(_label),
        hub_id="openbmb/UltraFeedback",
        split="train",
        revision=RAW_REVISION,
        license="MIT",
        local_files=_files,
        how_to_get="download the hub repo openbmb/UltraFeedback (jsonl or parquet) into <data dir>/openbmb/UltraFeedback/",
    ))
