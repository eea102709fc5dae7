"""Built-in, seeded, verifiable preference data for the smoke grid (runs anywhere, no downloads).

Every prompt is a short factual question with the explicit constraint "reply in lowercase letters
only". The chosen answer satisfies it, the rejected answer is the same sentence in ordinary case.
Why lowercase: it changes very few tokens (usually the first word and proper nouns), unlike
capitals, which multiply token counts and pushed SmolLM2-135M into degenerate loops when DPO'd.
The constraint is checkable, so the held-out eval needs no judge. The eval prompts use facts never
seen in training (split by fact, not by row), so the eval measures the constraint, not memorisation.
"""

from __future__ import annotations

import random
import re
from typing import Any

from datasets_registry.core import stable_id
from datasets_registry.spec import DatasetSpec, register

INSTRUCTION = "Reply in lowercase letters only."

_CAPITALS = [
    ("France", "Paris"), ("Japan", "Tokyo"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Germany", "Berlin"),
    ("Egypt", "Cairo"), ("Canada", "Ottawa"), ("Kenya", "Nairobi"), ("Peru", "Lima"), ("Norway", "Oslo"),
    ("Greece", "Athens"), ("Russia", "Moscow"), ("China", "Beijing"), ("India", "New Delhi"),
    ("Austria", "Vienna"), ("Portugal", "Lisbon"), ("Ireland", "Dublin"), ("Poland", "Warsaw"),
    ("Sweden", "Stockholm"), ("Finland", "Helsinki"), ("Denmark", "Copenhagen"), ("Cuba", "Havana"),
    ("Chile", "Santiago"), ("Thailand", "Bangkok"), ("Vietnam", "Hanoi"), ("Turkey", "Ankara"),
    ("Hungary", "Budapest"), ("Belgium", "Brussels"), ("Argentina", "Buenos Aires"), ("Mexico", "Mexico City"),
]
_COLOURS = [
    ("a banana", "yellow"), ("grass", "green"), ("the sky on a clear day", "blue"), ("snow", "white"),
    ("coal", "black"), ("a ripe tomato", "red"), ("an orange", "orange"), ("a lemon", "yellow"),
    ("a carrot", "orange"), ("milk", "white"), ("a lime", "green"), ("a strawberry", "red"),
    ("a crow", "black"), ("a plum", "purple"), ("chocolate", "brown"), ("a pumpkin", "orange"),
]
_ANIMAL_SOUNDS = [
    ("a dog", "barks"), ("a cat", "meows"), ("a cow", "moos"), ("a duck", "quacks"), ("a lion", "roars"),
    ("a sheep", "bleats"), ("a horse", "neighs"), ("a pig", "oinks"), ("a snake", "hisses"),
    ("an owl", "hoots"), ("a frog", "croaks"), ("a bee", "buzzes"), ("a wolf", "howls"), ("a mouse", "squeaks"),
]
_OPPOSITES = [
    ("hot", "cold"), ("big", "small"), ("up", "down"), ("fast", "slow"), ("happy", "sad"), ("light", "dark"),
    ("early", "late"), ("open", "closed"), ("full", "empty"), ("wet", "dry"), ("strong", "weak"),
    ("old", "new"), ("hard", "soft"), ("loud", "quiet"), ("rich", "poor"), ("thick", "thin"),
]


def _facts() -> list[tuple[str, str, str]]:
    """(family, question, answer sentence in ordinary case)."""
    facts = []
    for country, city in _CAPITALS:
        facts.append(("capital", f"What is the capital of {country}?", f"The capital of {country} is {city}."))
    for thing, colour in _COLOURS:
        facts.append(("colour", f"What colour is {thing}?", f"The colour of {thing} is {colour}."))
    for animal, sound in _ANIMAL_SOUNDS:
        facts.append(("sound", f"What sound does {animal} make?", f"{animal[0].upper()}{animal[1:]} {sound}."))
    for word, opposite in _OPPOSITES:
        facts.append(("opposite", f"What is the opposite of '{word}'?", f"The opposite of '{word}' is '{opposite}'."))
    for a in range(2, 14):
        for b in (3, 8, 11):
            facts.append(("sum", f"What is {a} plus {b}?", f"The sum of {a} and {b} is {a + b}."))
    return facts


def _split_facts(seed: int) -> tuple[list, list]:
    """Held-out split by fact: 25% of facts (stratified by family) are eval-only."""
    rng = random.Random(f"smoke-lowercase-split:{seed}")
    train, held = [], []
    by_family: dict[str, list] = {}
    for fact in _facts():
        by_family.setdefault(fact[0], []).append(fact)
    for family in sorted(by_family):
        items = by_family[family][:]
        rng.shuffle(items)
        cut = max(1, len(items) // 4)
        held.extend(items[:cut])
        train.extend(items[cut:])
    return train, held


_PHRASINGS = ["{q} " + INSTRUCTION, INSTRUCTION + " {q}", "{q}\n" + INSTRUCTION]


def _train_raw(seed: int):
    train, _ = _split_facts(seed)
    for family, question, answer in train:
        for template in _PHRASINGS:
            yield {"family": family, "question": template.format(q=question), "answer": answer}


def _eval_raw(seed: int):
    _, held = _split_facts(seed)
    for family, question, answer in held:
        for template in _PHRASINGS[:2]:
            yield {"family": family, "question": template.format(q=question), "answer": answer}


def _curate_pair(raw: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": stable_id("smoke-lowercase", raw["question"]),
        "prompt": [{"role": "user", "content": raw["question"]}],
        "chosen": [{"role": "assistant", "content": raw["answer"].lower()}],
        "rejected": [{"role": "assistant", "content": raw["answer"]}],
        "source": "smoke-lowercase",
        "family": raw["family"],
    }


def _curate_prompt(raw: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": stable_id("smoke-lowercase-eval", raw["question"]),
        "prompt": [{"role": "user", "content": raw["question"]}],
        "source": "smoke-lowercase-eval",
        "family": raw["family"],
        "constraint": "lowercase",
        "answer": raw["answer"].lower(),
    }


def satisfies_lowercase(text: str) -> bool:
    """The constraint: at least one letter, and no uppercase letter anywhere."""
    return any(ch.isalpha() for ch in text) and not any(ch.isupper() for ch in text)


_WORD = re.compile(r"[a-z0-9']+")


def lowercase_reward(completions: list, **_: Any) -> list[float]:
    """Verifiable reward in TRL `reward_funcs` style: 1.0 when the completion is all lowercase."""
    out = []
    for completion in completions:
        text = completion[-1]["content"] if isinstance(completion, list) else str(completion)
        out.append(1.0 if satisfies_lowercase(text) else 0.0)
    return out


register(DatasetSpec(
    name="smoke-lowercase",
    kind="preference",
    source_type="built-in",
    group="built-in",
    description="Built-in verifiable pairs: chosen obeys 'reply in lowercase', rejected is ordinary case.",
    load_raw=_train_raw,
    curate=_curate_pair,
    license="Apache-2.0 (generated by this project)",
))

register(DatasetSpec(
    name="smoke-lowercase-eval",
    kind="prompts",
    source_type="built-in",
    group="built-in",
    description="Held-out prompts (unseen facts) for the lowercase constraint; scored by satisfies_lowercase.",
    load_raw=_eval_raw,
    curate=_curate_prompt,
    license="Apache-2.0 (generated by this project)",
))
