"""Reward models: Bradley-Terry training through TRL's RewardTrainer on the tiny model, held-out
evaluation (accuracy, score statistics, per-pair artifact), formatting/truncation, the held-out
split, config checks, RewardBench scoring, and the real HH-RLHF harmless test split."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import pytest

from datasets_registry import prepare
from harness.reward_model import (
    RM_META_FILE,
    RewardModelConfig,
    RewardScorer,
    check_preference_rows,
    encode_conversation,
    evaluate_reward_model,
    evaluate_rewardbench,
    rewardbench_score,
    split_heldout,
    train_reward_model,
)

FAST = dict(per_device_train_batch_size=8, gradient_accumulation_steps=1, max_length=128,
            learning_rate=1e-3, min_learning_rate=1e-4)


def hh_rlhf_harmless_test(shared_data: Path, n: int) -> list[dict]:
    """Real HH-RLHF harmless-base test pairs in the registry schema: through the registry when it has
    the split, otherwise parsed here (transcripts share all turns but the final assistant reply)."""
    from datasets_registry import DATASETS

    if "hh-rlhf-harmless-test" in DATASETS:
        return prepare("hh-rlhf-harmless-test", seed=0, max_rows=n).rows
    rows = []
    with gzip.open(shared_data / "preferences/hh-rlhf/harmless-base/test.jsonl.gz", "rt") as fh:
        for i, line in enumerate(fh):
            raw = json.loads(line)

            def turns(text: str) -> list[dict]:
                out = []
                for chunk in text.split("\n\nHuman: ")[1:]:
                    human, *assistant = chunk.split("\n\nAssistant: ")
                    out.append({"role": "user", "content": human.strip()})
                    out += [{"role": "assistant", "content": a.strip()} for a in assistant]
                return out

            chosen, rejected = turns(raw["chosen"]), turns(raw["rejected"])
            if len(chosen) < 2 or chosen[:-1] != rejected[:-1] or chosen[-1]["role"] != "assistant":
                continue
            if not chosen[-1]["content"] or not rejected[-1]["content"] or chosen[-1] == rejected[-1]:
                continue
            rows.append({"id": f"hh-harmless-test-{i}", "prompt": chosen[:-1], "chosen": [chosen[-1]],
                         "rejected": [rejected[-1]], "source": "hh-rlhf-harmless-test"})
            if len(rows) == n:
                break
    return rows


def test_split_heldout_is_deterministic_disjoint_and_order_free():
    rows = prepare("smoke-lowercase", seed=0).rows
    train, held = split_heldout(rows, 0.2, seed=7)
    assert len(held) == round(0.2 * len(rows)) and len(train) + len(held) == len(rows)
    assert not {r["id"] for r in train} & {r["id"] for r in held}
    train2, held2 = split_heldout(list(reversed(rows)), 0.2, seed=7)
    assert {r["id"] for r in held2} == {r["id"] for r in held}  # membership ignores order
    _, held3 = split_heldout(rows, 0.2, seed=8)
    assert {r["id"] for r in held3} != {r["id"] for r in held}
    with pytest.raises(ValueError, match="fraction"):
        split_heldout(rows, 1.0, seed=0)
    with pytest.raises(ValueError, match="at least 2"):
        split_heldout(rows[:1], 0.5, seed=0)


def test_encode_conversation_keeps_the_response_when_truncating(tiny_model: str):
    from harness.models import load_tokenizer

    tok = load_tokenizer(tiny_model)
    prompt = [{"role": "user", "content": "The quick brown fox jumps over the lazy dog. " * 20}]
    full, cut = encode_conversation(tok, prompt, "Paris is the capital.", max_length=10_000)
    short, cut_short = encode_conversation(tok, prompt, "Paris is the capital.", max_length=32)
    assert not cut and cut_short and len(short) == 32
    assert short == full[-32:]  # the tail (response + end of turn) survives
    assert "Paris is the capital." in tok.decode(short)


def test_config_and_rows_are_checked_before_compute():
    with pytest.raises(ValueError, match="min_learning_rate"):
        RewardModelConfig(learning_rate=1e-6, min_learning_rate=1e-6)
    with pytest.raises(ValueError, match="overlong"):
        RewardModelConfig(overlong="cut")
    cfg = RewardModelConfig()
    assert (cfg.num_train_epochs, cfg.learning_rate, cfg.min_learning_rate, cfg.warmup_ratio) == (1.0, 1e-5, 1e-6, 0.03)
    assert cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps == 512  # App. F.2
    with pytest.raises(ValueError, match="no preference rows"):
        check_preference_rows([])
    with pytest.raises(ValueError, match=r"rows\[0\].*'chosen'"):
        check_preference_rows([{"id": "a", "prompt": [{"role": "user", "content": "q"}], "chosen": "text",
                                "rejected": [{"role": "assistant", "content": "r"}]}])


def test_train_and_evaluate_on_heldout_smoke_pairs(tiny_model: str, tmp_path: Path, capsys):
    rows = prepare("smoke-lowercase", seed=0, max_rows=96).rows
    train, held = split_heldout(rows, 0.25, seed=0)
    logs: list[tuple[int, dict]] = []
    result = train_reward_model(train, tiny_model, RewardModelConfig(**FAST), tmp_path, seed=0,
                                log=lambda m, s: logs.append((s, m)))
    assert result["rm_train/pairs"] == len(train) and result["rm_train/steps"] == math.ceil(len(train) / 8)
    assert math.isfinite(result["rm_train/final_loss"])
    assert logs and "train/loss" in logs[0][1]
    # The metrics go to the history, not to stdout: transformers' printer would print each log dict.
    assert "{'loss'" not in capsys.readouterr().out
    lrs = [m["train/learning_rate"] for _, m in logs if "train/learning_rate" in m]
    peak = lrs.index(max(lrs))
    assert max(lrs) == pytest.approx(1e-3) and peak <= 1  # 3% warm-up of 9 steps: one step
    decay = lrs[peak:]
    assert decay == sorted(decay, reverse=True) and decay[-1] > 1e-4  # linear decay towards 1e-4, not 0
    step = (1e-3 - 1e-4) / (len(lrs) - 1)  # linear: equal decrements reaching min_learning_rate at the end
    assert decay[-1] == pytest.approx(1e-4 + step, rel=1e-3)
    model_dir = tmp_path / "model"
    assert (model_dir / "config.json").exists() and (model_dir / RM_META_FILE).exists()
    metrics = evaluate_reward_model(str(model_dir), held, tmp_path / "eval")
    for key in ("rm/accuracy", "rm/reward_mean", "rm/reward_std", "rm/chosen_mean", "rm/rejected_mean"):
        assert math.isfinite(metrics[key]), key
    # The lowercase preference is trivially learnable: held-out pairs are ranked correctly.
    assert metrics["rm/accuracy"] > 0.75
    assert metrics["rm/chosen_mean"] > metrics["rm/rejected_mean"]
    lines = (tmp_path / "eval" / "artifacts" / "rm_scores.jsonl").read_text().splitlines()
    assert len(lines) == len(held)
    first = json.loads(lines[0])
    assert first["correct"] == (first["chosen_score"] > first["rejected_score"])
    assert (tmp_path / "eval" / "artifacts" / "rm_score_hist.png").stat().st_size > 0
    # The scorer reads the training-time max_length from the saved metadata.
    assert RewardScorer(str(model_dir)).max_length == 128


def test_real_hh_rlhf_harmless_pairs_train_with_left_truncation(tiny_model: str, shared_data: Path, tmp_path: Path):
    rows = hh_rlhf_harmless_test(shared_data, 48)
    assert len(rows) == 48
    train, held = split_heldout(rows, 0.25, seed=0)
    cfg = RewardModelConfig(**{**FAST, "max_length": 96, "max_steps": 2})
    result = train_reward_model(train, tiny_model, cfg, tmp_path, seed=0)
    assert result["rm_train/pairs_truncated"] > 0  # real multi-turn transcripts exceed 96 tokens
    assert result["rm_train/pairs"] == len(train)
    dropped = train_reward_model(train, tiny_model, RewardModelConfig(**{**FAST, "max_length": 96, "max_steps": 1,
                                                                         "overlong": "drop"}),
                                 tmp_path / "drop", seed=0)
    assert dropped["rm_train/pairs_dropped_overlong"] == result["rm_train/pairs_truncated"]
    metrics = evaluate_reward_model(str(tmp_path / "model"), held, tmp_path / "eval")
    assert metrics["rm/n_pairs"] == len(held) and 0.0 <= metrics["rm/accuracy"] <= 1.0


def test_rewardbench_weighting_prior_sets_half():
    acc = {"alpacaeval-easy": 1.0, "mt-bench-hard": 0.5, "refusals-dangerous": 0.25, "math-prm": 0.0,
           "hep-python": 1.0, "anthropic_helpful": 0.6, "shp": 0.4}
    out = rewardbench_score(acc)
    reasoning = (0.0 * 984 + 1.0 * 164) / (984 + 164)
    assert out["rewardbench/reasoning"] == pytest.approx(reasoning)
    assert out["rewardbench/prior_sets"] == pytest.approx(0.5)
    expected = (1.0 + 0.5 + 0.25 + reasoning + 0.5 * 0.5) / 4.5
    assert out["rewardbench/score"] == pytest.approx(expected)


def test_rewardbench_runs_on_local_file_and_skips_without_one(tiny_model: str, tmp_path: Path, monkeypatch):
    from harness.models import resolve_model

    model = resolve_model(tiny_model)
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path / "data"))
    metrics, reason = evaluate_rewardbench(model, tmp_path / "out")
    if reason is None:  # a real RewardBench copy is present in ../shared/data
        assert "rewardbench/score" in metrics
    else:
        assert metrics == {} and "not found" in reason
    (tmp_path / "data" / "rewardbench").mkdir(parents=True)
    rows = [{"prompt": "Say hi", "chosen": "Hi!", "rejected": "No.", "subset": s, "id": i}
            for i, s in enumerate(["alpacaeval-easy", "donotanswer", "shp", "hep-go"])]
    (tmp_path / "data" / "rewardbench" / "filtered.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    metrics, reason = evaluate_rewardbench(model, tmp_path / "out")
    assert reason is None and metrics["rewardbench/n"] == 4.0
    assert {"rewardbench/chat", "rewardbench/safety", "rewardbench/prior_sets", "rewardbench/score"} <= set(metrics)
    assert 0.0 <= metrics["rewardbench/score"] <= 1.0


def test_rewardbench_split_in_both_formats_is_read_once_and_bad_rows_are_named(tmp_path, monkeypatch):
    from harness.reward_model import evaluate_rewardbench, rewardbench_files

    folder = tmp_path / "rewardbench"
    folder.mkdir()
    row = {"prompt": "p", "chosen": "c", "rejected": "r", "subset": "alpacaeval-easy", "id": 0}
    (folder / "filtered.jsonl").write_text(json.dumps(row) + "\n")
    with gzip.open(folder / "filtered.jsonl.gz", "wt") as fh:  # the same split, compressed copy
        fh.write(json.dumps(row) + "\n")
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path))
    assert rewardbench_files() == [folder / "filtered.jsonl"]

    (folder / "filtered.jsonl").write_text(json.dumps(row) + "\n" + json.dumps({"prompt": "p", "chosen": "c"}) + "\n")
    with pytest.raises(ValueError, match=r"filtered.jsonl: RewardBench row 1 lacks \['rejected', 'subset'\]"):
        evaluate_rewardbench("unused-model-path", tmp_path / "out")
