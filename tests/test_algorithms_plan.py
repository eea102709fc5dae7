"""Wrong algorithm/data/reward combinations fail at plan time (`harness.grid.build_grid`, no compute),
naming the cell and the missing piece; the algorithm smoke grid validates and covers every algorithm."""

from __future__ import annotations

import pytest

from harness.grid import GridError, build_grid, load_grid

BASE = {"model": "tiny-random-llama", "eval": {"tasks": ["smoke_lowercase"]}}


def plan_error(base: dict, axes: dict | None = None) -> str:
    raw = {"experiment": "t", "base": {**BASE, **base}, "axes": axes or {}, "baseline": False}
    with pytest.raises(GridError) as info:
        build_grid(raw)
    return str(info.value)


@pytest.mark.parametrize("algorithm", ["grpo", "grpo-seed000", "rloo", "online-dpo", "ppo"])
def test_online_algorithm_without_reward(algorithm):
    message = plan_error({"dataset": "smoke-lowercase", "algorithm": algorithm})
    assert f"algorithm '{algorithm}' needs a reward" in message
    assert "reward_model" in message and "reward_function" in message and "[cell: base]" in message


@pytest.mark.parametrize("algorithm", ["kto", "dpo", "ipo", "simpo", "orpo"])
def test_pair_algorithm_on_prompt_only_set(algorithm):
    message = plan_error({"dataset": "smoke-lowercase-eval", "algorithm": algorithm})
    assert f"algorithm '{algorithm}' needs a preference dataset" in message
    assert "'smoke-lowercase-eval' is a prompt-only set" in message and "[cell: base]" in message


def test_pair_algorithm_with_only_prompts_and_online_algorithm_with_nothing():
    message = plan_error({"prompts": "smoke-lowercase-eval", "algorithm": "kto"})
    assert "trains on preference pairs: set `dataset`" in message
    message = plan_error({"reward_function": "lowercase", "algorithm": "grpo"})
    assert "trains on prompts: set `prompts`" in message


def test_two_rewards_are_ambiguous():
    message = plan_error({"dataset": "smoke-lowercase", "reward_function": "lowercase",
                          "reward_model": {"path": "tiny-random-llama"}, "algorithm": "grpo"})
    assert "both `reward_model` and `reward_function`" in message


def test_cell_name_and_axis_path_in_sweep_errors():
    """In a sweep, each failing cell is named, and config errors point at the YAML that set them."""
    message = plan_error(
        {"dataset": "smoke-lowercase"},
        axes={"algorithm": [{"name": "dpo"}, {"name": "grpo", "num_generations": 1}, {"name": "rloo"}]},
    )
    assert "axes.algorithm[1].num_generations: num_generations must be >= 2" in message
    assert "needs a reward" in message and "algorithm=rloo" in message
    assert "cell: algorithm=dpo" not in message


def test_algorithms_smoke_grid_covers_every_algorithm():
    from harness.algorithms import ALGORITHMS
    from harness.paths import PROJECT_ROOT

    grid = load_grid(PROJECT_ROOT / "ablations" / "algorithms_smoke.yaml")
    names = [c.config.algorithm.name for c in grid.cells if c.config.algorithm is not None]
    assert sorted(names) == ALGORITHMS.names()  # one cell per registered algorithm, none twice
    assert grid.cells[0].is_baseline
    for cell in grid.cells:
        assert cell.config.model == "smollm2-135m-instruct"
        assert cell.config.eval.tasks == ["smoke_lowercase", "policy_kl"]
        if cell.config.algorithm is not None:
            assert cell.config.dataset.name == "smoke-lowercase" and cell.config.reward_model.verifier == "smoke_lowercase_fraction"
            resolved = cell.config.algorithm.resolved()
            assert 0 < resolved["max_steps"] <= 24  # a few steps: the grid stays CPU-feasible
