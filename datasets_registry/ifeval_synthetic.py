"""IFEval-style training prompts for the `ifeval` verifier, generated in code (no download).

The IFEval benchmark's 541 prompts are test data and must not be trained on, so this set is built here:
a task written for this project (one of `_TEMPLATES` applied to one of `_TOPICS`) followed by one or two
verifiable instructions of IFEval's own kinds, whose text comes from lm-eval's copy of the official
instruction classes (`build_description` with explicit arguments, so the wording and the checker that
scores it are the same code). Each row carries IFEval's columns, `key`, `instruction_id_list` and the
instruction arguments (`instruction_kwargs`, IFEval's `kwargs`), so the `ifeval` verifier scores
completions with the official checkers exactly as the IFEval eval does.

What it is and is not: the instruction kinds and their phrasing are IFEval's (that is the point: the
verifier must be able to check them), the tasks are not IFEval's prompts. Instruction kinds that need
the prompt text (repeat_prompt), a second language (response_language) or hand-made sentences
(rephrase, key_sentences) are left out. The set is the same for every seed (a seed only subsamples it):
37 topics x 6 tasks x 3 draws = 666 prompts, 660 after the generic duplicate drop (a task whose
draws repeat an instruction).

Building it imports lm-eval's IFEval instruction module, which needs NLTK's `punkt_tab`
(`harness.paths.ensure_nltk_data` finds the shared copy or says how to get it).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from typing import Any

from datasets_registry.core import stable_id
from datasets_registry.spec import DatasetSpec, register

_TOPICS = [
    "the history of the bicycle", "how bees make honey", "a rainy day in a big city", "learning to cook rice",
    "the water cycle", "why people keep diaries", "a visit to a public library", "the life of a lighthouse keeper",
    "planting a vegetable garden", "how trains changed travel", "the first day at a new job", "caring for a pet cat",
    "the invention of paper", "a mountain hike at sunrise", "how volcanoes form", "saving money as a student",
    "the rules of chess", "a small bakery in the morning", "why sleep matters", "the migration of birds",
    "building a sandcastle", "how a compass works", "the night sky in winter", "learning a musical instrument",
    "recycling plastic at home", "a football match in the rain", "how clouds get their shapes", "the ocean tides",
    "writing a letter by hand", "a market in a small town", "the role of a museum", "how bread rises",
    "walking as daily exercise", "a childhood game", "the importance of clean water", "the life cycle of a frog",
    "choosing a good book",
]
_TEMPLATES = [
    "Write a short paragraph about {topic}.",
    "Explain {topic} to a ten-year-old.",
    "Write a blog post about {topic}.",
    "Give three tips related to {topic}.",
    "Write a short story that involves {topic}.",
    "Describe {topic} in a few sentences.",
]
_KEYWORDS = ["river", "window", "orange", "quiet", "journey", "garden", "paper", "morning", "friend", "light",
             "simple", "history", "market", "stone", "music", "careful"]
_END_PHRASES = ["Is there anything else I can help with?", "Any other questions?", "Let me know if you have "
                "additional questions."]
_DRAWS_PER_TASK = 3


def _instruction_menu(rng: random.Random) -> list[tuple[str, dict[str, Any]]]:
    """One argument draw for every instruction kind the set uses: (IFEval instruction id, kwargs)."""
    return [
        ("change_case:english_lowercase", {}),
        ("change_case:english_capital", {}),
        ("punctuation:no_comma", {}),
        ("detectable_format:title", {}),
        ("startend:quotation", {}),
        ("detectable_format:json_format", {}),
        ("detectable_format:number_bullet_lists", {"num_bullets": rng.randint(2, 5)}),
        ("detectable_format:number_highlighted_sections", {"num_highlights": rng.randint(1, 3)}),
        ("length_constraints:number_words", {"num_words": rng.choice([30, 50, 80, 120]),
                                             "relation": rng.choice(["less than", "at least"])}),
        ("length_constraints:number_sentences", {"num_sentences": rng.randint(2, 6),
                                                 "relation": rng.choice(["less than", "at least"])}),
        ("keywords:existence", {"keywords": rng.sample(_KEYWORDS, 2)}),
        ("keywords:forbidden_words", {"forbidden_words": rng.sample(_KEYWORDS, 2)}),
        ("startend:end_checker", {"end_phrase": rng.choice(_END_PHRASES)}),
        ("detectable_content:postscript", {"postscript_marker": rng.choice(["P.S.", "P.P.S"])}),
        ("detectable_content:number_placeholders", {"num_placeholders": rng.randint(1, 3)}),
    ]


def _key(text: str) -> int:
    """A stable integer key (IFEval rows have one; the checkers' random draws are seeded by it)."""
    return int(hashlib.sha256(f"ifeval-synthetic:{text}".encode()).hexdigest()[:8], 16)


def _raw(seed: int) -> Iterator[dict[str, Any]]:
    from harness.paths import ensure_nltk_data

    ensure_nltk_data()  # before the import: lm-eval's module would try to download punkt_tab
    from lm_eval.tasks.ifeval.instructions_registry import INSTRUCTION_CONFLICTS, INSTRUCTION_DICT

    for topic in _TOPICS:
        for template in _TEMPLATES:
            task = template.format(topic=topic)
            rng = random.Random(f"ifeval-synthetic:{task}")  # the same set whatever the seed
            for _ in range(_DRAWS_PER_TASK):
                menu = _instruction_menu(rng)
                first = rng.choice(menu)
                chosen = [first]
                if rng.random() < 0.5:  # a second instruction that does not conflict with the first
                    compatible = [m for m in menu if m[0] not in INSTRUCTION_CONFLICTS[first[0]]
                                  and first[0] not in INSTRUCTION_CONFLICTS[m[0]]]
                    chosen.append(rng.choice(compatible))
                descriptions = [INSTRUCTION_DICT[iid](iid).build_description(**kwargs) for iid, kwargs in chosen]
                text = task + " " + " ".join(descriptions)
                yield {"text": text, "instruction_id_list": [iid for iid, _ in chosen],
                       "instruction_kwargs": [kwargs for _, kwargs in chosen]}


def _curate(raw: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": stable_id("ifeval-synthetic", raw["text"]),
        "prompt": [{"role": "user", "content": raw["text"]}],
        "source": "ifeval-synthetic",
        "key": _key(raw["text"]),
        "instruction_id_list": raw["instruction_id_list"],
        "instruction_kwargs": raw["instruction_kwargs"],
    }


register(DatasetSpec(
    name="prompts-ifeval-synthetic",
    kind="prompts",
    source_type="built-in",
    group="prompts",
    description="IFEval-style training prompts generated here (tasks written for this project + IFEval instruction "
                "kinds in the official checkers' wording); for the `ifeval` verifier. Not IFEval's test prompts.",
    load_raw=_raw,
    curate=_curate,
    license="Apache-2.0 (generated by this project; instruction wording from lm-eval's IFEval, Apache-2.0)",
    rule="37 topics x 6 task templates x 3 seeded draws of 1-2 non-conflicting IFEval instructions (kwargs drawn "
         "from fixed menus), instruction text from the official build_description",
    rule_source="this project (RLVR on IFEval-style constraints as in Tulu 3; the IFEval test set is not used)",
    expected_size=660,  # 37 x 6 x 3 = 666 drawn, 6 repeats dropped as duplicates
))
