"""The compute-cost estimator: model shapes, FLOP accounting per stage kind, device time and money, the
device profiles' validation, and the calibrations (the paper's reported compute; this machine)."""

from __future__ import annotations

import json
import math

import pytest
import yaml

from harness import cost, cost_profiles
from harness.cost_paper import (
    FIGURES,
    FIT_PROFILE,
    calibration_rows,
    dpo_13b,
    fit_tpu_efficiencies,
    ppo_13b,
    reward_model_13b,
)

TINY = cost_profiles.ModelShape("toy", n_layers=2, d_model=8, n_heads=2, n_kv_heads=1, head_dim=4, d_ff=16,
                       vocab_size=10, tied_embeddings=True)


def test_parameter_counts_match_transformers():
    """The shape's parameter count is the model's: the published totals of Llama 2 13B / 70B and SmolLM2,
    and transformers' own count of a one-layer model of each config (on the meta device: no weights)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    published = {"meta-llama/Llama-2-13b-hf": 13_015_864_320, "meta-llama/Llama-2-70b-hf": 68_976_648_192,
                 "HuggingFaceTB/SmolLM2-135M-Instruct": 134_515_008, "HuggingFaceTB/SmolLM2-360M-Instruct": 361_821_120}
    for name, config in cost_profiles.KNOWN_CONFIGS.items():
        assert cost_profiles.model_shape(name).params == published[name], name
        one_layer = {**config, "num_hidden_layers": 1}
        with torch.device("meta"):
            model = LlamaForCausalLM(LlamaConfig(**one_layer))
        assert cost_profiles.ModelShape.from_config(name, one_layer).params == sum(p.numel() for p in model.parameters()), name
    assert cost_profiles.model_shape("allenai/tulu-2-70b").params == published["meta-llama/Llama-2-70b-hf"]


def test_model_shape_reads_local_folders_and_names_what_is_missing(tmp_path):
    tiny = cost_profiles.model_shape("tiny-random-llama")  # built locally by the zoo, read from its config.json
    assert (tiny.n_layers, tiny.d_model, tiny.tied_embeddings) == (2, 64, True)
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"num_hidden_layers": 3, "hidden_size": 16,
                                                    "num_attention_heads": 4, "intermediate_size": 32,
                                                    "vocab_size": 100}))
    shape = cost_profiles.model_shape(str(folder))
    assert (shape.n_kv_heads, shape.head_dim, shape.tied_embeddings) == (4, 4, False)
    with pytest.raises(cost_profiles.CostInputError, match="no local config.json and not among the known shapes"):
        cost_profiles.model_shape("someone/unknown-model")
    (folder / "config.json").write_text(json.dumps({"hidden_size": 16}))
    with pytest.raises(cost_profiles.CostInputError, match="has no 'num_attention_heads'"):
        cost_profiles.model_shape(str(folder))


def test_forward_flops_are_2n_plus_attention():
    # 2 layers x (q,o: 8x8 x2, k,v: 8x4 x2, mlp: 3x8x16, norms 16) = 2 x 592; LM head 10 x 8
    assert TINY.layer_params == 2 * 8 * 4 * 2 + 2 * 8 * 4 * 1 + 3 * 8 * 16 + 16
    assert TINY.matmul_params() == 2 * TINY.layer_params + 80
    assert TINY.matmul_params(lm_head=False) == 2 * TINY.layer_params
    assert TINY.forward_flops_per_token(context=5) == 2 * TINY.matmul_params() + 4 * 2 * 8 * 5
    assert TINY.sequence_forward_flops(5) == 5 * TINY.forward_flops_per_token(5)
    assert TINY.kv_bytes_per_token(2) == 2 * 2 * 1 * 4 * 2


def test_dpo_counts_training_and_reference_passes():
    profile = cost_profiles.device_profile("h100")
    data = cost.PreferencePairs(100, prompt_tokens=10, chosen_tokens=20, rejected_tokens=5)
    base = cost.PairwiseTraining("dpo", TINY, data, epochs=3, batch_size=10, max_length=64)
    pair_fwd = TINY.sequence_forward_flops(30) + TINY.sequence_forward_flops(15)
    est = cost.estimate(base, profile)
    assert est.kind == "train_policy"
    assert est.flops_by_part["train (forward + backward)"] == pytest.approx(3 * 300 * pair_fwd)
    assert est.flops_by_part["reference forward (precomputed)"] == pytest.approx(100 * pair_fwd)  # once, not per epoch
    assert (est.tokens_trained, est.tokens_forward, est.tokens_generated) == (300 * 45, 100 * 45, 0)
    per_step = cost.estimate(cost.PairwiseTraining("kto", TINY, data, epochs=3, batch_size=10, max_length=64), profile)
    assert per_step.flops_by_part["reference forward (per_step)"] == pytest.approx(300 * pair_fwd)
    assert any("KL term" in n for n in per_step.notes)
    free = cost.estimate(cost.PairwiseTraining("simpo", TINY, data, epochs=3, batch_size=10, max_length=64), profile)
    assert set(free.flops_by_part) == {"train (forward + backward)"}
    # max_steps overrides epochs, as in TRL; truncation at max_length
    steps = cost.estimate(cost.PairwiseTraining("dpo", TINY, data, epochs=3, batch_size=10, max_length=20,
                                                max_steps=2, reference="none"), profile)
    assert steps.tokens_trained == 20 * (20 + 15)
    # compute-bound: seconds = FLOPs / (devices x peak x efficiency)
    assert est.seconds == pytest.approx(est.flops / (profile.peak_flops * profile.train_efficiency))


def test_reward_model_has_no_lm_head_and_static_shapes_pad():
    data = cost.PreferencePairs(100, 10, 20, 5)
    rm = cost.PairwiseTraining("reward_model", TINY, data, epochs=1, batch_size=10, max_length=64, eval_pairs=50)
    dynamic = cost.estimate(rm, cost_profiles.device_profile("h100"))
    assert dynamic.kind == "train_reward_model"
    pair_fwd = TINY.sequence_forward_flops(30, lm_head=False) + TINY.sequence_forward_flops(15, lm_head=False)
    assert dynamic.flops_by_part["train (forward + backward)"] == pytest.approx(3 * 100 * pair_fwd)
    assert dynamic.flops_by_part["scoring held-out pairs"] == pytest.approx(50 * pair_fwd)
    padded = cost.estimate(rm, cost_profiles.device_profile("tpu-v3-256"))
    assert padded.tokens_trained == 100 * 2 * 64
    assert any("padded to 64" in n for n in padded.notes)


def test_ppo_runs_four_forwards_and_two_trained_models_per_rollout():
    profile = cost_profiles.device_profile("h100")
    rm = cost_profiles.ModelShape("rm", 2, 8, 2, 2, 4, 16, 10, False)
    ppo = cost.OnlineTraining("ppo", TINY, rm, prompts=64, prompt_tokens=10, response_tokens=20,
                              max_prompt_length=32, max_new_tokens=40, prompt_batch_size=16, inner_epochs=2)
    est = cost.estimate(ppo, profile)
    seq = 30
    fwd = TINY.sequence_forward_flops(seq)
    assert est.flops_by_part["policy forward (old log-probs)"] == pytest.approx(64 * fwd)
    assert est.flops_by_part["reference forward"] == pytest.approx(64 * fwd)
    assert est.flops_by_part["reward forward"] == pytest.approx(64 * rm.sequence_forward_flops(seq, lm_head=False))
    # the value model is the reward model's shape (App. F.2: initialised from the RM)
    assert est.flops_by_part["value forward"] == est.flops_by_part["reward forward"]
    assert est.flops_by_part["policy train (forward + backward)"] == pytest.approx(2 * 3 * 64 * fwd)
    assert est.flops_by_part["value train (forward + backward)"] == pytest.approx(2 * 3 * 64 * rm.sequence_forward_flops(seq, lm_head=False))
    assert est.tokens_generated == 64 * 20
    # generation: 4 batches of 16, 40 decode steps each (a batch waits for its longest answer)
    context = 10 + 40 / 2
    assert est.flops_by_part["generation: decode"] == pytest.approx(4 * 40 * 16 * TINY.forward_flops_per_token(context))

    grpo = cost.estimate(cost.OnlineTraining("grpo", TINY, None, prompts=64, prompt_tokens=10, response_tokens=20,
                                             max_prompt_length=32, max_new_tokens=40, prompt_batch_size=16,
                                             rollouts_per_prompt=4, reference=False), profile)
    assert not any(k.startswith(("value", "reward", "reference", "policy forward")) for k in grpo.flops_by_part)
    assert grpo.tokens_generated == 4 * 64 * 20
    assert any("rule-based reward" in n for n in grpo.notes)
    with pytest.raises(cost_profiles.CostInputError, match="not online"):
        cost.estimate(cost.OnlineTraining("dpo", TINY, None, 1, 1, 1, 1, 1, 1), profile)


def test_what_an_algorithm_runs_is_read_from_its_registered_spec():
    """Value model, old log-probs, fixed samples per prompt, the reference pass and uncounted parts are the
    AlgorithmSpec's fields (#17): a GRPO variant registered with a critic costs like PPO's passes."""
    import dataclasses

    from harness.algorithms import ALGORITHMS, register

    profile = cost_profiles.device_profile("h100")
    kwargs = dict(prompts=64, prompt_tokens=10, response_tokens=20, max_prompt_length=32, max_new_tokens=40,
                  prompt_batch_size=16)
    register(dataclasses.replace(ALGORITHMS.get("grpo"), name="grpo-critic-test", trains_value_model=True,
                                 keeps_old_logprobs=True))
    try:
        critic = cost.estimate(cost.OnlineTraining("grpo-critic-test", TINY, None, **kwargs), profile)
    finally:
        ALGORITHMS.unregister("grpo-critic-test")
    ppo = cost.estimate(cost.OnlineTraining("ppo", TINY, None, **kwargs), profile)
    assert critic.flops_by_part == ppo.flops_by_part  # value model = the policy's shape without a reward model
    assert "value train (forward + backward)" in critic.flops_by_part
    plain = cost.estimate(cost.OnlineTraining("grpo", TINY, None, **kwargs), profile)
    assert not {"value forward", "policy forward (old log-probs)"} & set(plain.flops_by_part)
    online_dpo = cost.estimate(cost.OnlineTraining("online-dpo", TINY, None, **kwargs), profile)
    assert online_dpo.tokens_generated == 2 * plain.tokens_generated  # its spec's 2 answers per prompt
    data = cost.PreferencePairs(100, 10, 20, 5)
    for name, part in (("dpo", "reference forward (precomputed)"), ("kto", "reference forward (per_step)"),
                       ("orpo", None)):
        est = cost.estimate(cost.PairwiseTraining(name, TINY, data, epochs=1, batch_size=10, max_length=64), profile)
        assert ALGORITHMS.get(name).reference_pass == (part.split("(")[1].rstrip(")") if part else "none")
        assert [p for p in est.flops_by_part if p.startswith("reference")] == ([part] if part else [])
    assert ALGORITHMS.get("kto").uncounted_compute and not ALGORITHMS.get("dpo").uncounted_compute


def test_decode_time_is_the_slower_of_compute_and_memory_plus_layer_latency():
    profile = cost_profiles.with_profile_overrides(cost_profiles.device_profile("h100"), decode_layer_latency_s=1e-3)
    task = cost.EvalTask("gen", examples=32, prompt_tokens=8, max_new_tokens=10, batch_size=16)
    est = cost.estimate(cost.Evaluation(TINY, (task,)), profile)
    # a toy model is latency-bound: 2 batches x 10 steps x 2 layers x 1 ms (+ negligible roofline time)
    assert est.seconds_by_part["gen: decode"] == pytest.approx(2 * 10 * 2 * 1e-3, rel=1e-3)
    # a 13B model at batch 1 is memory-bound: each step reads the weights
    big = cost_profiles.model_shape("allenai/tulu-2-13b")
    fast = cost_profiles.with_profile_overrides(profile, decode_layer_latency_s=1e-12)
    one = cost.estimate(cost.Evaluation(big, (cost.EvalTask("gen", 1, 8, max_new_tokens=10, batch_size=1),)), fast)
    weights_read = big.params * 2 / (profile.memory_bandwidth * profile.decode_bandwidth_efficiency)
    assert one.seconds_by_part["gen: decode"] == pytest.approx(10 * weights_read, rel=0.01)
    scoring = cost.estimate(cost.Evaluation(TINY, (cost.EvalTask("mmlu", 100, 50, scored_tokens=1),)), profile)
    assert scoring.flops == pytest.approx(100 * TINY.sequence_forward_flops(51))
    assert scoring.tokens_generated == 0


def test_device_hours_money_and_totals():
    data = cost.PreferencePairs(1000, 10, 20, 5)
    work = cost.PairwiseTraining("dpo", TINY, data, epochs=1, batch_size=10, max_length=64)
    h100 = cost.estimate(work, "h100")
    assert h100.device_hours == pytest.approx(h100.seconds / 3600 * 1)
    assert h100.usd == pytest.approx(h100.device_hours * cost_profiles.device_profile("h100").usd_per_device_hour)
    assert cost.estimate(work, "h100", usd_per_device_hour=10.0).usd == pytest.approx(h100.device_hours * 10)
    tpu = cost.estimate(work, "tpu-v3-256")
    assert tpu.devices == 128 and tpu.device_hours == pytest.approx(tpu.hours * 128)
    assert tpu.usd is None  # no list price for the paper's TPU slices
    assert cost.estimate(work, "tpu-v3-256", usd_per_device_hour=2.0).usd == pytest.approx(tpu.device_hours * 2)
    prep = cost.estimate(cost.DataPreparation(rows=1000, tokens=35000), "h100")
    both = cost.total([prep, h100])
    assert both.flops == h100.flops and both.tokens_forward == h100.tokens_forward + 35000
    assert both.usd == pytest.approx(h100.usd)
    assert cost.total([h100, tpu]).usd is None
    text = cost.format_table([prep, h100])
    assert "total" in text.splitlines()[-1] and "dpo toy" in text
    with pytest.raises(cost_profiles.CostInputError, match="usd_per_device_hour must be >= 0"):
        cost.estimate(work, "h100", usd_per_device_hour=-1)


def test_memory_decides_the_number_of_devices():
    ppo = ppo_13b()
    gpus = cost.estimate(ppo, "h100")
    # policy + value trained (16 B/param) and reference + reward frozen (2 B/param) of 13B models
    need = 13_015_864_320 * (16 * 2 + 2 * 2)
    assert gpus.devices == math.ceil(need / 80e9)
    assert any(f"need {gpus.devices} x NVIDIA H100" in n for n in gpus.notes)
    laptop = cost.estimate(ppo, "cpu-2core")
    assert laptop.devices == 1 and any(n.startswith("does not fit") for n in laptop.notes)


def test_profiles_load_and_bad_profiles_fail_naming_the_field(tmp_path):
    profiles = cost_profiles.device_profiles()
    assert {"a100-80g", "h100", "h200", "tpu-v3-256", "tpu-v3-128", "cpu-2core"} <= set(profiles)
    for profile in profiles.values():
        assert {"peak_flops", "train_efficiency", "decode_layer_latency_s"} <= set(profile.sources), profile.name
    with pytest.raises(cost_profiles.CostInputError, match="unknown device profile 'b200'; valid: a100-80g"):
        cost_profiles.device_profile("b200")
    raw = yaml.safe_load(cost_profiles.DEVICE_PROFILES_FILE.read_text())
    for field, value, message in (("train_efficiency", 1.5, r"h100\.train_efficiency: an efficiency is a fraction"),
                                  ("peak_flops", "fast", r"h100\.peak_flops: expected a positive number"),
                                  ("dtype", "int4", r"h100\.dtype: 'int4' is not one of"),
                                  ("pek_flops", 1.0, r"h100: unknown field\(s\) pek_flops")):
        bad = yaml.safe_load(cost_profiles.DEVICE_PROFILES_FILE.read_text())
        bad["profiles"]["h100"][field] = value
        path = tmp_path / f"{field}.yaml"
        path.write_text(yaml.safe_dump(bad))
        with pytest.raises(cost_profiles.CostInputError, match=message):
            cost_profiles.device_profiles(str(path))
    del raw["profiles"]["h100"]["memory_bandwidth"]
    (tmp_path / "missing.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(cost_profiles.CostInputError, match=r"h100: missing memory_bandwidth"):
        cost_profiles.device_profiles(str(tmp_path / "missing.yaml"))


# ------------------------------------------------------------------------------------------------
# Calibration against the paper (App. K, Table 11) and against this machine
# ------------------------------------------------------------------------------------------------

def test_fitted_tpu_factors_are_the_ones_in_the_profiles():
    """The two fitted numbers in device_profiles.yaml are what `fit_tpu_efficiencies` gives today (so a
    change to the FLOP accounting cannot leave a stale calibration behind)."""
    mfu, latency = fit_tpu_efficiencies()
    for name in ("tpu-v3-256", "tpu-v3-128"):
        profile = cost_profiles.device_profile(name)
        assert profile.train_efficiency == pytest.approx(mfu, rel=0.01)
        assert profile.decode_layer_latency_s == pytest.approx(latency, rel=0.01)


@pytest.mark.parametrize("key", list(FIGURES))
def test_paper_compute_within_3x(key):
    row = next(r for r in calibration_rows(FIT_PROFILE) if r.key == key)
    assert 1 / 3 <= row.ratio <= 3, f"{row.figure.name}: estimate {row.estimate_hours:.1f} h vs paper {row.figure.hours} h"


def test_table11_speedup_and_ppo_share():
    rows = {r.key: r for r in calibration_rows(FIT_PROFILE)}
    speedup = rows["table11_64_1_1"].estimate_hours / rows["table11_512_1_1"].estimate_hours
    assert 5 / 3 <= speedup <= 5 * 3  # the paper: 60 h -> 12 h
    # App. G: rollouts take "more than 95%" of PPO's time
    ppo = cost.estimate(ppo_13b(), FIT_PROFILE)
    rollout = sum(s for part, s in ppo.seconds_by_part.items() if part.startswith("generation"))
    assert rollout / ppo.seconds > 0.95
    # and DPO's FLOPs per pair exceed the reward model's (3 epochs with a reference forward)
    assert cost.estimate(dpo_13b(), FIT_PROFILE).flops > cost.estimate(reward_model_13b(), FIT_PROFILE).flops


def test_cpu_profile_predicts_the_measured_steps_within_3x():
    """The measurements recorded in the cpu-2core profile (benchmarks/bench_cost_cpu.py on this machine)
    against today's estimate of the same workload."""
    from benchmarks.bench_cost_cpu import estimates

    profile = cost_profiles.device_profile("cpu-2core")
    assert profile.calibration, "cpu-2core has no recorded calibration measurement"
    for record in profile.calibration:
        est = estimates(record["dpo"], record["generation"])
        for key, measured in record["measured"].items():
            assert 1 / 3 <= est[key] / measured <= 3, f"{record['date']} {key}: estimate {est[key]:.2f} s, measured {measured:.2f} s"


@pytest.mark.slow
def test_cpu_profile_predicts_a_live_dpo_step_and_generation_within_3x():
    """Measured now, on one thread: CPU seconds of a real TRL DPO step and a real generation with SmolLM2
    against the profile scaled to one of its two cores (CPU time, because the machine may be shared)."""
    import torch

    from benchmarks.bench_cost_cpu import estimates, measure_dpo, measure_generation, measured_seconds

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        dpo = measure_dpo("smollm2-135m-instruct", batch=8, tokens=64, steps=3)
        gen = measure_generation("smollm2-135m-instruct", batch=8, tokens=64, new_tokens=32, repeats=2)
    finally:
        torch.set_num_threads(threads)
    est = estimates(dpo, gen)
    measured, _ = measured_seconds(dpo, gen)
    for key in ("dpo_step", "generation"):
        assert 1 / 3 <= est[key] / measured[key] <= 3, f"{key}: estimate {est[key]:.2f} s, measured {measured[key]:.2f} s"


def test_bad_workloads_fail_naming_the_field():
    data = cost.PreferencePairs(100, 10, 20, 5)
    with pytest.raises(cost_profiles.CostInputError, match=r"my dpo: batch_size must be > 0, got 0"):
        cost.estimate(cost.PairwiseTraining("dpo", TINY, data, epochs=1, batch_size=0, max_length=8, label="my dpo"), "h100")
    with pytest.raises(cost_profiles.CostInputError, match="epochs must be > 0"):
        cost.estimate(cost.PairwiseTraining("dpo", TINY, data, epochs=0, batch_size=1, max_length=8), "h100")
    with pytest.raises(cost_profiles.CostInputError, match="unknown algorithm 'new-po' has no default"):
        cost.estimate(cost.PairwiseTraining("new-po", TINY, data, epochs=1, batch_size=1, max_length=8), "h100")
    with pytest.raises(cost_profiles.CostInputError, match=r"tasks\[gsm8k\]\.examples must be > 0"):
        cost.estimate(cost.Evaluation(TINY, (cost.EvalTask("gsm8k", 0, 10, max_new_tokens=5),)), "h100")
