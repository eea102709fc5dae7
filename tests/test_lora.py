"""Full fine-tuning vs LoRA (`algorithm.peft`, `reward_model.train.peft`, harness/lora.py): every algorithm
trains LoRA adapters on the tiny model and saves the adapter plus the merged model; the reference is the
adapter-disabled base (no second copy loaded); a reward model keeps its score head trainable; a real grid
run through the runner compares full fine-tuning and LoRA, and its evaluate stage scores the LoRA model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from harness.algorithms import ALGORITHMS, TrainContext
from harness.rewards import VerifierReward

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: threads only contend

ADAPTER = {"r": 4}
OFFLINE = dict(max_steps=2, learning_rate=1e-2, per_device_train_batch_size=2, gradient_accumulation_steps=1,
               warmup_ratio=0.0, max_length=64)
ONLINE = dict(max_steps=2, learning_rate=1e-2, per_device_train_batch_size=4, gradient_accumulation_steps=1,
              warmup_ratio=0.0)
TINY = {
    "dpo": OFFLINE, "ipo": OFFLINE, "dpo-hinge": OFFLINE, "dpo-robust": OFFLINE, "kto": OFFLINE, "simpo": OFFLINE,
    "orpo": {**OFFLINE, "warmup_steps": 0},
    "grpo": {**ONLINE, "num_generations": 2, "max_completion_length": 12},
    "grpo-seed000": {"max_steps": 2, "learning_rate": 1e-2, "warmup_ratio": 0.0, "max_completion_length": 12},
    "rloo": {**ONLINE, "max_completion_length": 12},
    "online-dpo": {**ONLINE, "max_new_tokens": 12, "max_length": 128},
    "ppo": {"max_steps": 2, "learning_rate": 1e-2, "prompt_batch_size": 4, "minibatch_size": 4,
            "generation_batch_size": 4, "max_new_tokens": 12, "value_init": "policy"},
}


@pytest.fixture(scope="module")
def smoke_rows():
    from datasets_registry import prepare

    return prepare("smoke-lowercase", max_rows=8).rows


def _state(path: str | Path) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path).state_dict()


def test_every_algorithm_takes_a_peft_block():
    assert set(TINY) == set(ALGORITHMS.names())


@pytest.mark.parametrize("name", sorted(TINY))
def test_lora_trains_and_saves_adapter_and_merged_model(name, tiny_model, smoke_rows, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    spec = ALGORITHMS.get(name)
    cfg = spec.make_config({**TINY[name], "peft": ADAPTER})
    assert cfg.peft == {"r": 4, "alpha": 8.0, "dropout": 0.0, "target_modules": "all-linear", "quantization": "none"}
    ctx = TrainContext(policy_path=tiny_model, train_rows=smoke_rows, config=cfg, out_dir=tmp_path, seed=0,
                       reward_function=VerifierReward("smoke_lowercase_fraction") if spec.needs_reward else None)
    assert spec.train(ctx)["train/steps"] == 2

    adapter = tmp_path / "adapter"
    saved = json.loads((adapter / "adapter_config.json").read_text())
    assert saved["r"] == 4 and saved["lora_alpha"] == 8.0
    # model/ is a plain model (what every consumer loads): no LoRA tensors left in it ...
    merged = _state(tmp_path / "model")
    assert not [k for k in merged if "lora_" in k]
    # ... equal to the base with the saved adapter merged in, and different from the base: the adapter learnt.
    base = _state(tiny_model)
    rebuilt = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), str(adapter))
    rebuilt = rebuilt.merge_and_unload().state_dict()
    assert all(torch.allclose(merged[k], rebuilt[k], atol=1e-6) for k in merged)
    assert max(float((merged[k] - base[k]).abs().max()) for k in base) > 0


@pytest.mark.parametrize("name, full_loads, lora_loads", [("grpo", 2, 1), ("dpo", 2, 1), ("ppo", 3, 2)])
def test_reference_is_the_adapter_disabled_base_not_a_second_copy(name, full_loads, lora_loads, tiny_model,
                                                                  smoke_rows, tmp_path, monkeypatch):
    """Models loaded during training, counted at transformers' `from_pretrained` (the real one runs): full
    fine-tuning loads a reference copy, LoRA does not."""
    from transformers import PreTrainedModel

    original = PreTrainedModel.from_pretrained.__func__
    loads: list[str] = []

    def counting(cls, *args, **kwargs):
        loads.append(cls.__name__)
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(PreTrainedModel, "from_pretrained", classmethod(counting))
    spec = ALGORITHMS.get(name)
    reward = VerifierReward("smoke_lowercase_fraction") if spec.needs_reward else None
    overrides = {**TINY[name], **({"precompute_ref_log_probs": False} if name == "dpo" else {})}
    for peft, expected in ((None, full_loads), (ADAPTER, lora_loads)):
        loads.clear()
        ctx = TrainContext(policy_path=tiny_model, train_rows=smoke_rows, config=spec.make_config(
            {**overrides, "peft": peft}), out_dir=tmp_path / str(bool(peft)), seed=0, reward_function=reward)
        spec.train(ctx)
        during_training = [c for c in loads if "ForCausalLM" in c or "ForSequenceClassification" in c]
        # (LoRA merges at save time into the trained model itself: no load for that either)
        assert len(during_training) == expected, (peft, loads)


def test_ppo_reference_is_the_policy_with_its_adapter_disabled(tiny_model):
    from transformers import AutoModelForCausalLM

    from harness import lora
    from harness.algorithms.ppo import AdapterDisabled

    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    ids = torch.arange(3, 11).unsqueeze(0)
    with torch.no_grad():
        expected = base(input_ids=ids).logits
    policy = lora.wrap(base, lora.complete(ADAPTER), "CAUSAL_LM")
    with torch.no_grad():
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                param.add_(0.5)  # a trained adapter
        trained = policy(input_ids=ids).logits
        reference = AdapterDisabled(policy)(input_ids=ids).logits
    assert torch.allclose(reference, expected, atol=1e-5)
    assert not torch.allclose(trained, expected, atol=1e-3)


def test_ppo_rejects_lora_dropout_at_load():
    with pytest.raises(ValueError, match="peft.dropout must be 0 for PPO"):
        ALGORITHMS.get("ppo").make_config({"peft": {"r": 4, "dropout": 0.1}})


def test_qlora_is_rejected_without_cuda_before_loading(tiny_model, smoke_rows, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the CPU refusal does not apply")
    spec = ALGORITHMS.get("dpo")
    ctx = TrainContext(policy_path=tiny_model, train_rows=smoke_rows, out_dir=tmp_path,
                       config=spec.make_config({**OFFLINE, "peft": {"r": 4, "quantization": "4bit"}}))
    with pytest.raises(ValueError, match=r"'4bit' \(QLoRA\) needs a CUDA GPU"):
        spec.train(ctx)


@pytest.mark.parametrize("peft, message", [
    ({"r": 0}, "base.algorithm.peft: peft.r must be >= 1 (got 0)"),
    ({"rank": 4}, "base.algorithm.peft: peft.rank is not a known setting"),
    ({"r": 4, "quantization": "8bit"}, "peft.quantization must be one of 'none' or '4bit'"),
    ({"r": 4, "dropout": 1.0}, "peft.dropout must be < 1"),
    (16, "base.algorithm.peft: peft must be a mapping of settings (or null) (got 16)"),
])
def test_bad_peft_settings_fail_at_load_with_yaml_path(peft, message):
    from harness.grid import GridError, build_grid

    with pytest.raises(GridError) as info:
        build_grid({"experiment": "t", "baseline": False, "base": {
            "model": "tiny-random-llama", "dataset": "smoke-lowercase", "algorithm": {"name": "dpo", "peft": peft}}})
    assert message in str(info.value)


def test_reward_model_lora_keeps_the_score_head_trainable(tiny_model, tmp_path):
    from safetensors import safe_open

    from datasets_registry import prepare
    from harness.reward_model import RewardModelConfig, RewardScorer, train_reward_model

    rows = prepare("smoke-lowercase", seed=0, max_rows=16).rows
    cfg = RewardModelConfig(per_device_train_batch_size=8, gradient_accumulation_steps=1, max_length=128,
                            learning_rate=1e-2, min_learning_rate=1e-3, max_steps=2, peft=ADAPTER)
    train_reward_model(rows, tiny_model, cfg, tmp_path, seed=0)
    with safe_open(str(tmp_path / "adapter" / "adapter_model.safetensors"), "pt") as fh:
        keys = list(fh.keys())
    assert any("lora_A" in k for k in keys) and any("score" in k for k in keys)  # adapters + the full head
    scores = RewardScorer(str(tmp_path / "model")).score([r["prompt"] for r in rows[:2]],
                                                          [r["chosen"] for r in rows[:2]])
    assert len(scores) == 2 and all(isinstance(s, float) for s in scores)


def test_full_vs_lora_grid_run_evaluates_the_lora_model(tiny_model, tmp_path, monkeypatch):
    """`algorithm.peft: [null, {r: 4}]` through the runner: the LoRA cell's train stage holds the adapter (also
    logged to MLflow) and the merged model, its checkpoint is merged too, and its evaluate stage's answers are
    the merged LoRA model's own greedy answers."""
    from harness import tracking
    from harness.evaluation import EvalContext, run_tasks
    from harness.grid import build_grid
    from harness.runner import plan_grid, run_grid

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    spec = {"experiment": "lora-tiny", "baseline": False,
            "base": {"model": "tiny-random-llama", "dataset": {"name": "smoke-lowercase", "max_rows": 16},
                     "algorithm": {"name": "dpo", **OFFLINE, "max_steps": 2},
                     "eval": {"tasks": ["smoke_lowercase"], "limit": 2, "checkpoint_every": 1}},
            "axes": {"algorithm.peft": [None, ADAPTER]}}
    grid = build_grid(spec)
    summary = run_grid(grid, echo=lambda _: None)
    assert sorted(summary.logged_cells) == sorted(c.name for c in grid.cells) and not summary.failed_cells
    plans = {p.cell.config.algorithm.resolved().get("peft") is not None: p for p in plan_grid(grid)}
    lora_policy, full_policy = plans[True].stage("train_policy"), plans[False].stage("train_policy")
    assert (lora_policy.path / "adapter" / "adapter_config.json").exists()
    assert not (full_policy.path / "adapter").exists()
    step1 = lora_policy.path / "checkpoints" / "step-1"
    assert (step1 / "config.json").exists() and not (step1 / "adapter_config.json").exists()  # merged

    evaluate = plans[True].stage("evaluate")
    fresh = run_tasks(EvalContext(model_path=str(lora_policy.path / "model"), out_dir=tmp_path / "re", limit=2,
                                  seed=1, batch_size=16), ["smoke_lowercase"])
    logged = json.loads((evaluate.path / "metrics.json").read_text())
    assert logged["smoke_lowercase/score"] == pytest.approx(fresh["smoke_lowercase/score"])
    outputs = [json.loads(line)["output"] for line in
               (evaluate.path / "artifacts" / "samples" / "smoke_lowercase.samples.jsonl").read_text().splitlines()]
    again = [json.loads(line)["output"] for line in
             (tmp_path / "re" / "smoke_lowercase.samples.jsonl").read_text().splitlines()]
    assert outputs == again

    client = tracking.client()
    (train_run,) = [r for r in client.search_runs([summary.experiment_id], "tags.`harness.stage_kind` = 'train_policy'")
                    if r.data.tags.get("harness.adapter_path")]
    assert {a.path for a in client.list_artifacts(train_run.info.run_id, "adapter")} >= {
        "adapter/adapter_config.json", "adapter/adapter_model.safetensors"}
    lora_cell = client.get_run(summary.cell_run_ids[plans[True].cell.name])
    assert json.loads(lora_cell.data.params["algorithm.peft.r"]) == 4
