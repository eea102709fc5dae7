"""Fine-tuned TruthfulQA truth/info judges (offline fallback for GPT-judge / GPT-info): data split,
training actually learning, padding-independent verdicts, input errors, and their use in the task."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from harness.evaluation import truthfulqa
from harness.evaluation import truthfulqa_judges as tj

_WORDS = ["quick", "brown", "fox", "lazy", "dog", "bread", "flour", "water", "capital", "Japan", "Tokyo",
          "question"]


def write_synthetic(path: Path, kind: str, n_questions: int = 30, per_question: int = 6, seed: int = 0) -> Path:
    """A file in the real format where an answer is " yes" iff it contains "Paris": trivially separable,
    so a judge that learns anything gets it right; answers vary in length (exercises padding)."""
    rng = random.Random(seed)
    suffix = tj.KINDS[kind][1]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        for q in range(n_questions):
            for j in range(per_question):
                yes = j % 2 == 0
                words = rng.sample(_WORDS, rng.randint(1, 5))
                if yes:
                    words.insert(rng.randrange(len(words) + 1), "Paris")
                answer = "The " + " ".join(words) + "."
                fh.write(json.dumps({"prompt": f"Q: What is item {q} about?\nA: {answer}\n{suffix}",
                                     "completion": " yes" if yes else " no"}) + "\n")
    return path


@pytest.fixture(scope="module")
def trained_judges(tmp_path_factory, tiny_model: str) -> dict[str, Path]:
    """A truth and an info judge from the tiny model, trained on the synthetic set (a few seconds each)."""
    root = tmp_path_factory.mktemp("judges")
    out = {}
    for kind in ("truth", "info"):
        data = write_synthetic(root / f"{kind}.jsonl", kind)
        out[kind] = root / kind
        tj.train_truthfulqa_judge(kind, tiny_model, out[kind], steps=40, batch_size=16, learning_rate=3e-3,
                                  heldout_fraction=0.3, data_path=data)
    return out


def test_real_sample_trains_and_splits_by_question(tiny_model: str, tmp_path: Path, monkeypatch):
    """The data-dir lookup (real ../shared/data file when present, else a synthetic one through
    HARNESS_DATA_DIR); judge.json written; held-out and training questions disjoint; metrics in [0, 1]."""
    from harness.paths import find_data_file

    if find_data_file("benchmarks/truthfulqa/finetune_truth.jsonl") is None:
        write_synthetic(tmp_path / "data" / "benchmarks" / "truthfulqa" / "finetune_truth.jsonl", "truth")
        monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path / "data"))
    path = tj.judge_data_file("truth")
    out = tmp_path / "judge"
    meta = tj.train_truthfulqa_judge("truth", tiny_model, out, max_rows=120, steps=2, batch_size=8,
                                     learning_rate=1e-4, heldout_fraction=0.2, seed=1)
    saved = json.loads((out / "judge.json").read_text())
    assert saved == json.loads(json.dumps(meta))
    assert saved["kind"] == "truth" and saved["data_file"] == str(path)
    assert saved["n_train"] + saved["n_heldout"] == 120 and saved["n_heldout"] > 0
    assert (out / "config.json").exists() and list(out.glob("*.safetensors"))
    assert not list(tmp_path.glob(".tmp-*")) and not list(tmp_path.glob(".old-*"))
    for key in ("accuracy", "balanced_accuracy", "yes_rate", "label_yes_rate"):
        assert 0.0 <= saved["heldout"][key] <= 1.0
    train, heldout, _ = tj.prepare_judge_data("truth", path, 120, 0.2, 1)
    train_q, held_q = {e.question for e in train}, {e.question for e in heldout}
    assert train_q and held_q and not train_q & held_q
    assert sorted(held_q) == saved["heldout_questions"]
    predictions = [json.loads(line) for line in (out / "heldout_predictions.jsonl").read_text().splitlines()]
    assert {p["question"] for p in predictions} == held_q and len(predictions) == saved["n_heldout"]


def test_training_learns_a_separable_rule(trained_judges: dict[str, Path]):
    """Held-out (unseen questions) balanced accuracy far above chance after 40 steps: training works."""
    for kind, path in trained_judges.items():
        meta = tj.read_judge_meta(path, kind)
        assert meta["heldout"]["balanced_accuracy"] >= 0.9, meta["heldout"]
        assert meta["train_loss_last_10pct"] < 0.5 * meta["train_loss_first"]


def test_verdicts_do_not_depend_on_batching(trained_judges: dict[str, Path]):
    judge = tj.load_truthfulqa_judge(trained_judges["truth"], "truth")
    questions = [f"What is item {i} about?" for i in range(7)]
    answers = ["The Paris.", "The lazy brown dog jumps over the bread fox water.", "Paris",
               "The quick Tokyo capital of Japan Paris flour.", "No.", "The water.", "The fox Paris dog."]
    batched = tj.judge_scores(judge, questions, answers, batch_size=7)
    single = [tj.judge_scores(judge, [q], [a], batch_size=1)[0] for q, a in zip(questions, answers)]
    assert batched == pytest.approx(single, abs=1e-4)
    verdicts = tj.judge_answers(judge, questions, answers, batch_size=3)
    assert verdicts == [s > 0 for s in single]
    assert verdicts == ["Paris" in a for a in answers]  # the learned rule, on unseen questions


def test_bad_inputs_are_named(tiny_model: str, tmp_path: Path, monkeypatch):
    import harness.paths
    from harness.evaluation.common import MissingDataError

    with pytest.raises(ValueError, match="kind"):
        tj.train_truthfulqa_judge("truthful", tiny_model, tmp_path / "j")  # type: ignore[arg-type]
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        tj.train_truthfulqa_judge("truth", tiny_model, tmp_path / "j", data_path=missing)
    # No data dir holds the file: the project's MissingDataError names the file looked for.
    monkeypatch.setattr(harness.paths, "PROJECT_ROOT", tmp_path / "elsewhere" / "repo")
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path / "empty"))
    with pytest.raises(MissingDataError, match="finetune_info.jsonl"):
        tj.train_truthfulqa_judge("info", tiny_model, tmp_path / "j")
    bad = write_synthetic(tmp_path / "bad.jsonl", "truth", n_questions=2)
    lines = bad.read_text().splitlines()
    lines[3] = json.dumps({"prompt": json.loads(lines[3])["prompt"]})
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"bad\.jsonl: row 4: .*'completion'"):
        tj.train_truthfulqa_judge("truth", tiny_model, tmp_path / "j", data_path=bad)
    info_file = write_synthetic(tmp_path / "info.jsonl", "info", n_questions=2)
    with pytest.raises(ValueError, match=r"info\.jsonl: row 1: 'prompt' must .*True:"):
        tj.train_truthfulqa_judge("truth", tiny_model, tmp_path / "j", data_path=info_file)
    (tmp_path / "notajudge").mkdir()
    (tmp_path / "notajudge" / "keep.txt").write_text("x")
    with pytest.raises(ValueError, match="not a judge"):
        tj.train_truthfulqa_judge("info", tiny_model, tmp_path / "notajudge", data_path=info_file)
    assert (tmp_path / "notajudge" / "keep.txt").exists()
    assert not (tmp_path / "j").exists()  # nothing was written by any failed call


def _set_judges(monkeypatch, judges: dict[str, Path]) -> None:
    monkeypatch.setenv(truthfulqa.TRUTH_JUDGE_ENV, str(judges["truth"]))
    monkeypatch.setenv(truthfulqa.INFO_JUDGE_ENV, str(judges["info"]))


FT_METRICS = {"truthfulqa/truth_info_finetuned_judge_offline_fallback",
              "truthfulqa/truthful_finetuned_judge_offline_fallback",
              "truthfulqa/informative_finetuned_judge_offline_fallback"}


def test_task_logs_finetuned_metrics_beside_the_endpoint_judge(tiny_model: str, tmp_path: Path, shared_data: Path,
                                                               monkeypatch, trained_judges: dict[str, Path],
                                                               truthful_uninformative_judge):
    from harness.evaluation import EvalContext

    _set_judges(monkeypatch, trained_judges)
    monkeypatch.setattr(truthfulqa, "MIN_FINETUNED_JUDGE_BALANCED_ACCURACY", 0.0)  # tiny judges: any quality
    ctx = EvalContext(model_path=tiny_model, out_dir=tmp_path, limit=2, judge=truthful_uninformative_judge.settings)
    result = truthfulqa.run(ctx, max_new_tokens=4)
    assert result.skipped_reason is None
    assert FT_METRICS <= set(result.metrics)
    # The score stays the endpoint judge's (scripted: truthful, never informative -> 0).
    assert result.score == 0.0 == result.metrics["truthfulqa/truth_info"]
    assert result.metrics["truthfulqa/truthful"] == 100.0
    gen = [s for s in result.samples if s["kind"] == "generation"]
    truth = [s["truthful_finetuned_judge"] for s in gen]
    info = [s["informative_finetuned_judge"] for s in gen]
    assert all(isinstance(v, bool) for v in truth + info)
    assert result.metrics["truthfulqa/truthful_finetuned_judge_offline_fallback"] == 100.0 * sum(truth) / 2
    both = 100.0 * sum(t and i for t, i in zip(truth, info)) / 2
    assert result.metrics["truthfulqa/truth_info_finetuned_judge_offline_fallback"] == both
    assert result.metrics["truthfulqa/offline_fallback_score"] == both
    assert result.metrics["truthfulqa/offline_fallback_score_from_finetuned_judge"] == 1.0
    # Same verdicts as the judges give directly on the saved answers.
    judge = tj.load_truthfulqa_judge(trained_judges["truth"])
    assert truth == tj.judge_answers(judge, [s["question"] for s in gen], [s["output"] for s in gen])


def test_a_judge_below_the_quality_bar_leaves_the_fallback_score_to_mc2(tiny_model: str, tmp_path: Path,
                                                                         shared_data: Path, monkeypatch,
                                                                         trained_judges: dict[str, Path]):
    """Judges whose held-out balanced accuracy is under MIN_FINETUNED_JUDGE_BALANCED_ACCURACY still log
    their numbers and their quality, but the fallback score stays MC2 (measured here: a 64-step SmolLM2
    truth judge said "no" to nearly everything, balanced accuracy 0.58, and truth x info read 0)."""
    from harness.evaluation import EvalContext

    _set_judges(monkeypatch, trained_judges)
    monkeypatch.setattr(truthfulqa, "MIN_FINETUNED_JUDGE_BALANCED_ACCURACY", 1.01)  # unreachable
    result = truthfulqa.run(EvalContext(model_path=tiny_model, out_dir=tmp_path, limit=2), max_new_tokens=4)
    assert FT_METRICS <= set(result.metrics)
    for kind in ("truth", "info"):
        meta = json.loads((trained_judges[kind] / tj.META_FILE).read_text())
        assert result.metrics[f"truthfulqa/{kind}_judge_heldout_balanced_accuracy"] == \
            meta["heldout"]["balanced_accuracy"]
    assert result.metrics["truthfulqa/offline_fallback_score_from_finetuned_judge"] == 0.0
    assert result.metrics["truthfulqa/offline_fallback_score"] == result.metrics["truthfulqa/mc2_offline_fallback"]


def test_task_with_only_finetuned_judges(tiny_model: str, tmp_path: Path, shared_data: Path, monkeypatch,
                                         trained_judges: dict[str, Path]):
    """No endpoint: no score, but the generations are judged by the fine-tuned judges."""
    from harness.evaluation import EvalContext

    _set_judges(monkeypatch, trained_judges)
    result = truthfulqa.run(EvalContext(model_path=tiny_model, out_dir=tmp_path, limit=2), max_new_tokens=4)
    assert result.score is None and "no judge configured" in result.skipped_reason
    assert FT_METRICS <= set(result.metrics) and "truthfulqa/truth_info" not in result.metrics
    assert len([s for s in result.samples if "truthful_finetuned_judge" in s]) == 2


def test_misconfigured_judges_fail_before_running(tiny_model: str, tmp_path: Path, monkeypatch, capsys,
                                                  trained_judges: dict[str, Path]):
    from harness.cli import main
    from harness.evaluation import EvalContext, run_tasks

    ctx = EvalContext(model_path=tiny_model, out_dir=tmp_path / "eval", limit=2)
    monkeypatch.setenv(truthfulqa.TRUTH_JUDGE_ENV, str(trained_judges["truth"]))
    with pytest.raises(ValueError, match=truthfulqa.INFO_JUDGE_ENV):
        run_tasks(ctx, ["gsm8k", "truthfulqa"])  # before gsm8k runs
    assert main(["eval", "--model", "tiny-random-llama", "--tasks", "gsm8k", "truthfulqa", "--no-mlflow",
                 "--out", str(tmp_path / "eval")]) == 2
    assert truthfulqa.INFO_JUDGE_ENV in capsys.readouterr().err
    monkeypatch.setenv(truthfulqa.INFO_JUDGE_ENV, str(trained_judges["truth"]))  # a truth judge as info
    with pytest.raises(ValueError, match="expected a 'info' judge"):
        run_tasks(ctx, ["truthfulqa"])
    assert not (tmp_path / "eval").exists()


def test_resume_key_follows_the_judges_content(tiny_model: str, tmp_path: Path, monkeypatch,
                                               trained_judges: dict[str, Path]):
    """A changed judge reruns TruthfulQA on resume; the other tasks' keys do not see the judges."""
    import shutil

    from harness.evaluation import TASKS, EvalContext
    from harness.evaluation.base import task_fingerprint

    ctx = EvalContext(model_path=tiny_model, out_dir=tmp_path)
    spec, other = TASKS.get("truthfulqa"), TASKS.get("gsm8k")
    plain, plain_other = task_fingerprint(ctx, spec), task_fingerprint(ctx, other)
    copies = {k: tmp_path / k for k in trained_judges}
    for kind, path in trained_judges.items():
        shutil.copytree(path, copies[kind])
    _set_judges(monkeypatch, copies)
    with_judges = task_fingerprint(ctx, spec)
    assert with_judges != plain and task_fingerprint(ctx, other) == plain_other
    meta = json.loads((copies["info"] / "judge.json").read_text())
    meta["heldout"]["accuracy"] = 0.0  # a retrained judge at the same path
    (copies["info"] / "judge.json").write_text(json.dumps(meta))
    assert task_fingerprint(ctx, spec) != with_judges


def test_cli_trains_and_prints_heldout_metrics(tiny_model: str, tmp_path: Path, capsys):
    from harness.cli import main

    data = write_synthetic(tmp_path / "info.jsonl", "info", n_questions=10)
    out = tmp_path / "judge"
    args = ["train-truthfulqa-judge", "--kind", "info", "--base", "tiny-random-llama", "--out", str(out),
            "--data", str(data), "--steps", "2", "--batch-size", "4", "--lr", "1e-4"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "held-out" in printed and "balanced accuracy" in printed and truthfulqa.INFO_JUDGE_ENV in printed
    assert tj.read_judge_meta(out, "info")["config"]["steps"] == 2
    assert main(args[:-2] + ["--lr", "-1"]) == 2  # bad input: an error line, exit 2
    assert "learning_rate" in capsys.readouterr().err
