"""Issue #13 §1 and §3: every stage key covers what its result depends on, on tiny grids.

Plan-level checks show which keys change (raw file, HARNESS_DATA_DIR, loader code, task setting, an
environment default, a benchmark file, a task version; not the judge step's settings); real runs of
the runner with real MLflow show that exactly the affected stages rerun and nothing else, that a task
with a missing input is retried once it appears while the finished tasks are not rerun, and that the
reward model's held-out split (the one production calls) never leaves a side empty.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from pydantic import Field

from harness import tracking
from harness.evaluation import TASKS, TaskResult, TaskSpec, register_task
from harness.evaluation.base import TaskSettings, TaskUnavailable
from harness.evaluation.common import benchmark_file
from harness.grid import GridError, build_grid
from harness.runner import describe_plan, plan_grid, run_grid

DPO = {"name": "dpo", "max_steps": 1, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1,
       "max_length": 64, "learning_rate": 1e-4}

# Probe tasks: no generation (fast), and they count their runs, so "not rerun" is observed, not inferred.
CALLS: list[str] = []
FLAKY = {"down": False}


def _probe(name: str):
    def run(ctx) -> TaskResult:
        CALLS.append(name)
        if name == "_keys_flaky" and FLAKY["down"]:
            raise TaskUnavailable("the endpoint did not answer")
        n = len(benchmark_file("_keys_probe/items.jsonl").read_text().splitlines()) if name == "_keys_data" else 1
        return TaskResult({f"{name}/n": float(n)}, 50.0, [{"n": n}])
    return run


class ProbeSettings(TaskSettings):
    level: int = Field(1, ge=1, description="a setting that changes the probe's result")


def _run_with_settings(ctx) -> TaskResult:
    CALLS.append("_keys_set")
    level = ctx.settings_for("_keys_set").level
    return TaskResult({"_keys_set/level": float(level)}, 10.0 * level, [{"level": level}])


for _name, _files in (("_keys_done", None), ("_keys_data", lambda _s: [benchmark_file("_keys_probe/items.jsonl")]),
                      ("_keys_flaky", None)):
    if _name not in TASKS:
        register_task(TaskSpec(name=_name, category="custom", run=_probe(_name), data_files=_files, uses=()))
if "_keys_set" not in TASKS:
    register_task(TaskSpec(name="_keys_set", category="custom", run=_run_with_settings, settings=ProbeSettings(),
                           uses=()))


def write_hh(folder: Path, rows: int, tag: str = "") -> Path:
    """A raw HH-RLHF file in the hub layout under `folder` (a data dir): `rows` synthetic pairs."""
    path = folder / "Anthropic" / "hh-rlhf" / "harmless-base" / "train.jsonl.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt") as fh:
        for i in range(rows):
            prompt = f"\n\nHuman: question {tag}{i}?\n\nAssistant:"
            fh.write(json.dumps({"chosen": f"{prompt} a kind answer {i}", "rejected": f"{prompt} a rude answer {i}"}) + "\n")
    return folder


def two_datasets_grid(**eval_extra) -> dict:
    return {"experiment": "keys", "base": {
        "model": "tiny-random-llama", "algorithm": DPO,
        "eval": {"tasks": ["smoke_lowercase"], "limit": 2, **eval_extra}},
        "axes": {"dataset": [{"name": "smoke-lowercase", "max_rows": 8}, {"name": "hh-rlhf", "max_rows": 8}]}}


def keys(spec: dict) -> dict[str, dict[str, str]]:
    return {p.cell.name: {s.kind: s.key for s in p.stages} for p in plan_grid(build_grid(spec))}


def kinds(executed: list[str]) -> list[str]:
    return sorted(s.split("/")[0] for s in executed)


def cell_runs(experiment: str) -> dict[str, object]:
    """Latest FINISHED cell run per cell name (what the reports read)."""
    client = tracking.client()
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], "tags.`harness.run_type` = 'cell'",
                              order_by=["attributes.start_time DESC"])
    latest: dict[str, object] = {}
    for run in runs:
        latest.setdefault(run.data.tags["harness.cell"], run)
    return latest


# ---------------------------------------------------------------------------------------------
# prepare_data: the raw input and the loader's code
# ---------------------------------------------------------------------------------------------

def test_prepare_key_follows_raw_file_data_dir_and_loader_code(tmp_path: Path, monkeypatch):
    from datasets_registry import DATASETS
    from datasets_registry.core import source_fingerprint
    from datasets_registry.raw_sources import variant
    from datasets_registry.spec import register

    monkeypatch.setenv("HARNESS_DATA_DIR", str(write_hh(tmp_path / "a", 10)))
    before = keys(two_datasets_grid())
    hh, smoke = "dataset=hh-rlhf", "dataset=smoke-lowercase"
    fp = source_fingerprint("hh-rlhf")
    assert list(fp["raw"]["files"]) == ["Anthropic/hh-rlhf/harmless-base/train.jsonl.gz"]  # relative: portable

    write_hh(tmp_path / "a", 11)  # the raw file edited in place
    edited = keys(two_datasets_grid())
    assert all(edited[hh][k] != before[hh][k] for k in ("prepare_data", "train_policy", "evaluate"))
    assert edited[smoke] == before[smoke] and edited["sft"] == before["sft"]

    monkeypatch.setenv("HARNESS_DATA_DIR", str(write_hh(tmp_path / "b", 10, tag="other ")))  # other rows
    moved = keys(two_datasets_grid())
    assert moved[hh]["prepare_data"] not in (before[hh]["prepare_data"], edited[hh]["prepare_data"])
    assert moved[smoke] == before[smoke] and moved["sft"] == before["sft"]
    write_hh(tmp_path / "c", 10, tag="other ")  # the same bytes in another folder: the same key
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path / "c"))
    assert keys(two_datasets_grid())[hh] == moved[hh]

    # A hub source (no local file, hub allowed) is its id and pinned revision; an unpinned one says so;
    # with the hub switched off too, the fingerprint says the data is unavailable (the stage then fails).
    monkeypatch.setattr("datasets_registry.core.hub_disabled", lambda: False)
    nectar = DATASETS.get("nectar")
    assert source_fingerprint("nectar")["raw"] == {"hub": nectar.hub_id, "revision": nectar.revision,
                                                   "config": nectar.hub_config, "split": nectar.split,
                                                   "files": list(nectar.hub_files)}
    if "_keys-unpinned" not in DATASETS:
        register(variant(nectar, name="_keys-unpinned", group="other", paper_size=None, expected_size=None,
                         released_as=None, revision=None,
                         unpinned_reason="a test's variant"))
    assert source_fingerprint("_keys-unpinned")["raw"]["revision"] is None
    monkeypatch.setattr("datasets_registry.core.hub_disabled", lambda: True)
    assert source_fingerprint("nectar")["raw"] == {"unavailable": True}
    # A mix is its components' fingerprints.
    mix = source_fingerprint("rm-mix")["raw"]["components"]
    assert mix["hh-rlhf-60k"]["raw"] == source_fingerprint("hh-rlhf-60k")["raw"]

    # The loader's code: a dataset module edited changes its key (and only its datasets').
    module = tmp_path / "mods" / "_keys_loader.py"
    module.parent.mkdir()
    module.write_text("from datasets_registry.spec import DatasetSpec, register\n"
                      "ANSWER = 'yes'\n"
                      "def load(seed):\n    return [{'q': f'q{i}'} for i in range(4)]\n"
                      "def curate(raw):\n    return {'id': raw['q'], 'prompt': [{'role': 'user', 'content': raw['q']}],\n"
                      "            'chosen': [{'role': 'assistant', 'content': ANSWER}],\n"
                      "            'rejected': [{'role': 'assistant', 'content': 'no'}], 'source': 'x'}\n"
                      "register(DatasetSpec(name='_keys-loader', kind='preference', source_type='built-in',\n"
                      "                     description='test', load_raw=load, curate=curate))\n")
    monkeypatch.syspath_prepend(str(module.parent))
    if "_keys-loader" not in DATASETS:
        __import__("_keys_loader")
    first = source_fingerprint("_keys-loader")
    assert first["raw"] == {"generated": True}
    smoke_code = source_fingerprint("smoke-lowercase")["code"]
    module.write_text(module.read_text().replace("ANSWER = 'yes'", "ANSWER = 'sure'"))
    assert source_fingerprint("_keys-loader")["code"] != first["code"]
    assert source_fingerprint("smoke-lowercase")["code"] == smoke_code


def test_a_worker_with_other_raw_data_cannot_publish_under_the_planned_key(tmp_path: Path, monkeypatch):
    from harness import cache
    from harness.executors import execute_stage

    monkeypatch.setenv("HARNESS_DATA_DIR", str(write_hh(tmp_path / "a", 6)))
    plan = next(p for p in plan_grid(build_grid(two_datasets_grid())) if p.cell.name == "dataset=hh-rlhf")
    data = plan.stage("prepare_data")
    monkeypatch.setenv("HARNESS_DATA_DIR", str(write_hh(tmp_path / "b", 6, tag="x")))  # this worker's data
    with pytest.raises(RuntimeError, match="raw input here differs from what the plan saw"):
        execute_stage(data.spec())
    assert not cache.is_complete("prepare_data", data.key)
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path / "a"))
    execute_stage(data.spec())
    assert cache.is_complete("prepare_data", data.key)


# ---------------------------------------------------------------------------------------------
# evaluate: task settings, environment defaults, data files, versions; not the judge step
# ---------------------------------------------------------------------------------------------

def eval_grid(tasks: list[str], judge: dict | None = None, **eval_extra) -> dict:
    base = {"model": "tiny-random-llama", "dataset": {"name": "smoke-lowercase", "max_rows": 8}, "algorithm": DPO,
            "eval": {"tasks": tasks, "limit": 2, **eval_extra}}
    if judge is not None:
        base["judge"] = judge
    return {"experiment": "keys-eval", "base": base}


def test_evaluate_key_follows_settings_env_data_and_version_only(tmp_path: Path, monkeypatch, shared_data: Path):
    monkeypatch.delenv("HARNESS_CODING_N_SAMPLES", raising=False)
    monkeypatch.delenv("HARNESS_DATA_DIR", raising=False)
    tasks = ["smoke_lowercase", "humaneval_plus", "gsm8k"]
    base = keys(eval_grid(tasks))

    def only_evaluate_changed(other: dict[str, dict[str, str]]) -> bool:
        return all(other[c]["evaluate"] != base[c]["evaluate"]
                   and {k: v for k, v in other[c].items() if k != "evaluate"}
                   == {k: v for k, v in base[c].items() if k != "evaluate"} for c in base)

    # A task setting in the grid, and the same value as an environment default: one resolved setting,
    # one key, and it is in the cell's MLflow params.
    in_grid = keys(eval_grid(tasks, settings={"coding": {"n_samples": 10}}))
    assert only_evaluate_changed(in_grid)
    monkeypatch.setenv("HARNESS_CODING_N_SAMPLES", "10")
    from_env = keys(eval_grid(tasks))
    assert from_env == in_grid
    cell = build_grid(eval_grid(tasks)).cells[1]
    assert tracking.flatten(cell.resolved())["eval.settings.coding.n_samples"] == "10"
    assert cell.config.eval.settings["coding"]["max_new_tokens"] == 512  # every field, resolved
    assert keys(eval_grid(tasks, settings={"coding": {"n_samples": 12}})) != from_env  # the grid wins over env
    monkeypatch.delenv("HARNESS_CODING_N_SAMPLES")

    # A benchmark file (found through HARNESS_DATA_DIR) and an edit of it.
    gsm8k = tmp_path / "benchmarks" / "gsm8k" / "test.jsonl"
    gsm8k.parent.mkdir(parents=True)
    gsm8k.write_bytes((shared_data / "benchmarks" / "gsm8k" / "test.jsonl").read_bytes())
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path))
    assert keys(eval_grid(tasks)) == base  # the same bytes: the same key, whatever folder holds them
    gsm8k.write_text(gsm8k.read_text().replace("#### 18", "#### 19", 1))
    assert only_evaluate_changed(keys(eval_grid(tasks)))
    monkeypatch.delenv("HARNESS_DATA_DIR")

    # A task version.
    monkeypatch.setattr(TASKS.get("gsm8k"), "version", TASKS.get("gsm8k").version + 1)
    assert only_evaluate_changed(keys(eval_grid(tasks)))
    monkeypatch.undo()
    assert keys(eval_grid(tasks)) == base


def test_judge_step_settings_leave_the_evaluate_key():
    judge = {"model": "gpt-4-0613", "base_url": "http://127.0.0.1:9/v1", "num_prompts": 150, "reference": "sft"}
    plain = keys(eval_grid(["smoke_lowercase"]))
    assert keys(eval_grid(["smoke_lowercase"], judge)) == plain  # no task of the cell calls a judge
    for change in ({"num_prompts": 20}, {"reference": "other"}, {"prompts": "smoke-lowercase-eval"}):
        assert keys(eval_grid(["smoke_lowercase"], {**judge, **change})) == plain
    # A task that calls the judge has its endpoint in its key; still not the judge step's fields.
    judged = keys(eval_grid(["smoke_lowercase", "xstest"], judge))
    assert keys(eval_grid(["smoke_lowercase", "xstest"], {**judge, "num_prompts": 20, "reference": "x"})) == judged
    assert keys(eval_grid(["smoke_lowercase", "xstest"], {**judge, "model": "gpt-4o"})) != judged


def test_eval_settings_are_validated_with_their_yaml_path(monkeypatch):
    cases = [({"codng": {"n_samples": 10}}, r"base\.eval\.settings\.codng: no task has settings named 'codng'; "
                                            r"settings groups: .*alpaca_eval, bbh, coding, gsm8k, ifeval, mmlu,"),
             ({"coding": {"n_sample": 10}}, r"base\.eval\.settings\.coding\.n_sample: Extra inputs"),
             ({"coding": {"n_samples": 0}}, r"base\.eval\.settings\.coding\.n_samples: Input should be greater"),
             ({"policy_kl": {"prompt_set": "nope"}}, r"base\.eval\.settings\.policy_kl\.prompt_set: unknown dataset")]
    for settings, message in cases:
        with pytest.raises(GridError, match=message):
            build_grid(eval_grid(["smoke_lowercase"], settings=settings))
    spec = eval_grid(["smoke_lowercase"])
    spec["axes"] = {"eval.settings": [{"coding": {"n_samples": 10}}, {"coding": {"workers": "two"}}]}
    with pytest.raises(GridError, match=r"axes\.eval\.settings\[1\]\.coding\.workers: Input should be a valid integer"):
        build_grid(spec)
    monkeypatch.setenv("HARNESS_CODING_N_SAMPLES", "ten")  # a bad environment default names its variable
    with pytest.raises(GridError, match="HARNESS_CODING_N_SAMPLES must be an integer, got 'ten'"):
        build_grid(eval_grid(["humaneval_plus"]))


def test_a_task_with_a_missing_input_is_planned_apart_and_shown_in_the_dry_run(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path))
    grid = build_grid(eval_grid(["_keys_done", "_keys_data"]))
    plan = next(p for p in plan_grid(grid) if not p.cell.is_baseline)
    evaluate = plan.stage("evaluate")
    assert list(evaluate.config["tasks"]) == ["_keys_done"] and list(evaluate.config["missing"]) == ["_keys_data"]
    assert "_keys_probe/items.jsonl" in evaluate.missing["_keys_data"]
    text = describe_plan(grid, plan_grid(grid))
    assert "not run: _keys_data: benchmark file 'benchmarks/_keys_probe/items.jsonl' not found" in text


# ---------------------------------------------------------------------------------------------
# Real runs: exactly the affected stages rerun
# ---------------------------------------------------------------------------------------------

def test_exactly_the_affected_stages_rerun(tmp_path: Path, monkeypatch, tiny_model: str):
    """A raw file edited, HARNESS_DATA_DIR at other rows, a task setting changed: each reruns the stages
    that depend on it and nothing else (the other dataset's stages and the cells they feed are not
    touched), and the rerun cells get new MLflow runs while the others stay 'already logged'."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("HARNESS_DATA_DIR", str(write_hh(tmp_path / "a", 10)))
    hh, smoke = "dataset=hh-rlhf", "dataset=smoke-lowercase"
    spec = two_datasets_grid(settings={"_keys_set": {"level": 1}})
    spec["base"]["eval"]["tasks"] = ["smoke_lowercase", "_keys_set"]
    first = run_grid(build_grid(spec), echo=lambda _: None)
    assert kinds(first.executed_stages) == (["evaluate"] * 3 + ["prepare_data"] * 2 + ["reference_logps"] * 2
                                            + ["train_policy"] * 2)
    fingerprint_a = cell_runs("keys")[hh].data.tags["harness.data_fingerprint.hh-rlhf"]

    write_hh(tmp_path / "a", 12)  # the raw file edited
    edited = run_grid(build_grid(spec), echo=lambda _: None)
    assert kinds(edited.executed_stages) == ["evaluate", "prepare_data", "reference_logps", "train_policy"]
    assert edited.logged_cells == [hh] and sorted(edited.skipped_cells) == sorted(["sft", smoke])
    runs = cell_runs("keys")
    assert runs[hh].data.tags["harness.data_fingerprint.hh-rlhf"] != fingerprint_a
    assert runs[hh].data.params["dataset.name"] == "hh-rlhf"
    stage_params = {r.data.tags["harness.stage_kind"]: r.data.params for r in tracking.client().search_runs(
        [first.experiment_id], f"tags.`mlflow.parentRunId` = '{runs[hh].info.run_id}'")}
    assert stage_params["prepare_data"]["source.raw.files.Anthropic/hh-rlhf/harmless-base/train.jsonl.gz"]

    monkeypatch.setenv("HARNESS_DATA_DIR", str(write_hh(tmp_path / "b", 10, tag="other ")))  # other rows
    moved = run_grid(build_grid(spec), echo=lambda _: None)
    assert kinds(moved.executed_stages) == ["evaluate", "prepare_data", "reference_logps", "train_policy"]
    assert moved.logged_cells == [hh] and sorted(moved.skipped_cells) == sorted(["sft", smoke])

    spec["base"]["eval"]["settings"]["_keys_set"]["level"] = 2  # a task setting
    CALLS.clear()
    changed = run_grid(build_grid(spec), echo=lambda _: None)
    assert kinds(changed.executed_stages) == ["evaluate"] * 3
    assert sorted(changed.logged_cells) == sorted(["sft", hh, smoke])
    assert CALLS == ["_keys_set"] * 3
    for run in cell_runs("keys").values():
        assert run.data.params["eval.settings._keys_set.level"] == "2"
        assert run.data.tags["harness.eval.reused"] == "smoke_lowercase"  # not rerun: the task store
        assert run.data.metrics["_keys_set/level"] == 2.0
    assert run_grid(build_grid(spec), echo=lambda _: None).executed_stages == []


def test_a_missing_task_is_retried_when_its_input_appears_and_finished_ones_are_not(
        tmp_path: Path, monkeypatch, tiny_model: str):
    from reports.build import build_report

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path / "data"))
    spec = {"experiment": "keys-missing", "base": {
        "model": "tiny-random-llama", "dataset": {"name": "smoke-lowercase", "max_rows": 8}, "algorithm": DPO,
        "eval": {"tasks": ["_keys_done", "_keys_data"], "limit": 2}}}
    CALLS.clear()
    first = run_grid(build_grid(spec), echo=lambda _: None)
    assert kinds(first.executed_stages) == ["evaluate", "evaluate", "prepare_data", "reference_logps",
                                            "train_policy"]
    assert CALLS == ["_keys_done", "_keys_done"]  # the data probe was not run (its file is missing)
    for run in cell_runs("keys-missing").values():
        assert run.data.tags["harness.eval.missing"] == "_keys_data"
        assert "items.jsonl" in run.data.tags["harness.eval.skipped._keys_data"]
        assert "_keys_data/n" not in run.data.metrics and run.data.metrics["_keys_done/score"] == 50.0
    index = build_report("keys-missing", tmp_path / "report", tables=[], figures=[], ci=False).index.read_text()
    assert "## Evaluation tasks without a result" in index
    assert "`base` · `_keys_data`: not run (input missing): _keys_data: benchmark file" in index

    assert run_grid(build_grid(spec), echo=lambda _: None).executed_stages == []  # nothing changed: nothing runs

    items = tmp_path / "data" / "benchmarks" / "_keys_probe" / "items.jsonl"
    items.parent.mkdir(parents=True)
    items.write_text('{"x": 1}\n{"x": 2}\n{"x": 3}\n')
    CALLS.clear()
    retried = run_grid(build_grid(spec), echo=lambda _: None)
    assert kinds(retried.executed_stages) == ["evaluate", "evaluate"]  # not the data or the training
    assert CALLS == ["_keys_data", "_keys_data"]  # the finished probe was reused, not rerun
    assert sorted(retried.logged_cells) == ["base", "sft"]
    for run in cell_runs("keys-missing").values():
        assert run.data.metrics["_keys_data/n"] == 3.0 and run.data.metrics["_keys_done/score"] == 50.0
        assert run.data.tags["harness.eval.missing"] == "" and run.data.tags["harness.eval.reused"] == "_keys_done"


def test_a_task_that_fails_at_run_time_is_never_cached_and_alone_is_retried(tmp_path: Path, monkeypatch,
                                                                             tiny_model: str):
    """A planned input that fails at run time (here: a judge-like endpoint down) is not a result: the
    evaluate stage is not published, the tasks that finished are kept, and the next run reruns only it."""
    from harness import cache

    spec = {"experiment": "keys-flaky", "baseline": False, "base": {
        "model": "tiny-random-llama", "eval": {"tasks": ["_keys_done", "_keys_flaky"], "limit": 2}}}
    CALLS.clear()
    FLAKY["down"] = True
    try:
        with pytest.raises(RuntimeError, match=r"task\(s\) \['_keys_flaky'\] could not run .*endpoint did not answer"):
            run_grid(build_grid(spec), echo=lambda _: None)
    finally:
        FLAKY["down"] = False
    (plan,) = plan_grid(build_grid(spec))
    assert not plan.stage("evaluate").complete and CALLS == ["_keys_done", "_keys_flaky"]
    assert len(list((cache.stage_dir("evaluate_task", "x").parent).iterdir())) == 1  # only the finished task
    CALLS.clear()
    summary = run_grid(build_grid(spec), echo=lambda _: None)
    assert CALLS == ["_keys_flaky"] and summary.logged_cells == ["base"]
    assert cell_runs("keys-flaky")["base"].data.metrics["_keys_flaky/score"] == 50.0


# ---------------------------------------------------------------------------------------------
# §3: one seeded held-out split, never an empty side, checked before compute
# ---------------------------------------------------------------------------------------------

def rm_grid(dataset: dict, seed: int = 1) -> dict:
    """The SFT model scored by a reward model trained in the grid (stages: data, RM, evaluate)."""
    return {"experiment": "keys-rm", "baseline": False, "base": {
        "model": "tiny-random-llama", "seed": seed,
        "reward_model": {"base": "tiny-random-llama", "dataset": dataset,
                         "train": {"max_steps": 1, "per_device_train_batch_size": 4, "gradient_accumulation_steps": 1,
                                   "max_length": 64, "learning_rate": 1e-4, "min_learning_rate": 1e-5}},
        "eval": {"tasks": ["rm_reward"], "limit": 2, "settings": {"rm_reward": {"max_new_tokens": 4}}}}}


def test_reward_model_heldout_split_through_production(tiny_model: str, monkeypatch):
    """smoke-lowercase with max_rows 16 and seed 2 held out zero rows with the old unseeded grid split
    (and the stage failed after training); the production path now holds out round(0.1 x 16) = 2."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    summary = run_grid(build_grid(rm_grid({"name": "smoke-lowercase", "max_rows": 16}, seed=2)), echo=lambda _: None)
    (plan,) = plan_grid(build_grid(rm_grid({"name": "smoke-lowercase", "max_rows": 16}, seed=2)))
    metrics = json.loads((plan.stage("train_reward_model").path / "metrics.json").read_text())
    assert metrics["rm/heldout_pairs"] == 2.0 and metrics["rm/train_pairs"] == 14.0
    assert summary.logged_cells == ["base"]


def test_too_little_reward_model_data_fails_before_compute(tmp_path: Path, monkeypatch, tiny_model: str):
    # Knowable at plan time (max_rows): the grid does not load, naming the cell and the sizes.
    with pytest.raises(GridError, match=r"base\.reward_model: .*max_rows=1 leaves at most 1 pair.*at least 2 .*\[cell: base\]"):
        build_grid(rm_grid({"name": "smoke-lowercase", "max_rows": 1}))
    # Known only after prepare_data (one pair survives curation): train_reward_model fails before training.
    monkeypatch.setenv("HARNESS_DATA_DIR", str(write_hh(tmp_path / "one", 1)))
    grid = build_grid(rm_grid({"name": "hh-rlhf"}))
    with pytest.raises(ValueError, match=r"train_reward_model: dataset 'hh-rlhf' \(max_rows=None\) has 1 pair\(s\) "
                                         r"after curation: need at least 2 rows"):
        run_grid(grid, echo=lambda _: None)
    (plan,) = plan_grid(grid)
    assert plan.stage("prepare_data").complete and not plan.stage("train_reward_model").complete


# ---------------------------------------------------------------------------------------------
# `harness eval`: the same settings and fingerprint
# ---------------------------------------------------------------------------------------------

def test_harness_eval_set_and_env_map_into_the_same_settings(tmp_path: Path, monkeypatch, capsys, tiny_model: str,
                                                             shared_data: Path):
    from harness.cli import main

    out = tmp_path / "eval"
    args = ["eval", "--model", "tiny-random-llama", "--tasks", "ifeval", "--limit", "1", "--out", str(out)]
    monkeypatch.delenv("HARNESS_IFEVAL_MAX_NEW_TOKENS", raising=False)
    assert main([*args, "--set", "ifeval.max_new_tokens=2", "--experiment", "keys-cli"]) == 0
    saved = json.loads((out / "ifeval.result.json").read_text())
    assert saved["fingerprint"]["settings"] == {"setting": "harness", "max_new_tokens": 2}
    assert saved["metrics"]["ifeval/max_new_tokens"] == 2.0
    client = tracking.client()
    (run,) = client.search_runs([client.get_experiment_by_name("keys-cli").experiment_id])
    assert run.data.params["settings.ifeval.max_new_tokens"] == "2"
    capsys.readouterr()
    monkeypatch.setenv("HARNESS_IFEVAL_MAX_NEW_TOKENS", "2")  # the same setting from the environment: resumed
    assert main([*args, "--no-mlflow"]) == 0
    assert "ifeval: finished earlier, resumed" in capsys.readouterr().err
    assert main([*args, "--no-mlflow", "--set", "ifeval.max_new_tokens=3"]) == 0  # another value: rerun
    assert "resumed" not in capsys.readouterr().err
    assert main([*args, "--no-mlflow", "--set", "ifeval.max_tokens=3"]) == 2
    assert "ifeval.max_tokens: Extra inputs are not permitted" in capsys.readouterr().err
