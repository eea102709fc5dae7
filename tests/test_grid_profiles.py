"""Grid profiles (harness/profiles.py), their launch settings (harness/launch.py), the plan-time cost
estimate (harness/cost_plan.py) and the inputs named before compute (harness/resolution.py).

Fast: every shipped grid and sweep validates and plans at every profile, `paper` included, offline (the
hub switched off, as the suite runs), and its `--dry-run` prints a cost estimate; the paper profiles of
Tables 1, 2 and 11 land within 3x of the compute the paper reports; profile errors name their YAML path;
a grid asking for data or models this machine lacks says which and how to get them, and nothing runs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from harness import cost_profiles
from harness.cost_plan import grid_cost
from harness.grid import GridError, load_grid
from harness.launch import config_path, plan_problems, ray_resources, read_launch_config
from harness.paths import PROJECT_ROOT, shared_data_dir
from harness.planning import unique_stages
from harness.profiles import profile_names
from harness.runner import plan_grid
from harness.sweep.plan import _probe_plans
from harness.sweep.spec import SweepError, load_sweep

ABLATIONS = PROJECT_ROOT / "ablations"
PROFILE_FILES = sorted(p for p in ABLATIONS.glob("*.yaml") if "profiles" in yaml.safe_load(p.read_text()))
PROFILES = ("paper", "gpu", "cpu", "tiny")
# The paper's reported compute (App. K / Table 11), hours on a 256-core TPUv3 pod.
PAPER_HOURS = {"dpo": 9.0, "reward_model": 10.0, "ppo": 72.0}


def _is_sweep(path: Path) -> bool:
    return "search" in yaml.safe_load(path.read_text())


PAPER_GRIDS = ("table1_datasets", "table2_dpo_vs_ppo", "table3_reward_models", "table4_prompts", "table5_recipe",
               "table7_ultrafeedback_subsets", "table10_ppo_switches", "table11_ppo_batch", "fig4_kl_sweep",
               "fig6_7_ppo_curves", "seed000_ppo_dpo_grpo", "seed001_rm_dpo")


def _profiles_of(path: Path) -> list[str]:
    """The standard profiles a grid file declares, in PROFILES' order."""
    declared = profile_names(yaml.safe_load(path.read_text()))
    return [p for p in PROFILES if p in declared]


def test_every_paper_grid_has_the_four_profiles():
    names = {p.name for p in PROFILE_FILES}
    for grid in PAPER_GRIDS:
        assert f"{grid}.yaml" in names, grid
    for path in PROFILE_FILES:
        text = path.read_text()
        if path.stem in PAPER_GRIDS:
            assert _profiles_of(path) == list(PROFILES), path.name
        else:  # beyond the paper (e.g. grpo_switches): no paper scale to reproduce, and the header says so
            assert _profiles_of(path) in (list(PROFILES), list(PROFILES[1:])), path.name
            assert "paper" in _profiles_of(path) or "beyond the paper" in text, path.name
        assert "Report items:" in text, f"{path.name}: its header names the report items it exists for"


@pytest.mark.parametrize("path", PROFILE_FILES, ids=lambda p: p.stem)
def test_every_grid_validates_and_plans_at_every_profile_offline(path, capsys):
    from harness.cli import main

    for profile in _profiles_of(path):
        if _is_sweep(path):
            spec = load_sweep(path, profile=profile)
            _, plans = _probe_plans(spec)
            assert plans and spec.experiment.endswith(f"-{profile}")
            command = ["sweep", str(path), "--profile", profile, "--dry-run"]
        else:
            grid = load_grid(path, profile=profile)
            plans = plan_grid(grid)
            assert grid.profile == profile and grid.experiment.endswith(f"-{profile}")
            assert len(plans) == len(grid.cells) >= 2
            command = ["run", str(path), "--profile", profile, "--dry-run"]
        assert main(command) == 0, (path.name, profile)
        out = capsys.readouterr().out
        assert "cost estimate on" in out or "cost on" in out, (path.name, profile)
        # the estimate itself, not "cost estimate on DEVICE: not available: <why>" (harness/cli.py, harness/sweep/plan.py)
        assert ": not available: " not in out, (path.name, profile, out[-500:])


def test_paper_profiles_name_the_papers_models_full_data_and_a_gpt4_judge():
    grid = load_grid(ABLATIONS / "table1_datasets.yaml", profile="paper")
    assert {c.config.model for c in grid.cells} == {"allenai/tulu-2-13b"}
    assert len({c.config.dataset.name for c in grid.cells if c.config.dataset}) == 14
    assert all(c.config.judge.model == "gpt-4-0613" for c in grid.cells)
    assert grid.full_data and grid.device_profile == "tpu-v3-256"
    assert "paper11" not in grid.cells[0].config.eval.tasks and len(grid.cells[0].config.eval.tasks) == 11
    t3 = load_grid(ABLATIONS / "table3_reward_models.yaml", profile="paper")
    rms = {(c.config.reward_model.base, c.config.reward_model.dataset.name, c.resolved()["algorithm"]["kl_coef"])
           for c in t3.cells if not c.is_baseline}
    assert rms == {("allenai/tulu-2-13b", "ultrafeedback-fg", 0.05), ("allenai/tulu-2-13b", "rm-mix", 0.05),
                   ("allenai/tulu-2-70b", "ultrafeedback-fg", 0.0325), ("allenai/tulu-2-70b", "rm-mix", 0.0325)}


def test_launch_configs_parse_with_accelerate_and_map_to_ray_resources():
    fsdp = read_launch_config(config_path("ablations/launch/fsdp_13b_policy.yaml"))
    zero3 = read_launch_config(config_path("ablations/launch/zero3_70b_reward_model.yaml"))
    assert (fsdp.distributed_type, fsdp.num_processes, fsdp.mixed_precision) == ("FSDP", 8, "bf16")
    assert (zero3.distributed_type, zero3.num_processes) == ("DEEPSPEED", 8) and "ZeRO-3" in zero3.detail
    grid = load_grid(ABLATIONS / "table3_reward_models.yaml", profile="paper")
    resources = ray_resources(grid.launch)
    assert resources["train_reward_model"]["num_gpus"] == 8
    launch = resources["train_reward_model"]["accelerate"]
    assert launch["num_processes"] == 8 and launch["args"][:2] == [
        "--config_file", str(PROJECT_ROOT / "ablations/launch/zero3_70b_reward_model.yaml")]
    assert "engine" not in resources["evaluate"]
    # The paper profile's benchmarks run on vLLM: the evaluate stages carry it in their keys (a cell-level
    # block, `eval.engine`), while PPO's rollouts stay on the in-process engine of the cell.
    stages = unique_stages(plan_grid(grid))
    assert {s.config["engine"]["kind"] for s in stages if s.kind == "evaluate"} == {"vllm"}
    assert {s.config["engine"]["kind"] for s in stages
            if s.kind == "train_policy" and s.config["algorithm"]["name"] == "ppo"} == {"hf"}
    # The project's PPO is data-parallel only: a sharded launch of a PPO stage is named before compute.
    problems = plan_problems(grid.launch, unique_stages(plan_grid(grid)))
    assert problems and all("data-parallel only" in p for p in problems)


def _stage_hours(grid_file: str, kind: str, algorithm: str | None, dataset: str) -> float:
    grid = load_grid(ABLATIONS / grid_file, profile="paper")
    found = grid_cost(plan_grid(grid), "tpu-v3-256", grid.launch, full_data=True, kind_devices=False)
    for stage, est in found.stages:
        data = stage.inputs.get("data") or stage.inputs.get("prompts")
        if stage.kind == kind and data is not None and data.config["name"] == dataset and (
                algorithm is None or stage.config["algorithm"]["name"] == algorithm):
            return est.hours
    raise AssertionError(f"{grid_file}: no {kind} stage on {dataset}")


@pytest.mark.parametrize("grid_file", ["table1_datasets.yaml", "table2_dpo_vs_ppo.yaml"])
def test_paper_profile_cost_is_within_3x_of_the_papers_dpo_compute(grid_file):
    hours = _stage_hours(grid_file, "train_policy", "dpo", "ultrafeedback-fg")
    assert PAPER_HOURS["dpo"] / 3 <= hours <= PAPER_HOURS["dpo"] * 3, hours


def test_table2_paper_profile_reward_model_and_ppo_within_3x_of_the_paper():
    rm = _stage_hours("table2_dpo_vs_ppo.yaml", "train_reward_model", None, "ultrafeedback-fg")
    ppo = _stage_hours("table2_dpo_vs_ppo.yaml", "train_policy", "ppo", "ultrafeedback-fg")
    assert PAPER_HOURS["reward_model"] / 3 <= rm <= PAPER_HOURS["reward_model"] * 3, rm
    assert PAPER_HOURS["ppo"] / 3 <= ppo <= PAPER_HOURS["ppo"] * 3, ppo


def test_table11_paper_profile_reproduces_the_papers_speed_up_within_3x():
    grid = load_grid(ABLATIONS / "table11_ppo_batch.yaml", profile="paper")
    found = grid_cost(plan_grid(grid), "tpu-v3-256", full_data=True, kind_devices=False)
    hours = {}
    for stage, est in found.stages:
        if stage.kind == "train_policy":
            a = stage.config["algorithm"]
            if a["forward_at_minibatch_level"]:
                hours[(a["prompt_batch_size"], a["rollouts_per_prompt"])] = est.hours
    paper = {(64, 1): 60.0, (512, 1): 12.0, (512, 2): 16.0, (256, 4): 32.0}  # Table 11
    assert set(hours) == set(paper)
    for shape, reported in paper.items():
        assert reported / 3 <= hours[shape] <= reported * 3, (shape, hours[shape])
    assert hours[(64, 1)] / hours[(512, 1)] > 3  # the 8x batch trains several times faster


def test_dry_run_prints_per_stage_cell_and_total_cost_on_the_named_device(capsys):
    from harness.cli import main

    assert main(["run", str(ABLATIONS / "table2_dpo_vs_ppo.yaml"), "--profile", "paper", "--dry-run",
                 "--device-profile", "h100", "--usd-per-hour", "2.5"]) == 0
    out = capsys.readouterr().out
    assert "cost estimate on h100" in out and "$2.50 per device-hour" in out
    for part in ("per stage kind:", "per cell", "total (each distinct stage once)", "train_reward_model",
                 "train_policy[ppo]", "train_policy[dpo]"):
        assert part in out, part
    total = next(line for line in out.splitlines() if line.startswith("total (each distinct stage once)"))
    assert total.split()[-1] not in ("n/a", "0.00")  # money at the given rate
    assert main(["run", str(ABLATIONS / "table2_dpo_vs_ppo.yaml"), "--dry-run", "--device-profile", "h1000"]) == 2
    assert "unknown device profile 'h1000'" in capsys.readouterr().err


# --- profile errors name the YAML that wrote the bad value ------------------------------------------------

GRID = {
    "experiment": "prof",
    "base": {"model": "tiny-random-llama", "dataset": {"name": "smoke-lowercase", "max_rows": 8},
             "algorithm": {"name": "dpo", "beta": 0.1, "max_steps": 1}, "eval": {"tasks": ["smoke_lowercase"]}},
    "axes": {"seed": [1, 2]},
}


def _write(tmp_path: Path, profiles: dict, **top) -> Path:
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump({**GRID, **top, "profiles": profiles}, sort_keys=False))
    return path


def _error(path: Path, profile: str | None) -> str:
    with pytest.raises(GridError) as info:
        load_grid(path, profile=profile)
    return str(info.value)


def test_profile_errors_name_the_profiles_yaml_path(tmp_path):
    path = _write(tmp_path, {"cpu": {"base": {"algorithm": {"beta": -0.1}}},
                             "dotted": {"base": {"algorithm.betta": 0.2}},
                             "axis": {"axes": {"seed": [1, -3]}},
                             "inc": {"include": [{"algorithm.beta": 0.0}]}})
    message = _error(path, "cpu")
    assert "profiles.cpu.base.algorithm.beta: beta must be > 0" in message and "(profile cpu)" in message
    assert "profiles.dotted.base.algorithm.betta: unknown field" in _error(path, "dotted")
    assert "profiles.axis.axes.seed[1]" in _error(path, "axis")
    assert "profiles.inc.include[0]" in _error(path, "inc")
    # A value the file itself set keeps its own path, whichever profile is chosen.
    bad_base = _write(tmp_path, {"cpu": {"base": {"eval": {"limit": 2}}}},
                      base={**GRID["base"], "algorithm": {"name": "dpo", "beta": -1.0}})
    message = _error(bad_base, "cpu")
    assert "base.algorithm.beta: beta must be > 0" in message and "profiles.cpu.base.algorithm" not in message


def test_unknown_profile_and_malformed_profile_blocks(tmp_path):
    path = _write(tmp_path, {"cpu": {}, "tiny": {"base": {"model": "tiny-random-llama"}}})
    assert "no profile 'gpu'; profiles: cpu, tiny" in _error(path, "gpu")
    load_grid(path, profile="cpu")  # an empty profile is the file as written, in its own experiment
    assert load_grid(path, profile="cpu").experiment == "prof-cpu" and load_grid(path).experiment == "prof"
    assert "profiles.cpu.basee: not a key a profile can set" in _error(_write(tmp_path, {"cpu": {"basee": {}}}), None)
    assert "profiles.cpu.device_profile: unknown device profile 'tpu9'" in _error(
        _write(tmp_path, {"cpu": {"device_profile": "tpu9"}}), "cpu")
    message = _error(_write(tmp_path, {"paper": {"launch": {
        "train_policy": {"accelerate": {"num_processes": 4, "config_file": "ablations/launch/fsdp_13b_policy.yaml"}},
        "train_reward_model": {"accelerate": {"num_processes": 8, "config_file": "ablations/launch/nope.yaml"}},
        "evaluat": {"num_gpus": 1}, "evaluate": {"engine": {"kind": "vlm"}}}}}), "paper")
    assert "profiles.paper.launch.train_policy.accelerate.num_processes: 4, but ablations/launch/fsdp_13b_policy.yaml " \
           "says num_processes: 8" in message
    assert "profiles.paper.launch.train_reward_model.accelerate.config_file:" in message and "nope.yaml not found" in message
    assert "profiles.paper.launch.evaluat: unknown stage kind" in message
    assert "profiles.paper.launch.evaluate: engine: not a launch setting" in message and "base.eval.engine" in message


def test_profile_merges_blocks_replaces_axes_and_lists(tmp_path):
    path = _write(tmp_path, {"small": {"base": {"algorithm": {"max_steps": 2}, "eval.limit": 3},
                                       "axes": {"seed": [7]}, "include": [{"algorithm.beta": 0.3}]},
                             "noaxis": {"axes": {"seed": None}}})
    grid = load_grid(path, profile="small")
    algos = [c.resolved()["algorithm"] for c in grid.cells if not c.is_baseline]
    assert {(a["beta"], a["max_steps"]) for a in algos} == {(0.1, 2), (0.3, 2)}  # beta kept, steps merged in
    assert {c.config.seed for c in grid.cells if "seed" in c.overrides} == {7}
    assert all(c.config.eval.limit == 3 for c in grid.cells)
    assert [c.name for c in load_grid(path, profile="noaxis").cells] == ["sft", "base"]


def test_sweep_profile_errors_name_the_profile(tmp_path):
    raw = yaml.safe_load((ABLATIONS / "fig4_kl_sweep.yaml").read_text())
    raw["profiles"]["bad"] = {"base": {"algorithm": {"max_steps": 0}}}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(SweepError, match=r"profiles\.bad\.base\.algorithm\.max_steps"):
        load_sweep(path, profile="bad")
    with pytest.raises(SweepError, match="no profile 'huge'"):
        load_sweep(path, profile="huge")


# --- data and models that cannot be had here are named before any compute ---------------------------------

def test_unresolvable_data_and_models_are_named_before_compute(tmp_path, capsys, isolated_results):
    from harness.cli import main

    path = _write(tmp_path, {"far": {"base": {"model": "someone/not-cached-model",
                                              "dataset": {"name": "helpsteer", "max_rows": 8}}}})
    assert main(["run", str(path), "--profile", "far"]) == 2
    err = capsys.readouterr().err
    assert "cannot be had on this machine; nothing was run" in err
    assert "dataset 'helpsteer'" in err and "to provide it:" in err and "nvidia/HelpSteer" in err
    assert "model 'someone/not-cached-model'" in err and "huggingface-cli download someone/not-cached-model" in err
    assert not (isolated_results / "stages").exists() or not any((isolated_results / "stages").rglob("record.json"))
    assert not (isolated_results / "mlflow.db").exists()  # not even an experiment was created
    # The dry-run plans anyway and lists the same inputs.
    assert main(["run", str(path), "--profile", "far", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "inputs not available on this machine (2" in out and "dataset 'helpsteer'" in out


@pytest.mark.skipif(shared_data_dir() is None, reason="needs the real samples in ../shared/data")
def test_a_full_data_profile_refuses_a_local_sample_naming_it(capsys):
    from harness.cli import main

    assert main(["run", str(ABLATIONS / "table2_dpo_vs_ppo.yaml"), "--profile", "paper"]) == 2
    err = capsys.readouterr().err
    assert "dataset 'ultrafeedback-fg': the local files (preferences/ultrafeedback/argilla_cleaned_sample_1k.jsonl) " \
           "are a 1,000-row sample, and this profile is meant for the full 60,908 rows" in err
    assert "model 'allenai/tulu-2-13b'" in err
    # The cpu profile of the same file resolves everything here.
    from harness.resolution import unresolved_inputs

    assert unresolved_inputs(plan_grid(load_grid(ABLATIONS / "table2_dpo_vs_ppo.yaml", profile="cpu"))) == []


def test_cpu_profiles_to_run_here_fit_an_hour_on_two_cores():
    """table1, seed000 and seed001 at the cpu profile, priced on this machine's profile (cpu-2core): under an
    hour each (docs/cost.md: the estimate of training is ~1.3x high here, of decoding ~0.7x low)."""
    for name in ("table1_datasets", "seed000_ppo_dpo_grpo", "seed001_rm_dpo"):
        grid = load_grid(ABLATIONS / f"{name}.yaml", profile="cpu")
        found = grid_cost(plan_grid(grid), "cpu-2core")
        total = found.total()
        assert total is not None and total.hours < 1.0, (name, total.hours)
        assert math.isclose(sum(e.hours for _, e in found.stages), total.hours)


def test_measured_token_lengths_and_rows_are_used_for_local_samples():
    from harness.cost_plan import data_rows, token_lengths

    uf = token_lengths("ultrafeedback-fg")
    assert (uf.prompt, uf.chosen, uf.rejected, uf.note) == (170.9, 328.1, 246.0, "")
    assert "not measured here" in token_lengths("nectar").note
    assert data_rows({"name": "ultrafeedback-fg", "max_rows": None}) == (60908, "")
    assert data_rows({"name": "ultrafeedback-fg", "max_rows": 400}) == (400, "")
    assert cost_profiles.model_shape("HuggingFaceTB/SmolLM2-360M-Instruct").params > cost_profiles.model_shape("smollm2-135m-instruct").params


# --- the estimate of every reward form: a verifier, a reward-model ensemble, a given RM, a hub id -----------

def _rewarded_grid(*reward_models: dict) -> dict:
    """GRPO and PPO on the tiny model, against each reward form."""
    return {
        "experiment": "rewards",
        "baseline": False,
        "base": {"model": "tiny-random-llama", "prompts": {"name": "smoke-lowercase", "max_rows": 16},
                 "eval": {"tasks": ["smoke_lowercase"], "limit": 4}},
        "axes": {
            "algorithm": [
                {"name": "grpo", "max_steps": 2, "num_generations": 2, "per_device_train_batch_size": 4,
                 "gradient_accumulation_steps": 1, "max_completion_length": 8},
                {"name": "ppo", "max_steps": 2, "prompt_batch_size": 4, "minibatch_size": 4,
                 "generation_batch_size": 4, "max_new_tokens": 8, "value_init": "policy"},
            ],
            "reward_model": list(reward_models),
        },
    }


def test_dry_run_prices_a_verifier_reward_with_no_model_flops(tmp_path, capsys, tiny_model):
    """Issues #16/#18: a grid whose reward is a verifier (no `path`) gets its cost table, policy rows included."""
    from harness.cli import main

    path = tmp_path / "verifier.yaml"
    path.write_text(yaml.safe_dump(_rewarded_grid({"verifier": "smoke_lowercase_fraction"}), sort_keys=False))
    assert main(["run", str(path), "--dry-run", "--device-profile", "cpu-2core"]) == 0
    out = capsys.readouterr().out
    assert "cost estimate on cpu-2core" in out and ": not available: " not in out
    rows = [line.split() for line in out.splitlines() if line.startswith(("train_policy[grpo]", "train_policy[ppo]"))]
    assert len(rows) == 2, out[-2000:]
    for row in rows:
        assert row[2:4] == ["to", "run"] and float(row[-3]) > 0 and float(row[-2]) > 0, row  # hours, device-hours
    assert "note: rule-based reward: no reward-model forward" in out


def test_estimate_counts_each_reward_form(tiny_model):
    """A verifier costs no model FLOPs; a given RM (a folder, a hub id of a known shape) a forward of it per
    rollout; an ensemble a forward of each member (a trained one, an unknown hub id priced at the policy's
    shape with a note); alike under GRPO and PPO."""
    from harness.grid import build_grid

    forms = {"verifier": {"verifier": "smoke_lowercase_fraction"},
             "folder": {"path": tiny_model},
             "hub": {"path": "allenai/tulu-2-13b"},
             "ensemble": {"ensemble": [{"base": "tiny-random-llama",
                                        "dataset": {"name": "smoke-lowercase", "max_rows": 8}},
                                       {"path": "someone/unknown-rm"}], "combine": "wco"}}
    plans = plan_grid(build_grid(_rewarded_grid(*forms.values())))
    found = grid_cost(plans, "cpu-2core")
    by_id = {s.id: e for s, e in found.stages}
    policy = {}
    for plan in plans:
        form = next(name for name, rm in forms.items() if plan.cell.overrides["reward_model"] == rm)
        (stage,) = [s for s in plan.stages if s.kind == "train_policy"]
        policy[(plan.cell.config.algorithm.name, form)] = by_id[stage.id]
    assert len(policy) == 8
    for algorithm in ("grpo", "ppo"):
        verifier, folder, hub, ensemble = (policy[(algorithm, f)] for f in ("verifier", "folder", "hub", "ensemble"))
        assert "reward forward" not in verifier.flops_by_part
        assert "rule-based reward: no reward-model forward" in verifier.notes
        one = folder.flops_by_part["reward forward"]
        assert ensemble.flops_by_part["reward forward"] == pytest.approx(2 * one)
        assert "reward-model ensemble: 2 reward forwards per rollout" in ensemble.notes
        assert hub.flops_by_part["reward forward"] > 1000 * one  # Llama 2 13B's shape against the tiny model's
        assert ensemble.tokens_forward - verifier.tokens_forward == pytest.approx(
            2 * (folder.tokens_forward - verifier.tokens_forward))
        # everything but the reward forward is the same whatever the reward
        for other in (folder, hub, ensemble):
            assert {k: v for k, v in other.flops_by_part.items() if k != "reward forward"} == verifier.flops_by_part
    assert any("someone/unknown-rm" in n and "estimated with the policy's shape" in n for n in found.notes)


def test_best_of_n_scoring_counts_each_ensemble_member(tiny_model):
    """An evaluation that scores with the reward (best-of-N's picks) runs each member of an ensemble, and
    no model for a verifier."""
    from harness.grid import build_grid

    member = {"base": "tiny-random-llama", "dataset": {"name": "smoke-lowercase", "max_rows": 8}}
    scorer_flops = {}
    for name, rm in (("verifier", {"verifier": "smoke_lowercase_fraction"}), ("one", member),
                     ("two", {"ensemble": [member, {**member, "seed": 2}], "combine": "mean"})):
        spec = {"experiment": "bon", "baseline": True,
                "base": {"model": "tiny-random-llama", "reward_model": rm,
                         "eval": {"tasks": ["smoke_lowercase"], "limit": 4,
                                  "best_of_n": {"n": 4, "tasks": ["smoke_lowercase"]}}}}
        found = grid_cost(plan_grid(build_grid(spec)), "cpu-2core")
        (evaluation,) = [e for s, e in found.stages if s.kind == "evaluate"]
        scorer_flops[name] = evaluation.flops_by_part.get("bon/smoke_lowercase: scorer forward", 0.0)
    assert scorer_flops["verifier"] == 0.0 and scorer_flops["one"] > 0
    assert scorer_flops["two"] == pytest.approx(2 * scorer_flops["one"])


@pytest.mark.parametrize("grid_file", [g for g in PAPER_GRIDS if g != "fig4_kl_sweep"])
def test_paper_profiles_give_the_shared_model_stages_a_gpu(grid_file):
    """The shared reference pass and best-of-N sampling run a 13B model: without a launch entry the Ray
    backend would give them its default (one CPU) and hide the GPUs. (PPO's `train_policy` is the
    data-parallel caveat of docs/scale-out.md, named by `plan_problems`.)"""
    grid = load_grid(ABLATIONS / f"{grid_file}.yaml", profile="paper")
    kinds = {s.kind for s in unique_stages(plan_grid(grid))}
    resources = ray_resources(grid.launch)
    for kind in kinds & {"reference_logps", "sample_candidates", "evaluate"}:
        assert resources.get(kind, {}).get("num_gpus", 0) >= 1, (grid_file, kind)
