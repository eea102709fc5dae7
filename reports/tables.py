"""Table builders: the paper's Tables 1-5, 7, 11, 12-13 and the seeds' tables, from MLflow.

Each builder picks the cells its table is about, groups seeds of one configuration into one row,
reads the logged metrics (the point estimates are exactly what MLflow holds, averaged over seeds)
and attaches bootstrap intervals from the per-example artifacts (see `reports.stats`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from reports.data import CellRun, compact_labels, describe_overrides, group_by_identity
from reports.examples import task_categories
from reports.model import Entry, ReportTable, Row
from reports.names import reward_score_name
from reports.registry import (
    AVERAGE,
    Needs,
    ReportContext,
    Skip,
    ci_notes,
    colour_against,
    register,
)

_SOURCE_ORDER = {"web": 0, "human": 1, "synthetic": 2, "mixed": 3, "built-in": 4}


def is_online(cell: CellRun) -> bool:
    """The cell's algorithm samples from its policy while it trains (`AlgorithmSpec.online`: PPO, GRPO, ...)."""
    from harness.algorithms import spec_or_none  # here: importing every algorithm costs seconds (torch)

    spec = spec_or_none(cell.algorithm)
    return spec is not None and spec.online


def source_type(dataset: str | None) -> str:
    """Table 1's "Source" column, from the dataset registry's declared source type."""
    if not dataset:
        return "—"
    try:
        from datasets_registry import DATASETS

        return DATASETS.get(dataset).source_type
    except Exception:  # a dataset registered by a later version, or a registry that cannot import
        return "—"


def _labels_unique(groups: list[list[CellRun]], label: str, skip: tuple[str, ...]) -> list[str]:
    """Row labels: `label` per group, disambiguated by the other grid overrides when groups share it."""
    labels = [label.format(**{"dataset": g[0].param("dataset.name") or "—"}) for g in groups]
    out = []
    for lab, group in zip(labels, groups):
        extra = describe_overrides(group[0], skip=skip) if labels.count(lab) > 1 else ""
        out.append(f"{lab} ({extra})" if extra else lab)
    return out


def _suite_row(ctx: ReportContext, cells: Sequence[CellRun], columns: list[tuple[str, str]]) -> list[Entry]:
    return [ctx.value(cells, metric) for _, metric in columns]


def _baseline_row(ctx: ReportContext, columns: list[tuple[str, str]], labels: list[str],
                  lead: Sequence[Entry] = ()) -> Row | None:
    base = ctx.exp.baseline
    if base is None:
        return None
    return Row(labels, [*lead, *_suite_row(ctx, [base], columns)], kind="baseline")


def _finish(ctx: ReportContext, table: ReportTable, n_lead: int = 0) -> ReportTable:
    base = next((r for r in table.rows if r.kind == "baseline"), None)
    if base is not None:
        for row in table.rows:
            if row.kind == "data":
                colour_against(row.entries[n_lead:], base.entries[n_lead:])
    ci_notes(ctx, table)
    if ctx.exp.baseline is None:
        table.notes.append("The experiment has no SFT baseline cell (`baseline: false`): no baseline row.")
    return table


def _samples_entry(ctx: ReportContext, group: Sequence[CellRun], dataset: str) -> Entry:
    """# Samples: rows kept after curation (`data/kept_rows` of the prepare_data stage run)."""
    stages = [s for c in group if (s := c.stage("prepare_data", dataset)) and "data/kept_rows" in s.metrics]
    if not stages:
        return Entry(metric="data/kept_rows", digits=0)
    return Entry(value=float(np.mean([s.metrics["data/kept_rows"] for s in stages])), metric="data/kept_rows",
                 digits=0, run_ids=tuple(dict.fromkeys(s.run_id for s in stages)))


# ------------------------------------------------------------------------------------------------
# Table 1: preference datasets (DPO)
# ------------------------------------------------------------------------------------------------

@register("table1", "table", "Table 1: preference data (DPO on each dataset)",
          Needs(params=(("algorithm.name", "dpo"), ("dataset.name", "*"))))
def table1(ctx: ReportContext) -> ReportTable:
    cells = [c for c in ctx.exp.policies if c.algorithm == "dpo" and c.param("dataset.name")]
    columns, notes = ctx.suite_columns()
    groups = group_by_identity(cells)
    labels = _labels_unique(groups, "{dataset}", skip=("dataset", "dataset.name"))
    order = sorted(range(len(groups)), key=lambda i: (
        _SOURCE_ORDER.get(source_type(groups[i][0].param("dataset.name")), 9), labels[i]))
    table = ReportTable("table1", "Table 1: preference data",
                        "Policies trained with DPO on each preference dataset, against the SFT baseline.",
                        ["Source", "Dataset"], ["# Samples", *(c for c, _ in columns)], notes=notes)
    base = _baseline_row(ctx, columns, ["—", "SFT baseline"], [Entry(text="—")])
    if base:
        table.rows.append(base)
    for i in order:
        group = groups[i]
        dataset = group[0].param("dataset.name") or "—"
        table.rows.append(Row([source_type(dataset).capitalize(), labels[i]],
                              [_samples_entry(ctx, group, dataset), *_suite_row(ctx, group, columns)]))
    return _finish(ctx, table, n_lead=1)


# ------------------------------------------------------------------------------------------------
# Table 2: DPO vs PPO per dataset, with the Avg. Δ row
# ------------------------------------------------------------------------------------------------

@register("table2", "table", "Table 2: DPO vs PPO on the same data",
          Needs(params=(("algorithm.name", "dpo"), ("algorithm.name", "ppo"))))
def table2(ctx: ReportContext) -> ReportTable:
    columns, notes = ctx.suite_columns()
    by_data: dict[str, dict[str, list[list[CellRun]]]] = {}
    # PPO cells with a separate prompt set belong to Table 4; here PPO uses the preference data's prompts.
    eligible = [c for c in ctx.exp.policies if c.algorithm in ("dpo", "ppo") and not c.param("prompts.name")]
    groups = group_by_identity(eligible)
    label_of = {id(g): label for g, label in zip(groups, compact_labels(groups))}
    for group in groups:
        data = group[0].param("dataset.name") or "—"
        by_data.setdefault(data, {}).setdefault(group[0].algorithm or "", []).append(group)
    pairs = {d: a for d, a in by_data.items() if a.get("dpo") and a.get("ppo")}
    if not pairs:
        raise Skip("no dataset has both a DPO and a PPO cell")
    table = ReportTable("table2", "Table 2: DPO vs PPO",
                        "DPO and PPO trained on the same preference data (PPO: reward model and prompts from "
                        "that data); Δ = PPO − DPO.", ["Data / Model", "Alg."], [c for c, _ in columns], notes=notes)
    base = _baseline_row(ctx, columns, ["SFT baseline", "—"])
    if base:
        table.rows.append(base)
    deltas: list[list[Entry]] = []
    for data in sorted(pairs):
        algs = pairs[data]
        rows = {}
        for alg in ("dpo", "ppo"):
            for k, group in enumerate(algs[alg]):
                extra = f" ({label_of[id(group)]})" if len(algs[alg]) > 1 else ""
                entries = _suite_row(ctx, group, columns)
                rows[(alg, k)] = entries
                table.rows.append(Row([data, alg.upper() + extra], entries))
        if len(algs["dpo"]) == 1 and len(algs["ppo"]) == 1:
            delta = [ctx.difference(a, b) for a, b in zip(rows[("dpo", 0)], rows[("ppo", 0)])]
            deltas.append(delta)
            if ctx.ci:  # the paper shows only the average; per-dataset Δ with p-values when CIs are on
                table.rows.append(Row([data, "Δ (PPO − DPO)"], delta, kind="delta"))
        else:
            table.notes.append(f"{data}: several DPO or PPO configurations, so no Δ for it.")
    if deltas:
        avg = [ctx.mean_of([d[j] for d in deltas], signed=True) for j in range(len(columns))]
        table.rows.append(Row(["Avg. Δ b/w PPO & DPO", ""], avg, kind="delta"))
    return _finish(ctx, table)


# ------------------------------------------------------------------------------------------------
# Reward models (Tables 3, 12, 13; seed 001's RM table)
# ------------------------------------------------------------------------------------------------

def rm_identity(cell: CellRun) -> str | None:
    """A reward model is its training stage's content hash, or the folder it was given as; an ensemble is
    its members and combination rule (the cell's `reward_model.*` params)."""
    if cell.param("reward_model.ensemble"):
        return "ensemble:" + "|".join(f"{k}={v}" for k, v in sorted(cell.params.items())
                                      if k.startswith("reward_model."))
    return cell.stage_key("train_reward_model") or cell.param("reward_model.path")


def rm_label(cell: CellRun) -> str:
    if cell.param("reward_model.ensemble"):
        combine = cell.param("reward_model.combine") or "mean"
        if combine == "uwo":
            combine += f", lambda {cell.param('reward_model.uwo_lambda')}"
        return f"RM ensemble ({combine})"
    if cell.param("reward_model.path"):
        return cell.param("reward_model.path") or "—"
    data = cell.param("reward_model.dataset.name") or "?"
    rows = cell.param("reward_model.dataset.max_rows")
    if rows not in (None, "", "None"):
        data += f", {rows} pairs"  # RMs on subsets of one dataset (e.g. the KL sweep's weak and strong RM)
    return f"{cell.param('reward_model.base') or '?'} RM ({data})"


def rm_groups(ctx: ReportContext) -> list[tuple[str, list[CellRun]]]:
    """(label, cells using it) per reward model, labels disambiguated."""
    groups: dict[str, list[CellRun]] = {}
    for cell in ctx.exp.policies:
        ident = rm_identity(cell)
        if ident:
            groups.setdefault(ident, []).append(cell)
    labels = [rm_label(cells[0]) for cells in groups.values()]
    out = []
    for (ident, cells), label in zip(groups.items(), labels):
        out.append((f"{label} [{ident[:6]}]" if labels.count(label) > 1 else label, cells))
    return out


def reward_labels(ctx: ReportContext) -> dict[int, str]:
    """id(policy cell) -> the name of what rewarded it: its reward model, labelled as in `rm_groups`
    (two RMs that differ only in training settings get their hash, not one shared name), or its
    verifier. Cells with none are absent."""
    labels = {id(cell): label for label, cells in rm_groups(ctx) for cell in cells}
    for cell in ctx.exp.policies:
        if id(cell) in labels:
            continue
        if cell.param("reward_model.verifier"):
            labels[id(cell)] = f"{cell.param('reward_model.verifier')} (verifier)"
        elif cell.param("reward_function"):  # runs logged before verifiers moved under reward_model
            labels[id(cell)] = f"{cell.param('reward_function')} (reward function)"
    return labels


def bon_metrics(cell: CellRun) -> dict[str, dict[str, float]]:
    """Best-of-N metrics of a cell by reward-model label: `bon/<label>/<metric>` (or `bon/<metric>`)."""
    tasks = set(task_categories()) | {"category", "overall"}
    out: dict[str, dict[str, float]] = {}
    for key, value in cell.metrics.items():
        if not key.startswith("bon/"):
            continue
        rest = key[4:]
        head, _, tail = rest.partition("/")
        label, metric = ("", rest) if head in tasks or not tail else (head, tail)
        out.setdefault(label, {})[metric] = float(value)
    return out


def bon_columns() -> list[tuple[str, str]]:
    """Table 12's (header, task) columns: the paper's best-of-N benchmarks (`SUITES["paper-bon"]`)."""
    from harness.evaluation.paper_suite import PAPER_BEST_OF_N_COLUMNS

    return [(header, task) for task, header in PAPER_BEST_OF_N_COLUMNS.items()]


def _category_average(scores: dict[str, float]) -> float | None:
    """Mean over categories of the mean task score within each category (the paper's BoN average)."""
    cats = task_categories()
    by_cat: dict[str, list[float]] = {}
    for task, value in scores.items():
        by_cat.setdefault(cats.get(task, task), []).append(value)
    return float(np.mean([np.mean(v) for v in by_cat.values()])) if by_cat else None


@register("table3", "table", "Table 3: reward models, direct and downstream",
          Needs(metrics_any=(("rewardbench/*", "bon/*", "rm/accuracy"),)))
def table3(ctx: ReportContext) -> ReportTable:
    groups = rm_groups(ctx)
    if not groups:
        raise Skip("no cell uses a reward model")
    base = ctx.exp.baseline
    table = ReportTable("table3", "Table 3: reward model evaluation",
                        "Direct: RewardBench score and best-of-N average (Δ over SFT on the same tasks). "
                        "Downstream: PPO policies trained with each reward model.",
                        ["Reward Model"], ["RewardBench", "BoN avg", "BoN Δ over SFT", "GSM Acc.",
                                           "AlpacaEval 2", "Avg. on All Evals"])
    for label, cells in groups:
        rm_stage = next((s for c in cells if (s := c.stage("train_reward_model"))), None)
        rb = (ctx.stage_value(rm_stage, "rewardbench/score", scale=100.0) if rm_stage is not None
              and "rewardbench/score" in rm_stage.metrics else ctx.value(cells[:1], "rewardbench/score", 100.0))
        bon_avg, bon_delta = Entry(), Entry(signed=True)
        bon_cell = next((c for c in cells if bon_metrics(c)), None)
        if bon_cell is not None:
            _, bon = next(iter(bon_metrics(bon_cell).items()))
            task_scores = {t: v for k, v in bon.items() if k.endswith("/score") and (t := k[:-6]) and "/" not in t}
            avg = _category_average(task_scores)
            if avg is not None:
                bon_avg = Entry(value=avg, metric="bon/*/score", run_ids=(bon_cell.run_id,))
                sft = {t: base.metric(f"{t}/score") for t in task_scores} if base else {}
                if base and all(v is not None for v in sft.values()):
                    sft_avg = _category_average({t: v for t, v in sft.items() if v is not None})
                    bon_delta = Entry(value=avg - sft_avg, metric="bon/*/score − sft", signed=True,  # type: ignore[operator]
                                      run_ids=(bon_cell.run_id, base.run_id))
        ppo = [c for c in cells if is_online(c)]
        table.rows.append(Row([label], [rb, bon_avg, bon_delta, ctx.value(ppo, "gsm8k/score"),
                                        ctx.value(ppo, "alpaca_eval2/score"), ctx.value(ppo, AVERAGE[1])]))
    if not any(e.is_number for r in table.rows for e in r.entries):
        raise Skip("reward models present, but none has RewardBench, best-of-N or downstream metrics")
    return _finish(ctx, table)


@register("table12", "table", "Table 12: best-of-N, full results", Needs(metrics_any=(("bon/*",),)))
def table12(ctx: ReportContext) -> ReportTable:
    picked: list[tuple[str, CellRun, dict[str, float]]] = []
    for label, cells in rm_groups(ctx):
        cell = next((c for c in cells if bon_metrics(c)), None)
        if cell is not None:
            picked.append((label, cell, next(iter(bon_metrics(cell).values()))))
    # Tasks outside the paper's eight (e.g. a small grid's custom task) get columns after them, so every
    # logged best-of-N score is shown (as `suite_columns` does for the other tables).
    paper_columns = bon_columns()
    paper = {t for _, t in paper_columns}
    extra = sorted({k[:-6] for _, _, bon in picked for k in bon if k.endswith("/score") and "/" not in k[:-6]} - paper)
    columns = paper_columns + [(t, t) for t in extra]
    table = ReportTable("table12", "Table 12: best-of-N evaluation",
                        "The SFT model's own answers (first row) vs the best of N SFT samples picked by each "
                        "reward model.", ["Model"], [c for c, _ in columns])
    if extra:
        table.notes.append(f"Tasks outside the paper's best-of-N set, after its columns: {', '.join(extra)}.")
    base = ctx.exp.baseline
    if base is not None:
        table.rows.append(Row(["SFT"], [ctx.value([base], f"{t}/score") for _, t in columns], kind="baseline"))
    for label, cell, bon in picked:
        table.rows.append(Row([label], [
            Entry(value=bon[f"{t}/score"], metric=f"bon/{t}/score", run_ids=(cell.run_id,))
            if f"{t}/score" in bon else Entry() for _, t in columns]))
    if not any(r.kind == "data" for r in table.rows):
        raise Skip("no reward-model cell carries best-of-N metrics")
    table.notes.append("Best-of-N per-example selections are not in the cell's MLflow artifacts: no intervals.")
    return _finish(ctx, table)


REWARDBENCH_COLUMNS = [("Chat", "chat"), ("Chat Hard", "chat_hard"), ("Safety", "safety"),
                       ("Reasoning", "reasoning"), ("Prior Sets", "prior_sets"), ("Score", "score")]


@register("table13", "table", "Table 13: RewardBench subsets", Needs(metrics_any=(("rewardbench/*",),)))
def table13(ctx: ReportContext) -> ReportTable:
    table = ReportTable("table13", "Table 13: RewardBench",
                        "Section accuracies (x100); Score weights prior sets 0.5 and the other sections 1.",
                        ["Reward Model"], [c for c, _ in REWARDBENCH_COLUMNS])
    for label, cells in rm_groups(ctx):
        stage = next((s for c in cells if (s := c.stage("train_reward_model")) and "rewardbench/score" in s.metrics),
                     None)
        if stage is not None:
            table.rows.append(Row([label], [ctx.stage_value(stage, f"rewardbench/{k}", 100.0)
                                            for _, k in REWARDBENCH_COLUMNS]))
        elif any(c.metric("rewardbench/score") is not None for c in cells):
            table.rows.append(Row([label], [ctx.value(cells[:1], f"rewardbench/{k}", 100.0)
                                            for _, k in REWARDBENCH_COLUMNS]))
    if not table.rows:
        raise Skip("no reward model has RewardBench metrics")
    table.notes.append("RewardBench per-pair verdicts are not logged as a run artifact: no intervals.")
    return table


@register("rm_eval", "table", "Seed 001: reward-model held-out accuracy and score statistics",
          Needs(metrics_any=(("rm/accuracy",),)))
def rm_eval(ctx: ReportContext) -> ReportTable:
    table = ReportTable("rm_eval", "Reward models on held-out pairs",
                        "Pairwise accuracy (chosen scored above rejected) and score statistics on the held-out "
                        "split of each reward model's preference data.",
                        ["Reward Model"], ["Accuracy", "Reward mean", "Reward std", "Chosen mean",
                                           "Rejected mean", "Pairs"])
    seen: set[str] = set()
    for label, cells in rm_groups(ctx):
        cell = next((c for c in cells if c.stage("train_reward_model") and c.metric("rm/accuracy") is not None), None)
        if cell is None or (stage := cell.stage("train_reward_model")) is None or stage.run_id in seen:
            continue
        seen.add(stage.run_id)
        entries = []
        for metric, digits in (("rm/accuracy", 3), ("rm/reward_mean", 3), ("rm/reward_std", 3),
                               ("rm/chosen_mean", 3), ("rm/rejected_mean", 3), ("rm/n_pairs", 0)):
            entry = ctx.value([cell], metric, digits=digits)
            entry.run_ids = (stage.run_id,)  # measured (and logged) by the reward-model stage run
            entries.append(entry)
        table.rows.append(Row([label], entries))
    if not table.rows:
        raise Skip("no trained reward model with `rm/accuracy`")
    ci_notes(ctx, table)
    return table


# ------------------------------------------------------------------------------------------------
# Table 4: policy-training prompts; Table 5: recipe; Table 7: UltraFeedback subsets
# ------------------------------------------------------------------------------------------------

@register("table4", "table", "Table 4: policy-training prompts (PPO)", Needs(params=(("prompts.name", "*"),)))
def table4(ctx: ReportContext) -> ReportTable:
    cells = [c for c in ctx.exp.policies if c.param("prompts.name")]
    columns = [("GSM %", "gsm8k/score"), ("Coding", "category/coding"), ("Avg. Across All Evals", "overall")]
    table = ReportTable("table4", "Table 4: policy training prompts",
                        "Policies trained with each reward model on each prompt set.", ["Reward Model", "Prompts"],
                        [c for c, _ in columns])
    base = _baseline_row(ctx, columns, ["SFT baseline", "—"])
    if base:
        table.rows.append(base)
    rewards = reward_labels(ctx)
    groups = group_by_identity(cells)
    named = [(rewards.get(id(g[0]), "—"), g[0].param("prompts.name") or "—") for g in groups]
    labels = list(named)
    for i, (group, (reward, prompts)) in enumerate(zip(groups, named)):
        if named.count((reward, prompts)) > 1:  # same RM and prompts, other settings differ: say which
            extra = describe_overrides(group[0], skip=("prompts", "prompts.name", "reward_model"))
            labels[i] = (reward, f"{prompts} ({extra})")
    for i in sorted(range(len(groups)), key=lambda i: labels[i]):
        table.rows.append(Row(list(labels[i]), _suite_row(ctx, groups[i], columns)))
    if not any(e.is_number for r in table.rows if r.kind == "data" for e in r.entries):
        raise Skip("cells with policy prompts have none of `gsm8k/score`, `category/coding`, `overall`")
    return _finish(ctx, table)


@register("table5", "table", "Table 5: recipe summary (every configuration)", Needs(metrics_any=(("*/score",),)))
def table5(ctx: ReportContext) -> ReportTable:
    columns, notes = ctx.suite_columns()
    table = ReportTable("table5", "Table 5: putting it together",
                        "Every configuration of the experiment (seeds averaged), against the SFT baseline.",
                        ["Model"], [c for c, _ in columns], notes=notes)
    base = _baseline_row(ctx, columns, ["SFT baseline"])
    if base:
        table.rows.append(base)
    groups = group_by_identity(ctx.exp.policies)
    for group, label in zip(groups, compact_labels(groups)):
        table.rows.append(Row([label], _suite_row(ctx, group, columns)))
    return _finish(ctx, table)


@register("table7", "table", "Table 7: UltraFeedback subsets (DPO)", Needs(params=(("dataset.name", "ultrafeedback*"),)))
def table7(ctx: ReportContext) -> ReportTable:
    cells = [c for c in ctx.exp.policies if (c.param("dataset.name") or "").startswith("ultrafeedback")
             and c.algorithm == "dpo"]
    if not cells:
        raise Skip("no DPO cell on an UltraFeedback dataset")
    columns, notes = ctx.suite_columns()
    table = ReportTable("table7", "Table 7: UltraFeedback subsets",
                        "DPO on subsets of UltraFeedback: by the strength of the models that wrote the responses "
                        "and by prompt source.", ["Subset"], [c for c, _ in columns], notes=notes)
    base = _baseline_row(ctx, columns, ["SFT baseline"])
    if base:
        table.rows.append(base)
    groups = group_by_identity(cells)
    for group, label in sorted(zip(groups, _labels_unique(groups, "{dataset}", ("dataset",))), key=lambda x: x[1]):
        table.rows.append(Row([label], _suite_row(ctx, group, columns)))
    return _finish(ctx, table)


# ------------------------------------------------------------------------------------------------
# Table 11: PPO batch settings and training time
# ------------------------------------------------------------------------------------------------

def _ratio(value: float | None, first: float | None, run_ids: tuple[str, ...], metric: str) -> Entry:
    if value is None or not first:
        return Entry(metric=metric)
    return Entry(value=value / first, text=f"{value / first:.2g}x", metric=metric, run_ids=run_ids)


@register("table11", "table", "Table 11: PPO prompt batch size vs training time", Needs(params=(("algorithm.name", "ppo"),)))
def table11(ctx: ReportContext) -> ReportTable:
    groups = group_by_identity([c for c in ctx.exp.policies if c.algorithm == "ppo"])

    def hp(cell: CellRun, key: str) -> int:
        return int(float(cell.param(f"algorithm.{key}") or 0))

    groups.sort(key=lambda g: (hp(g[0], "prompt_batch_size"), hp(g[0], "rollouts_per_prompt"),
                               hp(g[0], "gradient_accumulation_steps")))
    columns, _ = ctx.suite_columns()
    perf_label, perf_metric = AVERAGE if any(m == AVERAGE[1] for _, m in columns) else columns[-1]
    seconds = [ctx.value(g, "train/wall_seconds").value for g in groups]
    hours = max((s or 0.0) for s in seconds) >= 3600
    table = ReportTable("table11", "Table 11: PPO with bigger prompt batches",
                        "B prompt batch, b minibatch, r rollouts per prompt, g gradient accumulation; training "
                        "examples, update batch size and number of updates relative to the first row.",
                        ["B", "b", "r", "g"], ["# training ex.", "grad update bsz", "# grad updates",
                                               f"Training time ({'h' if hours else 's'})", f"Avg. Perf. ({perf_label})"])
    first = groups[0][0] if groups else None
    for group in groups:
        cell = group[0]
        ids = tuple(c.run_id for c in group)
        first_ids = tuple(dict.fromkeys(ids + ((first.run_id,) if first else ())))
        ex = ctx.value(group, "train/episodes").value
        upd = ctx.value(group, "train/optimizer_steps").value
        bsz = hp(cell, "minibatch_size") * hp(cell, "gradient_accumulation_steps")
        first_bsz = hp(first, "minibatch_size") * hp(first, "gradient_accumulation_steps") if first else 0
        time_entry = ctx.value(group, "train/wall_seconds", scale=1 / 3600 if hours else 1.0)
        time_entry.ci, time_entry.reps = None, None
        table.rows.append(Row(
            [str(hp(cell, k)) for k in ("prompt_batch_size", "minibatch_size", "rollouts_per_prompt",
                                        "gradient_accumulation_steps")],
            [_ratio(ex, ctx.value([first], "train/episodes").value if first else None, first_ids, "train/episodes"),
             _ratio(float(bsz), float(first_bsz), first_ids, "algorithm.minibatch_size*gradient_accumulation_steps"),
             _ratio(upd, ctx.value([first], "train/optimizer_steps").value if first else None, first_ids,
                    "train/optimizer_steps"),
             time_entry, ctx.value(group, perf_metric)]))
    ci_notes(ctx, table)
    return table


# ------------------------------------------------------------------------------------------------
# Seed 000: per-prompt reward table
# ------------------------------------------------------------------------------------------------

@register("prompt_rewards", "table", "Seed 000: per-prompt reward-model scores by policy",
          Needs(metrics_any=(("rm_reward/mean",),)))
def prompt_rewards(ctx: ReportContext) -> ReportTable:
    per_cell: list[tuple[CellRun, dict[str, float], str]] = []
    for cell in ctx.exp.cells:
        found = ctx.exp.samples(cell, "rm_reward")
        if found:
            rows, run_id = found
            per_cell.append((cell, {str(r.get("id", i)): float(r["reward"]) for i, r in enumerate(rows)}, run_id))
    if not per_cell:
        raise Skip("no `samples/rm_reward.samples.jsonl` artifact on any evaluate run")
    common = set.intersection(*(set(s) for _, s, _ in per_cell))
    base = next(((c, s, r) for c, s, r in per_cell if c.is_baseline), None)
    best: dict[str, int] = {c.run_id: 0 for c, _, _ in per_cell}
    for pid in common:
        top = max(s[pid] for _, s, _ in per_cell)
        for c, s, _ in per_cell:
            best[c.run_id] += s[pid] == top  # ties: every policy at the top counts
    scored_by = reward_score_name(c for c, _, _ in per_cell)
    table = ReportTable("prompt_rewards", "Per-prompt reward",
                        f"{scored_by[0].upper()}{scored_by[1:]} of each policy's greedy answer on the {len(common)} held-out prompts "
                        "every policy answered: mean, median, prompts where the policy beats the base model and "
                        "prompts where it is (jointly) the best.",
                        ["Policy"], ["Mean reward", "Median reward", "Prompts > base", "Prompts best"])
    labels = dict(zip((c.run_id for c, _, _ in per_cell), compact_labels([[c] for c, _, _ in per_cell])))
    for cell, scores, run_id in per_cell:
        values = [scores[p] for p in sorted(common)]
        mean = ctx.value([cell], "rm_reward/mean", digits=2)
        mean.run_ids = tuple(dict.fromkeys(mean.run_ids + (run_id,)))
        if base is None or cell.is_baseline:
            beats = Entry(text="—")
        else:
            n = sum(scores[p] > base[1][p] for p in common)
            beats = Entry(value=float(n), text=f"{n}/{len(common)}", run_ids=(run_id, base[2]))
        table.rows.append(Row(["SFT (base)" if cell.is_baseline else labels[cell.run_id]], [
            mean, Entry(value=float(np.median(values)), digits=2, run_ids=(run_id,)), beats,
            Entry(value=float(best[cell.run_id]), text=f"{best[cell.run_id]}/{len(common)}",
                  run_ids=tuple(r for _, _, r in per_cell))], kind="baseline" if cell.is_baseline else "data"))
    if base is None:
        table.notes.append("The SFT baseline has no `rm_reward` samples (its cell has no reward model), so "
                           "'Prompts > base' is not available; evaluate the baseline with the reward model to fill it.")
    ci_notes(ctx, table)
    return table
