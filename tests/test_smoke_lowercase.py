"""The built-in verifiable smoke data and its scorer."""

from __future__ import annotations

from datasets_registry import prepare
from datasets_registry.smoke_lowercase import lowercase_reward, satisfies_lowercase
from harness.evaluation.smoke_lowercase import is_degenerate, key_fact


def test_pairs_differ_only_in_case_and_eval_facts_are_held_out():
    train = prepare("smoke-lowercase", seed=0)
    held = prepare("smoke-lowercase-eval", seed=0)
    assert train.kept == 255 and held.kept == 54 and not train.dropped
    for row in train.rows:
        chosen, rejected = row["chosen"][0]["content"], row["rejected"][0]["content"]
        assert chosen == rejected.lower() and chosen != rejected
        assert satisfies_lowercase(chosen) and not satisfies_lowercase(rejected)
    train_questions = {r["prompt"][0]["content"].replace("Reply in lowercase letters only.", "").strip()
                       for r in train.rows}
    for row in held.rows:
        question = row["prompt"][0]["content"].replace("Reply in lowercase letters only.", "").strip()
        assert question not in train_questions
    assert prepare("smoke-lowercase", seed=0).fingerprint == train.fingerprint


def test_scorer_rules():
    assert satisfies_lowercase("the capital of egypt is cairo.")
    assert not satisfies_lowercase("The capital of Egypt is Cairo.")
    assert not satisfies_lowercase("42")  # no letters: the constraint is not shown
    assert key_fact("the opposite of 'rich' is 'poor'.") == "poor"
    assert key_fact("a pig oinks.") == "oinks"
    assert is_degenerate("the cat the cat the cat the cat", hit_token_limit=False)
    assert is_degenerate("short", hit_token_limit=True)
    assert not is_degenerate("the capital of egypt is cairo.", hit_token_limit=False)
    completions = [[{"role": "assistant", "content": "all lower"}], [{"role": "assistant", "content": "Mixed"}]]
    assert lowercase_reward(completions) == [1.0, 0.0]
