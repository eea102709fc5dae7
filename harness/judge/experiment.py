"""`harness judge <experiment>`: judge-based win rates of every policy of a grid against a reference.

1. Read the experiment's cells from MLflow (`mlflow_layout.read_cells`: each cell's latest FINISHED run;
   the policy is the run's policy path, a trained folder or a model-zoo name for the baseline).
2. Generate each policy's answers to the prompt set (default: the first N AlpacaEval instructions from
   the local data dir, N=150 as in the win-rate table this reproduces) with the shared generation
   engine, greedy; answers are cached per (policy, prompt, sampling parameters).
3. Judge pairs in both orders (JudgeClient.pairwise_many): each policy against the reference, and with
   `pairs="all"` every pair of policies, so the Bradley-Terry ranking uses all verdicts.
4. Win rate (ties half) with a percentile-bootstrap CI over prompts, and Bradley-Terry scores anchored
   at the reference.
5. Log to MLflow, additively: on each cell's parent run the metrics `judge/win_rate`,
   `judge/win_rate_ci_low`, `judge/win_rate_ci_high`, `judge/lc_win_rate` (its length-controlled counterpart,
   AlpacaEval 2's GLM, on the AlpacaEval prompts only: `length_controlled`), ... at the next free step of each key (earlier
   values stay in the history; no other metric is touched); plus one judge run (`mlflow_layout.log_judge_run`)
   holding the table, the ranking, all verdicts and the judge's token usage and cost.
"""

from __future__ import annotations

import csv
import gc
import hashlib
import json
import logging
import math
import re
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse, urlunparse

from harness.judge.cache import GenerationCache, judge_dir, stable_hash
from harness.judge.client import JudgeClient, PairVerdict, usage_metrics
from harness.judge.prompts import PAIRWISE
from harness.judge.stats import WinRate, bradley_terry, win_rate
from harness.paths import find_data_file

log = logging.getLogger(__name__)

DEFAULT_NUM_PROMPTS = 150
DEFAULT_JUDGE_MODEL = "gpt-4-0613"
ALPACA_EVAL_FILE = "benchmarks/alpaca_eval/text_davinci_003_outputs.json"

Messages = list[dict[str, str]]


@dataclass
class Policy:
    cell: str
    run_id: str
    policy_path: str
    is_baseline: bool
    params: dict[str, str] = field(default_factory=dict)


@dataclass
class JudgeReport:
    experiment: str
    reference: str
    judge_model: str
    prompt_set: str
    num_prompts: int
    win_rates: dict[str, WinRate]
    bt_scores: dict[str, float]
    ranking: list[str]
    usage: dict[str, Any]
    verdicts: list[dict[str, Any]]
    summary_run_id: str | None = None
    # Length-controlled counterpart of each win rate (0-1, as win_rate), AlpacaEval 2's GLM (`length_controlled_win_rate`);
    # None when it cannot be computed, `lc_unavailable` saying why.
    lc_win_rates: dict[str, float | None] = field(default_factory=dict)
    lc_unavailable: dict[str, str] = field(default_factory=dict)

    def table(self) -> str:
        lines = [f"judge {self.judge_model} | reference {self.reference} | {self.num_prompts} prompts "
                 f"({self.prompt_set})",
                 f"{'cell':<24} {'win_rate':>8} {'95% CI':>17} {'W/T/L':>11} {'invalid':>7} {'BT':>7} {'rank':>4}"]
        for rank, cell in enumerate(self.ranking, start=1):
            bt = self.bt_scores.get(cell, math.nan)
            if cell == self.reference:
                lines.append(f"{cell:<24} {'(ref)':>8} {'':>17} {'':>11} {'':>7} {bt:>7.3f} {rank:>4}")
                continue
            wr = self.win_rates[cell]
            lines.append(f"{cell:<24} {wr.win_rate:>8.3f} [{wr.ci_low:.3f}, {wr.ci_high:.3f}] "
                         f"{f'{wr.wins}/{wr.ties}/{wr.losses}':>11} {wr.invalid:>7} {bt:>7.3f} {rank:>4}")
        return "\n".join(lines)


def mlflow_client():
    from harness.tracking import client

    return client()


def find_policies(experiment: str) -> tuple[str, list[Policy]]:
    """(experiment id, cells with a policy) for an experiment name or id: each cell's latest FINISHED
    run (an unfinished one has no complete policy to judge, nor a place for its results)."""
    from harness import mlflow_layout as layout

    exp = layout.find_experiment(experiment)
    by_cell: list[Policy] = []
    for cell in layout.read_cells(exp.experiment_id, with_stages=False):
        if not cell.policy_path:
            log.warning("cell %s (run %s) has no policy path tag: skipped", cell.cell, cell.run_id)
            continue
        by_cell.append(Policy(cell.cell, cell.run_id, cell.policy_path, cell.is_baseline, cell.params))
    if not by_cell:
        raise ValueError(f"experiment {exp.name!r} has no finished cell runs with a policy path")
    return exp.experiment_id, by_cell


def pick_reference(policies: Sequence[Policy], reference: str) -> Policy:
    for p in policies:
        if p.cell == reference:
            return p
    baselines = [p for p in policies if p.is_baseline]
    if reference == "sft" and len(baselines) == 1:
        return baselines[0]
    raise ValueError(f"reference cell {reference!r} not found; cells: {', '.join(p.cell for p in policies)}")


def load_prompts(num_prompts: int = DEFAULT_NUM_PROMPTS, dataset: str | None = None) -> tuple[str, list[Messages]]:
    """(prompt-set name, chat prompts): the first N AlpacaEval instructions, or the first N rows of a
    registered dataset's prompts."""
    if dataset is None:
        path = find_data_file(ALPACA_EVAL_FILE)
        if path is None:
            raise FileNotFoundError(f"{ALPACA_EVAL_FILE} not found under the local data dirs "
                                    "(HARNESS_DATA_DIR or ../shared/data); pass a dataset name instead")
        rows = json.loads(path.read_text())[:num_prompts]
        return "alpaca_eval", [[{"role": "user", "content": r["instruction"]}] for r in rows]
    from datasets_registry import prepare

    rows = prepare(dataset, seed=0).rows[:num_prompts]
    return dataset, [list(r["prompt"]) for r in rows]


def instruction_text(messages: Messages) -> str:
    if len(messages) == 1 and messages[0]["role"] == "user":
        return messages[0]["content"]
    return "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages)


def policy_identity(policy_path: str) -> str:
    """Resolved folder plus a fingerprint of its files (a retrained policy at the same path is new)."""
    from harness.models import resolve_model

    resolved = resolve_model(policy_path)
    folder = Path(resolved)
    if not folder.is_dir():
        return resolved
    parts = [resolved]
    for f in sorted(folder.iterdir()):
        if f.is_file() and (f.suffix in (".json", ".safetensors", ".bin", ".model") or f.name == "tokenizer.json"):
            stat = f.stat()
            parts.append(f"{f.name}:{stat.st_size}:{int(stat.st_mtime)}")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16] + ":" + resolved


def generate_answers(policy_path: str, prompts: Sequence[Messages], max_new_tokens: int = 256,
                     batch_size: int = 8, cache: GenerationCache | None = None) -> tuple[list[str], int]:
    """(answers, how many were generated now) with the shared generation engine; cached answers are
    reused, and the model is loaded only when something is missing."""
    from harness.engines import make_generator
    from harness.generation import EngineSettings, SamplingParams
    from harness.models import resolve_model

    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0)
    # The engine's precision changes answers: cached ones are reused only from the same engine.
    params_key = json.dumps({**asdict(params), "engine": EngineSettings().resolved().key()}, sort_keys=True)
    identity = policy_identity(policy_path)
    keys = [stable_hash(p) for p in prompts]
    found = cache.get_many(identity, keys, params_key) if cache else {}
    missing = [i for i, k in enumerate(keys) if k not in found]
    if missing:
        generator = make_generator(resolve_model(policy_path), batch_size=batch_size)
        outputs = generator.generate([prompts[i] for i in missing], params)
        fresh = {keys[i]: out[0] for i, out in zip(missing, outputs)}
        if cache:
            cache.put_many(identity, params_key, fresh)
        found.update(fresh)
        del generator
        gc.collect()
    return [found[k] for k in keys], len(missing)


def _safe_url(url: str | None) -> str:
    """A base URL without user info or query (neither belongs in MLflow)."""
    if not url:
        return "https://api.openai.com/v1 (default)"
    parts = urlparse(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return urlunparse((parts.scheme, netloc, parts.path, "", "", ""))


def metric_key(text: str) -> str:
    """MLflow metric keys allow letters, digits, '_', '-', '.', ' ' and '/': anything else becomes '_'."""
    return re.sub(r"[^A-Za-z0-9_\-. /]", "_", text)


def judge_experiment(
    experiment: str,
    client: JudgeClient,
    reference: str = "sft",
    num_prompts: int = DEFAULT_NUM_PROMPTS,
    dataset: str | None = None,
    pairs: Literal["reference", "all"] = "all",
    max_new_tokens: int = 256,
    batch_size: int = 8,
    n_boot: int = 10_000,
    seed: int = 0,
    log_mlflow: bool = True,
) -> JudgeReport:
    experiment_id, policies = find_policies(experiment)
    ref = pick_reference(policies, reference)
    prompt_set, prompts = load_prompts(num_prompts, dataset)
    if not prompts:
        raise ValueError("the prompt set is empty")
    gen_cache = GenerationCache(judge_dir() / "generations.sqlite")
    answers: dict[str, list[str]] = {}
    for policy in policies:
        answers[policy.cell], generated = generate_answers(policy.policy_path, prompts, max_new_tokens,
                                                           batch_size, gen_cache)
        log.info("policy %s: %d answers (%d generated now)", policy.cell, len(prompts), generated)
    gen_cache.close()

    others = [p.cell for p in policies if p.cell != ref.cell]
    matchups = [(cell, ref.cell) for cell in others]
    if pairs == "all":
        matchups += [(a, b) for i, a in enumerate(others) for b in others[i + 1 :]]
    instructions = [instruction_text(p) for p in prompts]
    items = [(instructions[k], answers[a][k], answers[b][k]) for a, b in matchups for k in range(len(prompts))]
    verdicts: list[PairVerdict] = client.pairwise_many(items)

    verdict_rows: list[dict[str, Any]] = []
    comparisons: list[tuple[str, str, float]] = []
    per_cell_scores: dict[str, list[float]] = {c: [] for c in others}
    per_cell_invalid: dict[str, int] = {c: 0 for c in others}
    for m, (a, b) in enumerate(matchups):
        for k in range(len(prompts)):
            v = verdicts[m * len(prompts) + k]
            verdict_rows.append({"policy_a": a, "policy_b": b, "prompt_index": k, "winner": v.winner,
                                 "first_order": v.first, "second_order": v.second, "valid": v.valid,
                                 "identical": v.identical, "raw": list(v.raw)})
            if not v.valid:
                if b == ref.cell:
                    per_cell_invalid[a] += 1
                continue
            comparisons.append((a, b, v.score))
            if b == ref.cell:
                per_cell_scores[a].append(v.score)
    win_rates = {c: win_rate(per_cell_scores[c], invalid=per_cell_invalid[c], n_boot=n_boot, seed=seed)
                 for c in others}
    bt = bradley_terry(comparisons, anchor=ref.cell) if comparisons else None
    bt_scores = bt.scores if bt else {}
    ranking = [c for c, _ in bt.ranking()] if bt else [ref.cell, *others]
    report = JudgeReport(experiment, ref.cell, client.model, prompt_set, len(prompts), win_rates, bt_scores,
                         ranking, client.usage(), verdict_rows)
    for cell in others:
        m = matchups.index((cell, ref.cell))
        report.lc_win_rates[cell], reason = length_controlled(
            prompt_set, answers[ref.cell], answers[cell], verdicts[m * len(prompts) : (m + 1) * len(prompts)])
        if reason:
            report.lc_unavailable[cell] = reason
    if log_mlflow:
        report.summary_run_id = _log_report(report, experiment_id, policies, client, pairs, max_new_tokens)
    out = judge_dir() / "reports"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{_slug(experiment)}.json").write_text(json.dumps(_report_json(report), indent=2, default=float))
    return report


def length_controlled(prompt_set: str, reference_answers: Sequence[str], answers: Sequence[str],
                      verdicts: Sequence[PairVerdict]) -> tuple[float | None, str | None]:
    """(length-controlled win rate in [0, 1], or None and why) of `answers` against the reference's, from
    the judge's verdicts per prompt: AlpacaEval 2's own GLM (`length_controlled_v1`, through
    `harness.judge.alpaca.length_controlled_win_rate`), which models the verdict by the answers' length
    difference and each instruction's difficulty and reports the win rate with the length term removed.
    It knows the difficulty of AlpacaEval's instructions only, so other prompt sets get none."""
    if prompt_set != "alpaca_eval":
        return None, (f"the length-controlled GLM (AlpacaEval 2's) knows the difficulty of AlpacaEval's "
                      f"instructions only; this prompt set is {prompt_set!r}")
    from harness.judge.alpaca import length_controlled_win_rate

    annotations = [{"index": k, "output_1": ref, "output_2": own, "preference": 1.0 + v.score if v.valid else None}
                   for k, (ref, own, v) in enumerate(zip(reference_answers, answers, verdicts, strict=True))]
    lc = length_controlled_win_rate(annotations)
    if lc.win_rate is None:
        return None, lc.unavailable_reason
    return lc.win_rate / 100.0, None


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text)


def _report_json(report: JudgeReport) -> dict[str, Any]:
    return {
        "experiment": report.experiment, "reference": report.reference, "judge_model": report.judge_model,
        "prompt_set": report.prompt_set, "num_prompts": report.num_prompts,
        "win_rates": {c: wr.as_dict() for c, wr in report.win_rates.items()},
        "lc_win_rates": report.lc_win_rates, "lc_unavailable": report.lc_unavailable,
        "bradley_terry": report.bt_scores, "ranking": report.ranking, "usage": report.usage,
        "summary_run_id": report.summary_run_id,
    }


def _log_report(report: JudgeReport, experiment_id: str, policies: Sequence[Policy], judge: JudgeClient,
                pairs: str, max_new_tokens: int) -> str:
    from harness import mlflow_layout as layout

    rank_of = {cell: i + 1 for i, cell in enumerate(report.ranking)}
    for policy in policies:
        metrics: dict[str, float] = {}
        if policy.cell in report.win_rates:
            wr = report.win_rates[policy.cell]
            metrics.update({"judge/win_rate": wr.win_rate, "judge/win_rate_ci_low": wr.ci_low,
                            "judge/win_rate_ci_high": wr.ci_high, "judge/n": wr.n, "judge/ties": wr.ties,
                            "judge/invalid": wr.invalid})
            if report.lc_win_rates.get(policy.cell) is not None:
                metrics["judge/lc_win_rate"] = report.lc_win_rates[policy.cell]
        if policy.cell in report.bt_scores:
            metrics["judge/bt_score"] = report.bt_scores[policy.cell]
            metrics["judge/bt_rank"] = rank_of[policy.cell]
        layout.append_metrics(policy.run_id, metrics)

    params = {"judge.model": judge.model, "judge.base_url": _safe_url(judge.base_url),
              "judge.api_key_env": judge.api_key_env, "judge.template": PAIRWISE.tag,
              "judge.reference": report.reference, "judge.prompt_set": report.prompt_set,
              "judge.num_prompts": str(report.num_prompts), "judge.pairs": pairs,
              "judge.generation.max_new_tokens": str(max_new_tokens), "judge.generation.temperature": "0.0"}
    metrics = usage_metrics(report.usage)
    for cell, wr in report.win_rates.items():
        name = metric_key(cell)
        metrics.update({f"judge/win_rate/{name}": wr.win_rate, f"judge/win_rate_ci_low/{name}": wr.ci_low,
                        f"judge/win_rate_ci_high/{name}": wr.ci_high})
    for cell, score in report.bt_scores.items():
        metrics[f"judge/bt_score/{metric_key(cell)}"] = score
        metrics[f"judge/bt_rank/{metric_key(cell)}"] = rank_of[cell]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "judge"
        folder.mkdir()
        (folder / "report.json").write_text(json.dumps(_report_json(report), indent=2, default=float))
        (folder / "table.txt").write_text(report.table() + "\n")
        with (folder / "win_rates.csv").open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["cell", "win_rate", "ci_low", "ci_high", "n", "wins", "ties", "losses", "invalid",
                             "bt_score", "bt_rank"])
            for cell in report.ranking:
                wr = report.win_rates.get(cell)
                row = [cell, *([wr.win_rate, wr.ci_low, wr.ci_high, wr.n, wr.wins, wr.ties, wr.losses,
                                wr.invalid] if wr else [""] * 8)]
                writer.writerow([*row, report.bt_scores.get(cell, ""), rank_of[cell]])
        with (folder / "verdicts.jsonl").open("w") as fh:
            for row in report.verdicts:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        return layout.log_judge_run(
            experiment_id, report.reference,
            "Pairwise LLM-judge win rates (both orders; ties half) and Bradley-Terry ranking.", params, metrics,
            folder)
