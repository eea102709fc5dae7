"""MMLU: data loading, prompt, and parity with lm-eval's own mmlu pipeline (HFLM) on the same model."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.evaluation import mmlu


def test_rows_and_prompt(shared_data: Path):
    rows = mmlu.load_rows(limit=57)
    assert len(rows) == 57 and len({r["subject"] for r in rows}) == 57
    full = mmlu.load_rows(limit=None)
    assert len(full) == 14042
    row = next(r for r in rows if r["subject"] == "abstract_algebra")
    prompt = mmlu.raw_prompt(row)
    assert prompt.startswith("The following are multiple choice questions (with answers) about abstract algebra.\n\n")
    assert prompt.endswith("\nA. 0\nB. 4\nC. 2\nD. 6\nAnswer:")
    assert row["answer"] == 1


def test_accuracy_is_over_examples():
    rows = [{"subject": "a", "answer": 0}] * 3 + [{"subject": "b", "answer": 1}]
    lls = [[0.0, -1, -1, -1], [-1, 0.0, -1, -1], [0.0, -2, -3, -4], [-1, 0.0, -2, -2]]
    result = mmlu.score_predictions(rows, lls)
    assert result.score == 75.0  # 3 of 4 examples; the subject mean would be (66.7 + 100) / 2
    assert [s["prediction"] for s in result.samples] == [0, 1, 0, 1]


def test_loglikelihoods_equal_lmeval_hflm(tiny_model: str, shared_data: Path):
    """Fast parity: our letter log-likelihoods == lm-eval's HFLM.loglikelihood on the same requests."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from harness.models import load_causal_lm

    model, tok = load_causal_lm(tiny_model)
    rows = mmlu.load_rows(limit=57)[:3]
    contexts = [mmlu.raw_prompt(r) for r in rows]
    ours = mmlu.predict(model, tok, contexts, batch_size=4)
    reqs = [Instance(request_type="loglikelihood", doc={}, arguments=(c, f" {letter}"), idx=j,
                     metadata=("mmlu", i, 1))
            for i, c in enumerate(contexts) for j, letter in enumerate(mmlu.LETTERS)]
    official = HFLM(pretrained=model, tokenizer=tok, batch_size=4).loglikelihood(reqs, disable_tqdm=True)
    assert [ll for row in ours for ll in row] == pytest.approx([ll for ll, _ in official], abs=1e-4)


@pytest.mark.slow
def test_parity_with_lmeval_hflm(tiny_model: str, shared_data: Path):
    """Same model, same raw prompts: our letter log-likelihoods and accuracy == lm-eval's mmlu task."""
    from lm_eval.models.huggingface import HFLM

    from harness.evaluation.lmeval_bridge import evaluate_local, lmeval_tasks_dir
    from harness.models import load_causal_lm

    model, tok = load_causal_lm(tiny_model)
    subject = "anatomy"
    rows = [r for r in mmlu.load_rows(limit=114) if r["subject"] == subject]
    ours = mmlu.predict(model, tok, [mmlu.raw_prompt(r) for r in rows], batch_size=4)
    lm = HFLM(pretrained=model, tokenizer=tok, batch_size=4)
    docs = [{"question": r["question"], "subject": subject, "choices": r["choices"], "answer": r["answer"]}
            for r in rows]
    results, samples = evaluate_local(
        lmeval_tasks_dir() / "mmlu" / "default" / "_default_template_yaml", "mmlu_parity", docs, lm,
        overrides={"description": f"The following are multiple choice questions (with answers) about "
                                  f"{mmlu.format_subject(subject)}.\n\n"},
    )
    official = [[float(resp[0][0]) for resp in s["resps"]] for s in samples]
    assert len(official) == len(ours) == 2
    for a, b in zip(ours, official):
        assert a == pytest.approx(b, abs=1e-4)
    assert mmlu.score_predictions(rows, ours).score == pytest.approx(100 * results["acc,none"])


def test_run_on_tiny_model_chat_template(tiny_model: str, tmp_path: Path, shared_data: Path, monkeypatch):
    from harness.evaluation import EvalContext

    rows = mmlu.load_rows(limit=57)[:6]
    monkeypatch.setattr(mmlu, "load_rows", lambda limit: rows)
    ctx = EvalContext(model_path=tiny_model, out_dir=tmp_path, limit=6, batch_size=16)
    result = mmlu.run(ctx)
    assert result.metrics["mmlu/n"] == 6 and result.metrics["mmlu/chat_template"] == 1.0
    assert result.samples[0]["prompt"].endswith(mmlu.CHAT_ANSWER_PREFIX)
    assert 0 <= result.score <= 100
