"""AlpacaEval tasks: skipped without a judge (nothing generated), outputs generated once for 1 and 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.evaluation import alpaca_eval


def test_skipped_without_judge(tmp_path: Path, shared_data: Path):
    from harness.evaluation import EvalContext

    ctx = EvalContext(model_path="tiny-random-llama", out_dir=tmp_path, limit=3)
    for version in (1, 2):
        result = alpaca_eval.run_version(ctx, version)
        assert result.score is None and result.metrics == {} and "judge" in result.skipped_reason
    assert ctx._generator is None


class ScriptedJudge:
    """Stands in for the HTTP judge: AlpacaEval 1 replies rank the model's output first; AlpacaEval 2
    replies put all probability on whichever output is the model's (by content)."""

    model = "scripted"

    def __init__(self, outputs: list[str], references: list[str]):
        self.outputs, self.references = outputs, references
        self.n_requests = 0

    def complete_many(self, requests, template="raw", **decoding):
        from harness.judge import Completion

        self.n_requests += len(requests)
        replies = []
        for messages in requests:
            text = "\n".join(m["content"] for m in messages)
            # Which slot shows the model's output? The one whose text appears first in the prompt.
            model_pos = next(text.find(o) for o in self.outputs if o in text)
            ref_pos = next(text.find(r) for r in self.references if r in text)
            model_first = model_pos < ref_pos
            if decoding.get("logprobs"):
                token = "m" if model_first else "M"
                replies.append(Completion(token, [{"token": token, "logprob": 0.0, "top_logprobs": []}], 0, 0, False))
            else:
                winner = "model_1" if model_first else "model_2"
                loser = "model_2" if model_first else "model_1"
                replies.append(Completion(f"[{{'model': '{winner}', 'rank': 1}}, {{'model': '{loser}', 'rank': 2}}]",
                                          None, 0, 0, False))
        return replies


def test_outputs_shared_between_versions(tiny_model: str, tmp_path: Path, shared_data: Path, monkeypatch):
    import harness.judge
    from harness.evaluation import EvalContext

    calls = []
    ctx = EvalContext(model_path=tiny_model, out_dir=tmp_path, limit=3, judge={"model": "scripted"})
    real_generate = ctx.generator.generate

    def counting_generate(prompts, params, chat=True):
        calls.append(len(prompts))
        return [[f"model answer {i}: " + o[0]] for i, o in enumerate(real_generate(prompts, params, chat))]

    monkeypatch.setattr(ctx.generator, "generate", counting_generate)
    outputs_file = tmp_path / alpaca_eval.OUTPUTS_FILE
    judge_box: dict[str, ScriptedJudge] = {}

    def make_judge(settings):
        rows = [json.loads(line) for line in outputs_file.read_text().splitlines()]
        from harness.judge.alpaca import load_reference

        refs = load_reference(1, 3)[1] + load_reference(2, 3)[1]
        judge_box["j"] = ScriptedJudge([r["output"] for r in rows], refs)
        return judge_box["j"]

    # The judge is built before generating; give it the outputs lazily via a proxy.
    class LazyJudge:
        model = "scripted"

        def complete_many(self, requests, **kw):
            return make_judge(None).complete_many(requests, **kw)

    monkeypatch.setattr(harness.judge, "judge_client_from_settings", lambda settings: LazyJudge())
    r1 = alpaca_eval.run_version(ctx, 1, max_new_tokens=4)
    r2 = alpaca_eval.run_version(ctx, 2, max_new_tokens=4)
    assert calls == [3]  # generated once, reused by AlpacaEval 2
    assert r1.skipped_reason is None and r1.score == pytest.approx(100.0)
    assert r1.metrics["alpaca_eval1/n"] == 3
    assert r2.metrics["alpaca_eval2/win_rate"] == pytest.approx(100.0)
    assert r2.score == r2.metrics["alpaca_eval2/lc_win_rate"]
    assert all(a["output_2"].startswith("model answer") for a in r2.samples)
