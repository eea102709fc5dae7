"""HelpSteer (Wang et al. 2023): nvidia/HelpSteer, train split (App. B).

Each prompt has several responses, each rated 0-4 on helpfulness, correctness, coherence, complexity
and verbosity. The score of a response is the mean of the first four (verbosity excluded, App. B).
One pair per prompt with at least two responses: the best-scored response is chosen (among equal best
scores, the first in file order), and the rejected one is drawn at random among the others (a fixed
per-prompt draw); no tie filter, so a rejected response may score as high as the chosen one. This is
the authors' script's selection (~9,270 pairs, Table 1) with the paper's stated intent (best = chosen).

Note on the authors' script (EasyLM `convert_preference_data.py`, every version): it sorts the
responses by ascending mean score and takes `chosen = samples[0]`, i.e. the *lowest*-scored response,
and the rejected one at random among the rest. The released split `helpsteer` of
allenai/tulu-2.5-preference-data may therefore have chosen and rejected swapped (use `tulu25-helpsteer`
to train on it exactly as released). This loader keeps the paper's intent.

Raw units: one per prompt (responses are grouped first); responses with a non-numeric rating are
dropped on their own and counted.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from datasets_registry.core import preference_row, row_rng
from datasets_registry.raw_files import require_fields, where
from datasets_registry.raw_sources import source_spec
from datasets_registry.spec import AUTHORS_SCRIPT, DropRow, register

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
    best = max(range(len(responses)), key=lambda i: (overall(responses[i]), -i))  # first of the best
    chosen = responses[best]
    others = [r for i, r in enumerate(responses) if i != best]
    rejected = others[row_rng("helpsteer", group["prompt"]) % len(others)]
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
    description="HelpSteer: best response per prompt (mean of 4 ratings, verbosity excluded) vs a random other one.",
    curate=curate,
    group_raw=group_by_prompt,
    hub_id="nvidia/HelpSteer",
    split="train",
    revision="4d715889bb2581702d73cd98e58162e7b90e569b",
    hub_files=("train.jsonl.gz",),
    license="CC-BY-4.0",
    paper_size=9_270,
    expected_size=9_270,
    drop_identical=False,
    rule="group responses by prompt; prompts with >= 2 responses give one pair: best mean of helpfulness, "
         "correctness, coherence, complexity (verbosity excluded) = chosen, a random other response = rejected; "
         "no tie filter",
    rule_source="App. B (average of the fine-grained scores except verbosity); "
                f"{AUTHORS_SCRIPT} (nvidia/HelpSteer: >= 2 responses, random rejected)",
    deviation="every version of the authors' script sorts ascending and takes chosen = samples[0] (the lowest "
              "score), so the released split may have chosen and rejected swapped; the paper's stated intent "
              "(best = chosen) is kept here",
    released_as="tulu25-helpsteer",
    # HelpSteer2 (../shared/data/preferences/helpsteer/) has the same columns but is another dataset: it is
    # not substituted here; pass it explicitly with `harness data prepare helpsteer --file ...`.
    local_files=("nvidia/HelpSteer/train.jsonl.gz", "nvidia/HelpSteer/train.jsonl", "helpsteer/train.jsonl*"),
    how_to_get="download train.jsonl.gz of the hub repo nvidia/HelpSteer into <data dir>/nvidia/HelpSteer/",
))
