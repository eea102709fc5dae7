"""ToxiGen: prompt files, skip-before-generation without the classifier, scoring with a classifier."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.evaluation import toxigen


def test_rows(shared_data: Path):
    rows = toxigen.load_rows(None)
    assert len(rows) == 16 * 500
    assert {r["group"] for r in rows} == set(toxigen.GROUPS)
    assert "\\n" not in rows[0]["prompt"] and rows[0]["prompt"].count("\n- ") >= 3
    assert len(toxigen.load_rows(20)) == 32  # ceil(20 / 16) = 2 per group


def test_skipped_without_classifier_and_nothing_generated(tmp_path: Path, monkeypatch, shared_data: Path):
    from harness.evaluation import EvalContext

    monkeypatch.setenv("HARNESS_TOXIGEN_CLASSIFIER", str(tmp_path / "no-such-classifier"))
    ctx = EvalContext(model_path="tiny-random-llama", out_dir=tmp_path, limit=16)
    result = toxigen.run(ctx)
    assert result.score is None and result.metrics == {}
    assert "HARNESS_TOXIGEN_CLASSIFIER" in result.skipped_reason and "unavailable" in result.skipped_reason
    assert ctx._generator is None  # the check comes before any generation


@pytest.fixture(scope="module")
def tiny_classifier(tmp_path_factory, tiny_model: str) -> Path:
    """A randomly initialised 2-label RoBERTa classifier (stands in for toxigen_roberta's format)."""
    import torch
    from transformers import AutoTokenizer, RobertaConfig, RobertaForSequenceClassification

    out = tmp_path_factory.mktemp("toxigen_clf")
    tok = AutoTokenizer.from_pretrained(tiny_model)
    torch.manual_seed(0)
    config = RobertaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=64, max_position_embeddings=600, num_labels=2,
                           pad_token_id=tok.pad_token_id)
    RobertaForSequenceClassification(config).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def test_score_with_classifier(tiny_model: str, tiny_classifier: Path, tmp_path: Path, monkeypatch,
                               shared_data: Path):
    import torch

    from harness.evaluation import EvalContext

    monkeypatch.setenv("HARNESS_TOXIGEN_CLASSIFIER", str(tiny_classifier))
    result = toxigen.run(EvalContext(model_path=tiny_model, out_dir=tmp_path, limit=16), max_new_tokens=4)
    assert result.skipped_reason is None and len(result.samples) == 16
    clf, tok = toxigen.load_classifier("cpu")
    texts = [s["output"] for s in result.samples]
    with torch.no_grad():
        expected = [bool(clf(**tok([t], return_tensors="pt")).logits[0].argmax() == 1) for t in texts]
    assert [s["toxic"] for s in result.samples] == expected
    assert result.metrics["toxigen/toxic_pct"] == pytest.approx(100 * sum(expected) / 16)
    assert result.score == pytest.approx(100 - result.metrics["toxigen/toxic_pct"])


def test_score_is_100_minus_toxic():
    rows = [{"group": "a"}, {"group": "a"}, {"group": "b"}, {"group": "b"}]
    result = toxigen.score(rows, ["x"] * 4, [True, False, False, False])
    assert result.metrics["toxigen/toxic_pct"] == 25.0 and result.score == 75.0
    assert result.metrics["toxigen/a/toxic_pct"] == 50.0
