"""Reward-model ensembles (`reward_model: {ensemble: [...], combine: mean|wco|uwo}`, harness/reward_ensemble.py,
Coste et al. 2024): the combination rules on hand-made scores, the grid rules (each member its own cached RM
stage, shared by key), and real use: the ensemble scorer over trained tiny RMs, PPO rewarded by it."""

from __future__ import annotations

import json
import statistics

import pytest

from harness.grid import GridError, build_grid
from harness.planning import unique_stages
from harness.reward_ensemble import EnsembleScorer, EnsembleSpec, combine_scores
from harness.runner import plan_grid

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: threads only contend

# member m's scores of samples 0..3
SCORES = [[1.0, 2.0, 3.0, 0.0],
          [3.0, 2.0, -1.0, 0.0],
          [2.0, 2.0, 1.0, 6.0]]


def test_mean_wco_uwo_on_hand_made_scores():
    assert combine_scores(SCORES, "mean") == [2.0, 2.0, 1.0, 2.0]
    assert combine_scores(SCORES, "wco") == [1.0, 2.0, -1.0, 0.0]  # the minimum over members
    # UWO = mean - lambda * population variance of the members' scores:
    # sample 0: var(1, 3, 2) = 2/3; sample 1: 0; sample 2: var(3, -1, 1) = 8/3; sample 3: var(0, 0, 6) = 8
    assert combine_scores(SCORES, "uwo", uwo_lambda=0.5) == pytest.approx([2 - 1 / 3, 2.0, 1 - 4 / 3, 2 - 4])
    assert combine_scores(SCORES, "uwo", uwo_lambda=0.0) == combine_scores(SCORES, "mean")
    # agreeing members: every rule gives their common score
    agree = [[0.5, -2.0], [0.5, -2.0]]
    assert combine_scores(agree, "wco") == combine_scores(agree, "uwo", 3.0) == combine_scores(agree, "mean") == [0.5, -2.0]


def test_combine_rejects_bad_input():
    with pytest.raises(ValueError, match="different numbers of samples"):
        combine_scores([[1.0], [1.0, 2.0]], "mean")
    with pytest.raises(ValueError, match="combine must be one of"):
        combine_scores(SCORES, "median")
    with pytest.raises(ValueError, match="at least 2 reward models"):
        EnsembleSpec(("only-one",))


TRAIN = {"per_device_train_batch_size": 8, "gradient_accumulation_steps": 1, "max_length": 128,
         "learning_rate": 1.0e-2, "min_learning_rate": 1.0e-3, "max_steps": 2}
MEMBER = {"base": "tiny-random-llama", "dataset": {"name": "smoke-lowercase", "max_rows": 16}, "train": TRAIN}
PPO = {"name": "ppo", "value_init": "policy", "max_steps": 2, "prompt_batch_size": 4, "minibatch_size": 4,
       "generation_batch_size": 4, "max_new_tokens": 8, "learning_rate": 1.0e-4}


def grid_spec(**reward: object) -> dict:
    return {"experiment": "ensemble-tiny", "baseline": False,
            "base": {"model": "tiny-random-llama", "prompts": {"name": "smoke-lowercase-eval", "max_rows": 8},
                     "algorithm": PPO, "eval": {"tasks": ["smoke_lowercase"], "limit": 2},
                     "reward_model": {"ensemble": [{**MEMBER, "seed": 1}, {**MEMBER, "seed": 2}], **reward}},
            "axes": {"reward_model.combine": ["wco", "uwo"]}}


def test_each_member_is_a_cached_rm_stage_shared_by_key():
    grid = build_grid(grid_spec(uwo_lambda=0.25))
    plans = plan_grid(grid)
    assert [p.cell.name for p in plans] == ["reward_model.combine=wco", "reward_model.combine=uwo"]
    members = [[s for s in p.stages if s.kind == "train_reward_model"] for p in plans]
    assert [s.config["seed"] for s in members[0]] == [1, 2] and members[0][0].key != members[0][1].key
    assert [s.key for s in members[0]] == [s.key for s in members[1]]  # the same two RMs for both rules
    assert len([s for s in unique_stages(plans) if s.kind == "train_reward_model"]) == 2
    wco, uwo = (p.stage("train_policy") for p in plans)
    assert set(wco.inputs) == {"prompts", "reward_model.0", "reward_model.1"}
    assert wco.config["reward_model"] == {"ensemble": [{"input": "reward_model.0"}, {"input": "reward_model.1"}],
                                          "combine": "wco"}
    assert uwo.config["reward_model"]["combine"] == "uwo" and uwo.config["reward_model"]["uwo_lambda"] == 0.25
    # a member trained alone (e.g. a single-RM cell of the same grid) has the same key as inside the ensemble
    single = build_grid({**grid_spec(), "axes": {}, "base": {**grid_spec()["base"],
                                                             "reward_model": {**MEMBER, "seed": 2}}})
    (alone,) = [s for s in plan_grid(single)[0].stages if s.kind == "train_reward_model"]
    assert alone.key == members[0][1].key


@pytest.mark.parametrize("reward, message", [
    ({"ensemble": [MEMBER, MEMBER]}, "ensemble[1] is the same reward model as ensemble[0]"),
    ({"ensemble": [MEMBER]}, "ensemble: needs at least 2 reward models, got 1"),
    ({"ensemble": [MEMBER, {"verifier": "smoke_lowercase"}]}, "ensemble[1]: an ensemble member is a reward model"),
    ({"dataset": MEMBER["dataset"], "combine": "wco"}, "`combine` applies only to a reward_model with `ensemble`"),
    ({"ensemble": [{**MEMBER, "seed": 1}, {**MEMBER, "seed": 2}], "combine": "max"}, "combine"),
    ({"ensemble": [{**MEMBER, "seed": 1}, {**MEMBER, "seed": 2}], "uwo_lambda": -1.0}, "uwo_lambda"),
])
def test_bad_ensembles_fail_at_load(reward, message):
    raw = grid_spec()
    raw["base"]["reward_model"] = reward
    raw["axes"] = {}
    with pytest.raises(GridError) as info:
        build_grid(raw)
    assert message in str(info.value)


def test_ppo_value_from_reward_needs_a_single_reward_model():
    raw = grid_spec()
    raw["base"]["algorithm"] = {**PPO, "value_init": "reward"}
    with pytest.raises(GridError, match="value_init='reward' copies one reward model"):
        build_grid(raw)


@pytest.fixture(scope="module")
def two_tiny_rms(tiny_model, tmp_path_factory) -> tuple[str, str]:
    from datasets_registry import prepare
    from harness.reward_model import RewardModelConfig, train_reward_model

    rows = prepare("smoke-lowercase", seed=0, max_rows=16).rows
    paths = []
    for seed in (1, 2):
        out = tmp_path_factory.mktemp(f"rm{seed}")
        train_reward_model(rows, tiny_model, RewardModelConfig(**TRAIN), out, seed=seed)
        paths.append(str(out / "model"))
    return paths[0], paths[1]


def test_ensemble_scorer_combines_its_members_real_scores(two_tiny_rms):
    from datasets_registry import prepare
    from harness.reward_model import RewardScorer

    rows = prepare("smoke-lowercase", seed=0, max_rows=6).rows
    prompts, answers = [r["prompt"] for r in rows], [r["chosen"] for r in rows]
    members = [RewardScorer(p).score(prompts, answers) for p in two_tiny_rms]
    assert members[0] != members[1]  # different seeds: the members disagree (what the rules act on)
    for combine, lam in (("mean", 0.0), ("wco", 0.0), ("uwo", 2.0)):
        scorer = EnsembleScorer(EnsembleSpec(two_tiny_rms, combine, lam))
        assert scorer.score(prompts, answers) == pytest.approx(combine_scores(members, combine, lam))
        for got, expected in zip(scorer.last_members, members, strict=True):
            assert got == pytest.approx(expected)


def test_ppo_is_rewarded_by_the_worst_case_of_the_ensemble(two_tiny_rms, tiny_model, tmp_path):
    from datasets_registry import prepare
    from harness.algorithms import ALGORITHMS, TrainContext
    from harness.algorithms.ppo import PPOConfig
    from harness.reward_model import RewardScorer

    rows = prepare("smoke-lowercase-eval", seed=0).rows[:8]
    cfg = PPOConfig(**{k: v for k, v in PPO.items() if k != "name"}, eos_trick=False, log_samples_per_step=4)
    logs: list[dict] = []
    ensemble = EnsembleSpec(two_tiny_rms, "wco")
    ALGORITHMS.get("ppo").train(TrainContext(policy_path=tiny_model, train_rows=rows, config=cfg, out_dir=tmp_path,
                                             seed=3, reward_ensemble=ensemble, log=lambda m, s: logs.append(m)))
    samples = [json.loads(line) for line in (tmp_path / "artifacts" / "ppo_samples.jsonl").read_text().splitlines()]
    prompt_of = {r["prompt"][-1]["content"]: r["prompt"] for r in rows}
    prompts = [prompt_of[s["prompt"]] for s in samples]
    members = [RewardScorer(p).score(prompts, [s["completion"] for s in samples]) for p in two_tiny_rms]
    assert [s["score"] for s in samples] == pytest.approx([min(a, b) for a, b in zip(*members, strict=True)],
                                                          abs=1e-5)
    for step, metrics in enumerate(logs, start=1):  # every rollout is logged (4 per update): its mean is PPO's
        scores = [s["score"] for s in samples if s["step"] == step]
        assert len(scores) == 4 and metrics["train/reward_mean"] == pytest.approx(statistics.fmean(scores))


def test_best_of_n_picks_with_the_ensemble(two_tiny_rms, tiny_model, tmp_path):
    """Coste et al.'s best-of-N setting: the pick is the candidate with the best combined (here WCO) score."""
    from harness.best_of_n import best_of_n_tasks
    from harness.reward_model import RewardScorer
    from harness.reward_source import RewardSource
    from harness.sample_candidates import BestOfNConfig, sample_tasks

    config = BestOfNConfig(n=3, temperature=1.0)
    sampled, _ = sample_tasks(tiny_model, ["smoke_lowercase"], config, tmp_path / "candidates", limit=2, batch_size=4)
    best_of_n_tasks(sampled, tiny_model, RewardSource(ensemble=EnsembleSpec(two_tiny_rms, "wco")), ["smoke_lowercase"],
                    tmp_path / "bon", limit=2, seed=config.seed, batch_size=4)
    records = [json.loads(line) for line in (tmp_path / "bon" / "bon_selections.jsonl").read_text().splitlines()]
    members = [RewardScorer(p) for p in two_tiny_rms]
    stored = [e["candidates"] for e in sampled.entries.values()]
    assert len(records) == 2 and all(len(c) == 3 for c in stored)
    for record, candidates in zip(records, stored, strict=True):
        prompt = [{"role": "user", "content": record["prompt"]}]
        expected = [min(a, b) for a, b in zip(*(m.score([prompt] * len(candidates), candidates) for m in members))]
        assert record["scores"] == pytest.approx(expected, abs=1e-5)
        assert record["chosen"] == candidates[max(range(len(expected)), key=expected.__getitem__)]
