"""Best-of-N and RewardBench inside the grid, end to end on a tiny model, through the real runner and
MLflow store, up to the report's Tables 3, 12 and 13.

RewardBench data is a fixture in the hub's schema (tests/fixtures/rewardbench_data/rewardbench/):
  filtered.jsonl        allenai/reward-bench `filtered` split columns (prompt, chosen, chosen_model,
                        rejected, rejected_model, subset, id); 2 rows in each of a chat, chat-hard,
                        safety and reasoning subset
  pref_test_sets.jsonl  allenai/preference-test-sets rows (same columns; `subset` = the hub split's
                        name), the prior sets RewardBench weights 0.5
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness import cache, tracking
from harness.grid import GridError, build_grid
from harness.runner import plan_grid, run_grid

FIXTURE_DATA = Path(__file__).parent / "fixtures" / "rewardbench_data"
EXPERIMENT = "bon_rewardbench"
TINY_DPO = {"name": "dpo", "max_steps": 1, "per_device_train_batch_size": 4, "gradient_accumulation_steps": 1,
            "max_length": 64, "learning_rate": 1e-4}
TINY_RM = {"per_device_train_batch_size": 8, "gradient_accumulation_steps": 1, "max_length": 96,
           "max_steps": 2, "learning_rate": 1e-3, "min_learning_rate": 1e-4, "heldout_fraction": 0.25}
N_PROMPTS, N_SAMPLES = 3, 4


def tiny_grid(experiment: str = EXPERIMENT, rm_rows: tuple[int, ...] = (16, 24), best_of_n: bool = True) -> dict:
    """DPO cells (one shared policy) that differ only in their reward model: RMs on 16 and 24 pairs."""
    eval_block: dict = {"tasks": ["smoke_lowercase"], "limit": N_PROMPTS, "batch_size": 8}
    if best_of_n:
        eval_block["best_of_n"] = {"n": N_SAMPLES, "tasks": ["smoke_lowercase"]}
    return {
        "experiment": experiment,
        "base": {"model": "tiny-random-llama", "dataset": {"name": "smoke-lowercase", "max_rows": 16},
                 "algorithm": TINY_DPO, "reward_model": {"base": "tiny-random-llama", "train": TINY_RM},
                 "eval": eval_block},
        # The whole dataset block is the axis, so the baseline gets no reward model (and no best-of-N).
        "axes": {"reward_model.dataset": [{"name": "smoke-lowercase", "max_rows": n} for n in rm_rows]},
    }


def _runs(experiment: str) -> tuple[dict[str, object], dict[str, list[object]]]:
    """(cell runs by cell name, stage runs by parent run id)."""
    client = tracking.client()
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    cells = {r.data.tags["harness.cell"]: r for r in runs if r.data.tags.get("harness.run_type") == "cell"}
    stages: dict[str, list[object]] = {}
    for r in runs:
        if r.data.tags.get("harness.run_type") == "stage":
            stages.setdefault(r.data.tags["mlflow.parentRunId"], []).append(r)
    return cells, stages


def _stage(stages: dict[str, list], cell_run, kind: str):
    (found,) = [s for s in stages[cell_run.info.run_id] if s.data.tags["harness.stage_kind"] == kind]
    return found


def test_grid_best_of_n_and_rewardbench_reach_mlflow_and_tables_3_12_13(isolated_results: Path, monkeypatch):
    from test_reports_synthetic import assert_traceable

    from harness.reward_model import rewardbench_score
    from reports.build import build_report

    monkeypatch.setenv("HARNESS_DATA_DIR", str(FIXTURE_DATA))
    grid = build_grid(tiny_grid())
    plans = {p.cell.name: p for p in plan_grid(grid)}
    assert "best_of_n" not in plans["sft"].stages[-1].config  # baseline: no RM, so no best-of-N
    rm_cells = [name for name in plans if name != "sft"]
    assert len(rm_cells) == 2
    assert len({plans[n].stage("train_reward_model").key for n in rm_cells}) == 2
    assert len({plans[n].stage("train_policy").key for n in rm_cells}) == 1  # DPO does not depend on the RM
    # Both RM cells pick among one shared sample_candidates stage, an input of their evaluate stages.
    (candidates_key,) = {plans[n].stage("sample_candidates").key for n in rm_cells}
    assert all(plans[n].stages[-1].inputs["candidates"].key == candidates_key for n in rm_cells)
    assert plans["sft"].stage("sample_candidates") is None
    summary = run_grid(grid, echo=lambda _: None)

    # The SFT samples were generated once, by that one stage: N per prompt, in the stage store.
    assert summary.executed_stages.count(f"sample_candidates/{candidates_key}") == 1
    (stage_folder,) = [p for p in cache.stage_dir("sample_candidates", candidates_key).parent.iterdir()
                       if not p.name.startswith(".")]
    assert stage_folder.name == candidates_key
    cached = [json.loads(line) for line in (stage_folder / "candidates.jsonl").read_text().splitlines()]
    assert len(cached) == N_PROMPTS and all(len(e["candidates"]) == N_SAMPLES for e in cached)
    by_prompt = {e["prompt"][-1]["content"]: e["candidates"] for e in cached}
    candidates = {c for e in cached for c in e["candidates"]}

    cells, stages = _runs(EXPERIMENT)
    assert set(cells) == set(plans)
    picked: dict[str, list[list[float]]] = {}
    for name in rm_cells:
        cell = cells[name]
        metrics = cell.data.metrics
        assert cell.data.tags["harness.stage.sample_candidates"] == candidates_key
        assert not any(key.startswith("bon/cache") for key in metrics)
        assert 0.0 <= metrics["bon/smoke_lowercase/score"] <= 100.0
        evaluate = _stage(stages, cell, "evaluate")
        assert evaluate.data.metrics["bon/smoke_lowercase/score"] == metrics["bon/smoke_lowercase/score"]
        # Every pick is one of the cached SFT candidates, the top one by this cell's reward model.
        stage_dir = Path(evaluate.data.tags["harness.stage_dir"])
        picks = [json.loads(line) for line in (stage_dir / "artifacts/bon/bon_selections.jsonl").read_text().splitlines()]
        assert len(picks) == N_PROMPTS
        for pick in picks:
            assert pick["chosen"] in candidates and len(pick["scores"]) == N_SAMPLES
            # this RM scored exactly the stage's candidates of the prompt: the same as the other RM
            assert pick["chosen"] == by_prompt[pick["prompt"]][pick["chosen_index"]]
            picked.setdefault(pick["prompt"], []).append(pick["scores"])
            assert pick["scores"][pick["chosen_index"]] == max(pick["scores"])

        rm = _stage(stages, cell, "train_reward_model")
        rb = rm.data.metrics
        assert rb["rewardbench/n"] == 11.0
        assert rm.data.tags["harness.rewardbench"].startswith("scored 11 pairs")
        subsets = json.loads((Path(rm.data.tags["harness.stage_dir"]) / "artifacts/rewardbench_subsets.json").read_text())
        assert set(subsets) == {"alpacaeval-easy", "mt-bench-hard", "xstest-should-refuse", "hep-python",
                                "anthropic_helpful", "shp"}
        for key, value in rewardbench_score(subsets).items():  # recomputed from the per-subset accuracies
            assert rb[key] == pytest.approx(value)
        assert {"rewardbench/chat", "rewardbench/chat_hard", "rewardbench/safety", "rewardbench/reasoning",
                "rewardbench/prior_sets"} <= set(rb)
    # Both RMs scored the N candidates of every prompt (and only those): nothing was generated for either.
    assert set(picked) == set(by_prompt) and all(len(scores) == 2 for scores in picked.values())

    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)  # tracking.client() exported it; keep this store
        report = build_report(EXPERIMENT, isolated_results / "report", tables=["table3", "table12", "table13"],
                              figures=[])
    assert report.skipped == {}, report.skipped
    checked = {name: assert_traceable(report.tables[name]) for name in ("table3", "table12", "table13")}
    assert all(n > 0 for n in checked.values()), checked

    labels = {name: f"tiny-random-llama RM (smoke-lowercase, {rows} pairs)" for name, rows in
              zip(rm_cells, [plans[n].cell.config.reward_model.dataset.max_rows for n in rm_cells])}
    sft_score = cells["sft"].data.metrics["smoke_lowercase/score"]
    t3, t12, t13 = (report.tables[n] for n in ("table3", "table12", "table13"))
    assert t12.columns[-1] == "smoke_lowercase" and t12.rows[0].labels == ["SFT"]
    assert t12.entry("SFT", "smoke_lowercase").value == sft_score
    for name, label in labels.items():
        bon = cells[name].data.metrics["bon/smoke_lowercase/score"]
        rb = _stage(stages, cells[name], "train_reward_model").data.metrics
        assert t12.entry(label, "smoke_lowercase").value == bon
        assert t12.entry(label, "GSM").fmt_value() == "—"  # not evaluated: empty, not made up
        # BoN avg = mean over categories of the BoN task scores (one custom task here) and its Δ over SFT.
        assert t3.entry(label, "BoN avg").value == pytest.approx(bon)
        assert t3.entry(label, "BoN Δ over SFT").value == pytest.approx(bon - sft_score)
        assert t3.entry(label, "RewardBench").value == pytest.approx(100 * rb["rewardbench/score"])
        assert t13.entry(label, "Prior Sets").value == pytest.approx(100 * rb["rewardbench/prior_sets"])
        assert t13.entry(label, "Score").value == pytest.approx(100 * rb["rewardbench/score"])


def test_rewardbench_absent_is_skipped_with_the_paths_looked_at(isolated_results: Path, tmp_path: Path, monkeypatch):
    from harness.reward_model import rewardbench_files

    empty = tmp_path / "no_data"
    empty.mkdir()
    monkeypatch.setenv("HARNESS_DATA_DIR", str(empty))
    if rewardbench_files():  # the checkout's ../shared/data is always searched too
        pytest.skip("this machine's shared data has RewardBench")
    raw = tiny_grid("rb_absent", rm_rows=(16,), best_of_n=False) | {"baseline": False}
    raw["base"]["eval"]["limit"] = 1
    absent = plan_grid(build_grid(raw))[0].stage("train_reward_model")
    assert absent.config["rewardbench"] is None
    run_grid(build_grid(raw), echo=lambda _: None)
    cells, stages = _runs("rb_absent")
    (cell,) = cells.values()
    rm = _stage(stages, cell, "train_reward_model")
    assert not [k for k in rm.data.metrics if k.startswith("rewardbench/")]
    assert not [k for k in cell.data.metrics if k.startswith("rewardbench/")]
    assert "rm/accuracy" in rm.data.metrics  # the held-out evaluation still ran
    tag = rm.data.tags["harness.rewardbench"]
    assert tag.startswith("skipped: RewardBench data not found locally")
    assert str(empty / "rewardbench" / "filtered.jsonl") in tag
    # The data appearing changes the reward-model stage's key (it is redone, now with RewardBench).
    monkeypatch.setenv("HARNESS_DATA_DIR", str(FIXTURE_DATA))
    present = plan_grid(build_grid(raw))[0].stage("train_reward_model")
    assert present.config["rewardbench"] and present.key != absent.key


def test_best_of_n_is_checked_at_plan_time():
    raw = tiny_grid(best_of_n=True)
    raw["base"].pop("reward_model")
    del raw["axes"]
    raw["axes"] = {"algorithm.beta": [0.1]}
    with pytest.raises(GridError) as err:
        build_grid(raw)
    message = str(err.value)
    assert "`eval.best_of_n` needs a reward model" in message and "`reward_model`" in message
    assert "[cell: algorithm.beta=0.1]" in message  # names the cell; the baseline dropped best-of-N silently

    bad_task = tiny_grid()
    bad_task["base"]["eval"]["best_of_n"]["tasks"] = ["mmlu"]
    with pytest.raises(GridError, match=r"base.eval.best_of_n.tasks: .*not a best-of-N task: mmlu"):
        build_grid(bad_task)

    # `best_of_n: true` = the paper's App. H settings; a fully given base RM keeps it on the baseline.
    paper = tiny_grid()
    paper["base"]["eval"]["best_of_n"] = True
    paper["base"]["reward_model"]["path"] = "tiny-random-llama"
    del paper["axes"]
    grid = build_grid(paper)
    for cell in grid.cells:
        bon = cell.config.eval.best_of_n
        assert bon is not None and (bon.n, bon.temperature) == (16, 0.7)
        assert bon.tasks == ["gsm8k", "bbh", "humaneval_plus", "mbpp_plus", "alpaca_eval1", "alpaca_eval2",
                             "ifeval", "xstest"]


def _rm_cells_grid(rm_paths: list[str], model: str = "tiny-random-llama", n: int = 2) -> dict:
    """Cells that evaluate the SFT model only, best-of-N picked by one of `rm_paths` each (no training)."""
    return {"experiment": "bon_shared_candidates", "baseline": False,
            "base": {"model": model, "reward_model": {"path": rm_paths[0]},
                     "eval": {"tasks": ["smoke_lowercase"], "limit": 2, "batch_size": 4,
                              "best_of_n": {"n": n, "tasks": ["smoke_lowercase"]}}},
            "axes": {"reward_model.path": rm_paths}}


def test_cells_with_different_reward_models_share_one_sample_candidates_stage(isolated_results: Path, tiny_model: str,
                                                                              tmp_path: Path):
    import shutil

    from safetensors.torch import load_file, save_file

    other_rm = shutil.copytree(tiny_model, tmp_path / "other_rm")  # another RM folder: another cell
    raw = _rm_cells_grid([tiny_model, str(other_rm)])
    grid = build_grid(raw)
    plans = plan_grid(grid)
    assert len(plans) == 2
    first, second = (p.stage("sample_candidates") for p in plans)
    assert first.key == second.key  # planned once for both reward models
    assert plans[0].stages[-1].key != plans[1].stages[-1].key  # the picks differ by reward model
    # Priced once: the shared stage generates the N samples, each evaluate stage only scores them.
    from harness.cost_plan import grid_cost

    priced = grid_cost(plans, "cpu-2core").stages
    (sampling,) = [e for s, e in priced if s.kind == "sample_candidates"]
    evaluations = [e for s, e in priced if s.kind == "evaluate"]
    assert sampling.flops_by_part["candidates/smoke_lowercase: decode"] > 0 and len(evaluations) == 2
    for evaluation in evaluations:
        assert evaluation.flops_by_part["bon/smoke_lowercase: scorer forward"] > 0
        assert not any(part.startswith("bon/") and part.endswith((": decode", ": prefill"))
                       for part in evaluation.flops_by_part)

    # The first cell alone runs the stage; the second cell's plan then shows it cached and its run skips it.
    only_first = build_grid(raw, only=plans[0].cell.name)
    assert [p.cell.name for p in plan_grid(only_first)] == [plans[0].cell.name]
    ran = run_grid(only_first, echo=lambda _: None)
    assert ran.executed_stages.count(first.id) == 1
    replanned = {p.cell.name: p for p in plan_grid(grid)}[plans[1].cell.name]
    assert replanned.stage("sample_candidates").complete and not replanned.stages[-1].complete
    rest = run_grid(grid, echo=lambda _: None)
    assert first.id not in rest.executed_stages and replanned.stages[-1].id in rest.executed_stages
    picks = [json.loads(line) for p in plan_grid(grid)
             for line in (p.stages[-1].path / "artifacts/bon/bon_selections.jsonl").read_text().splitlines()]
    stored = [json.loads(line) for line in (first.path / "candidates.jsonl").read_text().splitlines()]
    by_prompt = {e["prompt"][-1]["content"]: e["candidates"] for e in stored}
    assert len(picks) == 4 and all(p["chosen"] == by_prompt[p["prompt"]][p["chosen_index"]] for p in picks)

    def candidates_key(raw: dict) -> str:
        (key,) = {p.stage("sample_candidates").key for p in plan_grid(build_grid(raw))}
        return key

    assert candidates_key(_rm_cells_grid([tiny_model, str(other_rm)], n=3)) != first.key  # another n
    # The SFT model by name and content: another folder is another stage, and so is the same folder with
    # other weights (same path, same file sizes).
    sft = shutil.copytree(tiny_model, tmp_path / "sft")
    before = candidates_key(_rm_cells_grid([tiny_model, str(other_rm)], model=str(sft)))
    assert before != first.key
    (weights,) = sft.glob("*.safetensors")
    tensors = load_file(weights)
    name = next(iter(tensors))
    tensors[name] = tensors[name] + 0.01
    save_file(tensors, weights, metadata={"format": "pt"})
    assert candidates_key(_rm_cells_grid([tiny_model, str(other_rm)], model=str(sft))) != before
