"""Length-controlled views: the judge's win rate gets AlpacaEval 2's length-controlled counterpart (its own
GLM) on AlpacaEval prompts, preference data stages log their chosen / rejected lengths, and the report's
`length_control` table puts win rates beside their LC counterparts and the policy's length change beside
the training pairs' length statistics (MLflow written by the runner's own writers)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest

from harness import mlflow_layout as layout
from harness import tracking
from harness.executors import preference_lengths
from harness.judge.client import PairVerdict
from harness.judge.experiment import length_controlled


def _verdict(score: float) -> PairVerdict:
    return PairVerdict({1.0: "a", 0.0: "b", 0.5: "tie"}[score], None, None, True)


def test_judge_lc_win_rate_is_alpaca_eval_2s_glm_on_alpaca_eval_prompts(shared_data, monkeypatch):
    from harness.judge.alpaca import length_controlled_win_rate

    monkeypatch.setenv("HARNESS_DATA_DIR", str(shared_data))
    # The policy wins the prompts where it answered at length, loses the others: its raw win rate rewards length.
    reference = ["short answer."] * 20
    answers = [("a much longer answer " * (k % 5 + 1)).strip() for k in range(20)]
    scores = [1.0 if k % 5 >= 2 else 0.0 for k in range(20)]
    lc, reason = length_controlled("alpaca_eval", reference, answers, [_verdict(s) for s in scores])
    assert reason is None and lc is not None
    direct = length_controlled_win_rate([{"index": k, "output_1": r, "output_2": a, "preference": 1.0 + s}
                                         for k, (r, a, s) in enumerate(zip(reference, answers, scores))])
    assert lc == pytest.approx(direct.win_rate / 100.0)
    assert lc < sum(scores) / len(scores)  # the length term takes the longer answers' advantage away

    none, why = length_controlled("smoke-lowercase-eval", reference, answers, [_verdict(s) for s in scores])
    assert none is None and "knows the difficulty of AlpacaEval's instructions only" in why


def test_preference_lengths():
    rows = [{"chosen": [{"role": "assistant", "content": "a" * 10}], "rejected": [{"role": "assistant", "content": "b" * 4}]},
            {"chosen": [{"role": "assistant", "content": "c" * 2}], "rejected": [{"role": "assistant", "content": "d" * 6}]}]
    assert preference_lengths(rows) == {"data/chosen_chars_mean": 6.0, "data/rejected_chars_mean": 5.0,
                                        "data/chosen_longer_rate": 0.5}
    assert preference_lengths([{"prompt": [{"role": "user", "content": "x"}]}]) == {}


def _cell(exp_id: str, name: str, params: dict, outputs: list[str], metrics: dict, data: dict | None = None) -> str:
    info = layout.CellRunInfo(grid="length-synth", name=name, key=f"k-{name}", is_baseline=not params,
                              resolved_config=params, overrides={"algorithm.beta": params["algorithm"]["beta"]}
                              if params else {})
    run_id = layout.open_cell_run(exp_id, info)
    if data is not None:
        layout.log_stage_run(exp_id, run_id, layout.StageRunInfo("prepare_data", f"d-{name}", {"name": "smoke-lowercase"}),
                             layout.StageResult(metrics=data))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "samples" / "smoke_lowercase.samples.jsonl"
        path.parent.mkdir()
        path.write_text("".join(json.dumps({"output": o}) + "\n" for o in outputs))
        layout.log_stage_run(exp_id, run_id, layout.StageRunInfo("evaluate", f"e-{name}", {}),
                             layout.StageResult(metrics={"smoke_lowercase/score": 50.0}, artifacts_dir=Path(tmp)))
    layout.finish_cell_run(run_id, {"smoke_lowercase/score": 50.0, **metrics})
    return run_id


def test_length_control_table(tmp_path):
    from reports.build import build_report

    exp_id = tracking.setup_experiment("length-synth")
    data = preference_lengths([{"chosen": [{"role": "assistant", "content": "x" * 30}],
                                "rejected": [{"role": "assistant", "content": "y" * 10}]}] * 3)
    _cell(exp_id, "sft", {}, ["abcd"] * 4, {})
    dpo = {"algorithm": {"name": "dpo", "beta": 0.1}, "dataset": {"name": "smoke-lowercase"}}
    _cell(exp_id, "b0.1", dpo, ["abcdef"] * 4, {"judge/win_rate": 0.7, "judge/lc_win_rate": 0.55}, data)
    _cell(exp_id, "b0.5", {**dpo, "algorithm": {"name": "dpo", "beta": 0.5}}, ["ab"] * 4, {"judge/win_rate": 0.4}, data)
    report = build_report("length-synth", tmp_path, tables=["length_control"], figures=[], ci=False)
    table = report.tables["length_control"]
    by_row = {row.labels[0]: {c: e for c, e in zip(table.columns, row.entries)} for row in table.rows}
    (wide,) = [r for label, r in by_row.items() if "0.1" in label]
    (narrow,) = [r for label, r in by_row.items() if "0.5" in label]
    assert (wide["Judge WR"].value, wide["Judge LC WR"].value) == pytest.approx((70.0, 55.0))
    assert narrow["Judge WR"].value == pytest.approx(40.0) and not narrow["Judge LC WR"].is_number
    assert (wide["Answer chars"].value, wide["Δ chars vs SFT %"].value) == pytest.approx((6.0, 50.0))
    assert narrow["Δ chars vs SFT %"].value == pytest.approx(-50.0)
    assert (wide["Chosen chars"].value, wide["Rejected chars"].value, wide["Chosen longer %"].value) == \
        pytest.approx((30.0, 10.0, 100.0))
