"""The over-optimisation monitor (harness/monitor.py): its flags on hand-made curves, its place in the plan,
and a real tiny-model run through the runner in which it flags a deliberately hackable reward (a proxy that
pays for length, judged by a gold verifier that does not) and not the honest one, with the flags as MLflow
tags and in the report. Plus the judge as the gold signal, against the project's scripted judge server."""

from __future__ import annotations

import random
import re
import statistics

import pytest

from harness import monitor
from harness.grid import GridError, build_grid
from harness.runner import plan_grid

SETTINGS = monitor.Settings(window=3, length_growth=0.5)


def rows(proxy: list[float], gold: list[float] | None = None, length: list[float] | None = None) -> list[dict]:
    out = []
    for i, p in enumerate(proxy):
        row = {"step": 2 * i, monitor.PROXY: p, monitor.LENGTH: (length or [10.0] * len(proxy))[i]}
        if gold is not None:
            row[monitor.GOLD] = gold[i]
        out.append(row)
    return out


@pytest.mark.parametrize("proxy, gold, expected", [
    ([0.1, 0.2, 0.3, 0.5], [0.9, 0.9, 0.7, 0.4], True),      # Gao et al.'s pattern over the last 3 points
    ([0.1, 0.2, 0.3, 0.5], [0.1, 0.2, 0.4, 0.6], False),     # both rise: honest progress
    ([0.5, 0.4, 0.3, 0.2], [0.9, 0.8, 0.7, 0.6], False),     # both fall: a failing run, not over-optimisation
    ([0.1, 0.3, 0.2, 0.5], [0.9, 0.5, 0.7, 0.4], True),      # noisy but rising / falling over the window
    ([0.1, 0.6, 0.5, 0.4], [0.9, 0.5, 0.4, 0.3], False),     # proxy peaked before the window: not rising now
    ([0.2, 0.2, 0.2, 0.2], [0.9, 0.8, 0.7, 0.6], False),     # flat proxy
])
def test_overoptimisation_flag_on_hand_made_curves(proxy, gold, expected):
    flag, why = monitor.overoptimisation(rows(proxy, gold), window=3)
    assert flag is expected, why
    assert why.startswith("flagged" if expected else "not flagged") and "over steps 2-6" in why


def test_overoptimisation_is_undetermined_without_what_it_needs():
    assert monitor.overoptimisation(rows([0.1, 0.2, 0.3]), 3) == (
        None, "undetermined: no gold signal (set monitor.gold: a reward model, a verifier or judge)")
    no_proxy = [{k: v for k, v in r.items() if k != monitor.PROXY} for r in rows([0.1, 0.2, 0.3], [0.3, 0.2, 0.1])]
    assert monitor.overoptimisation(no_proxy, 3)[0] is None
    flag, why = monitor.overoptimisation(rows([0.1, 0.2], [0.3, 0.2]), 3)
    assert flag is None and "2 evaluated points" in why


def test_length_growth_flag():
    assert monitor.length_growth(rows([0.0] * 3, length=[10.0, 12.0, 16.0]), 0.5)[0] is True  # x1.6
    assert monitor.length_growth(rows([0.0] * 3, length=[10.0, 20.0, 14.0]), 0.5)[0] is False  # x1.4 at the end
    metrics, tags = monitor.flags(rows([0.1, 0.2, 0.3], [0.3, 0.2, 0.1], [10.0, 12.0, 16.0]), SETTINGS)
    assert metrics == {monitor.FLAG_OVEROPTIMISATION: 1.0, monitor.FLAG_LENGTH: 1.0}
    assert set(tags) == {"harness.monitor.overoptimisation", "harness.monitor.length_growth"}


GRPO = {"name": "grpo", "num_generations": 4, "per_device_train_batch_size": 8, "gradient_accumulation_steps": 1,
        "max_steps": 12, "learning_rate": 1.0e-3, "warmup_ratio": 0.0, "max_completion_length": 48, "beta": 0.0,
        "temperature": 1.0}
MONITOR = {"gold": {"verifier": "smoke_lowercase"}, "prompts": {"name": "smoke-lowercase-eval"}, "limit": 8,
           "samples_per_prompt": 4, "max_new_tokens": 48, "length_growth": 0.25, "refusal_limit": 2}


def grid_spec(model: str, **base: object) -> dict:
    return {"experiment": "monitor-tiny", "baseline": False,
            "base": {"model": model, "prompts": {"name": "smoke-lowercase", "max_rows": 64}, "algorithm": GRPO,
                     "eval": {"tasks": ["smoke_lowercase"], "limit": 4, "checkpoint_every": 4}, "monitor": MONITOR,
                     **base},
            # the hackable proxy (pays for length only) and the honest one (the gold verifier's dense version)
            "axes": {"reward_model": [{"verifier": "length_bonus"}, {"verifier": "smoke_lowercase_fraction"}]}}


def test_monitor_is_planned_only_with_checkpoint_evaluations(tiny_model):
    spec = grid_spec(tiny_model)
    plan = plan_grid(build_grid(spec))[0]
    evaluate = plan.stage("evaluate")
    assert evaluate.config["monitor"]["proxy"] == {"role": "reward_model",
                                                   "reward": {"verifier": "length_bonus", "format_weight": 0.0}}
    assert evaluate.config["monitor"]["gold"]["reward"] == {"verifier": "smoke_lowercase", "format_weight": 0.0}
    assert evaluate.inputs["monitor_prompts"].config["name"] == "smoke-lowercase-eval"
    spec["base"]["eval"] = {"tasks": ["smoke_lowercase"], "limit": 4}
    assert "monitor" not in plan_grid(build_grid(spec))[0].stage("evaluate").config
    # a gold reward model trained by the grid is its own stage, an input of the evaluate stage
    spec = grid_spec(tiny_model, monitor={"gold": {"base": tiny_model, "dataset": {"name": "smoke-lowercase",
                                                                                    "max_rows": 16}}})
    evaluate = plan_grid(build_grid(spec))[0].stage("evaluate")
    assert evaluate.inputs["monitor_gold"].kind == "train_reward_model"


def test_judge_as_gold_needs_a_judge(tiny_model):
    with pytest.raises(GridError, match="monitor.gold: judge compares each checkpoint's samples"):
        build_grid(grid_spec(tiny_model, monitor={"gold": "judge"}))


@pytest.fixture(scope="module")
def tiny_sft(tiny_model, tmp_path_factory) -> str:
    """A tiny "SFT policy": the random tiny Llama taught (plain next-token loss, 120 steps) to answer the
    smoke prompts with their short answers, half of them lowercase, half in ordinary case, ending with EOS.
    Its samples are short and about a third all-lowercase: room for the gold verifier to move both ways."""
    import torch
    from transformers import AutoModelForCausalLM

    from datasets_registry import prepare
    from harness.generation import render_prompt
    from harness.models import load_tokenizer

    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 2-layer model: more threads only contend
    tok = load_tokenizer(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    seqs = []
    for row in prepare("smoke-lowercase", seed=0).rows:
        prompt = tok(render_prompt(tok, row["prompt"], True), add_special_tokens=False)["input_ids"]
        for key in ("chosen", "rejected"):
            answer = tok(row[key][0]["content"] + tok.eos_token, add_special_tokens=False)["input_ids"]
            seqs.append((prompt, answer))
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3)
    rng = random.Random(0)
    try:
        for _ in range(120):
            batch = rng.sample(seqs, 16)
            width = max(len(p) + len(a) for p, a in batch)
            ids = torch.full((16, width), tok.pad_token_id)
            labels = torch.full((16, width), -100)
            mask = torch.zeros((16, width), dtype=torch.long)
            for i, (p, a) in enumerate(batch):
                ids[i, : len(p) + len(a)] = torch.tensor(p + a)
                mask[i, : len(p) + len(a)] = 1
                labels[i, len(p) : len(p) + len(a)] = torch.tensor(a)
            model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
            opt.step()
            opt.zero_grad()
    finally:
        torch.set_num_threads(threads)
    out = tmp_path_factory.mktemp("tiny-sft")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


@pytest.mark.slow  # ~55 s: two training runs with checkpoint evaluations
def test_monitor_flags_the_hackable_reward_and_not_the_honest_one(tiny_sft, tmp_path, one_thread):
    from harness import tracking
    from harness.runner import run_grid
    from reports.build import build_report

    grid = build_grid(grid_spec(tiny_sft))
    summary = run_grid(grid, echo=lambda _: None)
    assert not summary.failed_cells and len(summary.logged_cells) == 2
    hack, honest = (summary.cell_run_ids[c.name] for c in grid.cells)
    client = tracking.client()
    hack_run, honest_run = client.get_run(hack), client.get_run(honest)

    assert hack_run.data.tags["harness.monitor.overoptimisation"].startswith("flagged: the proxy reward rose")
    assert hack_run.data.metrics["monitor/flag_overoptimisation"] == 1.0
    assert hack_run.data.tags["harness.monitor.length_growth"].startswith("flagged: responses grew")
    assert honest_run.data.tags["harness.monitor.overoptimisation"].startswith("not flagged")
    assert honest_run.data.metrics["monitor/flag_overoptimisation"] == 0.0
    assert honest_run.data.metrics["monitor/flag_length_growth"] == 0.0

    def curve(run_id: str, key: str) -> list[float]:
        return [m.value for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]

    # what the flags read: steps 0 (SFT), 4, 8, 12 (final)
    assert [m.step for m in client.get_metric_history(hack, "monitor/proxy_reward")] == [0, 4, 8, 12]
    assert curve(hack, "monitor/proxy_reward")[-1] > curve(hack, "monitor/proxy_reward")[0]
    assert curve(hack, "monitor/gold_reward")[-1] < curve(hack, "monitor/gold_reward")[0]
    assert curve(honest, "monitor/gold_reward")[-1] > curve(honest, "monitor/gold_reward")[0]
    # the hackable proxy rewards exactly what it says: length (characters / 200) of the monitor's samples
    assert curve(hack, "monitor/response_length")[-1] > 1.25 * curve(hack, "monitor/response_length")[0]
    # the KL to the SFT model starts at 0 (the SFT model itself) and grows with training
    kl = curve(hack, "monitor/kl")
    assert kl[0] == pytest.approx(0.0, abs=1e-4) and kl[-1] > kl[1] > 0
    refusal = hack_run.data.tags["harness.monitor.refusal"]
    assert ("monitor/refusal_rate_safe" in hack_run.data.metrics) == refusal.startswith("XSTest string-match")

    report = build_report("monitor-tiny", tmp_path / "report", tables=["overoptimisation"], figures=["monitor"],
                          ci=False)
    table = report.tables["overoptimisation"]
    flags = {row.labels[0]: [e.fmt_value() for e in row.entries[-2:]] for row in table.rows}
    assert sorted(flags.values()) == [["flagged", "flagged"], ["not flagged", "not flagged"]]
    assert "monitor" in report.figures and (report.out_dir / "figures" / "monitor.png").exists()


def test_judge_as_gold_is_the_win_rate_against_the_sft_samples(tiny_model, scripted_judge):
    """Gold = the judge's win rate (ties half) of a model's samples against the SFT model's samples. The
    scripted judge prefers an all-lowercase response, so the expected win rate follows from the texts."""
    from datasets_registry import prepare
    from harness.judge.client import judge_client_from_settings
    from harness.models import load_causal_lm

    server = scripted_judge([{"pattern": r"\[Response A\]\n[^A-Z\[]*\n\[End of Response A\]", "reply": "A"}],
                            default="B")
    judge = judge_client_from_settings(server.settings)
    reference, tok = load_causal_lm(tiny_model)
    prompt_rows = prepare("smoke-lowercase-eval", seed=0).rows[:4]
    settings = monitor.Settings(limit=4, samples_per_prompt=2, max_new_tokens=8, refusal_limit=0)
    reference_texts = ["all lowercase here"] * (4 * 2)
    got = monitor.measure(tiny_model, reference, tok, prompt_rows, None, None, settings, seed=2, batch_size=4,
                          judge=judge, sft_texts=reference_texts)
    # The reference is all lowercase, so it wins its own order; a sample wins its order when it has no capital
    # (or "["): then the orders disagree (a tie, 0.5), otherwise the reference wins both (0).
    expected = statistics.fmean(0.5 if re.search(r"[A-Z\[]", text) is None else 0.0 for text in got.texts)
    assert got.metrics[monitor.GOLD] == pytest.approx(expected)
