"""UltraFeedback (Cui et al. 2023): the overall-score and fine-grained binarisations of Table 1 and the
subsets of Table 7 / Table 8 (App. B, App. E).

The paper's two Table-1 datasets, built the authors' way (EasyLM `convert_preference_data.py`,
`create_preference_data.sh`; released as `ultrafeedback_mean_aspects` / `ultrafeedback_overall`):
  * `ultrafeedback-fg`: Argilla's cleaned release (`argilla/ultrafeedback-binarized-preferences-cleaned`,
    chosen = best mean of the 4 aspect ratings; TruthfulQA prompts removed, App. B fn. 9) taken as is:
    every row kept (no tie, rating or identical-text drop), no downsampling (~60,908 rows).
  * `ultrafeedback-overall`: H4's `ultrafeedback_binarized` `train_prefs` (chosen = best critique
    `overall_score`), keeping only prompts that are in the Argilla-cleaned set, ties kept, no
    downsampling (58,933 rows in the released split; the paper's Table 1 prints 60,908).
Raw UltraFeedback (openbmb/UltraFeedback: 4 completions per prompt with GPT-4 ratings on 4 aspects
and an `overall_score`) re-binarised by this harness stays available by name:
`ultrafeedback-fg-rebinarised` / `ultrafeedback-overall-rebinarised` (best-scored completion vs a random
strictly lower one, all-tied prompts and TruthfulQA prompts dropped, downsampled to 60,908).

Table 7 subsets (raw rows needed for the model groups):
  * ultrafeedback-{top,middle,bottom}: only completions of the Table 8 model group, FG binarisation,
    10,000 prompts each;
  * ultrafeedback-src-*: prompts from one source (UltraFeedback's own `source` annotation), FG binarisation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from datasets_registry.core import preference_row, row_rng
from datasets_registry.raw_files import read_any, where
from datasets_registry.raw_sources import RawRows, source_spec
from datasets_registry.spec import AUTHORS_SCRIPT, DataFormatError, DropRow, register

FG_ASPECTS = ("helpfulness", "honesty", "instruction_following", "truthfulness")
RAW_REVISION = "40b436560ca83a8dba36114c22ab3c66e43f6d5e"  # the release with the fixed overall_score
RAW_FILES = ("openbmb/UltraFeedback/**/*.jsonl", "openbmb/UltraFeedback/**/*.parquet")
ARGILLA_FILES = ("argilla/ultrafeedback-binarized-preferences-cleaned/data/*.parquet",
                 "argilla/ultrafeedback-binarized-preferences-cleaned/*.jsonl*")
SHARED_ARGILLA = "preferences/ultrafeedback/argilla_cleaned_sample_1k.jsonl"
H4_FILES = ("HuggingFaceH4/ultrafeedback_binarized/data/train_prefs-*.parquet",
            "HuggingFaceH4/ultrafeedback_binarized/train_prefs*.jsonl*")
SHARED_H4 = "preferences/ultrafeedback/binarized_sample_train_1k.jsonl"
ARGILLA_REVISION = "d4ade186a32a67516f0b41c021d1e837062724dc"
# main of HuggingFaceH4/ultrafeedback_binarized after its relabelling fix (train_prefs: 61,135 rows); the card
# names 292c16329d921287c4166934cac1a6ad1e13a6c5 as the version before the fix.
H4_REVISION = "3949bf5f8c17c394422ccfab0c31ea9c20bdeb85"
PAPER_SIZE = 60_908
RELEASED_OVERALL_SIZE = 58_933  # allenai/tulu-2.5-preference-data `ultrafeedback_overall`
SUBSET_SIZE = 10_000
# The raw release every re-binarised spec reads (kwargs of `source_spec`).
RAW_SOURCE: dict[str, Any] = dict(
    kind="preference", source_type="synthetic", hub_id="openbmb/UltraFeedback", split="train",
    revision=RAW_REVISION, license="MIT",
    how_to_get="download the hub repo openbmb/UltraFeedback (jsonl or parquet) into <data dir>/openbmb/UltraFeedback/",
)

# Table 8: models bucketed by their average fine-grained score.
MODEL_GROUPS: dict[str, tuple[str, ...]] = {
    "top": ("gpt-4", "gpt-3.5-turbo", "wizardlm-70b", "bard"),
    "middle": ("vicuna-33b", "mpt-30b-chat", "llama-2-70b-chat", "wizardlm-13b", "llama-2-13b-chat",
               "ultralm-65b", "ultralm-13b"),
    "bottom": ("wizardlm-7b", "llama-2-7b-chat", "starchat", "alpaca-7b", "pythia-12b", "falcon-40b-instruct"),
}
# Table 7 model groups -> the released split of the same subset.
RELEASED_GROUP_SPLITS = {"top": "ultrafeedback_top_10k", "middle": "ultrafeedback_middle_10k",
                         "bottom": "ultrafeedback_lower_10k"}
# Table 7 prompt subsets -> UltraFeedback `source` values.
PROMPT_SOURCES: dict[str, tuple[str, ...]] = {
    "falseqa": ("false_qa",),
    "evol-instruct": ("evol_instruct",),
    "truthfulqa": ("truthful_qa",),
    "flan-v2": ("flan_v2_niv2", "flan_v2_cot", "flan_v2_p3", "flan_v2_flan2021"),
    "sharegpt": ("sharegpt",),
    "ultrachat": ("ultrachat",),
}
RELEASED_SOURCE_SPLITS = {"falseqa": "ultrafeedback_false_qa", "evol-instruct": "ultrafeedback_evol_instruct",
                          "truthfulqa": "ultrafeedback_truthful_qa", "flan-v2": "ultrafeedback_flan_v2",
                          "sharegpt": "ultrafeedback_sharegpt", "ultrachat": "ultrafeedback_ultrachat"}


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


def prebinarised(raw: dict[str, Any], flavour: str, name: str, *, as_released: bool = False) -> dict[str, Any]:
    """Argilla (FG, keys chosen-rating / metadata.rating_chosen) or H4 (OV, score_chosen) binarised rows.

    `as_released=True` is the authors' way: the pair is taken as the binarised release has it (ties,
    missing ratings and all); otherwise ties and pairs whose chosen is rated lower are dropped."""
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
    if not as_released:
        if chosen_score is None or rejected_score is None:
            raise DropRow("missing_rating")
        if chosen_score == rejected_score:
            raise DropRow("tie")
        if chosen_score < rejected_score:
            raise DropRow("chosen_rated_lower")
    prompt = raw.get("prompt")
    if not isinstance(prompt, str):
        raise DataFormatError(f"{where(raw)}: binarised UltraFeedback row without a string 'prompt'")
    scores = {f"chosen_{flavour}": chosen_score, f"rejected_{flavour}": rejected_score}
    return preference_row(name, [{"role": "user", "content": prompt}], _last_content(raw["chosen"]),
                          _last_content(raw["rejected"]),
                          scores={k: v for k, v in scores.items() if v is not None},
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
    """Argilla's cleaned FG pairs as released (the authors' `ultrafeedback_mean_aspects`)."""
    if "completions" in raw:
        raise DataFormatError(f"{where(raw)}: raw openbmb/UltraFeedback row; ultrafeedback-fg reads Argilla's "
                              "cleaned binarisation (use ultrafeedback-fg-rebinarised for raw rows)")
    return prebinarised(raw, "fine_grained", "ultrafeedback-fg", as_released=True)


def curate_overall(raw: dict[str, Any]) -> dict[str, Any]:
    """H4's overall-score pairs as released (ties kept); the Argilla prompt filter runs in the loader."""
    if "completions" in raw:
        raise DataFormatError(f"{where(raw)}: raw openbmb/UltraFeedback row; ultrafeedback-overall reads H4's "
                              "ultrafeedback_binarized train_prefs (use ultrafeedback-overall-rebinarised for raw rows)")
    return prebinarised(raw, "overall", "ultrafeedback-overall", as_released=True)


def _curate_rebinarised(flavour: str, name: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def curate(raw: dict[str, Any]) -> dict[str, Any]:
        if "completions" not in raw:
            raise DataFormatError(f"{where(raw)}: {name} re-binarises raw openbmb/UltraFeedback rows "
                                  "('completions'); this row is already binarised")
        return curate_ultrafeedback(raw, flavour, name)

    return curate


FG_HOW_TO_GET = ("download data/*.parquet of the hub repo argilla/ultrafeedback-binarized-preferences-cleaned "
                 "into <data dir>/argilla/ultrafeedback-binarized-preferences-cleaned/data/")

register(source_spec(
    name="ultrafeedback-fg",
    kind="preference",
    source_type="synthetic",
    group="table1",
    description="UltraFeedback fine-grained: Argilla's cleaned binarisation (mean of the 4 aspect ratings), as released.",
    curate=curate_fg,
    hub_id="argilla/ultrafeedback-binarized-preferences-cleaned",
    split="train",
    revision=ARGILLA_REVISION,
    license="MIT",
    paper_size=PAPER_SIZE,
    expected_size=PAPER_SIZE,
    drop_identical=False,
    local_files=(*ARGILLA_FILES, SHARED_ARGILLA),
    how_to_get=FG_HOW_TO_GET,
    rule="every pair of Argilla's cleaned release as is (chosen = best mean aspect rating, TruthfulQA prompts "
         "already removed); only empty turns dropped; no downsampling",
    rule_source=f"App. B ('the split released by Argilla'); {AUTHORS_SCRIPT} "
                "(argilla/ultrafeedback-binarized-preferences-cleaned)",
    deviation="before this change the identical-text and tie drops removed rows the paper keeps",
    released_as="tulu25-ultrafeedback_mean_aspects",
))


def _looks_argilla(path: Path) -> bool:
    """Whether a binarised UltraFeedback file is Argilla's (FG ratings) rather than H4's (overall scores)."""
    for row in read_any(path):
        metadata = row.get("metadata") if isinstance(row.get("metadata"), dict) else {}
        return "chosen-rating" in row or "rating_chosen" in metadata
    return False


_ARGILLA_PROMPTS = source_spec(
    name="ultrafeedback-overall (Argilla prompt filter)", kind="preference", source_type="synthetic",
    description="prompts of Argilla's cleaned UltraFeedback", curate=lambda row: row,
    hub_id="argilla/ultrafeedback-binarized-preferences-cleaned", split="train", revision=ARGILLA_REVISION,
    local_files=(*ARGILLA_FILES, SHARED_ARGILLA), how_to_get=FG_HOW_TO_GET)


def argilla_prompt_filter(h4_rows: RawRows, argilla_files: list[Path] | None = None) -> RawRows:
    """H4 rows whose prompt is in the Argilla-cleaned set; the others become counted drops.

    As the authors' script: the filter is exact string equality of the prompt."""
    argilla = _ARGILLA_PROMPTS.load_files(argilla_files) if argilla_files else _ARGILLA_PROMPTS.load_raw(0)
    prompts = set()
    for row in argilla:
        if "completions" in row or not isinstance(row.get("prompt"), str):
            raise DataFormatError(f"{where(row)}: the Argilla prompt filter needs argilla/ultrafeedback-binarized-"
                                  "preferences-cleaned rows (a string 'prompt')")
        prompts.add(row["prompt"])

    def rows() -> Iterator[Any]:
        for row in h4_rows:
            # rows without a string prompt go on to curation, which names what is wrong with them
            if isinstance(row, dict) and isinstance(row.get("prompt"), str) and row["prompt"] not in prompts:
                yield DropRow("prompt_not_in_argilla_cleaned")
            else:
                yield row

    return RawRows(rows(), [*h4_rows.sources, *argilla.sources])


UF_OVERALL = source_spec(
    name="ultrafeedback-overall",
    kind="preference",
    source_type="synthetic",
    group="table1",
    description="UltraFeedback overall: H4's binarisation (critique overall score) on the Argilla-cleaned prompts, "
                "ties kept.",
    curate=curate_overall,
    hub_id="HuggingFaceH4/ultrafeedback_binarized",
    split="train_prefs",
    revision=H4_REVISION,
    license="MIT",
    paper_size=PAPER_SIZE,
    expected_size=RELEASED_OVERALL_SIZE,
    drop_identical=False,
    local_files=(*H4_FILES, SHARED_H4),
    how_to_get="download data/train_prefs-*.parquet of the hub repo HuggingFaceH4/ultrafeedback_binarized into "
               "<data dir>/HuggingFaceH4/ultrafeedback_binarized/data/, and Argilla's cleaned release (for the "
               "prompt filter): " + FG_HOW_TO_GET,
    rule="H4 ultrafeedback_binarized train_prefs pairs whose prompt is in Argilla's cleaned set (exact match); "
         "ties kept, only empty turns dropped; no downsampling",
    rule_source=f"{AUTHORS_SCRIPT} (HuggingFaceH4/ultrafeedback_binarized, train_prefs); App. B",
    deviation="App. B says both UltraFeedback versions come from Argilla's split and Table 1 prints 60,908; the "
              "authors' script builds this one from H4 on Argilla's prompts (released `ultrafeedback_overall`: "
              "58,933 rows), which is followed; 60,908 is not forced",
    released_as="tulu25-ultrafeedback_overall",
)
_h4_load_raw, _h4_load_files, _h4_available = UF_OVERALL.load_raw, UF_OVERALL.load_files, UF_OVERALL.is_available


def _overall_load_files(paths: list[Path]) -> RawRows:
    """Explicit files: Argilla-format ones feed the prompt filter, the others are the H4 rows."""
    argilla = [p for p in paths if p.is_file() and _looks_argilla(p)]
    return argilla_prompt_filter(_h4_load_files([p for p in paths if p not in argilla]), argilla or None)


UF_OVERALL.load_raw = lambda seed: argilla_prompt_filter(_h4_load_raw(seed))
UF_OVERALL.load_files = _overall_load_files
UF_OVERALL.is_available = lambda: _h4_available() and _ARGILLA_PROMPTS.is_available()
UF_OVERALL.read = None  # a variant must keep the filtering loaders, not rebind the plain H4 ones
register(UF_OVERALL)

for _flavour, _label in (("fine_grained", "fg"), ("overall", "overall")):
    register(source_spec(
        name=f"ultrafeedback-{_label}-rebinarised",
        group="variant",
        description=f"UltraFeedback re-binarised here from raw openbmb rows by the {_flavour.replace('_', '-')} "
                    "score (TruthfulQA prompts and ties dropped), downsampled to 60,908.",
        curate=_curate_rebinarised(_flavour, f"ultrafeedback-{_label}-rebinarised"),
        downsample_to=PAPER_SIZE,
        local_files=RAW_FILES,
        rule=("best " + ("mean aspect rating" if _flavour == "fine_grained" else "critique overall_score")
              + " completion vs a random strictly lower one; all-tied prompts and TruthfulQA prompts dropped; "
              "downsample to 60,908"),
        rule_source="this harness's binarisation of raw openbmb/UltraFeedback (Zephyr/Argilla style); not the "
                    "authors' build",
        **RAW_SOURCE,
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
        group="variant",
        description=f"UltraFeedback FG pairs using only {_group}-group models (Table 8), 10,000 prompts (Table 7).",
        curate=_group_curate(_group),
        paper_size=SUBSET_SIZE,
        downsample_to=SUBSET_SIZE,
        local_files=RAW_FILES,
        rule=f"raw rows, only completions of the Table 8 {_group} models; best mean aspect rating vs a random "
             "strictly lower one; ties and TruthfulQA prompts dropped; downsample to 10,000",
        rule_source="App. E, Tables 7-8 (the authors' build script for these subsets is not published)",
        released_as=f"tulu25-{RELEASED_GROUP_SPLITS[_group]}",
        **RAW_SOURCE,
    ))

for _label in PROMPT_SOURCES:
    # TruthfulQA prompts exist only in the raw release (the cleaned ones removed them).
    _files = RAW_FILES if _label == "truthfulqa" else (*RAW_FILES, *ARGILLA_FILES, SHARED_ARGILLA)
    register(source_spec(
        name=f"ultrafeedback-src-{_label}",
        group="variant",
        description=f"UltraFeedback FG pairs whose prompts come from {_label} (Table 7).",
        curate=_source_curate(_label),
        local_files=_files,
        rule=f"prompts whose UltraFeedback source is {'/'.join(PROMPT_SOURCES[_label])}; FG binarisation (raw rows "
             "re-binarised, Argilla rows taken when rated strictly higher); ties dropped",
        rule_source="App. E, Table 7 (the authors' build script for these subsets is not published)",
        released_as=f"tulu25-{RELEASED_SOURCE_SPLITS[_label]}",
        **RAW_SOURCE,
    ))
