"""Figure builders: the paper's Figs. 1, 3, 4, 6, 7 and the seeds' plots, from MLflow (Agg backend).

Every builder returns the figure and the plotted numbers with the runs they came from (written next
to the PNG as CSV). Where the paper's metric is absent, a builder falls back to the metrics the
experiment has only when the figure stays meaningful, and says so in its caption.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the headless backend)
import numpy as np  # noqa: E402

from reports.data import CellRun, compact_labels, group_by_identity  # noqa: E402
from reports.model import Entry  # noqa: E402
from reports.names import metric_name, reward_score_name  # noqa: E402
from reports.registry import AVERAGE, FigureOutput, Needs, ReportContext, Skip, register  # noqa: E402
from reports.tables import reward_labels, rm_groups  # noqa: E402

plt.rcParams.update({"figure.dpi": 110, "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False,
                     "axes.spines.right": False, "font.size": 9})


def _names(metrics: Sequence[str]) -> str:
    return ", ".join(metric_name(m) for m in metrics)


def _available(ctx: ReportContext, preferred: Sequence[str]) -> tuple[list[str], str]:
    """The preferred metrics the experiment has; else its `<task>/score` metrics (caption note)."""
    have = [m for m in preferred if ctx.exp.has_metric(m)]
    if have:
        return have, ""
    scores = sorted(m for m in ctx.exp.metric_names() if m.endswith("/score") and not m.startswith(("bon/", "judge/")))
    if not scores:
        raise Skip(f"none of {', '.join(f'`{m}`' for m in preferred)} and no `<task>/score` metric")
    return scores[:3], f" (The paper's {_names(preferred)} are not in this experiment: showing {_names(scores[:3])}.)"


def _shared_legend(fig: Any, axes: Any) -> None:
    """One legend under the panels (every series once, whichever panel drew it), then a tight layout
    leaving room for it: per-panel legends of long configuration names cover the data."""
    handles: dict[str, Any] = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    ncol = 1 if max(map(len, handles), default=0) > 60 else 2 if max(map(len, handles), default=0) > 28 else 4
    rows = -(-len(handles) // ncol)
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=ncol, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, min(0.5, (0.18 * rows + 0.1) / fig.get_figheight()), 1, 1))


def _err(entry: Entry) -> tuple[float, float]:
    if entry.ci is None or not entry.is_number:
        return 0.0, 0.0
    return max(entry.value - entry.ci[0], 0.0), max(entry.ci[1] - entry.value, 0.0)  # type: ignore[operator]


def _row(figure: str, series: str, x: Any, metric: str, entry: Entry, **extra: Any) -> dict[str, Any]:
    return {"figure": figure, "series": series, "x": x, "metric": metric,
            "value": entry.value if entry.is_number else "", "ci_low": entry.ci[0] if entry.ci else "",
            "ci_high": entry.ci[1] if entry.ci else "", "p_value": "" if entry.p_value is None else entry.p_value,
            "mlflow_run_ids": ";".join(entry.run_ids), **extra}


# ------------------------------------------------------------------------------------------------
# Fig. 1: improvement of each configuration over SFT (GSM and overall)
# ------------------------------------------------------------------------------------------------

@register("fig1", "figure", "Fig. 1: improvement over SFT per configuration (GSM, overall)",
          Needs(metrics_any=(("*/score", "overall"),)))
def fig1(ctx: ReportContext) -> FigureOutput:
    base = ctx.exp.baseline
    if base is None:
        raise Skip("no SFT baseline cell to measure improvements against")
    metrics, note = _available(ctx, ["gsm8k/score", AVERAGE[1]])
    groups = group_by_identity(ctx.exp.policies)
    if not groups:
        raise Skip("no trained policy")
    labels = compact_labels(groups)
    deltas = {m: [ctx.difference(ctx.value([base], m), ctx.value(g, m)) for g in groups] for m in metrics}
    # One shared row order (by the first metric's gain) so the panels read across, labels on the left only.
    order = sorted(range(len(groups)), key=lambda i: deltas[metrics[0]][i].value if deltas[metrics[0]][i].is_number
                   else -np.inf)
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.0 * len(metrics) + 3.5, max(3.0, 0.3 * len(groups) + 1.6)),
                             squeeze=False, sharey=True)
    data = []
    ys = np.arange(len(order))
    for ax, metric in zip(axes[0], metrics):
        row = [deltas[metric][i] for i in order]
        values = [d.value if d.is_number else 0.0 for d in row]
        ax.barh(ys, values, color=["tab:blue" if v >= 0 else "tab:orange" for v in values], label="Δ vs SFT")
        with_ci = [k for k, d in enumerate(row) if d.ci is not None]
        if with_ci:  # error bars only where an interval exists (none is drawn as zero-width)
            ax.errorbar([values[k] for k in with_ci], ys[with_ci], xerr=np.array([_err(row[k]) for k in with_ci]).T,
                        fmt="none", ecolor="black", capsize=2, label="95% CI")
        ax.axvline(0, color="black", lw=0.8)
        ax.set_xlabel(f"Δ vs SFT (SFT = {ctx.value([base], metric).fmt_value()})")
        ax.set_title(metric_name(metric))
        ax.legend(loc="lower right", fontsize=7)
        data += [_row("fig1", labels[i], "", metric, deltas[metric][i]) for i in order]
    axes[0][0].set_yticks(ys, [labels[i] for i in order], fontsize=7)
    fig.tight_layout()
    return FigureOutput(fig, "Improvement of each configuration over the SFT baseline; error bars are paired "
                             "bootstrap 95% intervals of the difference (absent where a metric has no "
                             "per-example data, e.g. a component scored by a fitted model)." + note, data)


# ------------------------------------------------------------------------------------------------
# Fig. 3: GSM by prompt source and reward model
# ------------------------------------------------------------------------------------------------

@register("fig3", "figure", "Fig. 3: GSM by policy-training prompts and reward model",
          Needs(metrics_any=(("gsm8k/score",),), params=(("prompts.name", "*"),)))
def fig3(ctx: ReportContext) -> FigureOutput:
    cells = [c for c in ctx.exp.policies if c.param("prompts.name") and c.metric("gsm8k/score") is not None]
    if not cells:
        raise Skip("no cell with policy prompts has `gsm8k/score`")
    # Groups by reward model as Table 4 names them: RMs sharing a data label stay apart (not averaged).
    rewards = reward_labels(ctx)
    reward_of = {id(c): rewards.get(id(c), "no RM") for c in cells}
    rms = sorted(set(reward_of.values()))
    prompts = sorted({c.param("prompts.name") or "" for c in cells})
    fig, ax = plt.subplots(figsize=(max(5.0, 2.2 * len(rms) + 1.5), 4.0))
    width = 0.8 / len(prompts)
    data = []
    notes = []
    in_legend: set[str] = set()
    for j, prompt in enumerate(prompts):
        for i, rm in enumerate(rms):
            group = [c for c in cells if c.param("prompts.name") == prompt and reward_of[id(c)] == rm]
            entry = ctx.value(group, "gsm8k/score")
            if not entry.is_number:
                continue
            configs = len(group_by_identity(group))
            if configs > 1:  # e.g. a KL sweep on these prompts: the bar is their mean, say so
                notes.append(f"{prompt} / {rm}: the bar averages {configs} configurations.")
            ax.bar(i + (j - (len(prompts) - 1) / 2) * width, entry.value, width, yerr=np.array([_err(entry)]).T,
                   capsize=3, color=f"C{j}", label=None if prompt in in_legend else prompt)
            in_legend.add(prompt)
            data.append(_row("fig3", prompt, rm, "gsm8k/score", entry))
    if ctx.exp.baseline is not None and ctx.exp.baseline.metric("gsm8k/score") is not None:
        sft = ctx.exp.baseline.metric("gsm8k/score")
        ax.axhline(sft, color="grey", ls="--", lw=1, label=f"SFT ({sft:.1f})")
        data.append(_row("fig3", "SFT", "", "gsm8k/score", ctx.value([ctx.exp.baseline], "gsm8k/score")))
    # RM names are long: wrapped horizontal tick labels (rotated ones ran off the left edge).
    ax.set_xticks(range(len(rms)), [textwrap.fill(rm, 26, break_on_hyphens=False) for rm in rms], fontsize=8)
    ax.set_xlabel("reward model (bars: policy-training prompts)")
    ax.set_ylabel(metric_name("gsm8k/score"))
    ax.set_ylim(0, max(1.0, ax.get_ylim()[1]))  # accuracy: no negative axis, even when every bar is 0
    _shared_legend(fig, np.array([ax]))
    return FigureOutput(fig, "GSM8K accuracy of PPO policies by prompt source (bars) and reward model (groups); "
                             "95% bootstrap intervals.", data, notes)


# ------------------------------------------------------------------------------------------------
# Fig. 4: metric vs KL coefficient, per reward model
# ------------------------------------------------------------------------------------------------

def kl_coefficient(cell: CellRun) -> float | None:
    """The cell's KL coefficient (`AlgorithmSpec.kl_coefficient_field`: PPO's `kl_coef`, the β of DPO-style
    losses; both weigh the pull towards the reference), None for an algorithm without one."""
    from harness.algorithms import spec_or_none  # here: importing every algorithm costs seconds (torch)

    spec = spec_or_none(cell.algorithm)
    value = cell.param(f"algorithm.{spec.kl_coefficient_field}") if spec and spec.kl_coefficient_field else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


@register("fig4", "figure", "Fig. 4: metrics vs KL coefficient per reward model",
          Needs(params=(("algorithm.name", "*"),)))
def fig4(ctx: ReportContext) -> FigureOutput:
    series: dict[str, list[CellRun]] = {}
    # One line per reward model (Fig. 4's point: the best β moves with the RM), labels disambiguated.
    rm_names = {id(cell): label for label, cells in rm_groups(ctx) for cell in cells}
    for cell in ctx.exp.policies:
        if kl_coefficient(cell) is None:
            continue
        name = " · ".join(x for x in ((cell.algorithm or "").upper(), cell.param("dataset.name"),
                                      rm_names.get(id(cell)), cell.param("prompts.name")) if x)
        series.setdefault(name, []).append(cell)
    series = {k: v for k, v in series.items() if len({kl_coefficient(c) for c in v}) >= 2}
    if not series:
        raise Skip("no β / kl_coef sweep (a series needs at least two KL coefficients)")
    metrics, note = _available(ctx, ["gsm8k/score", "alpaca_eval2/score", AVERAGE[1]])
    # The reward-KL view beside performance (seed 000's frontier): what the RM gave and what it cost.
    metrics += [m for m in ("rm_reward/mean", "policy_kl/kl_mean") if ctx.exp.has_metric(m)]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.4), squeeze=False)
    data = []
    for ax, metric in zip(axes[0], metrics):
        for k, (name, cells) in enumerate(sorted(series.items())):
            points = []
            for beta in sorted({kl_coefficient(c) for c in cells}):  # type: ignore[type-var]
                entry = ctx.value([c for c in cells if kl_coefficient(c) == beta], metric)
                if entry.is_number:
                    points.append((beta, entry))
                    data.append(_row("fig4", name, beta, metric, entry))
            if points:
                xs = [p[0] for p in points]
                ax.errorbar(xs, [p[1].value for p in points], yerr=np.array([_err(p[1]) for p in points]).T,
                            marker="o", capsize=3, color=f"C{k}", label=name)
        base = ctx.exp.baseline
        if base is not None and base.metric(metric) is not None:
            ax.axhline(base.metric(metric), color="grey", ls="--", lw=1, label="SFT")
        ax.set_xscale("log")
        ax.set_xlabel("KL coefficient β (log scale)")
        ax.set_ylabel(metric_name(metric))
        ax.set_title(metric_name(metric))
    _shared_legend(fig, axes)
    return FigureOutput(fig, "Each metric against the KL penalty coefficient (PPO `kl_coef`, DPO-style `beta`), one "
                             "line per algorithm and reward model; 95% bootstrap intervals." + note, data)


# ------------------------------------------------------------------------------------------------
# Figs. 6-7: metrics over training steps
# ------------------------------------------------------------------------------------------------

MAX_DISTRIBUTIONS = 6  # more overlaid histograms are unreadable
MAX_CURVES = 10  # configurations drawn over training steps (one colour each, no repeats)

TRAIN_CURVE_PRIORITY = ("train/reward_mean", "train/rewards_chosen", "train/kl", "train/loss", "train/margins",
                        "train/accuracy", "train/rewards_margins", "train/entropy", "train/response_length",
                        "train/policy_loss", "train/value_loss", "train/learning_rate")


def _checkpoint_metrics(ctx: ReportContext, run_id: str, keys: Sequence[str]) -> list[str]:
    """Evaluation metrics logged at more than one training step (intermediate-checkpoint evals)."""
    return [k for k in keys if len(ctx.exp.history(run_id, k)) > 1]


Curve = tuple[str, str, list[tuple[int, float]]]  # (series label, run id, (step, value) points)


@dataclass
class _Configurations:
    """The configurations drawn over training steps (one colour each) and what was left out."""

    drawn: list[tuple[str, CellRun, Any]]  # (label, first cell of the configuration, its train stage run)
    notes: list[str]


def _configurations(ctx: ReportContext) -> _Configurations:
    groups = group_by_identity(ctx.exp.policies)
    with_stage = [(label, g[0], g[0].stage("train_policy")) for label, g in zip(compact_labels(groups), groups)]
    with_stage = [(label, c, s) for label, c, s in with_stage if s is not None]
    if not with_stage:
        raise Skip("no train_policy stage run")
    notes = []
    if len(with_stage) > MAX_CURVES:
        left = [label for label, _, _ in with_stage[MAX_CURVES:]]
        notes.append(f"{len(left)} more configurations are not drawn (at most {MAX_CURVES} lines stay readable): "
                     + "; ".join(left) + ".")
    return _Configurations(with_stage[:MAX_CURVES], notes)


def _checkpoint_curves(ctx: ReportContext, configs: _Configurations) -> dict[str, list[Curve]]:
    """metric -> curves, from evaluations of intermediate checkpoints: `eval/<metric>` histories on the
    train stage run, or `<task>/score` / `overall` histories on the cell run."""
    series: dict[str, list[Curve]] = {}
    for label, cell, stage in configs.drawn:
        evals = [k for k in stage.metrics if k.startswith("eval/")]
        keys = [(k, stage.run_id) for k in _checkpoint_metrics(ctx, stage.run_id, evals)]
        keys += [(k, cell.run_id) for k in _checkpoint_metrics(
            ctx, cell.run_id, [k for k in cell.metrics if k.endswith("/score") or k == "overall"])]
        for key, run_id in keys:
            series.setdefault(key.removeprefix("eval/"), []).append((label, run_id, ctx.exp.history(run_id, key)))
    return series


def _training_curves(ctx: ReportContext, configs: _Configurations) -> dict[str, list[Curve]]:
    """metric -> curves, from the train stage's own step metrics (loss, rewards, KL, ...)."""
    series: dict[str, list[Curve]] = {}
    for label, _, stage in configs.drawn:
        for key in TRAIN_CURVE_PRIORITY:
            if key in stage.metrics:
                points = ctx.exp.history(stage.run_id, key)
                if len(points) > 1:
                    series.setdefault(key, []).append((label, stage.run_id, points))
    return series


def _ranked(series: dict[str, list[Curve]], first: Sequence[str], max_panels: int) -> list[tuple[str, list[Curve]]]:
    order = list(first) + list(TRAIN_CURVE_PRIORITY)
    ranked = sorted(series.items(), key=lambda kv: (order.index(kv[0]) if kv[0] in order else len(order), kv[0]))
    return ranked[:max_panels]


def _epoch_boundaries(ctx: ReportContext, run_id: str) -> list[int]:
    epochs = ctx.exp.history(run_id, "train/epoch")
    last = epochs[-1][0] if epochs else 0
    return [step for (step, e), (_, prev) in zip(epochs[1:], epochs[:-1]) if int(e) > int(prev) and step < last]


def _plot_curves(ctx: ReportContext, name: str, panels: list[tuple[str, list[Curve]]], caption: str,
                 notes: list[str]) -> FigureOutput:
    ncol = min(3, len(panels))
    nrow = -(-len(panels) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.0 * nrow), squeeze=False)
    data = []
    labels = sorted({label for _, lines in panels for label, _, _ in lines})
    for ax, (metric, lines) in zip(axes.flat, panels):
        for label, run_id, points in lines:
            steps, values = zip(*points)
            ax.plot(steps, values, marker="." if len(points) < 30 else None, color=f"C{labels.index(label) % 10}",
                    label=label)
            for boundary in _epoch_boundaries(ctx, run_id):
                ax.axvline(boundary, color="grey", ls="--", lw=0.8)
            data += [{"figure": name, "series": label, "x": s, "metric": metric, "value": v, "mlflow_run_ids": run_id}
                     for s, v in points]
        ax.set_title(textwrap.fill(metric_name(metric), 40), fontsize=8.5)
        ax.set_xlabel("training step")
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    _shared_legend(fig, axes)
    return FigureOutput(fig, caption + " Grey dashed lines: epoch boundaries (when logged).", data, notes)


@register("fig6", "figure", "Fig. 6: all evaluations over training steps", Needs(params=(("algorithm.name", "*"),)))
def fig6(ctx: ReportContext) -> FigureOutput:
    configs = _configurations(ctx)
    series = _checkpoint_curves(ctx, configs)
    if series:
        caption = ("Evaluation metrics over training steps, from checkpoint evaluations (intermediate checkpoints "
                   "scored with the cell's evaluation tasks; step 0: the SFT model), one line per configuration.")
    else:
        series = _training_curves(ctx, configs)
        caption = ("Training curves over optimizer steps, one line per configuration. No intermediate checkpoint "
                   "was evaluated in this experiment (set `eval.checkpoint_every` for the paper's evaluations "
                   "over training), so these are the training loop's own metrics, not evaluations.")
    if not series:
        raise Skip("no metric has more than one training step logged")
    return _plot_curves(ctx, "fig6", _ranked(series, (), max_panels=6), caption, configs.notes)


FIG7_METRICS = ("alpaca_eval2/score", "ifeval/score", "gsm8k/score")


@register("fig7", "figure", "Fig. 7: AlpacaEval 2, IFEval, GSM over training steps",
          Needs(params=(("algorithm.name", "*"),)))
def fig7(ctx: ReportContext) -> FigureOutput:
    configs = _configurations(ctx)
    series = _checkpoint_curves(ctx, configs)
    if not series:
        raise Skip("no intermediate checkpoint was evaluated (set `eval.checkpoint_every`); Fig. 6 shows the "
                   "training curves instead")
    found = [m for m in FIG7_METRICS if m in series]
    missing = [m for m in FIG7_METRICS if m not in series]
    notes = list(configs.notes)
    if found:
        panels = _ranked({m: series[m] for m in found}, FIG7_METRICS, max_panels=3)
        caption = "The paper's headline evaluations of intermediate checkpoints over training steps."
        if missing:
            notes.append(f"Not evaluated at checkpoints in this experiment: {_names(missing)}.")
    else:
        panels = _ranked(series, (), max_panels=3)
        caption = (f"The paper's {_names(FIG7_METRICS)} were not evaluated at checkpoints in this experiment; "
                   f"shown instead: {_names([m for m, _ in panels])} at intermediate checkpoints.")
    return _plot_curves(ctx, "fig7", panels, caption, notes)


# ------------------------------------------------------------------------------------------------
# Seed 000: reward boxplot, reward vs KL scatter with Pareto frontier, win rates
# ------------------------------------------------------------------------------------------------

def _reward_samples(ctx: ReportContext) -> list[tuple[str, CellRun, list[float], str]]:
    out = []
    groups = group_by_identity(ctx.exp.cells)
    for label, group in zip(compact_labels(groups), groups):
        for cell in group:  # one distribution per run: seeds are separate samples of answers
            found = ctx.exp.samples(cell, "rm_reward")
            if found:
                name = "SFT (base)" if cell.is_baseline else label + (f" (seed {cell.seed})" if len(group) > 1 else "")
                out.append((name, cell, [float(r["reward"]) for r in found[0]], found[1]))
    return out


@register("reward_boxplot", "figure", "Seed 000: reward-model scores per policy (boxplot)",
          Needs(metrics_any=(("rm_reward/mean",),)))
def reward_boxplot(ctx: ReportContext) -> FigureOutput:
    samples = _reward_samples(ctx)
    if not samples:
        raise Skip("no `samples/rm_reward.samples.jsonl` artifact")
    fig, ax = plt.subplots(figsize=(7.5, max(3.0, 0.34 * len(samples) + 1.4)))
    ax.boxplot([s for _, _, s, _ in samples[::-1]], vert=False, showmeans=True, widths=0.6)
    ax.set_yticks(range(1, len(samples) + 1), [label for label, _, _, _ in samples[::-1]], fontsize=7)
    scored_by = reward_score_name(cell for _, cell, _, _ in samples)
    ax.set_xlabel(f"{scored_by} of the greedy answer")
    ax.set_ylabel("policy")
    ax.plot([], [], "g^", label="mean")
    ax.plot([], [], color="orange", label="median")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    data = [{"figure": "reward_boxplot", "series": label, "x": i, "metric": "rm_reward", "value": v,
             "mlflow_run_ids": run_id} for label, _, vals, run_id in samples for i, v in enumerate(vals)]
    return FigureOutput(fig, f"Distribution of the {scored_by} of each policy's answers to the held-out "
                             "prompts (box: quartiles, whiskers 1.5 IQR, triangle: mean).", data)


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of points not dominated by another with lower-or-equal KL and higher-or-equal reward."""
    front = []
    for i, (kl, reward) in enumerate(points):
        dominated = any((k2 <= kl and r2 >= reward) and (k2 < kl or r2 > reward) for j, (k2, r2) in enumerate(points)
                        if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


@register("reward_vs_kl", "figure", "Seed 000: reward vs KL to the reference, with the Pareto frontier",
          Needs(metrics_any=(("policy_kl/kl_mean",),)))
def reward_vs_kl(ctx: ReportContext) -> FigureOutput:
    y_metrics, note = _available(ctx, ["rm_reward/mean"])
    y_metric = y_metrics[0]
    points, entries = [], []
    groups = group_by_identity(ctx.exp.cells)
    for label, group in zip(compact_labels(groups), groups):
        kl, rew = ctx.value(group, "policy_kl/kl_mean", digits=3), ctx.value(group, y_metric, digits=3)
        if kl.is_number and rew.is_number:
            points.append((kl.value, rew.value))
            entries.append((label, group[0].algorithm or "sft", kl, rew))
    if len(points) < 2:
        raise Skip(f"fewer than two configurations have both `policy_kl/kl_mean` and `{y_metric}`")
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    algs = sorted({a for _, a, _, _ in entries})
    front = pareto_front(points)
    for i, (label, alg, kl, rew) in enumerate(entries):
        ax.errorbar(kl.value, rew.value, xerr=np.array([_err(kl)]).T, yerr=np.array([_err(rew)]).T, fmt="o",
                    color=f"C{algs.index(alg)}", capsize=3, alpha=0.85)
        if i in front:  # labels on the frontier only (every point is named in the CSV)
            ax.annotate(label, (kl.value, rew.value), fontsize=6.5, xytext=(4, -3), textcoords="offset points")
    for alg in algs:
        ax.plot([], [], "o", color=f"C{algs.index(alg)}", label=alg.upper() if alg != "sft" else "SFT")
    ax.plot([points[i][0] for i in front], [points[i][1] for i in front], "k--", lw=1, label="Pareto frontier")
    ax.set_xlabel(metric_name("policy_kl/kl_mean"))
    ax.set_ylabel(metric_name(y_metric))
    ax.legend(fontsize=7)
    fig.tight_layout()
    data = []
    for (label, _, kl, rew), i in zip(entries, range(len(entries))):
        data.append(_row("reward_vs_kl", label, kl.value, "policy_kl/kl_mean", kl, on_frontier=i in front))
        data.append(_row("reward_vs_kl", label, kl.value, y_metric, rew, on_frontier=i in front))
    return FigureOutput(fig, "Reward against KL drift from the reference policy, one point per configuration "
                             "(95% bootstrap intervals on both axes); dashed: the Pareto frontier (highest "
                             "reward for its KL), whose points are labelled (all points: CSV)." + note, data)


@register("win_rates", "figure", "Seed 000: judge win rate vs the base policy", Needs(metrics_any=(("judge/win_rate",),)))
def win_rates(ctx: ReportContext) -> FigureOutput:
    groups = group_by_identity(ctx.exp.policies)
    entries = [(label, ctx.value(g, "judge/win_rate", digits=3)) for label, g in zip(compact_labels(groups), groups)]
    entries = [(label, e) for label, e in entries if e.is_number]
    if not entries:
        raise Skip("no policy has `judge/win_rate`")
    fig, ax = plt.subplots(figsize=(7.0, max(3.0, 0.34 * len(entries) + 1.4)))
    ys = np.arange(len(entries))[::-1]
    ax.barh(ys, [e.value for _, e in entries], color="tab:blue", label="win rate")
    with_ci = [k for k, (_, e) in enumerate(entries) if e.ci is not None]
    if with_ci:
        ax.errorbar([entries[k][1].value for k in with_ci], ys[with_ci],
                    xerr=np.array([_err(entries[k][1]) for k in with_ci]).T, fmt="none", ecolor="black", capsize=2,
                    label="95% CI (judge's bootstrap)")
    ax.axvline(0.5, color="grey", ls="--", lw=1, label="parity with base")
    ax.set_yticks(ys, [label for label, _ in entries], fontsize=7)
    ax.set_xlabel("judge win rate vs base (ties = ½)")
    ax.set_xlim(0, 1)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return FigureOutput(fig, "Pairwise judge win rate of each policy against the base policy, with the judge's "
                             "bootstrap interval over prompts.", [_row("win_rates", label, "", "judge/win_rate", e)
                                                                  for label, e in entries])


# ------------------------------------------------------------------------------------------------
# Seed 001: chosen vs rejected RM scores; base vs trained-policy reward distributions
# ------------------------------------------------------------------------------------------------

@register("rm_score_distributions", "figure", "Seed 001: chosen vs rejected reward-model scores (held-out split)",
          Needs(metrics_any=(("rm/accuracy",),)))
def rm_score_distributions(ctx: ReportContext) -> FigureOutput:
    panels = []
    seen: set[str] = set()
    for label, cells in rm_groups(ctx):
        stage = next((s for c in cells if (s := c.stage("train_reward_model"))), None)
        if stage is None or stage.run_id in seen:
            continue
        seen.add(stage.run_id)
        rows = ctx.exp.jsonl_artifact(stage.run_id, "rm_scores.jsonl")
        if rows:
            panels.append((label, stage, rows))
    if not panels:
        raise Skip("no train_reward_model run with an `rm_scores.jsonl` artifact")
    ncol = min(2, len(panels))
    nrow = -(-len(panels) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.8 * ncol, 3.3 * nrow), squeeze=False)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    data = []
    for ax, (label, stage, rows) in zip(axes.flat, panels):
        chosen = [float(r["chosen_score"]) for r in rows]
        rejected = [float(r["rejected_score"]) for r in rows]
        bins = np.histogram_bin_edges(chosen + rejected, bins=min(30, max(5, len(rows) // 2)))
        ax.hist(chosen, bins=bins, alpha=0.6, color="tab:blue", label=f"chosen (mean {np.mean(chosen):.2f})")
        ax.hist(rejected, bins=bins, alpha=0.6, color="tab:orange", label=f"rejected (mean {np.mean(rejected):.2f})")
        acc = stage.metrics.get("rm/accuracy")
        ax.set_title(f"{label}\naccuracy {acc:.3f}" if acc is not None else label, fontsize=8)
        ax.set_xlabel("reward-model score")
        ax.set_ylabel("held-out pairs")
        ax.legend(fontsize=7)
        data += [{"figure": "rm_score_distributions", "series": label, "x": i, "metric": "chosen_score/rejected_score",
                  "value": f"{c}/{r}", "mlflow_run_ids": stage.run_id} for i, (c, r) in enumerate(zip(chosen, rejected))]
    fig.tight_layout()
    return FigureOutput(fig, "Reward-model scores of the chosen and the rejected response of each held-out "
                             "preference pair.", data)


@register("policy_reward_distributions", "figure", "Seed 001: base vs trained-policy reward distributions",
          Needs(metrics_any=(("rm_reward/mean",),)))
def policy_reward_distributions(ctx: ReportContext) -> FigureOutput:
    samples = _reward_samples(ctx)
    if not samples:
        raise Skip("no `samples/rm_reward.samples.jsonl` artifact")
    base = next((s for s in samples if s[1].is_baseline), None)
    policies = sorted((s for s in samples if not s[1].is_baseline), key=lambda s: -float(np.mean(s[2])))
    if not policies:
        raise Skip("no trained policy has reward samples")
    shown = policies[:MAX_DISTRIBUTIONS]
    everything = [v for s in shown for v in s[2]] + (base[2] if base else [])
    bins = np.histogram_bin_edges(everything, bins=min(30, max(6, len(everything) // 8)))
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    if base:
        ax.hist(base[2], bins=bins, color="grey", alpha=0.45, label=f"SFT base (mean {np.mean(base[2]):.2f})")
    for k, (label, _, values, _) in enumerate(shown):
        ax.hist(values, bins=bins, histtype="step", lw=1.6, color=f"C{k}", label=f"{label} (mean {np.mean(values):.2f})")
    scored_by = reward_score_name(cell for _, cell, _, _ in samples)
    ax.set_xlabel(f"{scored_by} of the answer")
    ax.set_ylabel("prompts")
    ax.legend(fontsize=6.5)
    fig.tight_layout()
    data = [{"figure": "policy_reward_distributions", "series": label, "x": i, "metric": "rm_reward", "value": v,
             "mlflow_run_ids": run_id} for label, _, values, run_id in ([base] if base else []) + shown
            for i, v in enumerate(values)]
    notes = [] if base else ["The SFT baseline has no reward samples: policies only."]
    if len(policies) > len(shown):
        notes.append(f"{len(policies) - len(shown)} more policies not drawn (the {len(shown)} highest mean rewards "
                     "are); see the reward boxplot for all.")
    return FigureOutput(fig, f"The {scored_by} of trained policies' answers (outlines) against the base model's "
                             "(grey) on the same prompts.", data, notes)
