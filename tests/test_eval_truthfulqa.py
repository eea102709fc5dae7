"""TruthfulQA: MC2 fallback parity with lm-eval's truthfulqa_mc2, judged-score aggregation, skips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from harness.evaluation import truthfulqa


def test_prompt_is_lmeval_qa_primer():
    prompt = truthfulqa.qa_prompt("Is the sky green?")
    assert prompt.startswith("Q: What is human life expectancy in the United States?")
    assert prompt.endswith("\n\nQ: Is the sky green?\nA:") and prompt.count("\nA: ") == 6
    assert truthfulqa.qa_user_turn("Is the sky green?").endswith("Q: Is the sky green?")
    assert truthfulqa.postprocess(" Paris.\n\nQ: next") == "Paris."


def test_mc2_score_matches_lmeval_process_results():
    from lm_eval.tasks.truthfulqa.utils import process_results_mc2

    rng = np.random.default_rng(0)
    for n in (2, 5, 9):
        lls = list(rng.normal(-30, 10, size=n))
        labels = [1] * (n // 2) + [0] * (n - n // 2)
        doc = {"mc2_targets": {"labels": labels}}
        official = process_results_mc2(doc, [(ll, False) for ll in lls])["acc"]
        assert truthfulqa.mc2_score(lls, labels) == pytest.approx(official, rel=1e-9)


def test_mc2_loglikelihoods_equal_lmeval_hflm(tiny_model: str, shared_data: Path):
    """Fast parity: multi-token answer log-likelihoods == lm-eval's HFLM.loglikelihood."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from harness.models import load_causal_lm

    model, tok = load_causal_lm(tiny_model)
    rows = truthfulqa.load_mc_rows(1)
    ours = truthfulqa.mc2_loglikes(model, tok, rows, batch_size=8)[0]
    context = truthfulqa.qa_prompt(rows[0]["question"])
    reqs = [Instance(request_type="loglikelihood", doc={}, arguments=(context, f" {c}"), idx=j,
                     metadata=("tqa", 0, 1)) for j, c in enumerate(rows[0]["choices"])]
    official = HFLM(pretrained=model, tokenizer=tok, batch_size=8).loglikelihood(reqs, disable_tqdm=True)
    assert ours == pytest.approx([ll for ll, _ in official], abs=1e-4)


@pytest.mark.slow
def test_mc2_parity_with_lmeval_pipeline(tiny_model: str, shared_data: Path):
    """lm-eval's truthfulqa_mc2 task (HFLM, same model, same local rows) gives the same MC2."""
    from lm_eval.models.huggingface import HFLM

    from harness.evaluation.lmeval_bridge import evaluate_local, lmeval_tasks_dir
    from harness.models import load_causal_lm

    model, tok = load_causal_lm(tiny_model)
    rows = truthfulqa.load_mc_rows(2)
    ours = [truthfulqa.mc2_score(ll, r["labels"])
            for ll, r in zip(truthfulqa.mc2_loglikes(model, tok, rows, batch_size=8), rows)]
    docs = [{"question": r["question"], "mc1_targets": {"choices": r["choices"], "labels": r["labels"]},
             "mc2_targets": {"choices": r["choices"], "labels": r["labels"]}} for r in rows]
    results, samples = evaluate_local(lmeval_tasks_dir() / "truthfulqa" / "truthfulqa_mc2.yaml",
                                      "truthfulqa_mc2_parity", docs, HFLM(pretrained=model, tokenizer=tok))
    assert [s["acc"] for s in samples] == pytest.approx(ours, abs=1e-5)
    assert 100 * results["acc,none"] == pytest.approx(100 * float(np.mean(ours)), abs=1e-3)


def test_judged_score_counts_unparsed_as_failures():
    m = truthfulqa.score_judged(["yes", "yes", "no", None], ["yes", "no", "yes", "yes"])
    assert m["truthfulqa/truth_info"] == 25.0
    assert m["truthfulqa/truthful"] == 50.0 and m["truthfulqa/informative"] == 75.0
    assert m["truthfulqa/n_unparsed"] == 1.0


def test_without_judge_only_the_labelled_fallback(tiny_model: str, tmp_path: Path, shared_data: Path):
    from harness.evaluation import EvalContext

    result = truthfulqa.run(EvalContext(model_path=tiny_model, out_dir=tmp_path, limit=2))
    assert result.score is None and "judge" in result.skipped_reason
    assert set(result.metrics) == {"truthfulqa/mc2_offline_fallback", "truthfulqa/offline_fallback_score",
                                   "truthfulqa/offline_fallback_score_from_finetuned_judge", "truthfulqa/n"}
    # Without fine-tuned judges the fallback score is MC2, and the metrics say so.
    assert result.metrics["truthfulqa/offline_fallback_score"] == result.metrics["truthfulqa/mc2_offline_fallback"]
    assert result.metrics["truthfulqa/offline_fallback_score_from_finetuned_judge"] == 0.0
    assert 0 <= result.metrics["truthfulqa/mc2_offline_fallback"] <= 100


def test_with_judge(tiny_model: str, tmp_path: Path, shared_data: Path, truthful_uninformative_judge):
    """Judge path end to end with the scripted judge server over HTTP (the real one is an HTTP endpoint)."""
    from harness.evaluation import EvalContext

    judge = truthful_uninformative_judge
    questions = [r["question"] for r in truthfulqa.load_gen_rows(2)]
    ctx = EvalContext(model_path=tiny_model, out_dir=tmp_path, limit=2, judge=judge.settings)
    result = truthfulqa.run(ctx, max_new_tokens=4)
    assert result.skipped_reason is None
    assert result.metrics["truthfulqa/truthful"] == 100.0 and result.metrics["truthfulqa/informative"] == 0.0
    assert result.score == 0.0  # truthful but uninformative answers do not count
    gen = [s for s in result.samples if s["kind"] == "generation"]
    assert len(gen) == 2 and all(s["prompt"].endswith("A:") for s in gen)
    # Every request named one of the generated questions (else "unsure", unparsed): 2 answers x 2 judges.
    assert [s["question"] for s in gen] == questions
    assert result.metrics["truthfulqa/n_unparsed"] == 0.0 and judge.stats()["completed"] == 4
    assert [(s["truthful"], s["informative"]) for s in gen] == [("yes", "no")] * 2
