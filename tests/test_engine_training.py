"""Training through the engine settings (`TrainContext.engine`): PPO samples its rollouts with the
default engine (the detected precision and batching) and records it, refuses a remote engine before
loading anything; TRL trainers take their precision from it and pass TRL's generation backends
through (transformers' paged continuous batching runs here; vLLM is refused clearly without it)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from datasets_registry import prepare
from harness.algorithms import ALGORITHMS, TrainContext
from harness.generation import EngineSettings
from harness.hf_engine import HFGenerator
from harness.rewards import REWARD_FUNCTIONS


def _ppo(tiny_model: str, out: Path, engine: EngineSettings | None) -> tuple[dict, list[dict]]:
    spec = ALGORITHMS.get("ppo")
    cfg = spec.make_config({"prompt_batch_size": 4, "minibatch_size": 2, "max_new_tokens": 8, "max_steps": 2,
                            "value_init": "policy", "learning_rate": 1e-4, "generation_batch_size": 4})
    logs: list[dict] = []
    ctx = TrainContext(policy_path=tiny_model, train_rows=prepare("smoke-lowercase-eval", seed=0).rows[:8],
                       config=cfg, out_dir=out, seed=3, reward_function=REWARD_FUNCTIONS.get("lowercase"),
                       log=lambda metrics, step: logs.append(metrics), engine=engine)
    return spec.train(ctx), logs


def test_ppo_trains_through_the_default_engine(tiny_model: str, tmp_path: Path, monkeypatch):
    batchings: list[str] = []
    for name in ("_static", "_compact", "_continuous"):
        original = getattr(HFGenerator, name)

        def spy(self, rows, params, seeds, _original=original, _name=name):
            batchings.append(_name.lstrip("_"))
            return _original(self, rows, params, seeds)

        monkeypatch.setattr(HFGenerator, name, spy)
    _, logs = _ppo(tiny_model, tmp_path / "default", None)
    default = EngineSettings().resolved()
    assert [len(logs), set(batchings)] == [2, {default.batching}]
    assert all(math.isfinite(v) for m in logs for v in m.values())
    recorded = json.loads((tmp_path / "default" / "artifacts" / "engine.json").read_text())
    assert recorded == default.params()
    assert (tmp_path / "default" / "model" / "config.json").exists()

    batchings.clear()
    _, logs = _ppo(tiny_model, tmp_path / "exact", EngineSettings(dtype="float32", batching="static"))
    assert set(batchings) == {"static"} and all(math.isfinite(v) for m in logs for v in m.values())
    recorded = json.loads((tmp_path / "exact" / "artifacts" / "engine.json").read_text())
    assert (recorded["engine.dtype"], recorded["engine.batching"]) == ("float32", "static")


def test_ppo_refuses_a_remote_engine_before_loading_models(tmp_path: Path):
    remote = EngineSettings(kind="openai", base_url="http://127.0.0.1:9/v1", model="m")
    with pytest.raises(ValueError, match="engine.kind: PPO samples its rollouts in-process"):
        _ppo("/nonexistent-model-folder", tmp_path, remote)


def _grpo_context(tiny_model: str, out: Path, **overrides) -> TrainContext:
    spec = ALGORITHMS.get("grpo")
    cfg = spec.make_config({"max_steps": 1, "learning_rate": 1e-3, "per_device_train_batch_size": 4,
                            "gradient_accumulation_steps": 1, "warmup_ratio": 0.0, "num_generations": 2,
                            "max_completion_length": 8, **overrides})
    return TrainContext(policy_path=tiny_model, train_rows=prepare("smoke-lowercase", max_rows=8).rows,
                        config=cfg, out_dir=out, seed=0, reward_function=REWARD_FUNCTIONS.get("lowercase_fraction"))


def test_grpo_generates_with_transformers_paged_batching(tiny_model: str, tmp_path: Path):
    ctx = _grpo_context(tiny_model, tmp_path, use_transformers_paged=True)
    summary = ALGORITHMS.get("grpo").train(ctx)
    assert summary["train/steps"] == 1 and math.isfinite(summary["train/final_loss"])
    assert (tmp_path / "model" / "config.json").exists()
    assert json.loads((tmp_path / "artifacts" / "engine.json").read_text()) == EngineSettings().resolved().params()


def test_use_vllm_without_vllm_fails_before_any_model_loads(tmp_path: Path):
    from harness.generation import vllm_available

    if vllm_available():
        pytest.skip("vLLM and a GPU are present")
    for name, extra in (("grpo", {}), ("rloo", {}), ("online-dpo", {})):
        spec = ALGORITHMS.get(name)
        ctx = TrainContext(policy_path="/nonexistent-model-folder", train_rows=[{"prompt": [{"role": "user", "content": "x"}]}],
                           config=spec.make_config({"use_vllm": True, "vllm_mode": "server", **extra}), out_dir=tmp_path,
                           reward_function=REWARD_FUNCTIONS.get("lowercase"))
        with pytest.raises(ValueError, match="use_vllm needs vLLM installed and a CUDA GPU"):
            spec.train(ctx)


def test_dpo_takes_its_precision_from_the_engine(tiny_model: str, tmp_path: Path):
    from harness.algorithms.dpo import make_dpo_config

    spec = ALGORITHMS.get("dpo")
    cfg = spec.make_config({"max_steps": 1, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1,
                            "max_length": 64, "warmup_ratio": 0.0})
    rows = prepare("smoke-lowercase", max_rows=4).rows
    for dtype, bf16 in (("float32", False), ("bfloat16", True)):
        ctx = TrainContext(policy_path=tiny_model, train_rows=rows, config=cfg, out_dir=tmp_path / dtype,
                           engine=EngineSettings(dtype=dtype))
        assert make_dpo_config(cfg, ctx).bf16 is bf16 and make_dpo_config(cfg, ctx).use_cpu
    ctx = TrainContext(policy_path=tiny_model, train_rows=rows, config=cfg, out_dir=tmp_path / "default")
    summary = spec.train(ctx)
    assert summary["train/steps"] == 1 and math.isfinite(summary["train/final_loss"])
    recorded = json.loads((tmp_path / "default" / "artifacts" / "engine.json").read_text())
    assert recorded["engine.dtype"] == EngineSettings().resolved().dtype


def test_reward_model_training_takes_and_records_the_engine(tiny_model: str, tmp_path: Path):
    from harness.reward_model import RewardModelConfig, train_reward_model

    cfg = RewardModelConfig(per_device_train_batch_size=4, gradient_accumulation_steps=1, max_length=64,
                            learning_rate=1e-3, min_learning_rate=1e-4, max_steps=1)
    rows = prepare("smoke-lowercase", seed=0, max_rows=8).rows
    for dtype in ("float32", "bfloat16"):
        out = tmp_path / dtype
        metrics = train_reward_model(rows, tiny_model, cfg, out, seed=0, engine=EngineSettings(dtype=dtype))
        assert metrics["rm_train/steps"] == 1 and math.isfinite(metrics["rm_train/final_loss"])
        assert json.loads((out / "artifacts" / "engine.json").read_text())["engine.dtype"] == dtype
