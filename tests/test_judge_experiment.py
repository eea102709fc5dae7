"""`harness judge <experiment>` end to end: cells read from MLflow, answers generated with the shared
engine (tiny random policies) and cached, judged over real HTTP by the scripted judge behind an API
key, win rates with CIs and Bradley-Terry logged additively; and the key appears nowhere afterwards."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from harness import mlflow_layout as layout
from harness.judge.cache import GenerationCache, judge_dir
from harness.judge.cli import main as judge_main
from harness.judge.client import JudgeClient
from harness.judge.experiment import (
    find_policies,
    generate_answers,
    judge_experiment,
    load_prompts,
    mlflow_client,
)
from harness.judge.server import make_server

SECRET = "sk-proj-" + "S3cr3tJudgeKey" * 3
EXPERIMENT = "judge-e2e"


def _perturbed_copy(source: str, out: Path, seed: int, scale: float) -> str:
    import torch

    from harness.models import load_causal_lm

    model, tok = load_causal_lm(source, device="cpu")
    torch.manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * scale)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


@pytest.fixture(scope="module")
def policies(tiny_model, tmp_path_factory) -> dict[str, str]:
    """Three tiny policies: the zoo model as the SFT baseline and two perturbed copies as 'trained' ones."""
    folder = tmp_path_factory.mktemp("policies")
    return {
        "sft": "tiny-random-llama",
        "dpo": _perturbed_copy(tiny_model, folder / "dpo", 1, 0.3),
        "ppo": _perturbed_copy(tiny_model, folder / "ppo", 2, 0.6),
    }


@pytest.fixture
def experiment(policies, isolated_results):
    """An MLflow experiment written by the runner's own writers: one finished run per cell."""
    client = mlflow_client()
    exp_id = client.create_experiment(EXPERIMENT,
                                      artifact_location=(isolated_results / "mlartifacts" / EXPERIMENT).as_uri())
    run_ids = {}
    for cell, path in policies.items():
        run_id = layout.open_cell_run(exp_id, layout.CellRunInfo(
            grid=EXPERIMENT, name=cell, key=f"key-{cell}", is_baseline=cell == "sft",
            resolved_config={"algorithm": {"name": cell}}, policy_path=path))
        layout.finish_cell_run(run_id, {"eval/score": 42.0})
        run_ids[cell] = run_id
    # A judge metric from an earlier judging of this cell: must survive (history is appended to).
    layout.append_metrics(run_ids["dpo"], {"judge/win_rate": 0.123})
    return run_ids


@pytest.fixture
def keyed_server(monkeypatch):
    monkeypatch.setenv("JUDGE_SECRET_KEY", SECRET)
    with make_server(scripted="longer", require_key_env="JUDGE_SECRET_KEY", faults=[]) as server:
        yield server


def test_judge_command_logs_win_rates_and_ranking(experiment, keyed_server, capsys, caplog,
                                                  isolated_results, shared_data):  # AlpacaEval prompts
    caplog.set_level(logging.DEBUG)
    argv = ["judge", EXPERIMENT, "--reference", "sft", "--prompts", "6", "--max-new-tokens", "12",
            "--judge-model", keyed_server.state.served_model, "--judge-base-url", keyed_server.base_url,
            "--judge-api-key-env", "JUDGE_SECRET_KEY", "--bootstrap", "500"]
    assert judge_main(argv) == 0
    out = capsys.readouterr().out
    assert "win_rate" in out and "95% CI" in out and "dpo" in out and "ppo" in out
    first_requests = keyed_server.stats()["requests"]
    assert first_requests > 0 and keyed_server.stats().get("unauthorised", 0) == 0

    client = mlflow_client()
    for cell in ("dpo", "ppo"):
        run = client.get_run(experiment[cell])
        m = run.data.metrics
        assert m["eval/score"] == 42.0  # untouched
        assert 0.0 <= m["judge/win_rate_ci_low"] <= m["judge/win_rate"] <= m["judge/win_rate_ci_high"] <= 1.0
        assert m["judge/n"] + m["judge/invalid"] == 6
        assert "judge/bt_score" in m and "judge/bt_rank" in m
    history = client.get_metric_history(experiment["dpo"], "judge/win_rate")
    assert [(h.step, h.value) for h in history][0] == (0, 0.123) and len(history) == 2  # appended
    sft = client.get_run(experiment["sft"]).data.metrics
    assert sft["judge/bt_score"] == 0.0 and "judge/win_rate" not in sft

    judge_runs = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id],
                                    filter_string="tags.`harness.run_type` = 'judge'")
    assert len(judge_runs) == 1
    summary = judge_runs[0]
    assert summary.data.params["judge.num_prompts"] == "6"
    assert summary.data.params["judge.api_key_env"] == "JUDGE_SECRET_KEY"
    artifacts = {f.path for f in client.list_artifacts(summary.info.run_id, "judge")}
    assert {"judge/win_rates.csv", "judge/report.json", "judge/verdicts.jsonl", "judge/table.txt"} <= artifacts
    local = Path(client.download_artifacts(summary.info.run_id, "judge/report.json"))
    report = json.loads(local.read_text())
    assert set(report["win_rates"]) == {"dpo", "ppo"} and report["ranking"][0] in {"sft", "dpo", "ppo"}
    verdict_lines = Path(client.download_artifacts(summary.info.run_id, "judge/verdicts.jsonl")).read_text()
    assert len(verdict_lines.splitlines()) == 3 * 6  # dpo-sft, ppo-sft, dpo-ppo: all pairs for BT

    # Rerun: answers come from the generation cache, verdicts from the judge cache.
    _, policies = find_policies(EXPERIMENT)
    _, prompts = load_prompts(6)
    cache = GenerationCache(judge_dir() / "generations.sqlite")
    for policy in policies:
        _, generated = generate_answers(policy.policy_path, prompts, max_new_tokens=12, cache=cache)
        assert generated == 0
    cache.close()
    judge = JudgeClient(keyed_server.state.served_model, base_url=keyed_server.base_url,
                        api_key_env="JUDGE_SECRET_KEY")
    rerun = judge_experiment(EXPERIMENT, judge, num_prompts=6, max_new_tokens=12, n_boot=500)
    assert keyed_server.stats()["requests"] == first_requests  # second run: 0 requests on the server
    assert rerun.usage[judge.model]["requests"] == 0
    judge.close()

    # The key is nowhere: not in the MLflow store, its artifacts, the caches, the reports, nor any output.
    captured = capsys.readouterr()
    texts = [out, captured.out, captured.err, caplog.text]
    assert all(SECRET not in t for t in texts)
    files = [p for p in isolated_results.rglob("*") if p.is_file()]
    assert any(p.name == "mlflow.db" for p in files) and any("mlartifacts" in p.parts for p in files)
    for path in files:
        data = path.read_bytes()
        assert SECRET.encode() not in data, f"API key found in {path}"
        assert b"S3cr3tJudgeKey" not in data, f"part of the API key found in {path}"

    # Clear errors for a wrong experiment or reference (checked here: an MLflow store costs a few s).
    assert judge_main(["judge", "no-such-experiment", "--local-judge", "scripted:longer"]) == 2
    assert "no MLflow experiment 'no-such-experiment'" in capsys.readouterr().err
    assert judge_main(["judge", EXPERIMENT, "--reference", "grpo", "--prompts", "2", "--no-mlflow",
                       "--local-judge", "scripted:longer", "--max-new-tokens", "4"]) == 1
    assert "reference cell 'grpo' not found" in capsys.readouterr().err
