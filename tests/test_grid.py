"""Grid spec validation: errors name the YAML path (and list valid names) before anything runs."""

from __future__ import annotations

import pytest
import yaml

from harness.grid import GridError, build_grid, load_grid

BASE = {
    "model": "tiny-random-llama",
    "dataset": {"name": "smoke-lowercase", "max_rows": 8},
    "algorithm": {"name": "dpo", "max_steps": 1},
    "eval": {"tasks": ["smoke_lowercase"], "limit": 2},
}


def grid(**overrides):
    raw = {"experiment": "t", "base": {k: (dict(v) if isinstance(v, dict) else v) for k, v in BASE.items()}}
    raw.update(overrides)
    return raw


def error_of(raw) -> str:
    with pytest.raises(GridError) as info:
        build_grid(raw)
    return str(info.value)


def test_expands_axes_with_baseline_first():
    g = build_grid(grid(axes={"algorithm.beta": [0.1, 0.5], "seed": [1, 2]}))
    assert [c.name for c in g.cells] == [
        "sft", "algorithm.beta=0.1,seed=1", "algorithm.beta=0.1,seed=2",
        "algorithm.beta=0.5,seed=1", "algorithm.beta=0.5,seed=2",
    ]
    assert g.cells[0].config.algorithm is None
    assert g.cells[3].config.algorithm.resolved()["beta"] == 0.5
    # unset fields resolve to the paper defaults of the algorithm's config dataclass
    assert g.cells[1].config.algorithm.resolved()["learning_rate"] == 5e-7


def test_include_and_exclude():
    g = build_grid(grid(axes={"algorithm.beta": [0.1, 0.5]}, exclude=[{"algorithm.beta": 0.5}],
                        include=[{"algorithm.beta": 0.9, "seed": 7}], baseline=False))
    assert [c.name for c in g.cells] == ["algorithm.beta=0.1", "algorithm.beta=0.9,seed=7"]
    assert g.cells[1].config.seed == 7


def test_unknown_field_names_yaml_path():
    raw = grid()
    raw["base"]["algorithm"]["betta"] = 0.2
    message = error_of(raw)
    assert "base.algorithm.betta" in message
    assert "valid fields" in message and "beta" in message


def test_unknown_top_level_cell_field():
    raw = grid()
    raw["base"]["evl"] = {}
    assert "base.evl" in error_of(raw)


def test_unknown_dataset_lists_valid_names():
    message = error_of(grid(axes={"dataset": ["smoke-lowercase", "no-such-data"]}))
    assert "axes.dataset[1]" in message
    assert "no-such-data" in message and "smoke-lowercase" in message


def test_bad_type_in_axis_names_index():
    message = error_of(grid(axes={"algorithm.beta": [0.1, "high"]}))
    assert "axes.algorithm.beta[1]" in message
    assert "valid number" in message


def test_unknown_algorithm_and_task():
    assert "valid algorithm names" in error_of(grid(axes={"algorithm": ["dpo", "dpox"]}))
    raw = grid()
    raw["base"]["eval"] = {"tasks": ["nope"]}
    message = error_of(raw)
    assert "base.eval.tasks" in message and "smoke_lowercase" in message


def test_wrong_combination_names_cell_and_missing_piece():
    raw = grid()
    raw["base"]["dataset"] = "smoke-lowercase-eval"
    message = error_of(raw)
    assert "prompt-only" in message and "cell: base" in message


def test_unknown_grid_key_and_missing_file(tmp_path):
    assert "colours" in error_of({"experiment": "t", "colours": 1})
    with pytest.raises(GridError, match="does not exist"):
        load_grid(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("experiment: [unclosed")
    with pytest.raises(GridError, match="not valid YAML"):
        load_grid(bad)


def test_every_shipped_grid_validates():
    from harness.paths import PROJECT_ROOT

    for path in sorted((PROJECT_ROOT / "ablations").glob("*.yaml")):
        spec = yaml.safe_load(path.read_text())
        assert spec.get("experiment"), path
        if "search" in spec:
            continue  # an Optuna sweep file: validated by tests/test_sweep.py
        load_grid(path)  # raises GridError naming the problem
