"""Report items of the over-optimisation monitor (harness/monitor.py) and the length-controlled views.

- `overoptimisation` (table): per policy cell with checkpoint evaluations, the proxy and gold rewards from
  the SFT model (step 0) to the final model, the final KL, the length change, truncation and refusal rates,
  and the monitor's two flags (from the cell run's `harness.monitor.*` tags; their reasons as notes).
- `monitor` (figure): per cell, the monitor's signals over training steps, one panel each.
- `length_control` (table): every judged win rate beside its length-controlled counterpart (the judge's
  `judge/lc_win_rate`; AlpacaEval 2's `alpaca_eval2/lc_win_rate`), the policy's mean answer length and its
  change over the SFT model (evaluation answers), and, for cells trained on preference pairs, the length
  statistics of those pairs (chosen / rejected mean characters, share of pairs whose chosen is longer).
"""

from __future__ import annotations

import statistics
import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from harness.mlflow_layout import TAG_MONITOR_PREFIX  # noqa: E402
from reports import figures as _figures  # noqa: E402, F401  (the paper's items register first: report order)
from reports import tables as _tables  # noqa: E402, F401
from reports.data import CellRun, compact_labels, group_by_identity  # noqa: E402
from reports.model import Entry, ReportTable, Row  # noqa: E402
from reports.registry import FigureOutput, Needs, ReportContext, Skip, register  # noqa: E402

PROXY, GOLD, KL, LENGTH = "monitor/proxy_reward", "monitor/gold_reward", "monitor/kl", "monitor/response_length"
TRUNCATION = "monitor/truncation_rate"
REFUSAL_SAFE, REFUSAL_UNSAFE = "monitor/refusal_rate_safe", "monitor/refusal_rate_unsafe"
SIGNALS = [(PROXY, "proxy reward"), (GOLD, "gold signal"), (KL, "KL to SFT (nats)"), (LENGTH, "length (tokens)"),
           (TRUNCATION, "truncation rate"), (REFUSAL_SAFE, "refusal rate (XSTest safe)")]
FLAGS = [("overoptimisation", "Over-opt."), ("length_growth", "Length growth")]
MAX_CELLS = 6


def _monitored(ctx: ReportContext) -> list[tuple[str, CellRun]]:
    groups = group_by_identity(ctx.exp.policies)
    labelled = [(label, g[0]) for label, g in zip(compact_labels(groups), groups)]
    cells = [(label, c) for label, c in labelled if c.metric(LENGTH) is not None]
    if not cells:
        raise Skip("no cell with monitor metrics (the monitor runs with `eval.checkpoint_every`)")
    return cells


def _at_step_zero(ctx: ReportContext, cell: CellRun, key: str) -> float | None:
    points = ctx.exp.history(cell.run_id, key)
    return points[0][1] if points and points[0][0] == 0 else None


def _verdict(cell: CellRun, flag: str) -> str:
    why = cell.tags.get(f"{TAG_MONITOR_PREFIX}{flag}", "")
    return why.split(":")[0].split(" (")[0] if why else "—"


@register("overoptimisation", "table", "Over-optimisation monitor: proxy vs gold reward, KL, length, refusals",
          Needs(metrics_any=((LENGTH,),)))
def overoptimisation(ctx: ReportContext) -> ReportTable:
    table = ReportTable(
        "overoptimisation", "Over-optimisation monitor",
        "Per cell, from the SFT model (step 0) to the final model, on the monitor's prompts: the training "
        "(proxy) reward and the held-out gold signal (Δ), the final KL to the SFT model, the mean length as a "
        "multiple of the SFT model's, truncation and XSTest refusal rates. Flags: over-optimisation = the "
        "proxy rose while the gold fell over the last checkpoints (Gao et al., 2023); length growth = "
        "responses grew beyond the set fraction (harness/monitor.py).",
        ["Configuration"], ["Proxy Δ", "Gold Δ", "KL", "Length ×SFT", "Truncated", "Refusal safe", "Refusal unsafe",
                            *[label for _, label in FLAGS]])
    for label, cell in _monitored(ctx):
        entries: list[Entry] = []
        # (derived numbers name what they are derived from, not a logged metric they would be mistaken for)
        for key in (PROXY, GOLD):
            first, last = _at_step_zero(ctx, cell, key), cell.metric(key)
            entries.append(Entry(value=last - first, metric=f"{key} (final - step 0)", digits=3, signed=True,
                                 run_ids=(cell.run_id,)) if first is not None and last is not None else Entry())
        entries.append(Entry(value=cell.metric(KL), metric=KL, digits=2, run_ids=(cell.run_id,)))
        first = _at_step_zero(ctx, cell, LENGTH)
        entries.append(Entry(value=cell.metric(LENGTH) / first, metric=f"{LENGTH} (final / step 0)", digits=2,
                             run_ids=(cell.run_id,)) if first else Entry())
        for key in (TRUNCATION, REFUSAL_SAFE, REFUSAL_UNSAFE):
            entries.append(Entry(value=cell.metric(key), metric=key, digits=2, run_ids=(cell.run_id,)))
        entries += [Entry(text=_verdict(cell, flag)) for flag, _ in FLAGS]
        table.rows.append(Row([label], entries))
        for flag, name in FLAGS:
            why = cell.tags.get(f"{TAG_MONITOR_PREFIX}{flag}")
            if why:
                table.notes.append(f"{label}, {name}: {why}.")
    return table


@register("monitor", "figure", "Over-optimisation monitor: signals over training steps, per cell",
          Needs(metrics_any=((LENGTH,),)))
def monitor_panels(ctx: ReportContext) -> FigureOutput:
    cells = _monitored(ctx)
    notes = []
    if len(cells) > MAX_CELLS:
        notes.append(f"{len(cells) - MAX_CELLS} more cells are not drawn: "
                     + "; ".join(label for label, _ in cells[MAX_CELLS:]) + ".")
        cells = cells[:MAX_CELLS]
    signals = [(k, name) for k, name in SIGNALS if any(len(ctx.exp.history(c.run_id, k)) > 1 for _, c in cells)]
    fig, axes = plt.subplots(len(cells), len(signals), figsize=(2.6 * len(signals), 2.3 * len(cells)), squeeze=False)
    data = []
    for row, (label, cell) in enumerate(cells):
        flagged = [name for flag, name in FLAGS if _verdict(cell, flag) == "flagged"]
        for col, (key, name) in enumerate(signals):
            ax = axes[row][col]
            points = ctx.exp.history(cell.run_id, key)
            if points:
                steps, values = zip(*points)
                ax.plot(steps, values, marker=".", color="C3" if flagged else "C0")
                data += [{"figure": "monitor", "series": label, "x": s, "metric": key, "value": v,
                          "mlflow_run_ids": cell.run_id} for s, v in points]
            if row == 0:
                ax.set_title(name, fontsize=8.5)
            if col == 0:
                ax.set_ylabel(textwrap.fill(label + (f"\n[{', '.join(flagged)}]" if flagged else ""), 28), fontsize=7)
            if row == len(cells) - 1:
                ax.set_xlabel("training step")
    fig.tight_layout()
    return FigureOutput(fig, "The over-optimisation monitor's signals at step 0 (SFT), each checkpoint and the "
                        "final model; a cell drawn in red raised a flag (named beside it).", data, notes)


def _mean_output_chars(ctx: ReportContext, cell: CellRun, tasks: list[str]) -> tuple[float | None, str | None]:
    lengths = []
    for task in tasks:
        found = ctx.exp.samples(cell, task)
        if found:
            lengths += [len(str(r["output"])) for r in found[0] if "output" in r]
    found_run = cell.stage("evaluate")
    return (statistics.fmean(lengths) if lengths else None), (found_run.run_id if found_run else None)


def _output_tasks(cell: CellRun) -> list[str]:
    return sorted({k.split("/")[0] for k in cell.metrics if k.endswith("/score") and "/" in k
                   and not k.startswith(("bon/", "judge/", "category/"))})


@register("length_control", "table", "Length-controlled views: win rates with their LC counterparts, length changes",
          Needs(metrics_any=(("judge/win_rate", "alpaca_eval2/win_rate", "*/score"),)))
def length_control(ctx: ReportContext) -> ReportTable:
    table = ReportTable(
        "length_control", "Length-controlled views",
        "Every judged win rate beside its length-controlled (LC) counterpart: the pairwise judge against the "
        "reference (`harness judge`; LC by AlpacaEval 2's GLM, AlpacaEval prompts only) and AlpacaEval 2. Then "
        "the policy's mean answer length (characters, over its evaluation answers) and its change over the "
        "SFT model on the same tasks, and, for cells trained on preference pairs, those pairs' mean chosen and "
        "rejected lengths and the share of pairs whose chosen answer is the longer.",
        ["Configuration"], ["Judge WR", "Judge LC WR", "AE2 WR", "AE2 LC WR", "Answer chars", "Δ chars vs SFT %",
                            "Chosen chars", "Rejected chars", "Chosen longer %"])
    baseline = ctx.exp.baseline
    groups = group_by_identity(ctx.exp.policies)
    any_number = False
    for label, group in zip(compact_labels(groups), groups):
        cell = group[0]
        entries = [ctx.value(group, "judge/win_rate", scale=100), ctx.value(group, "judge/lc_win_rate", scale=100),
                   ctx.value(group, "alpaca_eval2/win_rate"), ctx.value(group, "alpaca_eval2/lc_win_rate")]
        tasks = _output_tasks(cell)
        own, run_id = _mean_output_chars(ctx, cell, tasks)
        entries.append(Entry(value=own, digits=0, run_ids=(run_id,) if run_id else (),
                             metric="mean characters of the evaluation answers"))
        base = _mean_output_chars(ctx, baseline, [t for t in tasks if t in _output_tasks(baseline)])[0] \
            if baseline is not None else None
        entries.append(Entry(value=100 * (own / base - 1), digits=1, signed=True, run_ids=(run_id,) if run_id else (),
                             metric="answer characters vs the SFT model's (%)") if own is not None and base else Entry())
        data = cell.stage("prepare_data", cell.param("dataset.name")) if cell.param("dataset.name") else None
        for metric, scale, digits in (("data/chosen_chars_mean", 1.0, 0), ("data/rejected_chars_mean", 1.0, 0),
                                      ("data/chosen_longer_rate", 100.0, 1)):
            entries.append(ctx.stage_value(data, metric, scale=scale, digits=digits) if data is not None
                           else Entry(metric=metric))
        any_number = any_number or any(e.is_number for e in entries)
        table.rows.append(Row([label], entries))
    if not any_number:
        raise Skip("no judged win rate, evaluation answers or preference-pair lengths")
    return table
