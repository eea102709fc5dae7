"""The PPO ablation grids (Table 2, Table 10, Table 11) validate and expand to the intended cells."""

from __future__ import annotations

from pathlib import Path

from harness.grid import load_grid

ABLATIONS = Path(__file__).resolve().parent.parent / "ablations"


def _algo(cell) -> dict:
    return cell.resolved()["algorithm"]


def test_table2_pairs_dpo_and_ppo_on_each_dataset_with_its_own_reward_model():
    grid = load_grid(ABLATIONS / "table2_dpo_vs_ppo.yaml")
    trained = [c for c in grid.cells if not c.is_baseline]
    assert len(trained) == 6 and any(c.is_baseline for c in grid.cells)
    by_dataset: dict[str, set[str]] = {}
    for cell in trained:
        cfg = cell.config
        assert cfg.reward_model.dataset.name == cfg.dataset.name  # the RM is trained on the cell's data
        by_dataset.setdefault(cfg.dataset.name, set()).add(cfg.algorithm.name)
    assert all(algos == {"dpo", "ppo"} for algos in by_dataset.values())
    ppo = next(c for c in trained if c.config.algorithm.name == "ppo")
    # Table 10 "Ours" is untouched by the scale-down
    algo = _algo(ppo)
    assert algo["value_init"] == "reward" and algo["eos_trick"] and algo["kl_coef"] == 0.05
    assert algo["advantage_whitening"] and not algo["reward_whitening"] and algo["forward_at_minibatch_level"]


def test_table10_flips_each_switch_once_from_the_paper_setting():
    grid = load_grid(ABLATIONS / "table10_ppo_switches.yaml")
    cells = {c.name: _algo(c) for c in grid.cells if not c.is_baseline}
    ours = cells["algorithm.value_init=reward"]
    switches = ("value_init", "eos_trick", "reward_normalization", "reward_whitening", "advantage_whitening",
                "adaptive_kl", "kl_clamp", "rollouts_per_prompt", "forward_at_minibatch_level")
    flipped = set()
    for algo in cells.values():
        diff = {k for k in switches if algo[k] != ours[k]}
        if len(diff) == 1:
            flipped |= diff
    assert flipped == set(switches)
    # rollouts per prompt doubles while the rollouts per batch stay at 8
    multi = next(a for a in cells.values() if a["rollouts_per_prompt"] == 2 and a["value_init"] == "reward")
    assert multi["prompt_batch_size"] * 2 == ours["prompt_batch_size"]


def test_table11_keeps_the_number_of_gradient_updates_fixed():
    grid = load_grid(ABLATIONS / "table11_ppo_batch.yaml")
    n_prompts = 128
    steps = set()
    rows = set()
    for cell in grid.cells:
        if cell.is_baseline:
            continue
        a = _algo(cell)
        batches = n_prompts // a["prompt_batch_size"]
        per_batch = a["prompt_batch_size"] * a["rollouts_per_prompt"] // (a["minibatch_size"] * a["gradient_accumulation_steps"])
        steps.add(batches * per_batch)
        rows.add((a["prompt_batch_size"], a["minibatch_size"], a["rollouts_per_prompt"], a["gradient_accumulation_steps"]))
    assert steps == {16}
    assert rows == {(8, 8, 1, 1), (64, 8, 1, 1), (64, 8, 2, 2), (32, 8, 4, 4)}  # Table 11 / 8
