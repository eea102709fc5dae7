"""Every grid's `tiny` profile end to end (slow: about a minute per grid on 2 shared cores): the grid runs
through the real runner (real TRL / PPO training on the tiny random model, real evaluations, real MLflow),
the seed-000 grid is judged by the scripted local judge over the same OpenAI-compatible HTTP interface
as GPT-4, and `harness report` builds every table and figure its header's "Report items:" names (none
skipped), logs itself as a report run, and the experiment's description names the grid file and profile.

Each grid's real data comes from ../shared/data (skipped, naming the missing input, where it is absent);
RewardBench from the hub-schema fixture in tests/fixtures/rewardbench_data (Table 13)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from conftest import use_results

from harness import mlflow_layout as layout
from harness import tracking
from harness.paths import PROJECT_ROOT

ABLATIONS = PROJECT_ROOT / "ablations"
GRID_FILES = sorted(p for p in ABLATIONS.glob("*.yaml")
                    if "tiny" in (yaml.safe_load(p.read_text()).get("profiles") or {}))
REWARDBENCH_FIXTURE = Path(__file__).parent / "fixtures" / "rewardbench_data"


def report_items(path: Path) -> list[str]:
    """The items a grid's header says it exists for: the registered item names in its "Report items:"
    paragraph (up to the next blank comment line)."""
    from reports.build import ITEMS  # registers every builder

    lines = path.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("# Report items:"))
    paragraph = []
    for line in lines[start:]:
        if not line.startswith("#") or line.strip() == "#":
            break
        paragraph.append(line)
    words = set(re.findall(r"\b[a-z][a-z0-9_]*\b", " ".join(paragraph)))
    return [name for name in ITEMS.names() if name in words]


def test_every_grid_header_names_its_report_items():
    for path in GRID_FILES:
        assert report_items(path), path.name


@pytest.mark.slow
@pytest.mark.parametrize("path", GRID_FILES, ids=lambda p: p.stem)
def test_tiny_profile_runs_end_to_end_and_builds_its_report(path, tmp_path, monkeypatch, tiny_model):
    from harness.cli import main
    from reports.build import build_report

    items = report_items(path)
    use_results(monkeypatch, tmp_path / "results")
    monkeypatch.setenv("HARNESS_DATA_DIR", str(REWARDBENCH_FIXTURE))  # ../shared/data is appended
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    is_sweep = "search" in yaml.safe_load(path.read_text())
    if is_sweep:
        from harness.sweep.plan import unresolved_sweep_inputs
        from harness.sweep.spec import load_sweep
        from harness.sweep.workers import run_sweep

        spec = load_sweep(path, profile="tiny")
        missing = unresolved_sweep_inputs(spec)
        if missing:
            pytest.skip(f"input not on this machine (../shared/data): {missing[0].splitlines()[0]}")
        run_sweep(spec, storage_url=f"sqlite:///{tmp_path / 'optuna.db'}", source=path, echo=lambda _: None)
        experiment = spec.experiment
    else:
        from harness.grid import load_grid
        from harness.resolution import unresolved_inputs
        from harness.runner import plan_grid, run_grid

        grid = load_grid(path, profile="tiny")
        missing = unresolved_inputs(plan_grid(grid))
        if missing:
            pytest.skip(f"input not on this machine (../shared/data): {missing[0].splitlines()[0]}")
        summary = run_grid(grid, echo=lambda _: None, keep_going=True)
        assert not summary.failed_cells, summary.failure_report()
        assert sorted(summary.logged_cells) == sorted(c.name for c in grid.cells)
        experiment = grid.experiment
    assert experiment.endswith("-tiny")
    if "win_rates" in items:  # the judge step of the seed-000 write-up, through the local scripted judge
        assert main(["judge", experiment, "--local-judge", "scripted:longer", "--pairs", "reference",
                     "--max-new-tokens", "8", "--bootstrap", "200"]) == 0
    result = build_report(experiment, tmp_path / "report", n_boot=50, log_mlflow=True)
    skipped = {name: result.skipped[name] for name in items if name in result.skipped}
    assert not skipped, f"{path.name}: items the grid exists for were skipped: {skipped}"
    assert set(items) <= set(result.written)

    # The paper's rows beside ours wherever the paper printed the table and a row matches.
    from reports.paper_beside import paper_column
    from reports.paper_numbers import paper_numbers

    for name in items:
        table = result.tables.get(name)
        if table is not None and name in paper_numbers().tables:
            columns = paper_numbers().table(name).columns
            if any(paper_column(e.metric, columns) for r in table.rows if r.kind != "paper" for e in r.entries):
                # some column is one the paper printed: its SFT row at least stands beside ours
                assert any(r.kind == "paper" for r in table.rows), f"{path.name}: {name} has no paper row"
            if name in ("table1", "table2", "table3", "table4", "table5", "table7", "table11", "table12", "table13"):
                assert any(n.startswith("Does the paper's finding hold here?") for n in table.notes), name
        if name in ("table1", "table2", "table4"):
            assert "Train FLOPs (est., cpu-2core)" in table.columns
            column = table.columns.index("Train FLOPs (est., cpu-2core)")
            assert any(r.entries[column].is_number for r in table.rows if r.kind == "data"), name

    # MLflow: the report run holds the files; the experiment says which grid file and profile made it.
    exp = layout.find_experiment(experiment)
    (report_run,) = layout.report_runs(exp.experiment_id)
    assert report_run.info.run_id == result.report_run_id and report_run.info.status == "FINISHED"
    logged = {a.path for a in tracking.client().list_artifacts(report_run.info.run_id, "report")}
    assert "report/index.md" in logged and "report/tables" in logged
    assert set(report_run.data.tags[layout.TAG_REPORT_ITEMS].split(",")) == set(result.written)
    tags = layout.experiment_tags(exp.experiment_id)
    assert str(path) in tags[layout.TAG_NOTE] and "--profile tiny" in tags[layout.TAG_NOTE]
    assert tags[layout.TAG_PROFILE] == "tiny" and tags[layout.TAG_DEVICE_PROFILE] == "cpu-2core"
