"""HelpSteer (Wang et al. 2023): nvidia/HelpSteer, train split (App. B).

Each prompt has several responses, each rated 0-4 on helpfulness, correctness, coherence, complexity
and verbosity. The overall score is the mean of the first four (verbosity excluded, App. B). One pair
per prompt: the highest-scored response is chosen, the lowest-scored rejected; prompts whose responses
all score the same (ties) or with a single response are dropped.
Raw units: one per prompt (responses are grouped first); responses with a non-numeric rating are
dropped on their own and counted.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from datasets_registry.core import (
    DropRow,
    preference_row,
    register,
    require_fields,
    row_rng,
    source_spec,
    where,
)

ASPECTS = ("helpfulness", "correctness", "coherence", "complexity")
ALL_FIELDS = ("prompt", "response", *ASPECTS, "verbosity")


def group_by_prompt(rows: Iterable[dict[str, Any]]) -> Iterator[Any]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for raw in rows:
        require_fields(raw, ALL_FIELDS, where(raw))
        if not all(isinstance(raw[a], (int, float)) and not isinstance(raw[a], bool) for a in ASPECTS):
            yield DropRow("invalid_rating")
            continue
        if not isinstance(raw["prompt"], str) or not isinstance(raw["response"], str):
            yield DropRow("missing_text")
            continue
        groups.setdefault(raw["prompt"], []).append(
            {"response": raw["response"], **{a: float(raw[a]) for a in (*ASPECTS, "verbosity")
                                             if isinstance(raw.get(a), (int, float))}})
    for prompt, responses in groups.items():
        yield {"prompt": prompt, "responses": responses}


def overall(response: dict[str, Any]) -> float:
    return sum(response[a] for a in ASPECTS) / len(ASPECTS)


def curate(group: dict[str, Any]) -> dict[str, Any]:
    responses = group["responses"]
    if len(responses) < 2:
        raise DropRow("single_response")
    ranked = sorted(responses, key=lambda r: (overall(r), r["response"]))
    low, high = overall(ranked[0]), overall(ranked[-1])
    if low == high:
        raise DropRow("tie")
    best = [r for r in ranked if overall(r) == high]
    worst = [r for r in ranked if overall(r) == low]
    pick = row_rng("helpsteer", group["prompt"])
    chosen, rejected = best[pick % len(best)], worst[(pick >> 20) % len(worst)]
    scores = {f"{side}_{aspect}": resp[aspect] for side, resp in (("chosen", chosen), ("rejected", rejected))
              for aspect in (*ASPECTS, "verbosity") if aspect in resp}
    scores.update(chosen_overall=overall(chosen), rejected_overall=overall(rejected))
    return preference_row("helpsteer", [{"role": "user", "content": group["prompt"]}], chosen["response"],
                          rejected["response"], scores=scores)


register(source_spec(
    name="helpsteer",
    kind="preference",
    source_type="human",
    group="table1",
    description="HelpSteer: best vs worst response per prompt by the mean of 4 ratings (verbosity excluded).",
    curate=curate,
    group_raw=group_by_prompt,
    hub_id="nvidia/HelpSteer",
    split="train",
    revision="4d715889bb2581702d73cd98e58162e7b90e569b",
    hub_files=("train.jsonl.gz",),
    license="CC-BY-4.0",
    paper_size=9_270,
    # HelpSteer2 (../shared/data/preferences/helpsteer/) has the same columns but is another dataset: it is
    # not substituted here; pass it explicitly with `harness data prepare helpsteer --file ...`.
    local_files=("nvidia/HelpSteer/train.jsonl.gz", "nvidia/HelpSteer/train.jsonl", "helpsteer/train.jsonl*"),
    how_to_get="download train.jsonl.gz of the hub repo nvidia/HelpSteer into <data dir>/nvidia/HelpSteer/",
))
