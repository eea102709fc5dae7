"""Issue #15 phase 2, item 1: the engine is a cell's `engine:` block, resolved when the grid is planned, and it
is in exactly the stage keys (and task-store keys) whose results it changes, and in their MLflow params.

Plan-level: the dtype changes every stage that computes with a model (reward model, reference pass, policy,
evaluation) and never prepare_data; the engine's kind or batching changes the evaluation (and PPO, which samples
through it) but not what trains without generating. A real tiny grid pinned to float32 trains and evaluates in
float32 (each stage's engine.json and MLflow params), and a worker runs the planned engine even when it would
resolve "auto" otherwise.
"""

from __future__ import annotations

import copy
import json

import pytest

from harness import tracking
from harness.evaluation import EvalContext
from harness.evaluation.base import task_fingerprint
from harness.generation import EngineSettings
from harness.grid import GridError, build_grid
from harness.runner import plan_grid, run_grid

DPO = {"name": "dpo", "max_steps": 1, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1,
       "max_length": 64, "learning_rate": 1e-4}
PPO = {"name": "ppo", "max_steps": 1, "prompt_batch_size": 2, "minibatch_size": 2, "max_new_tokens": 4,
       "value_init": "policy"}
RM = {"base": "tiny-random-llama", "dataset": {"name": "smoke-lowercase", "max_rows": 8},
      "train": {"max_steps": 1, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1}}


def grid_spec(engine: dict | None = None) -> dict:
    """A baseline, a DPO cell (with its shared reference pass) and a PPO cell with a trained reward model."""
    base = {"model": "tiny-random-llama", "dataset": {"name": "smoke-lowercase", "max_rows": 8},
            "algorithm": DPO, "eval": {"tasks": ["smoke_lowercase"], "limit": 2}}
    if engine is not None:
        base["engine"] = engine
    return {"experiment": "engine-keys", "base": base,
            "include": [{"algorithm": PPO, "reward_model": RM, "prompts": {"name": "smoke-lowercase-eval",
                                                                           "max_rows": 4}}]}


def stage_keys(spec: dict) -> dict[tuple[str, str], str]:
    """(cell, stage entry) -> key; prepare_data entries by dataset name."""
    out = {}
    for plan in plan_grid(build_grid(copy.deepcopy(spec))):
        for stage in plan.stages:
            entry = f"prepare_data.{stage.config['name']}" if stage.kind == "prepare_data" else stage.kind
            out[(plan.cell.name, entry)] = stage.key
    return out


def changed(a: dict, b: dict) -> set[tuple[str, str]]:
    assert a.keys() == b.keys()
    return {entry for entry in a if a[entry] != b[entry]}


def test_dtype_and_engine_kind_change_exactly_the_affected_stage_keys():
    fp32 = stage_keys(grid_spec({"dtype": "float32"}))
    bf16 = stage_keys(grid_spec({"dtype": "bfloat16"}))
    cells = {cell for cell, _ in fp32}
    assert len(cells) == 3
    ppo_cell = next(cell for cell, entry in fp32 if entry == "train_reward_model")
    dpo_cell = next(cell for cell, entry in fp32 if entry == "reference_logps")
    # The precision: every stage that computes with a model, never the data.
    assert changed(fp32, bf16) == {entry for entry in fp32 if not entry[1].startswith("prepare_data")}
    assert {entry for entry in fp32 if entry[1].startswith("prepare_data")}  # (there are some)

    # The engine's kind (generation through a server): the evaluations only; training is in-process at the same
    # precision. PPO cannot sample through a server, so this compares the grid without its PPO cell.
    dpo_only = grid_spec({"dtype": "float32"})
    dpo_only["include"] = []
    server = copy.deepcopy(dpo_only)
    server["base"]["engine"] = {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m", "dtype": "float32"}
    assert changed(stage_keys(dpo_only), stage_keys(server)) == {("sft", "evaluate"), (dpo_cell, "evaluate")}

    # The batching (an hf engine's other output-changing choice): the evaluations and PPO, which samples
    # its rollouts through the engine (`AlgorithmSpec.rollout_engine`), not what trains without generating.
    static = stage_keys(grid_spec({"dtype": "float32", "batching": "static"}))
    continuous = stage_keys(grid_spec({"dtype": "float32", "batching": "continuous"}))
    assert changed(static, continuous) == {("sft", "evaluate"), (dpo_cell, "evaluate"), (ppo_cell, "evaluate"),
                                           (ppo_cell, "train_policy")}

    # Settings that do not change outputs leave every key alone (a server's URL, its concurrency).
    other_server = copy.deepcopy(server)
    other_server["base"]["engine"].update(base_url="http://10.0.0.2:8000/v1", max_concurrency=64)
    assert changed(stage_keys(server), stage_keys(other_server)) == set()


def test_auto_is_resolved_when_the_grid_is_loaded():
    resolved = EngineSettings().resolved()
    grid = build_grid(grid_spec())
    for cell in grid.cells:
        assert cell.config.engine.dtype == resolved.dtype and cell.config.engine.batching == resolved.batching
        assert cell.resolved()["engine"]["dtype"] == resolved.dtype  # the cell run's params
    # No block = the block pinned to what "auto" resolves to here: the same keys.
    assert stage_keys(grid_spec()) == stage_keys(grid_spec({"dtype": resolved.dtype, "batching": resolved.batching}))
    plans = plan_grid(grid)
    evaluate = plans[0].stages[-1]
    assert evaluate.config["engine"] == resolved.key()
    assert evaluate.spec()["engine"]["dtype"] == resolved.dtype  # what the worker runs
    policy = next(p.stage("train_policy") for p in plans if p.stage("reference_logps"))
    assert policy.config["engine"] == {"dtype": resolved.dtype}


@pytest.mark.parametrize(("engine", "where"), [
    ({"dtype": "float16"}, "base.engine.dtype"),
    ({"kind": "openai"}, "base.engine"),
    ({"batchng": "static"}, "base.engine.batchng"),
])
def test_the_engine_block_is_validated_with_its_yaml_path(engine: dict, where: str):
    with pytest.raises(GridError) as err:
        build_grid(grid_spec(engine))
    assert where in str(err.value)


def test_ppo_with_a_server_engine_fails_at_load():
    spec = grid_spec({"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m"})
    with pytest.raises(GridError, match="engine.kind: algorithm 'ppo' samples its rollouts in-process"):
        build_grid(spec)


def test_the_task_store_key_names_the_engine(tiny_model: str, tmp_path):
    from harness.evaluation import TASKS

    spec = TASKS.get("smoke_lowercase")

    def fingerprint(engine: EngineSettings | None) -> dict:
        return task_fingerprint(EvalContext(model_path=tiny_model, out_dir=tmp_path, limit=2, engine=engine), spec)

    fp32 = fingerprint(EngineSettings(dtype="float32", batching="static"))
    assert fp32["engine"] == {"kind": "hf", "dtype": "float32", "batching": "static"}
    assert fingerprint(EngineSettings(dtype="bfloat16", batching="static"))["engine"]["dtype"] == "bfloat16"
    assert fingerprint(EngineSettings(dtype="float32", batching="continuous")) != fp32
    assert fingerprint(None)["engine"] == EngineSettings().resolved().key()
    remote = fingerprint(EngineSettings(kind="openai", base_url="http://127.0.0.1:9/v1", model="m"))
    assert remote["engine"]["kind"] == "openai" and remote["engine"]["model"] == "m"


def stage_runs(experiment: str) -> dict[str, list]:
    client = tracking.client()
    exp = client.get_experiment_by_name(experiment)
    by_kind: dict[str, list] = {}
    for run in client.search_runs([exp.experiment_id]):
        if run.data.tags.get("harness.run_type") == "stage":
            by_kind.setdefault(run.data.tags["harness.stage_kind"], []).append(run)
    return by_kind


def test_a_grid_pinned_to_float32_trains_and_evaluates_in_float32(tiny_model: str, monkeypatch, one_thread):
    """Every stage that computes with a model runs, records and logs float32, on a machine where "auto" would
    mean bf16 (made so for the test, whatever this CPU is)."""
    import harness.generation

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setattr(harness.generation, "native_bf16", lambda device: (True, "a bf16 device"))
    assert EngineSettings().resolved().dtype == "bfloat16"
    summary = run_grid(build_grid(grid_spec({"dtype": "float32"})), echo=lambda _: None)
    assert not summary.failed_cells and len(summary.logged_cells) == 3
    runs = stage_runs("engine-keys")
    assert {"train_reward_model", "reference_logps", "train_policy", "evaluate"} <= set(runs)
    for kind in ("train_reward_model", "reference_logps", "train_policy", "evaluate"):
        for run in runs[kind]:
            assert run.data.params["engine.dtype"] == "float32", kind
            folder = run.data.tags["harness.stage_dir"]
            with open(f"{folder}/artifacts/engine.json") as fh:
                recorded = json.load(fh)
            assert recorded["engine.dtype"] == "float32", kind
            assert recorded["engine.dtype_reason"].startswith("pinned"), kind
    for run in runs["prepare_data"]:
        assert not any(name.startswith("engine.") for name in run.data.params)
    evaluate_params = [run.data.params for run in runs["evaluate"]]
    assert all(p["engine.kind"] == "hf" and p["engine.batching"] for p in evaluate_params)


def test_a_worker_runs_the_engine_the_plan_resolved(tiny_model: str, monkeypatch, one_thread):
    """ "auto" planned on a machine without native bf16 is float32; a worker whose own "auto" would be bf16
    runs float32 all the same (the spec carries the pinned settings), and records it."""
    import harness.generation
    from harness.executors import execute_stage

    monkeypatch.setattr(harness.generation, "native_bf16", lambda device: (False, "the planning machine"))
    plan = next(p for p in plan_grid(build_grid(grid_spec())) if p.stage("reference_logps"))
    reference = plan.stage("reference_logps")
    assert reference.config["engine"] == {"dtype": "float32"}
    monkeypatch.setattr(harness.generation, "native_bf16", lambda device: (True, "a bf16 worker"))
    execute_stage(reference.inputs["data"].spec())
    published = execute_stage(reference.spec())
    with open(f"{published}/artifacts/engine.json") as fh:
        recorded = json.load(fh)
    assert recorded["engine.dtype"] == "float32" and recorded["engine.dtype_reason"] == "pinned (a bf16 worker)"
    # A spec whose settings contradict its key is refused, not run under the key.
    bad = reference.spec()
    bad["key"] = "0" * 20
    bad["engine"]["dtype"] = "bfloat16"
    with pytest.raises(RuntimeError, match="resolve to"):
        execute_stage(bad)
