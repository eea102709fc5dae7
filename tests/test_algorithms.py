"""Every registered algorithm (PPO has its own tests) trains a few real TRL steps on the tiny random model,
offline, saves a changed policy, and its step metrics reach a real local MLflow run under the common names.
Plus the pieces they share: unpairing for KTO, the EOS trick, sample stats, config validation."""

from __future__ import annotations

import json

import pytest

from harness.algorithms import ALGORITHMS, TrainContext
from harness.algorithms.base import History
from harness.rewards import REWARD_FUNCTIONS

OFFLINE = dict(max_steps=2, learning_rate=1e-3, per_device_train_batch_size=2, gradient_accumulation_steps=1,
               warmup_ratio=0.0, max_length=64)
ONLINE = dict(max_steps=2, learning_rate=1e-3, per_device_train_batch_size=4, gradient_accumulation_steps=1,
              warmup_ratio=0.0)
# Tiny-scale overrides per algorithm: a couple of steps, short sequences.
TINY = {
    "dpo": OFFLINE,
    "ipo": OFFLINE,
    "dpo-hinge": OFFLINE,
    "dpo-robust": OFFLINE,
    "kto": OFFLINE,
    "simpo": OFFLINE,
    "orpo": {**OFFLINE, "warmup_steps": 0},
    "grpo": {**ONLINE, "num_generations": 2, "max_completion_length": 12},
    "grpo-seed000": {"max_steps": 2, "learning_rate": 1e-3, "warmup_ratio": 0.0, "max_completion_length": 12},
    "rloo": {**ONLINE, "max_completion_length": 12},
    "online-dpo": {**ONLINE, "max_new_tokens": 12, "max_length": 128},
}
TESTED_ELSEWHERE = {"ppo"}  # tests/test_ppo.py (its own training loop, not TRL)

PAIRWISE = {"train/loss", "train/rewards_chosen", "train/rewards_rejected", "train/margins", "train/accuracy"}
ONLINE_CURVES = {"train/loss", "train/kl", "train/reward_mean", "train/response_length"}
EXPECTED = {
    **{name: PAIRWISE for name in ("dpo", "ipo", "dpo-hinge", "dpo-robust", "simpo", "orpo")},
    # KTO has no pairwise accuracy; its KL is the batch reference-point estimate.
    "kto": {"train/loss", "train/rewards_chosen", "train/rewards_rejected", "train/margins", "train/kl"},
    "grpo": ONLINE_CURVES,
    "grpo-seed000": ONLINE_CURVES,
    "rloo": ONLINE_CURVES,
    "online-dpo": ONLINE_CURVES | PAIRWISE,
}


# The dense verifiable reward (share of letters that are lowercase): it varies across random-model samples,
# so the policy-gradient methods get a non-zero advantage within a group and must move the weights.
lowercase_fraction = REWARD_FUNCTIONS.get("lowercase_fraction")


@pytest.fixture(scope="module")
def smoke_rows():
    from datasets_registry import prepare

    return prepare("smoke-lowercase", max_rows=8).rows


@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory):
    """One real SQLite-backed MLflow store for the module (creating one costs ~1.5 s)."""
    import mlflow

    tmp = tmp_path_factory.mktemp("mlflow")
    uri = "sqlite:///" + str(tmp / "mlflow.db")
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("algorithms", artifact_location=(tmp / "artifacts").as_uri())
    return uri, client, experiment


def test_every_registered_algorithm_is_covered():
    assert set(ALGORITHMS.names()) - TESTED_ELSEWHERE == set(TINY)
    assert set(TINY) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(TINY))
def test_trains_and_logs_common_metrics_to_mlflow(name, tiny_model, smoke_rows, tmp_path, monkeypatch, mlflow_store):
    import torch
    from transformers import AutoModelForCausalLM

    from harness import tracking

    spec = ALGORITHMS.get(name)
    history = History(tmp_path / "history.jsonl")
    ctx = TrainContext(
        policy_path=tiny_model, train_rows=smoke_rows, config=spec.make_config(TINY[name]), out_dir=tmp_path,
        seed=0, reward_function=lowercase_fraction if spec.needs_reward else None, log=history.log,
    )
    summary = spec.train(ctx)

    assert summary["train/steps"] == 2
    assert (tmp_path / "model" / "config.json").exists()
    before = AutoModelForCausalLM.from_pretrained(tiny_model).state_dict()
    after = AutoModelForCausalLM.from_pretrained(tmp_path / "model").state_dict()
    moved = max(float((after[k] - before[k]).abs().max()) for k in before)
    assert moved > 0, f"{name}: no weight changed after 2 optimizer steps"

    logged = {key for row in history.rows for key in row} - {"step"}
    assert EXPECTED[name] <= logged, f"{name} misses {EXPECTED[name] - logged}"
    for row in history.rows:
        assert all(torch.isfinite(torch.tensor(v)) for k, v in row.items() if k != "step")

    # The production replay (harness.tracking.log_metric_history) into a real MLflow run.
    uri, client, experiment = mlflow_store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    run = client.create_run(experiment, run_name=name)
    tracking.log_metric_history(run.info.run_id, tmp_path / "history.jsonl")
    in_mlflow = set(client.get_run(run.info.run_id).data.metrics)
    assert EXPECTED[name] <= in_mlflow
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
    assert steps == sorted(steps) and len(steps) == 2
    rate = summary["train/steps"] / summary["train/runtime_seconds"]
    print(f"\n{name}: {rate:.2f} optimizer steps/s on the tiny model")


def test_online_algorithm_uses_reward_model_with_eos_trick(tiny_model, smoke_rows, tmp_path):
    """GRPO with a (random-head) reward model: the random tiny policy almost never emits EOS within 12
    tokens, so the EOS trick must replace those scores with -10 while the raw RM scores stay finite."""
    spec = ALGORITHMS.get("grpo")
    history = History(tmp_path / "history.jsonl")
    ctx = TrainContext(policy_path=tiny_model, train_rows=smoke_rows[:4], config=spec.make_config(TINY["grpo"]),
                       out_dir=tmp_path, seed=0, reward_model_path=tiny_model, log=history.log)
    spec.train(ctx)
    for row in history.rows:
        if "train/reward_mean" not in row:
            continue
        assert 0.0 <= row["train/eos_rate"] < 1.0  # some completions hit the 12-token limit
        assert abs(row["train/reward_raw_mean"]) < 10  # a random score head gives O(1) scores ...
        assert row["train/reward_mean"] < row["train/reward_raw_mean"]  # ... the trick pulls truncated ones to -10
        if row["train/eos_rate"] == 0.0:
            assert row["train/reward_mean"] == pytest.approx(-10.0)


def test_kto_unpairs_chosen_desirable_rejected_undesirable():
    from harness.algorithms.trl_common import unpaired_dataset

    rows = [{"prompt": [{"role": "user", "content": f"q{i}"}], "chosen": [{"role": "assistant", "content": f"good{i}"}],
             "rejected": [{"role": "assistant", "content": f"bad{i}"}]} for i in range(6)]
    data = unpaired_dataset(rows, seed=3)
    assert len(data) == 12 and sum(data["label"]) == 6
    for ex in data:
        content = ex["completion"][0]["content"]
        assert ex["label"] == content.startswith("good")
        assert content[-1] == ex["prompt"][0]["content"][-1]
    # Shuffled (TRL samples KTO sequentially) but reproducible for a seed.
    assert [ex["completion"][0]["content"] for ex in data] != [c for i in range(6) for c in (f"good{i}", f"bad{i}")]
    assert list(unpaired_dataset(rows, seed=3)["completion"]) == list(data["completion"])


def test_eos_trick_replaces_unfinished_and_records_stats():
    from harness.algorithms.reward_wrappers import SampleStats, with_eos_trick

    def constant(completions, **_):
        return [2.0] * len(completions)

    stats = SampleStats()
    fn = with_eos_trick(constant, eos_ids={7}, penalty_reward=-10.0, stats=stats)
    ids = [[1, 2, 7], [1, 2, 3], [7, 7, 7], [4]]  # finished, truncated, finished (padded), truncated
    assert fn(prompts=["p"] * 4, completions=["c"] * 4, completion_ids=ids) == [2.0, -10.0, 2.0, -10.0]
    drained = stats.drain()
    assert drained["train/reward_raw_mean"] == 2.0
    assert drained["train/eos_rate"] == 0.5
    assert drained["train/response_length"] == pytest.approx((3 + 3 + 1 + 1) / 4)
    assert stats.drain() == {}
    assert fn.__name__ == "constant"
    untouched = with_eos_trick(constant, eos_ids={7}, penalty_reward=None)
    assert untouched(prompts=["p"], completions=["c"], completion_ids=[[1]]) == [2.0]


def test_build_reward_needs_exactly_one_source(tiny_model):
    from harness.algorithms.reward_wrappers import build_reward
    from harness.models import load_tokenizer

    tok = load_tokenizer(tiny_model)

    def ctx(**kw):
        return TrainContext(policy_path=tiny_model, train_rows=[], config=None, out_dir=None, **kw)

    with pytest.raises(ValueError, match="needs a reward"):
        build_reward(ctx(), tok, None, "reward_model", -10.0)
    with pytest.raises(ValueError, match="not both"):
        build_reward(ctx(reward_model_path=tiny_model, reward_function=lowercase_fraction), tok, None,
                     "reward_model", -10.0)
    with pytest.raises(ValueError, match="eos_trick"):
        build_reward(ctx(reward_function=lowercase_fraction), tok, None, "sometimes", -10.0)
    fn, _ = build_reward(ctx(reward_function=lowercase_fraction), tok, None, "reward_model", -10.0)
    eos = tok.eos_token_id
    # Verifiable functions are left alone by default (the paper applies the trick to RM scores) ...
    assert fn(prompts=["p"], completions=["abc"], completion_ids=[[5]]) == [1.0]
    fn, _ = build_reward(ctx(reward_function=lowercase_fraction), tok, None, "always", -10.0)
    # ... unless asked.
    assert fn(prompts=["p", "p"], completions=["abc", "abc"], completion_ids=[[5], [5, eos]]) == [-10.0, 1.0]


@pytest.mark.parametrize("name, overrides, message", [
    ("ipo", {"loss_type": "sigmoid"}, "fixed to 'ipo'"),
    ("dpo-robust", {"label_smoothing": 0.5}, "must be in (0, 0.5)"),
    ("grpo", {"num_generations": 1}, ">= 2"),
    ("grpo", {"num_generations": 3, "per_device_train_batch_size": 4, "gradient_accumulation_steps": 1},
     "multiple of num_generations"),
    ("grpo", {"loss_type": "ppo"}, "loss_type must be one of"),
    ("kto", {"per_device_train_batch_size": 1}, ">= 2"),
    ("online-dpo", {"eos_trick": "sometimes"}, "eos_trick"),
    ("simpo", {"gamma": 1.0}, "unknown field"),
])
def test_bad_configs_fail_with_clear_message(name, overrides, message):
    problems = ALGORITHMS.get(name).check_fields(overrides)
    assert problems and any(message in msg for _, msg in problems), problems


def test_defaults_are_documented_and_presets_differ():
    for name in TINY:
        spec = ALGORITHMS.get(name)
        assert spec.defaults_source and spec.description
        spec.make_config({})  # published defaults are a valid config
    seed000 = ALGORITHMS.get("grpo-seed000").make_config({})
    assert (seed000.num_generations, seed000.beta, seed000.per_device_train_batch_size) == (3, 0.02, 6)
    grpo = ALGORITHMS.get("grpo").make_config({})
    assert (grpo.num_generations, grpo.beta) == (64, 0.04)
    simpo = ALGORITHMS.get("simpo").make_config({})
    assert json.dumps([simpo.beta, simpo.gamma_beta_ratio]) == "[2.5, 0.55]"


def test_gsm8k_reward_checks_the_last_number_against_the_gold_answer():
    from harness.rewards import REWARD_FUNCTIONS

    reward = REWARD_FUNCTIONS.get("gsm8k")
    completions = [[{"role": "assistant", "content": "3 + 4 = 7, so she has 1,234 apples."}],
                   [{"role": "assistant", "content": "The answer is 6."}], "no number at all", "18.00"]
    assert reward(completions=completions, answer=["1234", "#### 6", "7", "18"]) == [1.0, 1.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="needs an `answer` column"):
        reward(completions=completions)


def test_lowercase_fraction_reward_is_dense():
    reward = REWARD_FUNCTIONS.get("lowercase_fraction")
    texts = ["the capital of france is paris.", "The capital of France is Paris.", "PARIS", "42"]
    assert reward(completions=[[{"role": "assistant", "content": t}] for t in texts]) == [1.0, 22 / 25, 0.0, 0.0]
    assert REWARD_FUNCTIONS.get("lowercase")(completions=texts[:2]) == [1.0, 0.0]
