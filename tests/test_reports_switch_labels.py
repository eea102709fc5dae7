"""Report labels of one-switch-at-a-time grids (Table 10 style: an axis plus `include` cells over the base, as
ablations/grpo_switches.yaml and table10_ppo_switches.yaml), from a real grid's cells as the runner logs them
(their resolved config flattened to params, their overrides); labels of factorial grids are checked on real
runs in test_reports_labels.py."""

from __future__ import annotations

from harness import tracking


def test_one_switch_at_a_time_labels_name_each_cells_own_switches():
    """A Table-10-style grid (an axis plus `include` cells, each flipping switches away from the base, as
    ablations/grpo_switches.yaml): each label names the switches its cell sets and no others, recipes
    (several switches) name all of theirs, and the base's values stay unnamed. Before, every label listed
    every switch (`epsilon_high=— · importance_sampling_level=— · loss_typ…`), cut at 72 characters."""
    from harness.grid import build_grid
    from harness.mlflow_layout import CellRun
    from reports.data import compact_labels

    grpo = {"name": "grpo", "num_generations": 2, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1}
    grid = build_grid({
        "experiment": "switches", "baseline": True,
        "base": {"model": "tiny-random-llama", "prompts": "smoke-lowercase", "algorithm": grpo,
                 "reward_model": {"verifier": "smoke_lowercase_fraction"}, "eval": {"tasks": ["smoke_lowercase"]}},
        "axes": {"algorithm.loss_type": ["grpo", "dapo"]},
        "include": [{"algorithm.beta": 0.0}, {"algorithm.epsilon_high": 0.28},
                    {"algorithm.loss_type": "dapo", "algorithm.epsilon_high": 0.28, "algorithm.beta": 0.0,
                     "algorithm.mask_truncated_completions": True}]})
    cells = [CellRun(run_id=cell.name, cell=cell.name, is_baseline=cell.is_baseline,
                     params=tracking.flatten(cell.resolved()), metrics={}, tags={}, overrides=cell.overrides)
             for cell in grid.cells]
    labels = dict(zip((c.cell for c in cells), compact_labels([[c] for c in cells]), strict=True))
    assert sorted(labels.values()) == sorted([
        "SFT", "GRPO · loss=grpo", "GRPO · loss=dapo", "GRPO · β=0.0", "GRPO · ε high=0.28",
        "GRPO · loss=dapo · β=0.0 · ε high=0.28 · mask truncated=True"]), labels
