"""Extension points (#17): an algorithm and a task registered from this module, with no other file touched,
plan, run on the tiny model, sweep, and appear in the report. Everything the harness needs to know about
them is a field of their `AlgorithmSpec` / `TaskSpec` (KL-coefficient field, launch constraints, online or
offline, best-of-N eligibility); nothing outside `harness/algorithms/` and `harness/evaluation/` names them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from harness.algorithms import ALGORITHMS, AlgorithmSpec, TrainContext, register
from harness.config_fields import CheckedConfig, NonNegativeFloat, PositiveFloat, PositiveInt
from harness.evaluation import TASKS, EvalContext, TaskResult, TaskSpec, register_task
from harness.generation import SamplingParams

ALGORITHM = "margin-dpo-test"
TASK = "brevity_test"
# A few built-in prompts: the task needs no data file, so it is always runnable.
PROMPTS = ["Name a colour.", "What is 2 plus 2?", "Say hello.", "Name a fruit."]
MAX_WORDS = 6
MAX_NEW_TOKENS = 12


# ---- the new algorithm: a DPO loss with a target margin, CleanRL-style (one loop, no trainer) ----------

@dataclass
class MarginDPOConfig(CheckedConfig):
    kl_weight: PositiveFloat = 0.1  # weighs the pull towards the reference (DPO's beta, named otherwise)
    margin: NonNegativeFloat = 0.0  # the log-ratio margin the loss asks for beyond zero
    learning_rate: PositiveFloat = 1e-4
    max_steps: PositiveInt = 2
    max_length: PositiveInt = 64


def _answer_logp(model: Any, tokenizer: Any, prompt: list[dict], answer: list[dict], max_length: int) -> Any:
    import torch

    prompt_text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"][: max_length // 2]
    answer_ids = tokenizer(answer[-1]["content"], add_special_tokens=False)["input_ids"][: max_length - len(prompt_ids)]
    logits = model(torch.tensor([prompt_ids + answer_ids])).logits[0, len(prompt_ids) - 1: -1].float()
    return torch.log_softmax(logits, -1).gather(-1, torch.tensor(answer_ids)[:, None]).sum()


def train_margin_dpo(ctx: TrainContext) -> dict[str, float]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg: MarginDPOConfig = ctx.config
    torch.manual_seed(ctx.seed)
    tokenizer = AutoTokenizer.from_pretrained(ctx.policy_path)
    policy = AutoModelForCausalLM.from_pretrained(ctx.policy_path, dtype=torch.float32)
    reference = AutoModelForCausalLM.from_pretrained(ctx.policy_path, dtype=torch.float32).eval()
    optimizer = torch.optim.AdamW(policy.parameters(), lr=cfg.learning_rate)
    loss = torch.tensor(0.0)
    for step in range(1, cfg.max_steps + 1):
        row = ctx.train_rows[(step - 1) % len(ctx.train_rows)]
        with torch.no_grad():
            ref_chosen = _answer_logp(reference, tokenizer, row["prompt"], row["chosen"], cfg.max_length)
            ref_rejected = _answer_logp(reference, tokenizer, row["prompt"], row["rejected"], cfg.max_length)
        chosen = _answer_logp(policy, tokenizer, row["prompt"], row["chosen"], cfg.max_length) - ref_chosen
        rejected = _answer_logp(policy, tokenizer, row["prompt"], row["rejected"], cfg.max_length) - ref_rejected
        loss = -torch.nn.functional.logsigmoid(cfg.kl_weight * (chosen - rejected) - cfg.margin)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        ctx.log({"train/loss": loss.item(), "train/margins": (chosen - rejected).item()}, step)
    policy.save_pretrained(ctx.out_dir / "model")
    tokenizer.save_pretrained(ctx.out_dir / "model")
    return {"train/final_loss": loss.item(), "train/steps": float(cfg.max_steps)}


def _one_process_only(config: MarginDPOConfig, processes: int) -> list[str]:
    return [] if processes == 1 else [f"margin ({config.margin}): this test loop runs on one process, not {processes}"]


# ---- the new task: a scorer over the built-in prompts -------------------------------------------------

def run_brevity(ctx: EvalContext) -> TaskResult:
    prompts = PROMPTS[: ctx.limit] if ctx.limit else PROMPTS
    outputs = ctx.generator.generate([[{"role": "user", "content": p}] for p in prompts],
                                     SamplingParams(max_new_tokens=MAX_NEW_TOKENS, temperature=0.0))
    samples = [{"prompt": p, "output": text, "short": len(text.split()) <= MAX_WORDS}
               for p, (text,) in zip(prompts, outputs)]
    rate = 100 * sum(s["short"] for s in samples) / len(samples)
    metrics = {f"{TASK}/short_rate": rate, f"{TASK}/n": float(len(samples))}
    return TaskResult(metrics, rate, samples)


@pytest.fixture(scope="module")
def registered() -> Iterator[tuple[AlgorithmSpec, TaskSpec]]:
    algorithm = register(AlgorithmSpec(
        name=ALGORITHM, config_cls=MarginDPOConfig, data="pairs", needs_reference=True, needs_reward=False,
        train=train_margin_dpo, defaults_source="this test", kl_coefficient_field="kl_weight",
        launch_problems=_one_process_only))
    task = register_task(TaskSpec(name=TASK, category="custom", run=run_brevity, uses=(),
                                  score_rule=f"% answers of at most {MAX_WORDS} words"))
    try:
        yield algorithm, task
    finally:
        ALGORITHMS.unregister(ALGORITHM)
        TASKS.unregister(TASK)


def grid_spec(experiment: str, **algorithm: Any) -> dict[str, Any]:
    return {"experiment": experiment, "baseline": True,
            "base": {"model": "tiny-random-llama", "dataset": {"name": "smoke-lowercase", "max_rows": 4},
                     "algorithm": {"name": ALGORITHM, **algorithm}, "eval": {"tasks": [TASK], "limit": 2}}}


def test_new_algorithm_and_task_are_validated_and_planned_from_their_specs(registered, tiny_model):
    from harness.config import BestOfNEval
    from harness.grid import GridError, build_grid
    from harness.launch import check_launch
    from harness.runner import plan_grid

    grid = build_grid(grid_spec("ext_plan", kl_weight=0.2))
    (policy_plan,) = [p for p in plan_grid(grid) if p.cell.name != "sft"]
    stages = {s.kind: s for s in policy_plan.stages}
    assert stages["train_policy"].config["algorithm"] == {"name": ALGORITHM, "kl_weight": 0.2, "margin": 0.0,
                                                          "learning_rate": 1e-4, "max_steps": 2, "max_length": 64}
    assert list(stages["evaluate"].config["tasks"]) == [TASK] and not stages["evaluate"].config["missing"]
    # Its fields are checked like any algorithm's, naming the field.
    with pytest.raises(GridError, match="kl_weight must be > 0"):
        build_grid(grid_spec("ext_bad", kl_weight=-1.0))
    # Its capabilities are read from the spec: launch constraints, KL field, offline, best-of-N eligibility.
    assert check_launch(stages["train_policy"].spec(), 1) == []
    (problem,) = check_launch(stages["train_policy"].spec(), 2)
    assert "algorithm.margin (0.0): this test loop runs on one process, not 2" in problem
    spec = ALGORITHMS.get(ALGORITHM)
    assert spec.kl_coefficient(stages["train_policy"].config["algorithm"]) == 0.2 and not spec.online
    assert BestOfNEval(tasks=[TASK]).tasks == [TASK]
    with pytest.raises(ValueError, match="not a best-of-N task: policy_kl"):
        BestOfNEval(tasks=[TASK, "policy_kl"])


def test_new_algorithm_gets_a_cost_estimate_from_its_spec(registered, tiny_model, tmp_path, capsys):
    """`--dry-run --device-profile` prices it with nothing but its spec: offline (trains on pairs), with a
    reference it recomputes every step (`needs_reference` without `reference_logps`)."""
    import yaml

    from harness.cli import main
    from harness.cost_plan import grid_cost
    from harness.grid import build_grid
    from harness.runner import plan_grid

    path = tmp_path / "ext.yaml"
    path.write_text(yaml.safe_dump(grid_spec("ext_cost", kl_weight=0.2)))
    assert main(["run", str(path), "--dry-run", "--device-profile", "cpu-2core"]) == 0
    out = capsys.readouterr().out
    assert "cost estimate on cpu-2core" in out and ": not available: " not in out
    (row,) = [line.split() for line in out.splitlines() if line.startswith(f"train_policy[{ALGORITHM}]")]
    assert row[2:4] == ["to", "run"] and float(row[-3]) > 0  # hours
    found = grid_cost(plan_grid(build_grid(grid_spec("ext_cost", kl_weight=0.2))), "cpu-2core")
    (estimate,) = [e for s, e in found.stages if s.kind == "train_policy"]
    assert ALGORITHMS.get(ALGORITHM).reference_pass == "per_step"
    train = estimate.flops_by_part["train (forward + backward)"]
    # 2 steps of 1 pair: training is 3 forwards, the per-step reference one forward of the same pairs
    assert estimate.flops_by_part["reference forward (per_step)"] == pytest.approx(train / 3)


@pytest.mark.slow  # 28-83 s on the shared 2-core machine (load 7-11); the plan test above is the fast one
def test_new_algorithm_and_task_run_sweep_and_appear_in_the_report(registered, tiny_model, one_thread, tmp_path):
    from harness import tracking
    from harness.grid import build_grid
    from harness.runner import run_grid
    from harness.sweep.spec import parse_sweep
    from harness.sweep.workers import run_sweep
    from reports.build import build_report

    # A real run on the tiny model: the algorithm trains, the task evaluates the policy and the baseline.
    summary = run_grid(build_grid(grid_spec("ext_run", kl_weight=0.2)), echo=lambda _: None)
    assert len(summary.logged_cells) == 2 and not summary.failed_cells
    # A sweep over the algorithm's own KL field: each trial is tagged with its KL coefficient from the spec.
    weights = [0.05, 0.5]
    sweep = {**grid_spec("ext_run"), "baseline": False,
             "search": {"algorithm.kl_weight": {"type": "categorical", "choices": weights}},
             "objective": {"metric": f"{TASK}/short_rate", "direction": "maximize"},
             "n_trials": 2, "sampler": {"name": "grid"}}
    sweep["experiment"] = "ext_run"
    (study,) = run_sweep(parse_sweep(sweep), echo=lambda _: None).values()
    assert [t["state"] for t in study["trials"]] == ["COMPLETE", "COMPLETE"]

    client = tracking.client()
    runs = client.search_runs([client.get_experiment_by_name("ext_run").experiment_id], max_results=100)
    cells = [r for r in runs if r.data.tags.get("harness.run_type") == "cell"]
    trials = [r for r in cells if "harness.study" in r.data.tags]
    assert sorted(float(r.data.tags["harness.kl_coefficient"]) for r in trials) == weights
    assert all(r.data.tags["harness.kl_coefficient"] == r.data.params["algorithm.kl_weight"] for r in trials)
    policies = [r for r in cells if r.data.params.get("algorithm.name") == ALGORITHM]
    assert len(policies) == 3 and all(f"{TASK}/short_rate" in r.data.metrics for r in cells)

    # The report: the algorithm's cells in Table 5 with the task's column, and Fig. 4 over its KL field.
    result = build_report("ext_run", tmp_path / "report", tables=["table5"], figures=["fig4"], n_boot=20)
    assert not result.skipped, result.skipped
    table = result.tables["table5"]
    (column,) = [i for i, c in enumerate(table.columns) if TASK in c]
    rows = {" ".join(r.labels): r for r in table.rows}
    assert any(ALGORITHM.upper() in label or ALGORITHM in label for label in rows), list(rows)
    logged = {round(r.data.metrics[f"{TASK}/score"], 6) for r in cells}
    assert {round(r.entries[column].value, 6) for r in table.rows} <= logged
    points = [p for p in result.figures["fig4"].data if p["metric"] == f"{TASK}/score"]
    assert sorted(p["x"] for p in points) == [0.05, 0.2, 0.5]
