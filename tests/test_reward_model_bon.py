"""Best-of-N: N samples from the SFT policy sampled once (the `sample_candidates` stage's work) and re-scored
by every reward model; the generation benchmark then runs on each RM's top pick, and picking never generates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from datasets_registry import prepare
from harness.best_of_n import best_of_n_tasks
from harness.reward_model import RewardModelConfig, RewardScorer, train_reward_model
from harness.sample_candidates import BestOfNConfig, Candidates, MissingCandidates, sample_tasks


def _train(tiny_model: str, out: Path, flip: bool) -> str:
    rows = prepare("smoke-lowercase", seed=0, max_rows=32).rows
    if flip:  # an RM with the opposite preference: a second, different scorer on the same samples
        rows = [{**r, "chosen": r["rejected"], "rejected": r["chosen"]} for r in rows]
    cfg = RewardModelConfig(per_device_train_batch_size=8, gradient_accumulation_steps=1, max_length=128,
                            learning_rate=1e-3, min_learning_rate=1e-4, max_steps=3)
    train_reward_model(rows, tiny_model, cfg, out, seed=0)
    return str(out / "model")


def test_best_of_n_shares_sampled_candidates_across_reward_models(tiny_model: str, tmp_path: Path):
    rms = {"lower": _train(tiny_model, tmp_path / "rm_lower", flip=False),
           "upper": _train(tiny_model, tmp_path / "rm_upper", flip=True)}
    cfg = BestOfNConfig(n=4, temperature=0.7, seed=1)
    sampled, sample_metrics = sample_tasks(tiny_model, ["smoke_lowercase"], cfg, tmp_path / "candidates", limit=3,
                                           batch_size=4)
    # 3 prompts sampled once, N each: what every reward model below picks among.
    assert sample_metrics["candidates/prompts"] == 3.0 and sample_metrics["candidates/smoke_lowercase/prompts"] == 3.0
    # The task ran to its end on the first candidates (kept as an artifact, not as metrics).
    first = json.loads((tmp_path / "candidates/artifacts/first_sample/smoke_lowercase/results.json").read_text())
    assert "smoke_lowercase/score" in first["metrics"] and not any(k.endswith("/score") for k in sample_metrics)
    stored = [json.loads(line) for line in (tmp_path / "candidates" / "candidates.jsonl").read_text().splitlines()]
    assert len(stored) == 3 and all(len(entry["candidates"]) == 4 for entry in stored)
    assert all(entry["tasks"] == ["smoke_lowercase"] for entry in stored)
    candidates = {c for entry in stored for c in entry["candidates"]}
    metrics: dict[str, dict[str, float]] = {}
    for label, rm_path in rms.items():
        # A fresh read of the stage's file for each RM: the picks read it, never a generator.
        metrics[label] = best_of_n_tasks(Candidates.load(tmp_path / "candidates"), tiny_model, rm_path,
                                         ["smoke_lowercase"], tmp_path / "bon" / label, limit=3, seed=cfg.seed,
                                         batch_size=4)
        assert "smoke_lowercase/score" in metrics[label]
        records = [json.loads(line) for line in (tmp_path / "bon" / label / "bon_selections.jsonl").read_text().splitlines()]
        outputs = [json.loads(line) for line in
                   (tmp_path / "bon" / label / "smoke_lowercase.samples.jsonl").read_text().splitlines()]
        assert len(records) == 3 and len(outputs) == 3
        scorer = RewardScorer(rm_path)
        for record, sample, entry in zip(records, outputs, stored, strict=True):
            # every RM scores exactly the stage's N candidates of the prompt, in order
            assert record["prompt"] == entry["prompt"][-1]["content"] and len(record["scores"]) == 4
            assert record["chosen"] in candidates and sample["output"] == record["chosen"]
            assert record["chosen"] == entry["candidates"][record["chosen_index"]]
            # the pick is the argmax of this RM's scores
            assert record["scores"][record["chosen_index"]] == pytest.approx(max(record["scores"]))
            prompt = [{"role": "user", "content": record["prompt"]}]
            assert scorer.score([prompt], [record["chosen"]])[0] == pytest.approx(max(record["scores"]), abs=1e-4)
    # Picking again from the same candidates gives the same result (nothing is resampled).
    again = best_of_n_tasks(Candidates.load(tmp_path / "candidates"), tiny_model, rms["lower"], ["smoke_lowercase"],
                            tmp_path / "bon2", limit=3, seed=cfg.seed, batch_size=4)
    assert again["smoke_lowercase/score"] == metrics["lower"]["smoke_lowercase/score"]


def test_best_of_n_checks_inputs_and_never_generates(tiny_model: str, tmp_path: Path):
    with pytest.raises(ValueError, match="n >= 1"):
        BestOfNConfig(n=0)
    with pytest.raises(Exception, match="no_such_task"):
        sample_tasks(tiny_model, ["no_such_task"], BestOfNConfig(n=2), tmp_path / "candidates")
    # Candidates of 2 prompts; a pick over 3 finds the third missing: an error naming it, not a new sample.
    cfg = BestOfNConfig(n=2, temperature=0.7)
    sample_tasks(tiny_model, ["smoke_lowercase"], cfg, tmp_path / "candidates", limit=2, batch_size=4)
    rm = _train(tiny_model, tmp_path / "rm", flip=False)
    with pytest.raises(MissingCandidates, match=r"no candidates for the prompt .*smoke_lowercase \(2 prompts\)"):
        best_of_n_tasks(Candidates.load(tmp_path / "candidates"), tiny_model, rm, ["smoke_lowercase"], tmp_path / "bon",
                        limit=3, seed=cfg.seed, batch_size=4)


def test_sampling_checks_the_sft_model_is_the_planned_one(tiny_model: str, tmp_path: Path):
    """The stage key holds the SFT folder's sha256; a folder rewritten after planning fails before sampling."""
    import shutil

    from safetensors.torch import load_file, save_file

    from harness.evaluation.base import plan_tasks, resolve_eval_settings, settings_from_config
    from harness.generation import EngineSettings
    from harness.sample_candidates import model_identity, sample, stage_config

    sft = shutil.copytree(tiny_model, tmp_path / "sft")
    assert model_identity(str(sft)) == model_identity(tiny_model)  # content, not path
    settings = resolve_eval_settings(["smoke_lowercase"], {})
    ready, _ = plan_tasks(["smoke_lowercase"], settings, judge=None, has_reference=True, has_reward_model=False)
    engine = EngineSettings()
    config = stage_config(str(sft), {"n": 2, "temperature": 0.7, "top_p": 1.0, "seed": 0}, ready, 2, 4, None,
                          engine.resolved().key())
    (weights,) = sft.glob("*.safetensors")
    tensors = load_file(weights)
    name = next(iter(tensors))
    tensors[name] = tensors[name] * 2
    save_file(tensors, weights, metadata={"format": "pt"})
    assert model_identity(str(sft)) != config["model_sha256"]
    (tmp_path / "out").mkdir()
    with pytest.raises(RuntimeError, match="other content than the plan saw"):
        sample(config, settings_from_config(settings, list(ready)), engine, tmp_path / "out")
    assert not (tmp_path / "out" / "candidates.jsonl").exists()


def test_best_of_n_scores_one_pick_per_prompt_and_coding_scores_its_pass_at_1():
    """App. H: the top-scoring sample is the model's output. A task asking for several answers per prompt
    would get pass@k over (nearly) all candidates, the same for every reward model: refused; the coding
    tasks run under their `best_of_n_settings` (one sample, pass@1) in the best-of-N block, in its key."""
    from harness.best_of_n import BestOfNGenerator
    from harness.config import CellConfig
    from harness.evaluation.base import TASKS
    from harness.generation import SamplingParams
    from harness.grid import Cell
    from harness.planning import plan_cell

    picker = BestOfNGenerator(candidates=None, scorer=None, tokenizer=None)
    with pytest.raises(ValueError, match="one pick per prompt; the task asked for 20"):
        picker.generate(["p"], SamplingParams(max_new_tokens=8, num_return_sequences=20))
    assert TASKS.get("humaneval_plus").best_of_n_settings == {"n_samples": 1, "score_k": 1}
    config = CellConfig.model_validate({
        "model": "tiny-random-llama", "reward_model": {"verifier": "smoke_lowercase"},
        "eval": {"tasks": ["humaneval_plus"], "best_of_n": {"n": 4, "tasks": ["humaneval_plus", "mbpp_plus"]}}})
    evaluate = plan_cell(Cell("c", config, {})).stages[-1]
    assert evaluate.config["tasks"].get("humaneval_plus", {}).get("settings", config.eval.settings["coding"]) \
        ["n_samples"] == 20  # the cell's own coding evaluation keeps its samples
    bon = evaluate.config["best_of_n"]
    for name in ("humaneval_plus", "mbpp_plus"):
        settings = bon["tasks"][name]["settings"] if name in bon["tasks"] else bon["missing"][name]
        assert (settings["n_samples"], settings["score_k"]) == (1, 1), name


def test_a_zoo_model_keys_its_candidates_by_name_built_or_not(monkeypatch, tmp_path):
    """A plan made before the harness builds a zoo model (a fresh results folder) and every later plan
    (a re-run, `harness status`, `--dry-run`) must find the same sample_candidates stage."""
    from harness.config import CellConfig
    from harness.grid import Cell
    from harness.models import resolve_model
    from harness.planning import plan_cell
    from harness.sample_candidates import model_identity

    monkeypatch.setenv("HARNESS_MODEL_DIR", str(tmp_path / "models"))
    config = CellConfig.model_validate({
        "model": "tiny-random-llama", "reward_model": {"verifier": "smoke_lowercase"},
        "eval": {"tasks": ["smoke_lowercase"], "best_of_n": {"n": 2, "tasks": ["smoke_lowercase"]}}})

    def candidates_key() -> str:
        (stage,) = [s for s in plan_cell(Cell("c", config, {})).stages if s.kind == "sample_candidates"]
        return stage.key

    before = candidates_key()
    folder = resolve_model("tiny-random-llama")
    assert Path(folder, "config.json").is_file() and str(tmp_path) in folder
    assert candidates_key() == before and model_identity("tiny-random-llama") is None
    assert model_identity(folder) is not None  # the same model given as a folder is keyed by its content
