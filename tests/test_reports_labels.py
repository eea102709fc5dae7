"""Report labels and wording on real runner-made stores (tiny random model): every row and legend entry
names what tells its configuration apart, with a two-valued axis (the smoke grid's `sft_weight`, whose
rows once read as plain "DPO · smoke-lowercase" for one value) and with two varying fields; figure
titles are names a reader knows, not metric keys; legends explain only marks that are shown; Fig. 7
says what it lacks instead of redrawing Fig. 6."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import run_grids_in, use_results

from harness import tracking

DPO = {"name": "dpo", "beta": 0.1, "max_steps": 2, "per_device_train_batch_size": 4, "gradient_accumulation_steps": 1,
       "max_length": 64, "learning_rate": 1e-4}
BASE = {"model": "tiny-random-llama", "dataset": {"name": "smoke-lowercase", "max_rows": 16}, "algorithm": DPO,
        "eval": {"tasks": ["smoke_lowercase"], "limit": 2}, "seed": 1}
SMOKE_LIKE = {"experiment": "labels-one-axis", "base": BASE, "axes": {"algorithm.sft_weight": [0.0, 1.0]}}
TWO_FIELDS = {"experiment": "labels-two-axes", "base": BASE,
              "axes": {"algorithm.beta": [0.1, 0.3], "algorithm.sft_weight": [0.0, 1.0]}}
PREFIX = "DPO · smoke-lowercase"


@pytest.fixture(scope="module")
def store(tmp_path_factory, tiny_model) -> Path:
    results = tmp_path_factory.mktemp("labels_results")
    run_grids_in(results, SMOKE_LIKE, TWO_FIELDS)  # one stage store: the second grid reuses the first's cells
    return results


@pytest.fixture(autouse=True)
def isolated_results(store, monkeypatch) -> Path:
    return use_results(monkeypatch, store)


def _report(store: Path, out: Path, experiment: str):
    from reports.build import build_report

    with pytest.MonkeyPatch.context() as mp:
        use_results(mp, store)
        return build_report(experiment, out, tables=["table5"], figures=["fig1", "fig6", "fig7"], n_boot=100)


@pytest.fixture(scope="module")
def one_axis(store, tmp_path_factory):
    return _report(store, tmp_path_factory.mktemp("one_axis"), SMOKE_LIKE["experiment"])


@pytest.fixture(scope="module")
def two_axes(store, tmp_path_factory):
    return _report(store, tmp_path_factory.mktemp("two_axes"), TWO_FIELDS["experiment"])


def _params(run_id: str) -> dict[str, str]:
    return tracking.client().get_run(run_id).data.params


def _expected_label(params: dict[str, str], fields: tuple[tuple[str, str], ...]) -> str:
    return " · ".join([PREFIX, *(f"{short}={params[key]}" for key, short in fields)])


def _check_labels(report: Any, fields: tuple[tuple[str, str], ...], n_configs: int) -> None:
    """Each table row, each Fig. 1 bar and each Fig. 6 line is labelled with its own run's values."""
    rows = [r for r in report.tables["table5"].rows if r.kind == "data"]
    assert len(rows) == n_configs
    labels = []
    for row in rows:
        (run_id,) = {e.run_ids[0] for e in row.entries if e.is_number}
        (label,) = row.labels
        assert label == _expected_label(_params(run_id), fields), label
        labels.append(label)
    assert len(set(labels)) == n_configs
    for figure in ("fig1", "fig6"):
        series = {}
        for point in report.figures[figure].data:
            run_id = str(point["mlflow_run_ids"]).split(";")[-1]
            params = _params(run_id) if figure == "fig1" else _params(_cell_of_stage(run_id))
            series[point["series"]] = _expected_label(params, fields)
        assert sorted(series) == sorted(labels) and all(k == v for k, v in series.items()), series


def _cell_of_stage(run_id: str) -> str:
    from harness import mlflow_layout as layout

    return tracking.client().get_run(run_id).data.tags[layout.TAG_PARENT]


def test_a_two_valued_axis_labels_both_values(one_axis):
    _check_labels(one_axis, (("algorithm.sft_weight", "SFT-loss weight"),), 2)
    assert {r.labels[0] for r in one_axis.tables["table5"].rows if r.kind == "data"} == {
        f"{PREFIX} · SFT-loss weight=0.0", f"{PREFIX} · SFT-loss weight=1.0"}
    index = one_axis.index.read_text()
    assert f"{PREFIX} · SFT-loss weight=0.0" in index and f"{PREFIX} · SFT-loss weight=1.0" in index


def test_two_varying_fields_both_named_on_every_label(two_axes):
    _check_labels(two_axes, (("algorithm.beta", "β"), ("algorithm.sft_weight", "SFT-loss weight")), 4)


def test_figures_and_legends_say_what_is_shown(one_axis):
    fig1, fig6 = one_axis.figures["fig1"], one_axis.figures["fig6"]
    assert [ax.get_title() for ax in fig1.figure.axes] == ["Lowercase task: clean successes (%)"]
    assert "are not in this experiment: showing Lowercase task: clean successes (%)" in fig1.caption
    titles = [ax.get_title() for ax in fig6.figure.axes if ax.get_title()]
    assert "Training loss" in titles and not any("/" in t or "_" in t for t in titles), titles
    # No checkpoint was evaluated: Fig. 6 says its curves are the training loop's, and Fig. 7 (the
    # paper's evaluations over training) is not faked from them.
    assert "not evaluations" in fig6.caption and "checkpoint_every" in fig6.caption
    assert "fig7" not in one_axis.figures and "checkpoint_every" in one_axis.skipped["fig7"]
    # Table 5 has intervals but no p-values and (tiny random policies) no difference from SFT.
    table = (one_axis.out_dir / "tables" / "table5.md").read_text()
    assert "Brackets: 95% bootstrap interval" in table and "p-value" not in table


def test_table_legend_lists_only_the_marks_shown():
    from reports.model import Entry, ReportTable, Row, legend_text

    table = ReportTable("t", "T", "", ["Model"], ["A"], rows=[Row(["x"], [Entry(value=1.0)])])
    assert legend_text(table) == ""
    table.rows.append(Row(["y"], [Entry(value=2.0, ci=(1.0, 3.0), colour="up")]))
    assert legend_text(table) == ("Brackets: 95% bootstrap interval over evaluation examples (and seeds where a row "
                                  "has several). ▲/▼: above/below the SFT baseline.")
    table.rows.append(Row(["Δ"], [Entry(value=1.0, ci=(0.0, 2.0), p_value=0.04, signed=True)], kind="delta"))
    assert "p: two-sided paired bootstrap p-value" in legend_text(table)
    assert legend_text(table, show_ci=False) == "▲/▼: above/below the SFT baseline."
