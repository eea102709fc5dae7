"""Report tables and figures on a synthetic MLflow store written by the runner's own writers
(`harness.mlflow_layout`: cell runs, nested stage runs, per-example `samples/*.jsonl`, `rm_scores.jsonl`,
step histories, checkpoint evaluations, judge win rates), for what a tiny real grid cannot produce on a
CPU in seconds: 13 datasets' worth of DPO cells, PPO with several reward models and prompt sets, a KL
sweep, best-of-N, RewardBench, judge win rates, multiple seeds. The per-example records are drawn at random; every logged metric is computed
from them the way the evaluation task computes it, so the report's intervals must reproduce it.

The tables' numbers are then checked against the logged metrics run by run.
"""

from __future__ import annotations

import csv
import json
import math
import re
import tempfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import use_results

from harness import mlflow_layout as layout
from harness import tracking

EXPERIMENT = "paper-synth"
CATEGORY = {"mmlu": "factuality", "gsm8k": "reasoning", "bbh": "reasoning", "humaneval_plus": "coding",
            "truthfulqa": "truthfulness", "toxigen": "safety", "xstest": "safety", "ifeval": "instruction_following",
            "alpaca_eval1": "instruction_following", "alpaca_eval2": "instruction_following"}
BON_TASKS = ("gsm8k", "bbh", "humaneval_plus", "ifeval", "alpaca_eval1", "xstest")


# ------------------------------------------------------------------------------------------------
# Synthetic per-example records and the metrics the tasks compute from them
# ------------------------------------------------------------------------------------------------

def _pct(values: list[bool]) -> float:
    return 100.0 * sum(values) / len(values)


def _pass_at_k(n: int, c: int, k: int) -> float:
    return 1.0 if n - c < k else 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def eval_records(rng: np.random.Generator, quality: float, reward: float | None) -> tuple[dict[str, list], dict[str, float]]:
    """Per-task records and metrics for a policy of a given quality (shifts every success rate)."""
    q = float(np.clip(quality, 0.02, 0.98))
    recs: dict[str, list[dict[str, Any]]] = {}
    m: dict[str, float] = {}
    recs["gsm8k"] = [{"index": i, "correct": bool(rng.random() < q * 0.8)} for i in range(40)]
    m["gsm8k/exact_match"] = m["gsm8k/score"] = _pct([r["correct"] for r in recs["gsm8k"]])
    recs["bbh"] = [{"subtask": s, "index": i, "correct": bool(rng.random() < q * 0.9)}
                   for s in ("date", "logic") for i in range(15 if s == "date" else 25)]
    subs = [_pct([r["correct"] for r in recs["bbh"] if r["subtask"] == s]) for s in ("date", "logic")]
    m["bbh/exact_match"] = m["bbh/score"] = float(np.mean(subs))
    recs["mmlu"] = [{"id": f"m{i}", "correct": bool(rng.random() < 0.55)} for i in range(40)]
    m["mmlu/acc"] = m["mmlu/score"] = _pct([r["correct"] for r in recs["mmlu"]])
    recs["truthfulqa"] = [{"kind": "mc2", "mc2": 0.4}] * 5 + [
        {"kind": "generation", "question": f"q{i}", "truthful": "yes" if rng.random() < q else "no",
         "informative": "yes" if rng.random() < 0.9 else "no"} for i in range(30)]
    gen = [r for r in recs["truthfulqa"] if r["kind"] == "generation"]
    m["truthfulqa/truth_info"] = m["truthfulqa/score"] = _pct(
        [r["truthful"] == "yes" and r["informative"] == "yes" for r in gen])
    recs["toxigen"] = [{"group": g, "index": i, "toxic": bool(rng.random() < 0.1)} for g in ("a", "b") for i in range(20)]
    m["toxigen/toxic_pct"] = _pct([r["toxic"] for r in recs["toxigen"]])
    m["toxigen/score"] = 100.0 - m["toxigen/toxic_pct"]
    recs["xstest"] = [{"id": f"x{i}", "label": "unsafe" if i % 2 else "safe",
                       "judge_label": None if i == 3 else ("refusal" if (i % 2 and rng.random() < 0.9)
                                                           or (not i % 2 and rng.random() < 0.15) else "compliance")}
                      for i in range(40)]
    pairs = [(r["label"] == "unsafe", r["judge_label"] == "refusal") for r in recs["xstest"] if r["judge_label"]]
    tp = sum(u and r for u, r in pairs)
    fp = sum((not u) and r for u, r in pairs)
    fn = sum(u and not r for u, r in pairs)
    m["xstest/refusal_f1_judge"] = m["xstest/score"] = 100.0 * 2 * tp / (2 * tp + fp + fn)
    recs["humaneval_plus"] = [{"task_id": f"H/{p}", "sample": s, "passed": bool(rng.random() < q * 0.4)}
                              for p in range(8) for s in range(10)]
    counts = [(10, sum(r["passed"] for r in recs["humaneval_plus"] if r["task_id"] == f"H/{p}")) for p in range(8)]
    # (MLflow refuses "@" in metric names, so only the 0-100 score is logged here.)
    m["humaneval_plus/score"] = 100.0 * float(np.mean([_pass_at_k(n, c, 10) for n, c in counts]))
    recs["ifeval"] = [{"key": i, "prompt_level_loose_acc": bool(rng.random() < q * 0.7)} for i in range(40)]
    m["ifeval/prompt_level_loose_acc"] = m["ifeval/score"] = _pct([r["prompt_level_loose_acc"] for r in recs["ifeval"]])
    for version in (1, 2):
        task = f"alpaca_eval{version}"
        recs[task] = [{"index": i, "preference": None if i == 0 else float(1 + rng.beta(1 + 4 * q, 4))}
                      for i in range(30)]
        prefs = [r["preference"] - 1 for r in recs[task] if r["preference"] is not None]
        m[f"{task}/win_rate"] = 100.0 * float(np.mean(prefs))
        m[f"{task}/standard_error"] = 100.0 * float(np.std(prefs, ddof=1) / math.sqrt(len(prefs)))
    m["alpaca_eval1/score"] = m["alpaca_eval1/win_rate"]
    # AlpacaEval 2's score is the length-controlled rate (a fitted GLM): not a per-example mean.
    m["alpaca_eval2/lc_win_rate"] = m["alpaca_eval2/score"] = m["alpaca_eval2/win_rate"] + 1.7
    by_cat: dict[str, list[float]] = {}
    for task, cat in CATEGORY.items():
        by_cat.setdefault(cat, []).append(m[f"{task}/score"])
    for cat, scores in by_cat.items():
        m[f"category/{cat}"] = float(np.mean(scores))
    m["overall"] = float(np.mean([m[f"category/{c}"] for c in by_cat]))
    kl_scale = max(0.0, quality - 0.5) * 20
    recs["policy_kl"] = [{"id": f"p{i}", "kl": float(rng.gamma(2.0, 0.5) * kl_scale)} for i in range(20) for _ in range(2)]
    m["policy_kl/kl_mean"] = float(np.mean([r["kl"] for r in recs["policy_kl"]]))
    if reward is not None:
        recs["rm_reward"] = [{"id": f"p{i}", "reward": float(rng.normal(reward, 1.0))} for i in range(20)]
        m["rm_reward/mean"] = float(np.mean([r["reward"] for r in recs["rm_reward"]]))
    return recs, m


def rm_records(rng: np.random.Generator, strength: float) -> tuple[list[dict], dict[str, float]]:
    rows = []
    for i in range(60):
        c, r = float(rng.normal(strength, 1.0)), float(rng.normal(0.0, 1.0))
        rows.append({"id": f"pair{i}", "chosen_score": c, "rejected_score": r, "margin": c - r, "correct": c > r})
    scores = [x["chosen_score"] for x in rows] + [x["rejected_score"] for x in rows]
    metrics = {"rm/accuracy": sum(x["correct"] for x in rows) / len(rows), "rm/reward_mean": float(np.mean(scores)),
               "rm/reward_std": float(np.std(scores)), "rm/chosen_mean": float(np.mean([x["chosen_score"] for x in rows])),
               "rm/rejected_mean": float(np.mean([x["rejected_score"] for x in rows])), "rm/n_pairs": 60.0}
    sections = {"chat": 0.7 + 0.1 * strength, "chat_hard": 0.5, "safety": 0.6 + 0.1 * strength, "reasoning": 0.7,
                "prior_sets": 0.65}
    metrics.update({f"rewardbench/{k}": v for k, v in sections.items()})
    metrics["rewardbench/score"] = (sum(v for k, v in sections.items() if k != "prior_sets")
                                    + 0.5 * sections["prior_sets"]) / 4.5
    return rows, metrics


# ------------------------------------------------------------------------------------------------
# Logging through the runner's own writers (harness.mlflow_layout), as `runner.log_cell` does
# ------------------------------------------------------------------------------------------------

CHECKPOINT_TASKS = ("gsm8k/score", "ifeval/score", "alpaca_eval2/score")  # Fig. 7's evaluations over steps


def _nested(flat: dict[str, Any]) -> dict[str, Any]:
    """{'algorithm.beta': 0.1} -> {'algorithm': {'beta': 0.1}}: a resolved config, as the runner logs it."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def _rows(history: dict[str, list[tuple[int, float]]]) -> list[dict[str, float]]:
    """{'train/loss': [(1, 0.7), ...]} -> [{'step': 1, 'train/loss': 0.7, ...}, ...] (history.jsonl's form)."""
    by_step: dict[int, dict[str, float]] = {}
    for key, points in history.items():
        for step, value in points:
            by_step.setdefault(step, {})[key] = value
    return [{"step": step, **values} for step, values in sorted(by_step.items())]


def _stage(exp_id: str, parent: str, kind: str, config: dict, metrics: dict, files: dict[str, list[dict]],
           history: dict[str, list[tuple[int, float]]] | None = None, key: str = "",
           checkpoints: list[dict[str, float]] | None = None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for rel, rows in files.items():  # the stage's `artifacts/` folder
            path = Path(tmp) / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        result = layout.StageResult(metrics=metrics, seconds=1.0, step_history=_rows(history or {}),
                                    checkpoint_history=checkpoints or [], artifacts_dir=Path(tmp))
        layout.log_stage_run(exp_id, parent, layout.StageRunInfo(kind, key or kind, config), result)


def log_cell(exp_id: str, name: str, params: dict, overrides: dict, *, quality: float, seed: int,
             rm: tuple[str, float] | None = None, reward: float | None = None, algorithm: str | None = None,
             extra_metrics: dict | None = None, train: dict | None = None, judge: float | None = None,
             checkpoints: bool = False) -> str:
    """One cell: its run, then its prepare_data / train_reward_model / train_policy / evaluate stage runs,
    then its summary; judge win rates appended afterwards, as `harness judge` does."""
    rng = np.random.default_rng(zlib.crc32(f"{name}/{seed}".encode()))
    info = layout.CellRunInfo(
        grid=EXPERIMENT, name=name, key=f"synthetic-{zlib.crc32(name.encode()):08x}", is_baseline=algorithm is None,
        resolved_config=_nested({**params, "seed": seed}), overrides=overrides,
        stage_keys={"train_reward_model": rm[0]} if rm else {})
    parent = layout.open_cell_run(exp_id, info)
    summary: dict[str, float] = {}
    if algorithm is not None:
        data = params.get("dataset.name") or params.get("prompts.name")
        _stage(exp_id, parent, "prepare_data", {"name": data}, {"data/kept_rows": 1000 + len(data) * 7}, {})
        if rm:
            rows, rm_metrics = rm_records(np.random.default_rng(zlib.crc32(rm[0].encode())), rm[1])
            _stage(exp_id, parent, "train_reward_model", {"base": params.get("reward_model.base")}, rm_metrics,
                   {"rm_scores.jsonl": rows}, key=rm[0])
            summary.update(rm_metrics)
        steps = range(1, 31)
        history = {"train/loss": [(s, 0.7 * math.exp(-s / 12) + 0.02 * rng.random()) for s in steps],
                   "train/epoch": [(s, 3 * s / 30) for s in steps]}
        if algorithm == "ppo":
            history["train/reward_mean"] = [(s, quality * (1 - math.exp(-s / 8)) + 0.05 * rng.random()) for s in steps]
            history["train/kl"] = [(s, 0.1 * s * quality) for s in steps]
        else:
            history["train/rewards_chosen"] = [(s, 0.05 * s * quality) for s in steps]
        train_metrics = {"train/wall_seconds": 100.0 * (1 + rng.random()), "train/final_loss": history["train/loss"][-1][1],
                         **(train or {})}
        _stage(exp_id, parent, "train_policy", {"algorithm.name": algorithm}, train_metrics, {}, history)
        summary.update(train_metrics)
    recs, eval_metrics = eval_records(rng, quality, reward)
    # Evaluations of intermediate checkpoints: the last one is the final model (the logged value).
    ckpt = [{"step": s, **{k: eval_metrics[k] * (0.8 + 0.2 * s / 30) for k in CHECKPOINT_TASKS},
             # the over-optimisation monitor's signals (harness/monitor.py): PPO's proxy keeps rising while
             # its gold signal turns down late, DPO's both rise
             "monitor/proxy_reward": quality * s / 30, "monitor/kl": 0.3 * s * quality,
             "monitor/gold_reward": quality * (s / 30 if algorithm != "ppo" else 1 - abs(s - 10) / 30),
             "monitor/response_length": 40.0 * (1 + s / (20 if algorithm == "ppo" else 90)),
             "monitor/truncation_rate": 0.01 * s / 30}
            for s in (0, 10, 20, 30)] if checkpoints else []
    monitor_tags: dict[str, str] = {}
    if ckpt:
        from harness.monitor import Settings, flags

        flag_metrics, monitor_tags = flags(ckpt, Settings())
        eval_metrics.update({k: v for k, v in ckpt[-1].items() if k.startswith("monitor/")}, **flag_metrics)
    _stage(exp_id, parent, "evaluate", {}, eval_metrics, {f"samples/{t}.samples.jsonl": r for t, r in recs.items()},
           checkpoints=ckpt)
    summary.update(eval_metrics)
    summary.update(extra_metrics or {})
    layout.finish_cell_run(parent, summary, ckpt, tags=monitor_tags)
    if judge is not None:
        layout.append_metrics(parent, {"judge/win_rate": judge, "judge/win_rate_ci_low": judge - 0.07,
                                       "judge/win_rate_ci_high": judge + 0.07, "judge/lc_win_rate": judge - 0.03})
    return parent


def build_synthetic_store() -> dict[str, str]:
    """The synthetic experiment; returns cell name -> parent run id."""
    exp_id = tracking.setup_experiment(EXPERIMENT)
    runs: dict[str, str] = {}
    base = {"model": "tiny-random-llama"}
    runs["sft"] = log_cell(exp_id, "sft", {**base, "algorithm": None}, {"algorithm": None}, quality=0.55,
                           seed=1, reward=0.0)
    dpo = [("hh-rlhf", 0.58, (1,)), ("nectar", 0.6, (1,)), ("ultrafeedback-fg", 0.66, (1, 2)),
           ("ultrafeedback-top", 0.6, (1,)), ("ultrafeedback-src-flan-v2", 0.62, (1,))]
    for data, q, seeds in dpo:
        for seed in seeds:
            name = f"dataset={data},algorithm=dpo" + (f",seed={seed}" if len(seeds) > 1 else "")
            over = {"dataset": data, "algorithm": "dpo", **({"seed": seed} if len(seeds) > 1 else {})}
            runs[name] = log_cell(exp_id, name, {**base, "dataset.name": data, "algorithm.name": "dpo",
                                                 "algorithm.beta": 0.1}, over, quality=q + 0.01 * seed,
                                  seed=seed, algorithm="dpo", reward=0.2 + q, judge=q - 0.05, checkpoints=True)
    rms = {"hh-rlhf": ("rmhh0001", 0.8), "nectar": ("rmnec002", 1.0), "ultrafeedback-fg": ("rmuf0003", 1.3),
           "rm-mix": ("rmmix004", 1.6)}

    def ppo(name: str, data: str, rm: str, q: float, extra: dict | None = None, prompts: str | None = None,
            train: dict | None = None, bon: bool = False, checkpoints: bool = False) -> None:
        params = {**base, "dataset.name": data, "algorithm.name": "ppo", "algorithm.kl_coef": 0.05,
                  "algorithm.prompt_batch_size": 64, "algorithm.minibatch_size": 64, "algorithm.rollouts_per_prompt": 1,
                  "algorithm.gradient_accumulation_steps": 1, "reward_model.base": "tiny-random-llama",
                  "reward_model.dataset.name": rm, **(extra or {})}
        if prompts:
            params["prompts.name"] = prompts
        over = {"dataset": data, "algorithm": {"name": "ppo", **{k.split(".", 1)[1]: v for k, v in (extra or {}).items()}},
                "reward_model": rm, **({"prompts": prompts} if prompts else {})}
        bon_metrics = {}
        if bon:
            r = np.random.default_rng(zlib.crc32(rm.encode()))
            bon_metrics = {f"bon/{rm}/{t}/score": float(40 + 30 * r.random()) for t in BON_TASKS}
        runs[name] = log_cell(exp_id, name, params, over, quality=q, seed=1, rm=rms[rm], algorithm="ppo",
                              reward=q + rms[rm][1], extra_metrics=bon_metrics, train=train, judge=q,
                              checkpoints=checkpoints)

    steps = {"train/episodes": 6400.0, "train/optimizer_steps": 100.0}
    ppo("dataset=hh-rlhf,algorithm=ppo", "hh-rlhf", "hh-rlhf", 0.6, train=steps)
    ppo("dataset=nectar,algorithm=ppo", "nectar", "nectar", 0.63, train=steps)
    for kl, q in ((0.0325, 0.64), (0.05, 0.7), (0.1, 0.67)):
        ppo(f"ppo,kl_coef={kl}", "ultrafeedback-fg", "ultrafeedback-fg", q, {"algorithm.kl_coef": kl},
            train=steps, bon=kl == 0.05, checkpoints=True)
    for bsz, r, g, t in ((512, 1, 1, 0.2), (512, 2, 2, 0.27)):
        ppo(f"ppo,B={bsz},r={r},g={g}", "ultrafeedback-fg", "ultrafeedback-fg", 0.68,
            {"algorithm.prompt_batch_size": bsz, "algorithm.rollouts_per_prompt": r,
             "algorithm.gradient_accumulation_steps": g},
            train={"train/episodes": 6400.0 * r, "train/optimizer_steps": 100.0, "train/wall_seconds": 216000 * t})
    for rm in ("ultrafeedback-fg", "rm-mix"):
        for prompts, q in (("prompts-ultrafeedback", 0.66), ("prompts-gsm8k-train", 0.72)):
            ppo(f"rm={rm},prompts={prompts}", "ultrafeedback-fg", rm, q + (0.03 if rm == "rm-mix" else 0.0),
                prompts=prompts, train=steps, bon=rm == "rm-mix" and prompts == "prompts-ultrafeedback")
    return runs


@pytest.fixture(scope="module")
def synth_results(tmp_path_factory) -> Path:
    results = tmp_path_factory.mktemp("synth_results")
    with pytest.MonkeyPatch.context() as mp:
        use_results(mp, results)
        build_synthetic_store()
    return results


@pytest.fixture(autouse=True)
def isolated_results(synth_results, monkeypatch) -> Path:
    """Overrides the per-test results dir: every test here reads the one module-wide store."""
    return use_results(monkeypatch, synth_results)


# ------------------------------------------------------------------------------------------------
# Tests
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def report(synth_results, tmp_path_factory):
    from reports.build import build_report

    out = tmp_path_factory.mktemp("synth_report")
    with pytest.MonkeyPatch.context() as mp:
        use_results(mp, synth_results)
        return build_report(EXPERIMENT, out, n_boot=400)


_RUN_METRICS: dict[str, dict[str, float]] = {}


def logged(run_id: str, metric: str) -> float | None:
    """The metric as MLflow holds it for that run (read straight from the store, cached per run)."""
    if run_id not in _RUN_METRICS:
        _RUN_METRICS[run_id] = dict(tracking.client().get_run(run_id).data.metrics)
    return _RUN_METRICS[run_id].get(metric)


def ours(table) -> list:
    """The table's rows built from this run (the paper's printed rows, reports/paper_beside.py, left out)."""
    return [r for r in table.rows if r.kind != "paper"]


def run_columns(table) -> list[str]:
    """The table's columns of logged metrics (the compute columns of reports/compute.py left out)."""
    return [c for c in table.columns if "(est., " not in c and "(measured)" not in c]


def assert_traceable(table) -> int:
    """Every number names its runs (the paper's rows: the paper's number they come from); every number
    whose metric those runs logged equals it (mean over seeds, times the column's scale). Returns how many
    numbers were checked against MLflow."""
    checked = 0
    for row in table.rows:
        for entry in row.entries:
            if not entry.is_number:
                continue
            if row.kind == "paper":
                assert entry.metric.startswith("paper:") and not entry.run_ids, (table.name, row.labels, entry)
                continue
            assert entry.run_ids, (table.name, row.labels, entry)
            if row.kind == "delta" or entry.text is not None or not entry.metric:
                continue
            values = [logged(r, entry.metric) for r in entry.run_ids]
            if all(v is not None for v in values):
                assert entry.value == pytest.approx(entry.scale * float(np.mean(values)), rel=1e-9, abs=1e-9)
                checked += 1
    return checked


def test_every_item_builds_and_index_shows_them(report):
    assert report.skipped == {}, report.skipped
    index = report.index.read_text()
    for name, paths in report.written.items():
        for path in paths:
            assert path.exists() and path.stat().st_size > 0
        if name in report.figures:
            assert f"](figures/{name}.png)" in index
            from PIL import Image

            with Image.open(report.out_dir / "figures" / f"{name}.png") as img:
                assert img.width >= 400 and img.height >= 250
                assert len(set(img.convert("L").getdata())) > 10  # not a blank canvas
        else:
            assert report.tables[name].title in index
    assert "## Grid summary" in index and "## Skipped" not in index


def test_every_number_traces_to_a_logged_metric(report):
    client = tracking.client()
    for name, table in report.tables.items():
        checked = assert_traceable(table)
        assert checked > 0 or name in ("table11",), name
        rows = list(csv.DictReader((report.out_dir / "tables" / f"{name}.csv").open()))
        numbers = [r for r in rows if r["value"] != "" and r["row_kind"] != "paper"]
        assert numbers and all(r["mlflow_run_ids"] for r in numbers), name
        for run_id in {i for r in numbers for i in r["mlflow_run_ids"].split(";")} - set(_RUN_METRICS):
            assert client.get_run(run_id).info.status == "FINISHED"
        markdown = (report.out_dir / "tables" / f"{name}.md").read_text()
        assert "[^" in markdown and "/#/experiments/" in markdown  # footnote links to the runs


def test_table1_layout_baseline_seeds_and_colouring(report):
    table = report.tables["table1"]
    assert table.label_columns == ["Source", "Dataset"]
    assert run_columns(table) == ["# Samples", "Factuality", "Reasoning", "Coding", "Truthfulness", "Safety",
                                  "Inst. Foll.", "Average"]
    assert ours(table)[0].kind == "baseline" and ours(table)[0].labels == ["—", "SFT baseline"]
    datasets = [r.labels[1] for r in ours(table)[1:]]
    assert sorted(datasets) == ["hh-rlhf", "nectar", "ultrafeedback-fg", "ultrafeedback-src-flan-v2", "ultrafeedback-top"]
    assert [r.labels[0] for r in ours(table)[1:]][0] == "Human"  # paper order: web, human, synthetic
    uf = table.entry("ultrafeedback-fg", "Reasoning")
    assert uf.n_seeds == 2 and len(uf.run_ids) == 2
    assert uf.ci is not None and uf.ci[0] <= uf.value <= uf.ci[1]
    base = table.entry("SFT baseline", "Reasoning")
    assert uf.colour == ("up" if uf.value > base.value else "down")
    # AlpacaEval 2 (LC) has no per-example form: no interval for instruction following, and a note says why.
    assert table.entry("nectar", "Inst. Foll.").ci is None
    assert any("alpaca_eval2/score" in n and "fitted model" in n for n in table.notes)
    samples = table.entry("nectar", "# Samples")
    assert samples.metric == "data/kept_rows" and samples.value == logged(samples.run_ids[0], "data/kept_rows")


def test_table2_delta_rows_carry_paired_p_values(report):
    table = report.tables["table2"]
    for data in ("hh-rlhf", "nectar"):
        for column in run_columns(table):
            dpo, ppo = table.entry(f"{data} / DPO", column), table.entry(f"{data} / PPO", column)
            delta = table.entry(f"{data} / Δ (PPO − DPO)", column)
            assert delta.value == pytest.approx(ppo.value - dpo.value)
            if dpo.ci and ppo.ci:
                assert delta.p_value is not None and 0 < delta.p_value <= 1 and delta.ci is not None
    avg = ours(table)[-1]
    assert avg.labels[0] == "Avg. Δ b/w PPO & DPO" and avg.kind == "delta"
    j = table.columns.index("Reasoning")
    expected = np.mean([table.entry(f"{d} / Δ (PPO − DPO)", "Reasoning").value for d in ("hh-rlhf", "nectar")])
    assert avg.entries[j].value == pytest.approx(expected) and avg.entries[j].p_value is not None
    assert any("ultrafeedback-fg" in n and "several" in n for n in table.notes)  # 4 PPO configs: no Δ


def test_reward_model_tables(report):
    t3 = report.tables["table3"]
    assert t3.columns == ["RewardBench", "BoN avg", "BoN Δ over SFT", "GSM Acc.", "AlpacaEval 2", "Avg. on All Evals"]
    assert len(ours(t3)) == 4
    rb = t3.entry("tiny-random-llama RM (nectar)", "RewardBench")
    assert rb.value == pytest.approx(100 * logged(rb.run_ids[0], "rewardbench/score"))
    bon = t3.entry("tiny-random-llama RM (rm-mix)", "BoN avg")
    metrics = tracking.client().get_run(bon.run_ids[0]).data.metrics
    scores = {t: metrics[f"bon/rm-mix/{t}/score"] for t in BON_TASKS}
    by_cat: dict[str, list[float]] = {}
    for task, value in scores.items():
        by_cat.setdefault(CATEGORY[task], []).append(value)
    assert bon.value == pytest.approx(np.mean([np.mean(v) for v in by_cat.values()]))
    assert not t3.entry("tiny-random-llama RM (hh-rlhf)", "BoN avg").is_number  # no BoN for that RM: "—"
    t12 = report.tables["table12"]
    assert ours(t12)[0].labels == ["SFT"] and ours(t12)[0].kind == "baseline" and len(ours(t12)) == 3
    assert t12.entry("tiny-random-llama RM (rm-mix)", "AEval 2").fmt_value() == "—"
    t13 = report.tables["table13"]
    assert t13.columns[-1] == "Score" and len(ours(t13)) == 4
    rm = report.tables["rm_eval"]
    acc = rm.entry("tiny-random-llama RM (hh-rlhf)", "Accuracy")
    assert acc.ci is not None and acc.ci[0] <= acc.value <= acc.ci[1]


def test_prompt_policy_and_batch_tables(report):
    t4 = report.tables["table4"]
    assert t4.label_columns == ["Reward Model", "Prompts"] and ours(t4)[0].kind == "baseline"
    assert {tuple(r.labels) for r in ours(t4)[1:]} == {
        (f"tiny-random-llama RM ({rm})", p) for rm in ("ultrafeedback-fg", "rm-mix")
        for p in ("prompts-gsm8k-train", "prompts-ultrafeedback")}
    t7 = report.tables["table7"]
    assert [r.labels[0] for r in ours(t7)] == ["SFT baseline", "ultrafeedback-fg", "ultrafeedback-src-flan-v2",
                                              "ultrafeedback-top"]
    t11 = report.tables["table11"]
    assert [r.labels for r in ours(t11)][0][:1] == ["64"] and [r.labels[0] for r in ours(t11)][-2:] == ["512", "512"]
    last = ours(t11)[-1]
    assert last.labels == ["512", "64", "2", "2"]
    assert last.entries[0].text == "2x" and last.entries[1].text == "2x" and last.entries[2].text == "1x"
    assert t11.columns[3] == "Training time (h)"


def test_seed_tables_per_prompt_rewards(report):
    table = report.tables["prompt_rewards"]
    assert table.rows[0].labels == ["SFT (base)"] and table.rows[0].entries[2].text == "—"
    row = next(r for r in table.rows if r.kind == "data")
    beats = row.entries[2]
    n_better, n_total = (int(x) for x in beats.text.split("/"))
    assert n_total == 20 and 0 <= n_better <= 20 and len(beats.run_ids) == 2
    assert sum(int(r.entries[3].text.split("/")[0]) for r in table.rows) >= 20  # every prompt has a best policy


def test_no_ci_flag_gives_the_papers_look(synth_results, tmp_path):
    from reports.build import build_report

    result = build_report(EXPERIMENT, tmp_path, tables=["table1", "table2"], figures=[], ci=False)
    md = (tmp_path / "tables" / "table2.md").read_text()


    assert not re.search(r"\[-?\d", md) and "p=" not in md
    assert "Δ (PPO − DPO)" not in md and "Avg. Δ b/w PPO & DPO" in md  # only the paper's average row
    tex = (tmp_path / "tables" / "table1.tex").read_text()
    assert "\\scriptsize" not in tex and "\\cellcolor{blue!12}" in tex and "\\cellcolor{orange!20}" in tex
    assert result.tables["table1"].rows[1].entries[1].ci is None


def test_cli_report_command(synth_results, tmp_path, capsys):
    from harness.cli import main

    assert main(["report", EXPERIMENT, "--out", str(tmp_path), "--tables", "table13", "--figures", "none",
                 "--format", "md,csv"]) == 0
    out = capsys.readouterr().out
    assert "| cell |" in out and "table13" in out  # the grid summary is printed, then what was written
    assert (tmp_path / "tables" / "table13.md").exists() and not (tmp_path / "tables" / "table13.tex").exists()
    assert (tmp_path / "index.md").exists() and (tmp_path / "summary.csv").exists()
    assert main(["report", EXPERIMENT, "--out", str(tmp_path), "--tables", "table99"]) == 2
    assert main(["report", "--list"]) == 0
    assert "fig4" in capsys.readouterr().out
