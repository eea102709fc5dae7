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


# --- bad grids that used to pass silently: each fails at load, naming the YAML path or the file -------------

def test_empty_axis_is_an_error_not_a_grid_of_only_the_baseline():
    for baseline in (True, False):
        message = error_of(grid(axes={"algorithm.beta": []}, baseline=baseline))
        assert "axes.algorithm.beta: empty list" in message


def test_repeated_axis_value():
    assert "axes.seed[2]: repeats axes.seed[0]" in error_of(grid(axes={"seed": [1, 2, 1]}))


def test_exclude_naming_an_unknown_field_or_matching_nothing():
    message = error_of(grid(axes={"algorithm.beta": [0.1, 0.5]}, exclude=[{"algorithm.betta": 0.5}]))
    assert "exclude[0].algorithm.betta: unknown field" in message and "beta" in message
    message = error_of(grid(axes={"algorithm.beta": [0.1, 0.5]}, exclude=[{"seeed": 1}]))
    assert "exclude[0].seeed: unknown field" in message
    message = error_of(grid(axes={"algorithm.beta": [0.1, 0.5]},
                            exclude=[{"algorithm.beta": 0.5}, {"algorithm.beta": 0.7}]))
    assert "exclude[1]: {'algorithm.beta': 0.7} matches no cell of the axes" in message
    assert "algorithm.beta: 0.1, 0.5" in message and "exclude[0]" not in message


def test_include_naming_an_unknown_field_or_repeating_a_cell():
    message = error_of(grid(include=[{"algorithm.betta": 0.5}]))
    assert "include[0].algorithm.betta: unknown field" in message
    message = error_of(grid(axes={"algorithm.beta": [0.1, 0.5]}, include=[{"algorithm.beta": 0.5}]))
    assert "include[0]: the same cell as algorithm.beta=0.5" in message


def test_zero_cells_is_an_error():
    message = error_of(grid(axes={"algorithm.beta": [0.1]}, exclude=[{"algorithm.beta": 0.1}], baseline=False))
    assert "exclude removes all 1 cell(s) of the axes" in message


def test_duplicated_yaml_key_names_path_and_lines(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("experiment: t\nbase:\n  model: tiny-random-llama\n  algorithm:\n    name: dpo\n"
                    "    beta: 0.1\n    beta: 0.5\naxes:\n  seed: [1]\n  seed: [2]\n")
    with pytest.raises(GridError) as info:
        load_grid(path)
    message = str(info.value)
    assert str(path) in message
    assert "base.algorithm.beta: line 7 repeats the key of line 6" in message
    assert "axes.seed: line 10 repeats the key of line 9" in message


def test_unreadable_grid_files_name_the_file(tmp_path):
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes(b"experiment: t\ndescription: caf\xe9 au lait\n")
    with pytest.raises(GridError, match=r"latin1\.yaml:2: not UTF-8 text \(byte 0xe9 at column 17\)"):
        load_grid(latin1)
    with pytest.raises(GridError, match=rf"{tmp_path} is a directory, not a grid file \(it holds latin1.yaml\)"):
        load_grid(tmp_path)


def test_sweep_file_given_to_run_points_at_harness_sweep():
    from harness.paths import PROJECT_ROOT

    with pytest.raises(GridError, match=r"fig4_kl_sweep.yaml is an Optuna sweep file .* run it with `harness sweep "):
        load_grid(PROJECT_ROOT / "ablations" / "fig4_kl_sweep.yaml")


def test_cli_prints_one_message_and_the_traceback_only_with_verbose(tmp_path, capsys):
    from harness.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(grid(base={**BASE, "algorithm": {"name": "dpo", "beta": -0.1}})))
    assert main(["run", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "base.algorithm.beta: beta must be > 0 (got -0.1)" in err and "Traceback" not in err
    # A user error raised inside a sub-command (a data file that is not UTF-8) reads the same way ...
    data = tmp_path / "train.jsonl"
    data.write_bytes(b'{"chosen": "caf\xe9"}\n')
    assert main(["data", "prepare", "hh-rlhf", "--file", str(data)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"error: {data}:1: not UTF-8 text (byte 0xe9 at column 16); save the file as UTF-8"
    # ... and -v (anywhere on the line) adds the traceback.
    assert main(["data", "prepare", "hh-rlhf", "--file", str(data), "-v"]) == 2
    assert "Traceback" in capsys.readouterr().err
