"""Verifiers as a reward source (`reward_model: {verifier: NAME}`, harness/rewards.py): their scores on
hand-made answers, the grid rules (one reward axis, the `reward_function` spelling, what fails at load), and
real training: PPO and TRL's GRPO on the tiny model are rewarded by exactly the verifier's scores of the
samples they drew, prompt columns (gold answers, IFEval instructions) passed through."""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

import pytest

from harness.algorithms import ALGORITHMS, TrainContext
from harness.algorithms.base import History
from harness.evaluation.gsm8k import LMEVAL_STRICT, is_correct
from harness.grid import GridError, build_grid
from harness.rewards import VERIFIERS, VerifierReward

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: threads only contend

BASE = {"model": "tiny-random-llama", "prompts": "smoke-lowercase", "eval": {"tasks": ["smoke_lowercase"]}}
GRPO = {"name": "grpo", "num_generations": 2, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1}


def _messages(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def test_gsm8k_verifier_and_its_format_reward_on_hand_made_answers():
    plain, shaped = VerifierReward("gsm8k"), VerifierReward("gsm8k", format_weight=0.5)
    answers = ["3 + 4 = 7. The answer is 7.", "It is 7", "The answer is 8.", "no number"]
    gold = ["7", "7", "7", "7"]
    assert plain(completions=[_messages(a) for a in answers], answer=gold) == [1.0, 1.0, 0.0, 0.0]
    # + 0.5 when the answer is stated as lm-eval's strict-match "The answer is N."
    assert shaped(completions=[_messages(a) for a in answers], answer=gold) == [1.5, 1.0, 0.5, 0.0]
    assert plain.columns == ("answer",) and shaped.__name__ == "gsm8k+format"
    with pytest.raises(ValueError, match="verifier 'ifeval' has no format check"):
        VerifierReward("ifeval", format_weight=1.0)


def test_smoke_lowercase_verifiers():
    answers = ["the capital of france is paris.", "The capital of France is Paris.", "123"]
    assert VerifierReward("smoke_lowercase")(completions=[_messages(a) for a in answers]) == [1.0, 0.0, 0.0]
    dense = VerifierReward("smoke_lowercase_fraction")(completions=[_messages(a) for a in answers])
    assert dense[0] == 1.0 and 0.0 < dense[1] < 1.0 and dense[2] == 0.0


def test_ifeval_verifier_uses_the_official_checkers_on_the_synthetic_prompts(shared_data, monkeypatch):
    from datasets_registry import prepare

    monkeypatch.setenv("NLTK_DATA", str(shared_data / "nltk_data"))
    rows = [r for r in prepare("prompts-ifeval-synthetic", seed=0).rows
            if r["instruction_id_list"] == ["change_case:english_lowercase"]][:1]
    rows += [r for r in prepare("prompts-ifeval-synthetic", seed=0).rows
             if r["instruction_id_list"] == ["punctuation:no_comma"]][:1]
    assert len(rows) == 2
    verifier = VerifierReward("ifeval")
    columns = {c: [r[c] for r in rows] for c in verifier.columns}
    prompts = [r["prompt"] for r in rows]
    lower, commas = "a quiet morning by the river, with friends.", "A QUIET MORNING BY THE RIVER WITH FRIENDS."
    assert verifier(prompts=prompts, completions=[_messages(lower), _messages(lower)], **columns) == [1.0, 0.0]
    assert verifier(prompts=prompts, completions=[_messages(commas), _messages(commas)], **columns) == [0.0, 1.0]


def test_synthetic_ifeval_prompts_are_not_the_ifeval_test_prompts(shared_data, monkeypatch):
    from datasets_registry import prepare
    from harness.evaluation.common import read_jsonl

    monkeypatch.setenv("NLTK_DATA", str(shared_data / "nltk_data"))
    train = prepare("prompts-ifeval-synthetic", seed=0).rows
    test = {r["prompt"].strip() for r in read_jsonl(shared_data / "benchmarks" / "ifeval" / "input_data.jsonl")}
    assert len(train) == 660
    assert not {r["prompt"][0]["content"].strip() for r in train} & test
    assert all(len(r["instruction_id_list"]) == len(r["instruction_kwargs"]) for r in train)


def test_one_reward_axis_varies_verifier_and_reward_model():
    grid = build_grid({"experiment": "t", "baseline": False, "base": {**BASE, "algorithm": GRPO},
                       "axes": {"reward_model": [{"verifier": "smoke_lowercase"},
                                                 {"verifier": "gsm8k", "format_weight": 0.1},
                                                 {"path": "tiny-random-llama"}]}})
    rewards = [c.config.reward_model for c in grid.cells]
    assert [r.verifier for r in rewards] == ["smoke_lowercase", "gsm8k", None]
    assert rewards[1].format_weight == 0.1 and rewards[2].path == "tiny-random-llama"


def test_reward_function_is_read_as_a_verifier():
    grid = build_grid({"experiment": "t", "baseline": False,
                       "base": {**BASE, "algorithm": GRPO, "reward_function": "lowercase_fraction"}})
    assert grid.cells[0].config.reward_model.verifier == "smoke_lowercase_fraction"


def _load_error(base: dict) -> str:
    with pytest.raises(GridError) as info:
        build_grid({"experiment": "t", "baseline": False, "base": {**BASE, **base}})
    return str(info.value)


@pytest.mark.parametrize("base, message", [
    ({"algorithm": GRPO, "reward_model": {"verifier": "gsm8k", "weight": 1.0}},
     "base.reward_model.weight: Extra inputs are not permitted"),
    ({"algorithm": GRPO, "reward_model": {"verifier": "gsm9k"}}, "unknown verifier 'gsm9k'; valid verifier names: "
                                                                   "gsm8k, ifeval, length_bonus, smoke_lowercase"),
    ({"algorithm": GRPO, "reward_model": {"verifier": "ifeval", "format_weight": 1.0}},
     "format_weight: verifier 'ifeval' has no format check; verifiers with one: gsm8k"),
    ({"algorithm": GRPO, "reward_model": {"path": "tiny-random-llama", "format_weight": 1.0}},
     "`format_weight` applies only to a reward_model with `verifier`"),
    ({"algorithm": GRPO, "reward_model": {"verifier": "gsm8k", "path": "tiny-random-llama"}},
     "give exactly one of `dataset`"),
    ({"algorithm": {"name": "ppo"}, "reward_model": {"verifier": "gsm8k"}},
     "PPO's value_init='reward' copies one reward model into the value model, but this cell's reward is a "
     "verifier or an ensemble: set algorithm.value_init: policy"),
    ({"algorithm": GRPO, "reward_model": {"verifier": "gsm8k"}, "eval": {"tasks": ["smoke_lowercase"],
                                                                        "best_of_n": {"n": 2}}},
     "verifier 'gsm8k' reads per-prompt gold data (answer) that best-of-N's benchmark prompts do not carry"),
    ({"algorithm": GRPO, "reward_function": "lowercase", "reward_model": {"path": "tiny-random-llama"}},
     "both `reward_model` and `reward_function`"),
    ({"algorithm": GRPO, "reward_model": {"verifier": "gsm8k"}, "eval": {"tasks": ["rm_reward"]}},
     "eval.tasks: `rm_reward` scores held-out answers with the cell's reward, but verifier 'gsm8k' reads "
     "per-prompt gold data (answer)"),
])
def test_bad_reward_sources_fail_at_load(base, message):
    assert message in _load_error(base)


def test_verifier_without_its_columns_fails_before_training(tiny_model, tmp_path):
    from datasets_registry import prepare

    spec = ALGORITHMS.get("grpo")
    ctx = TrainContext(policy_path=tiny_model, train_rows=prepare("smoke-lowercase", max_rows=4).rows,
                       config=spec.make_config({k: v for k, v in GRPO.items() if k != "name"}), out_dir=tmp_path,
                       reward_function=VerifierReward("gsm8k"))
    with pytest.raises(ValueError, match=r"reads the prompt columns \['answer'\], which the training rows lack"):
        spec.train(ctx)


class Recording(VerifierReward):
    """The real verifier, remembering every call: what the trainer asked it and what it answered."""

    def __init__(self, name: str, **kw):
        super().__init__(name, **kw)
        self.calls: list[tuple[list[str], dict, list[float]]] = []

    def __call__(self, completions, **kwargs):
        scores = super().__call__(completions=completions, **kwargs)
        texts = [c[-1]["content"] if isinstance(c, list) else str(c) for c in completions]
        self.calls.append((texts, {k: kwargs[k] for k in self.columns}, scores))
        return scores


def _gsm8k_rows() -> list[dict]:
    """GSM8K-style prompt rows with gold answers the tiny random model sometimes hits (single digits)."""
    return [{"id": f"q{i}", "prompt": [{"role": "user", "content": f"What is {i} plus {i}?"}], "answer": str(2 * i)}
            for i in range(1, 9)]


def test_grpo_is_rewarded_by_the_verifier_with_prompt_columns(tiny_model, tmp_path):
    """TRL's GRPO passes the rows' `answer` to the gsm8k verifier; the reward TRL logs per step is the mean of
    exactly the verifier's scores of that step's samples."""
    reward = Recording("gsm8k", format_weight=0.5)
    history = History(tmp_path / "history.jsonl")
    spec = ALGORITHMS.get("grpo")
    cfg = spec.make_config({**{k: v for k, v in GRPO.items() if k != "name"}, "per_device_train_batch_size": 4,
                            "max_steps": 2, "learning_rate": 1e-3, "warmup_ratio": 0.0, "max_completion_length": 8})
    ctx = TrainContext(policy_path=tiny_model, train_rows=_gsm8k_rows(), config=cfg, out_dir=tmp_path, seed=0,
                       reward_function=reward, log=history.log)
    spec.train(ctx)
    assert len(reward.calls) == 2
    gold = {r["answer"] for r in _gsm8k_rows()}
    step_rows = [row for row in history.rows if "train/reward_mean" in row]  # (the last row is TRL's summary)
    for (texts, columns, scores), row in zip(reward.calls, step_rows, strict=True):
        assert set(columns["answer"]) <= gold and len(texts) == 4
        # independently recomputed: the GSM8K eval's own correctness rule plus the strict-match format
        expected = [float(is_correct(t, a)) + 0.5 * float(re.search(LMEVAL_STRICT, t) is not None)
                    for t, a in zip(texts, columns["answer"], strict=True)]
        assert scores == expected
        assert row["train/reward_mean"] == pytest.approx(statistics.fmean(scores), abs=1e-6)


def test_grpo_passes_ifeval_instructions_to_the_verifier(tiny_model, tmp_path, shared_data, monkeypatch):
    """IFEval's per-prompt instruction lists and arguments survive TRL's dataset round trip (Arrow merges the
    argument dicts of different instructions): the verifier gets each sample's own, and scores as the eval."""
    from datasets_registry import prepare
    from harness.evaluation.ifeval import score_one

    monkeypatch.setenv("NLTK_DATA", str(shared_data / "nltk_data"))
    rows = prepare("prompts-ifeval-synthetic", seed=0, max_rows=4).rows
    reward = Recording("ifeval")
    spec = ALGORITHMS.get("grpo")
    cfg = spec.make_config({**{k: v for k, v in GRPO.items() if k != "name"}, "per_device_train_batch_size": 4,
                            "max_steps": 1, "learning_rate": 1e-3, "warmup_ratio": 0.0, "max_completion_length": 8})
    spec.train(TrainContext(policy_path=tiny_model, train_rows=rows, config=cfg, out_dir=tmp_path, seed=0,
                            reward_function=reward))
    by_key = {r["key"]: r for r in rows}
    (texts, columns, scores), = reward.calls
    for text, key, ids, kwargs, score in zip(texts, columns["key"], columns["instruction_id_list"],
                                             columns["instruction_kwargs"], scores, strict=True):
        row = by_key[key]
        assert ids == row["instruction_id_list"]
        assert [{k: v for k, v in kw.items() if v is not None} for kw in kwargs] == row["instruction_kwargs"]
        official = score_one({"key": key, "prompt": row["prompt"][0]["content"], "instruction_id_list": ids,
                              "kwargs": row["instruction_kwargs"]}, text)["inst_level_strict_acc"]
        assert score == sum(official) / len(official)


def test_ppo_is_rewarded_by_the_verifier_on_its_logged_samples(tiny_model, tmp_path):
    """PPO passes each rollout's row to the verifier: the score it logs for each sample is the verifier's."""
    from harness.algorithms.ppo import PPOConfig

    rows = _gsm8k_rows()
    reward = Recording("gsm8k")
    cfg = PPOConfig(prompt_batch_size=4, minibatch_size=4, generation_batch_size=4, max_new_tokens=8, max_steps=2,
                    value_init="policy", learning_rate=1e-4, log_samples_per_step=4)
    logs: list[tuple[int, dict]] = []
    ctx = TrainContext(policy_path=tiny_model, train_rows=rows, config=cfg, out_dir=tmp_path, seed=3,
                       reward_function=reward, log=lambda m, s: logs.append((s, m)))
    ALGORITHMS.get("ppo").train(ctx)
    answer_of = {r["prompt"][0]["content"]: r["answer"] for r in rows}
    samples = [json.loads(line) for line in (tmp_path / "artifacts" / "ppo_samples.jsonl").read_text().splitlines()]
    assert len(samples) == 8
    for sample in samples:
        assert sample["score"] == float(is_correct(sample["completion"], answer_of[sample["prompt"]]))
    for (_, metrics), (_, _, scores) in zip(logs, reward.calls, strict=True):
        assert metrics["train/reward_mean"] == pytest.approx(statistics.fmean(scores))


def test_every_verifier_is_documented():
    text = Path(__file__).resolve().parent.parent.joinpath("harness", "rewards.py").read_text()
    for name in VERIFIERS.names():
        assert f"| `{name}` |" in text


def test_best_of_n_picks_with_a_verifier(tiny_model, tmp_path):
    """Best-of-N with a verifier that reads no prompt column: each pick is the verifier's best candidate."""
    from harness.best_of_n import best_of_n_tasks
    from harness.reward_source import RewardSource
    from harness.sample_candidates import BestOfNConfig, sample_tasks

    verifier = VerifierReward("smoke_lowercase_fraction")
    config = BestOfNConfig(n=4, temperature=1.0)
    sampled, _ = sample_tasks(tiny_model, ["smoke_lowercase"], config, tmp_path / "candidates", limit=3, batch_size=4)
    metrics = best_of_n_tasks(sampled, tiny_model, RewardSource(verifier=verifier), ["smoke_lowercase"],
                              tmp_path / "bon", limit=3, seed=config.seed, batch_size=4)
    assert "smoke_lowercase/score" in metrics
    records = [json.loads(line) for line in (tmp_path / "bon" / "bon_selections.jsonl").read_text().splitlines()]
    assert len(records) == 3
    for record, candidates in zip(records, [e["candidates"] for e in sampled.entries.values()], strict=True):
        assert record["scores"] == verifier(completions=[_messages(c) for c in candidates])
        assert record["scores"][record["chosen_index"]] == max(record["scores"])
        assert record["chosen"] == candidates[record["chosen_index"]]


def test_rm_reward_scores_held_out_answers_with_the_verifier(tiny_model, tmp_path):
    """`rm_reward` with a verifier as the cell's reward: the logged rewards are the verifier's scores of exactly
    the saved answers, and the task's key names the verifier and its format weight (another verifier, weight
    or a reward model is another result)."""
    from harness.evaluation import EvalContext, run_tasks
    from harness.evaluation.base import TASKS, task_fingerprint
    from harness.reward_ensemble import EnsembleSpec
    from harness.reward_source import RewardSource

    verifier = VerifierReward("smoke_lowercase_fraction")
    ctx = EvalContext(model_path=tiny_model, out_dir=tmp_path, limit=3, reward=RewardSource(verifier=verifier))
    metrics = run_tasks(ctx, ["rm_reward"])
    rows = [json.loads(line) for line in (tmp_path / "rm_reward.samples.jsonl").read_text().splitlines()]
    assert metrics["rm_reward/n"] == 3 == len(rows)
    assert [r["reward"] for r in rows] == verifier(completions=[_messages(r["output"]) for r in rows])
    assert metrics["rm_reward/mean"] == pytest.approx(statistics.fmean(r["reward"] for r in rows))

    spec = TASKS.get("rm_reward")
    keys = {name: task_fingerprint(EvalContext(model_path=tiny_model, out_dir=tmp_path, limit=3, reward=reward), spec)
            ["reward_model"] for name, reward in {
                "fraction": RewardSource(verifier=verifier),
                "binary": RewardSource(verifier=VerifierReward("smoke_lowercase")),
                "gsm8k+format": RewardSource(verifier=VerifierReward("gsm8k", format_weight=0.5)),
                "gsm8k": RewardSource(verifier=VerifierReward("gsm8k")),
                "model": RewardSource(model_path=tiny_model),
                "ensemble": RewardSource(ensemble=EnsembleSpec((tiny_model, tiny_model), "mean")),
                "ensemble wco": RewardSource(ensemble=EnsembleSpec((tiny_model, tiny_model), "wco"))}.items()}
    assert keys["fraction"]["verifier"] == "smoke_lowercase_fraction" and keys["gsm8k+format"]["format_weight"] == 0.5
    assert len({json.dumps(k, sort_keys=True) for k in keys.values()}) == len(keys)


def test_a_verifier_cell_plans_rm_reward_for_the_policy_and_its_baseline():
    """A cell rewarded by a verifier runs `rm_reward` (it was reported as missing: "no reward model"), and so does
    its SFT baseline, scored by the same verifier: the report's per-prompt rewards compare the two."""
    from harness.planning import plan_cell

    grid = build_grid({"experiment": "t", "baseline": True,
                       "base": {**BASE, "algorithm": GRPO, "reward_model": {"verifier": "smoke_lowercase_fraction"},
                                "eval": {"tasks": ["smoke_lowercase", "rm_reward"]}}})
    for cell in grid.cells:
        evaluate = plan_cell(cell).stages[-1]
        assert "rm_reward" in evaluate.config["tasks"] and not evaluate.config["missing"], cell.name
        assert evaluate.config["reward"] == {"verifier": "smoke_lowercase_fraction", "format_weight": 0.0}
