"""Issue #15 phase 2, item 2: reference log-probs once per grid (harness/reference_logps.py).

Plan-level: DPO-family cells (dpo, ipo, dpo-hinge, dpo-robust: `AlgorithmSpec.reference_logps`) with the same
reference model, data, max length and precision share one `reference_logps` stage, shown so by `--dry-run`;
other lengths or data get their own, and cells whose trainer computes its own get none. On the tiny model: the
stage's numbers are TRL's own reference pass (to float tolerance; its batches differ), a model trained on them
equals one trained with TRL computing its own, and a real grid of two DPO cells runs the reference pass once.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch

from datasets_registry import prepare
from harness import reference_logps
from harness.algorithms import ALGORITHMS, TrainContext
from harness.generation import EngineSettings
from harness.grid import build_grid
from harness.runner import describe_plan, plan_grid, run_grid

DPO = {"name": "dpo", "max_steps": 2, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1,
       "max_length": 64, "learning_rate": 1e-3, "warmup_ratio": 0.0}
FP32 = EngineSettings(dtype="float32", batching="static")


def family_grid() -> dict:
    base = {"model": "tiny-random-llama", "dataset": {"name": "smoke-lowercase", "max_rows": 8}, "algorithm": DPO,
            "eval": {"tasks": ["smoke_lowercase"], "limit": 1}, "engine": {"dtype": "float32"}}
    return {"experiment": "ref-share", "base": base, "baseline": False,
            "axes": {"algorithm.beta": [0.1, 0.3]},
            "include": [
                {"algorithm": {**DPO, "name": "ipo"}},
                {"algorithm": {**DPO, "name": "dpo-hinge"}},
                {"algorithm": {**DPO, "name": "dpo-robust", "learning_rate": 1e-4}},
                {"algorithm": {**DPO, "sft_weight": 1.0}},
                {"algorithm": {**DPO, "max_length": 32}},  # another truncation: its own pass
                {"algorithm": {**DPO, "precompute_ref_log_probs": False}},  # the reference at every step
                {"algorithm": {"name": "kto", "max_steps": 1}},  # not among them (see the module docstring)
                {"algorithm": {"name": "simpo", "max_steps": 1}},  # no reference at all
                {"dataset": {"name": "smoke-lowercase", "max_rows": 6}},  # other pairs
            ]}


def test_dpo_family_cells_with_the_same_reference_share_one_stage():
    grid = build_grid(family_grid())
    plans = {p.cell.name: p for p in plan_grid(grid)}
    references = {name: p.stage("reference_logps") for name, p in plans.items()}
    by_algo = {name: p.cell.config.algorithm.name for name, p in plans.items()}
    shared = references["algorithm.beta=0.1"]
    assert shared is not None and shared.inputs["data"].kind == "prepare_data"
    same = [name for name, ref in references.items() if ref is not None and ref.key == shared.key]
    assert sorted(by_algo[n] for n in same) == sorted(["dpo", "dpo", "ipo", "dpo-hinge", "dpo-robust", "dpo"])
    for name, plan in plans.items():
        algorithm = ALGORITHMS.get(by_algo[name])
        ref = references[name]
        if ref is None:  # its trainer computes its own: KTO, SimPO, or asked so
            assert (not algorithm.reference_logps
                    or not plan.cell.config.algorithm.resolved()["precompute_ref_log_probs"])
            assert "reference_logps" not in plan.stage("train_policy").inputs
        else:
            assert plan.stage("train_policy").inputs["reference_logps"] is ref
            assert ref.config == {"model": "tiny-random-llama", "max_length": ref.config["max_length"],
                                  "truncation_mode": "keep_start", "batch_size": reference_logps.BATCH_SIZE,
                                  "engine": {"dtype": "float32"}}
    others = {ref.key for ref in references.values() if ref is not None} - {shared.key}
    assert len(others) == 2  # max_length 32; the other rows
    assert [by_algo[n] for n, r in references.items() if r is None] == ["dpo", "kto", "simpo"]
    text = describe_plan(grid, list(plans.values()))
    line = next(line for line in text.splitlines() if shared.key in line)
    assert "ref" in line.split()[0] and line.endswith("(shared by 6 cells)")


def _rows() -> list[dict]:
    return prepare("smoke-lowercase", max_rows=8).rows


def _train(tiny_model: str, out: Path, reference: reference_logps.ReferenceLogps | None) -> tuple[dict, list]:
    spec = ALGORITHMS.get("dpo")
    cfg = spec.make_config({**{k: v for k, v in DPO.items() if k != "name"}, "max_length": 48})
    losses: list[float] = []
    ctx = TrainContext(policy_path=tiny_model, train_rows=_rows(), config=cfg, out_dir=out, seed=3, engine=FP32,
                       reference_logps=reference, log=lambda m, step: losses.append(m.get("train/loss")))
    spec.train(ctx)
    from safetensors.torch import load_file

    return load_file(str(out / "model" / "model.safetensors")), [v for v in losses if v is not None]


def test_the_stage_computes_trls_own_reference_pass_and_training_on_it_matches(tiny_model: str, tmp_path: Path,
                                                                                monkeypatch, one_thread):
    """max_length 48 cuts most pairs and drops the two whose prompt alone fills it (as TRL does)."""
    from trl import DPOTrainer

    from harness.algorithms.dpo import make_dpo_config
    from harness.algorithms.trl_common import load_policy, preference_dataset

    rows = _rows()
    config = {"max_length": 48, "truncation_mode": reference_logps.TRUNCATION_MODE,
              "batch_size": reference_logps.BATCH_SIZE}
    ours = reference_logps.compute(tiny_model, rows, config, FP32, tmp_path / "stage")
    assert ours.metrics()["ref/dropped_pairs"] == 2 and ours.metrics()["ref/pairs"] == 6

    # TRL's own pass, in the batches of the cell (2 pairs: other padding than the stage's 8).
    spec = ALGORITHMS.get("dpo")
    cfg = spec.make_config({**{k: v for k, v in DPO.items() if k != "name"}, "max_length": 48})
    ctx = TrainContext(policy_path=tiny_model, train_rows=rows, config=cfg, out_dir=tmp_path / "own", engine=FP32)
    model, tok = load_policy(ctx)
    dataset = preference_dataset(rows).add_column("_row", list(range(len(rows))))
    own = DPOTrainer(model=model, args=make_dpo_config(cfg, ctx), train_dataset=dataset, processing_class=tok)
    done = own.train_dataset
    assert len(done) == 6
    for row, chosen, rejected in zip(done["_row"], done["ref_chosen_logps"], done["ref_rejected_logps"], strict=True):
        assert ours.chosen[row] == pytest.approx(chosen, rel=1e-5, abs=1e-4)
        assert ours.rejected[row] == pytest.approx(rejected, rel=1e-5, abs=1e-4)
    del own, model

    # Training on the stage's numbers: the trainer does no reference pass, and the result is TRL's own.
    calls: list[int] = []
    original = DPOTrainer.compute_ref_log_probs

    def counted(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(DPOTrainer, "compute_ref_log_probs", counted)
    shared_weights, shared_losses = _train(tiny_model, tmp_path / "shared", ours)
    assert calls == []
    own_weights, own_losses = _train(tiny_model, tmp_path / "trl", None)
    assert len(calls) == 3  # TRL's own pass: 6 pairs in batches of 2
    assert len(shared_losses) == len(own_losses) == 2
    assert shared_losses == pytest.approx(own_losses, rel=1e-4, abs=1e-6)
    assert shared_weights.keys() == own_weights.keys()
    initial = load_policy(ctx)[0].state_dict()
    moved = max((own_weights[name] - initial[name]).abs().max().item() for name in own_weights if name in initial)
    assert moved > 1e-4  # training did change the weights...
    for name, tensor in own_weights.items():  # ...and the same way with the shared numbers
        assert torch.allclose(shared_weights[name], tensor, rtol=1e-4, atol=1e-6), name


def test_stored_numbers_are_checked_against_the_rows(tmp_path: Path):
    rows = _rows()
    stored = reference_logps.ReferenceLogps([-1.0] * 8, [-2.0] * 8, reference_logps.rows_digest(rows))
    stored.save(tmp_path)
    assert reference_logps.ReferenceLogps.load(tmp_path, rows).chosen == [-1.0] * 8
    other = copy.deepcopy(rows)
    other[3]["chosen"][0]["content"] += "!"
    with pytest.raises(RuntimeError, match="other rows"):
        reference_logps.ReferenceLogps.load(tmp_path, other)


def test_a_grid_of_two_dpo_cells_runs_the_reference_pass_once(tiny_model: str, monkeypatch, one_thread):
    from trl import DPOTrainer

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    passes: list[int] = []  # TRL's reference pass over a dataset (computed, or read from TRL's own cache)
    batches: list[int] = []
    original_pass, original_batch = DPOTrainer._precompute_ref_logps, DPOTrainer.compute_ref_log_probs

    def counted_pass(self, dataset, *args, **kwargs):
        passes.append(len(dataset))
        return original_pass(self, dataset, *args, **kwargs)

    def counted_batch(self, *args, **kwargs):
        batches.append(1)
        return original_batch(self, *args, **kwargs)

    monkeypatch.setattr(DPOTrainer, "_precompute_ref_logps", counted_pass)
    monkeypatch.setattr(DPOTrainer, "compute_ref_log_probs", counted_batch)
    spec = family_grid()
    spec["include"] = []
    spec["base"]["dataset"]["max_rows"] = 7  # rows no other test of this process passed through TRL's cache
    summary = run_grid(build_grid(spec), echo=lambda _: None)
    kinds = sorted(s.split("/")[0] for s in summary.executed_stages)
    assert kinds == ["evaluate"] * 2 + ["prepare_data", "reference_logps"] + ["train_policy"] * 2
    assert passes == [7] and batches == [1]  # one pass, of 7 pairs in one batch of 8, for both cells
    assert not summary.failed_cells and len(summary.logged_cells) == 2
    from harness import tracking

    client = tracking.client()
    cells = [client.get_run(run_id) for run_id in summary.cell_run_ids.values()]
    assert len({run.data.tags["harness.stage.reference_logps"] for run in cells}) == 1
    for run in cells:
        assert math.isfinite(run.data.metrics["train/final_loss"])
        assert run.data.metrics["ref/pairs"] == 7.0
