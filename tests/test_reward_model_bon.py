"""Best-of-N: N samples from the SFT policy generated once, cached, and re-scored by every reward model;
the generation benchmark then runs on each RM's top pick."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from datasets_registry import prepare
from harness.best_of_n import BestOfNConfig, run_best_of_n
from harness.reward_model import RewardModelConfig, RewardScorer, train_reward_model


def _train(tiny_model: str, out: Path, flip: bool) -> str:
    rows = prepare("smoke-lowercase", seed=0, max_rows=32).rows
    if flip:  # an RM with the opposite preference: a second, different scorer on the same samples
        rows = [{**r, "chosen": r["rejected"], "rejected": r["chosen"]} for r in rows]
    cfg = RewardModelConfig(per_device_train_batch_size=8, gradient_accumulation_steps=1, max_length=128,
                            learning_rate=1e-3, min_learning_rate=1e-4, max_steps=3)
    train_reward_model(rows, tiny_model, cfg, out, seed=0)
    return str(out / "model")


def test_best_of_n_shares_cached_samples_across_reward_models(tiny_model: str, tmp_path: Path):
    rms = {"lower": _train(tiny_model, tmp_path / "rm_lower", flip=False),
           "upper": _train(tiny_model, tmp_path / "rm_upper", flip=True)}
    cfg = BestOfNConfig(n=4, temperature=0.7, seed=1)
    cache_dir = tmp_path / "cache"
    metrics = run_best_of_n(tiny_model, rms, ["smoke_lowercase"], tmp_path / "bon", config=cfg, limit=3,
                            cache_dir=cache_dir, batch_size=4)
    # 3 prompts sampled once (misses) for the first RM, then served from the cache (hits) for the second.
    assert metrics["bon/cache_misses"] == 3.0 and metrics["bon/cache_hits"] == 3.0
    for label in rms:
        assert f"bon/{label}/smoke_lowercase/score" in metrics
    cached = [json.loads(line) for line in (cache_dir / "samples.jsonl").read_text().splitlines()]
    assert len(cached) == 3 and all(len(entry["candidates"]) == 4 for entry in cached)
    candidates = {c for entry in cached for c in entry["candidates"]}
    for label, rm_path in rms.items():
        records = [json.loads(line) for line in (tmp_path / "bon" / label / "bon_selections.jsonl").read_text().splitlines()]
        outputs = [json.loads(line) for line in
                   (tmp_path / "bon" / label / "smoke_lowercase.samples.jsonl").read_text().splitlines()]
        assert len(records) == 3 and len(outputs) == 3
        scorer = RewardScorer(rm_path)
        for record, sample in zip(records, outputs):
            assert record["chosen"] in candidates and sample["output"] == record["chosen"]
            # the pick is the argmax of this RM's scores
            assert record["scores"][record["chosen_index"]] == pytest.approx(max(record["scores"]))
            prompt = [{"role": "user", "content": record["prompt"]}]
            assert scorer.score([prompt], [record["chosen"]])[0] == pytest.approx(max(record["scores"]), abs=1e-4)
    # A second call regenerates nothing.
    again = run_best_of_n(tiny_model, {"lower": rms["lower"]}, ["smoke_lowercase"], tmp_path / "bon2", config=cfg,
                          limit=3, cache_dir=cache_dir, batch_size=4)
    assert again["bon/cache_misses"] == 0.0 and again["bon/cache_hits"] == 3.0
    assert again["bon/lower/smoke_lowercase/score"] == metrics["bon/lower/smoke_lowercase/score"]


def test_best_of_n_checks_inputs_before_generating(tiny_model: str, tmp_path: Path):
    with pytest.raises(ValueError, match="n >= 1"):
        BestOfNConfig(n=0)
    with pytest.raises(ValueError, match="at least one reward model"):
        run_best_of_n(tiny_model, {}, ["smoke_lowercase"], tmp_path)
    with pytest.raises(Exception, match="no_such_task"):
        run_best_of_n(tiny_model, {"rm": tiny_model}, ["no_such_task"], tmp_path)
