"""`policy_kl` and `rm_reward`: skips with reasons, exact zero for identical models, agreement of the
Monte-Carlo KL with the exact KL where it is computable, and token alignment of the scoring pass."""

from __future__ import annotations

import math
import shutil
import statistics
from pathlib import Path

import pytest

from harness.evaluation import EvalContext, run_tasks


@pytest.fixture(scope="module")
def perturbed_model(tiny_model, tmp_path_factory) -> str:
    """The tiny model with slightly perturbed embeddings/norms: a policy with a modest, known-ish KL."""
    import torch
    from transformers import AutoModelForCausalLM

    out = tmp_path_factory.mktemp("perturbed")
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "embed" in name or "norm" in name:
                param.add_(torch.randn(param.shape, generator=gen) * 0.05)
    model.save_pretrained(out)
    for f in Path(tiny_model).iterdir():
        if f.name.startswith(("tokenizer", "special_tokens", "chat_template")):
            shutil.copy(f, out)
    return str(out)


@pytest.fixture(scope="module")
def tiny_reward_model(tiny_model, tmp_path_factory) -> str:
    """A saved sequence-classification model (seeded score head), so every load scores the same."""
    import torch
    from transformers import AutoModelForSequenceClassification

    out = tmp_path_factory.mktemp("tiny_rm")
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=1)
    model.config.pad_token_id = model.config.eos_token_id
    model.save_pretrained(out)
    for f in Path(tiny_model).iterdir():
        if f.name.startswith(("tokenizer", "special_tokens", "chat_template")):
            shutil.copy(f, out)
    return str(out)


def test_skipped_with_reason_without_reference_or_reward_model(tiny_model, tmp_path):
    ctx = EvalContext(model_path=tiny_model, out_dir=tmp_path, limit=2)
    metrics = run_tasks(ctx, ["policy_kl", "rm_reward"])
    assert not any(k.endswith(("kl_mean", "/mean")) for k in metrics)
    import json

    skipped = json.loads((tmp_path / "results.json").read_text())["skipped"]
    assert "reference" in skipped["policy_kl"] and "reward model" in skipped["rm_reward"]


def test_identical_policy_and_reference_give_exactly_zero(tiny_model, tmp_path):
    ctx = EvalContext(model_path=tiny_model, out_dir=tmp_path, limit=3, reference_path=tiny_model)
    metrics = run_tasks(ctx, ["policy_kl"])
    assert metrics["policy_kl/kl_mean"] == 0.0 and metrics["policy_kl/kl_std"] == 0.0
    assert metrics["policy_kl/n_samples"] == 6 and metrics["policy_kl/n_prompts"] == 3
    assert 1 <= metrics["policy_kl/mean_length"] <= 48


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_kl_does_not_depend_on_the_tasks_run_before_it(tiny_model, perturbed_model, tmp_path, dtype):
    """policy_kl after a task that built the shared engine (its model at the engine's precision) equals
    policy_kl run alone (its own load), and the SFT model against itself is exactly 0 either way: policy and
    reference are run at one precision, the engine's. Before, a bf16 engine model was scored against an fp32
    reference (SmolLM2 against itself: 0.02 nats), and a cached earlier task changed the number."""
    from harness.generation import EngineSettings

    engine = EngineSettings(dtype=dtype)
    for model, zero in ((tiny_model, True), (perturbed_model, False)):
        results = []
        for tasks in (["smoke_lowercase", "policy_kl"], ["policy_kl"]):
            out = tmp_path / f"{Path(model).name}-{len(tasks)}"
            ctx = EvalContext(model_path=model, out_dir=out, limit=3, reference_path=tiny_model, engine=engine)
            results.append(run_tasks(ctx, tasks)["policy_kl/kl_mean"])
        assert results[0] == results[1], (model, dtype, results)
        assert (results[0] == 0.0) is zero, (model, dtype, results)


def test_monte_carlo_kl_matches_exact_kl_for_one_token(tiny_model, perturbed_model):
    """With one-token completions KL(pi || ref) = sum_v p(v) log p(v)/q(v) is exact: the estimator, on
    samples from the untruncated policy, must agree within its own standard error."""
    import torch

    from harness.algorithms.reward_wrappers import eos_token_ids
    from harness.evaluation.policy_metrics import (
        _render,
        completion_logprobs,
        load_prompt_rows,
        sample_completions,
    )
    from harness.models import load_causal_lm

    policy, tok = load_causal_lm(perturbed_model)
    reference, _ = load_causal_lm(tiny_model)
    prompts = [r["prompt"] for r in load_prompt_rows("smoke-lowercase-eval", 3)]
    exact = []
    for prompt in prompts:
        ids = tok(_render(tok, prompt), return_tensors="pt", add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            lp = torch.log_softmax(policy(ids).logits[0, -1].float(), -1)
            lq = torch.log_softmax(reference(ids).logits[0, -1].float(), -1)
        exact.append(float((lp.exp() * (lp - lq)).sum()))
    samples = sample_completions(policy, tok, prompts, 200, 1, seed=0, batch_size=4, eos_ids=eos_token_ids(tok, policy))
    pairs = [(p, c) for _, p, c, _ in samples]
    kls = [sum(a) - sum(b) for a, b in zip(completion_logprobs(policy, pairs, tok.pad_token_id, 128),
                                            completion_logprobs(reference, pairs, tok.pad_token_id, 128))]
    stderr = statistics.stdev(kls) / math.sqrt(len(kls))
    assert statistics.fmean(exact) > 0.05  # the check is not vacuous
    assert abs(statistics.fmean(kls) - statistics.fmean(exact)) < 4 * stderr + 1e-4


def test_scoring_pass_reproduces_generation_logprobs(tiny_model):
    """Teacher-forced log-probs of the sampled ids (right padding) equal the ones `generate` sampled from
    (left padding, prompts of different lengths): the scoring pass is aligned token by token."""
    import torch

    from harness.evaluation.policy_metrics import _render, completion_logprobs
    from harness.models import load_causal_lm

    model, tok = load_causal_lm(tiny_model)
    tok.padding_side = "left"
    texts = [_render(tok, [{"role": "user", "content": q}]) for q in ("Hi", "What is the capital of France today?")]
    batch = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    torch.manual_seed(0)
    out = model.generate(**batch, do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=6,
                         min_new_tokens=6, output_logits=True, return_dict_in_generate=True,
                         pad_token_id=tok.pad_token_id)
    new = out.sequences[:, batch["input_ids"].shape[1]:]
    step_lp = torch.stack([torch.log_softmax(lg.float(), -1) for lg in out.logits], 1)  # [B, T, V]
    expected = step_lp.gather(-1, new.unsqueeze(-1)).squeeze(-1)
    pairs = [(batch["input_ids"][i][batch["attention_mask"][i].bool()].tolist(), new[i].tolist()) for i in range(2)]
    got = completion_logprobs(model, pairs, tok.pad_token_id, batch_size=2)
    for i in range(2):
        assert got[i] == pytest.approx(expected[i].tolist(), abs=1e-4)


def test_policy_kl_positive_for_a_different_policy_and_rm_reward_scores_outputs(
    tiny_model, perturbed_model, tiny_reward_model, tmp_path
):
    from harness.reward_model import RewardScorer

    ctx = EvalContext(model_path=perturbed_model, out_dir=tmp_path, limit=4, reference_path=tiny_model,
                      reward_model_path=tiny_reward_model)
    metrics = run_tasks(ctx, ["policy_kl", "rm_reward"])
    assert metrics["policy_kl/kl_mean"] > 3 * metrics["policy_kl/kl_stderr"] > 0
    assert metrics["rm_reward/n"] == 4 and math.isfinite(metrics["rm_reward/mean"])
    import json

    rows = [json.loads(line) for line in (tmp_path / "rm_reward.samples.jsonl").read_text().splitlines()]
    assert statistics.fmean(r["reward"] for r in rows) == pytest.approx(metrics["rm_reward/mean"])
    # The reported rewards are the reward model's scores of exactly the saved outputs.
    from harness.evaluation.policy_metrics import load_prompt_rows

    prompts = [r["prompt"] for r in load_prompt_rows("smoke-lowercase-eval", 4)]
    rescored = RewardScorer(tiny_reward_model).score(prompts, [r["output"] for r in rows])
    assert rescored == pytest.approx([r["reward"] for r in rows], abs=1e-4)
