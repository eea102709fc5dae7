"""`harness serve-judge` as a real process serving a real model over HTTP, and the server's contract
(OpenAI wire format, errors, stats, fault injection, batching). The slow test serves SmolLM2."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from harness.judge import JudgeClient
from harness.judge.server import make_server, parse_faults

REPO = Path(__file__).resolve().parent.parent


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def _start(args: list[str], tmp_path: Path, env: dict[str, str] | None = None,
           timeout: float = 240.0) -> tuple[subprocess.Popen, str]:
    ready = tmp_path / "ready.txt"
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.judge.cli", "serve-judge", "--port", "0", "--ready-file", str(ready),
         *args],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
    )
    deadline = time.monotonic() + timeout
    while not ready.exists() or not ready.read_text():
        if proc.poll() is not None:
            raise RuntimeError(f"serve-judge exited with {proc.returncode}: "
                               f"{(tmp_path / 'server.log').read_text()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise TimeoutError("serve-judge did not become ready")
        time.sleep(0.2)
    return proc, ready.read_text()


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_serve_judge_process_injects_faults_and_stops(tmp_path):
    """The CLI server as its own process (scripted judge: starts in about a second): two injected 500s
    are retried by the client, /stats counts them, SIGTERM stops the process cleanly."""
    proc, base_url = _start(["--scripted", "longer", "--fail-first", "2", "--fail-status", "500"], tmp_path)
    try:
        assert _get(base_url + "/models")["data"][0]["id"] == "scripted-judge"
        judge = JudgeClient("scripted-judge", base_url=base_url, api_key_env="", cache_path=tmp_path / "c.sqlite",
                            backoff_base=0.01, max_workers=1)
        assert judge.pairwise("q", "a longer answer", "short").winner == "a"
        stats = _get(base_url[:-3] + "/stats")
        assert stats["injected_faults"] == 2 and stats["status_500"] == 2 and stats["completed"] == 2
        assert judge.usage()["scripted-judge"]["retries"] == 2
        judge.close()
    finally:
        _stop(proc)
    assert proc.returncode == 0


def test_model_backend_over_http(tiny_model, tmp_path):
    """A real model behind the server: OpenAI-format logprobs, token usage that matches the server's
    count, concurrent requests generated together (micro-batching), over-long prompts refused."""
    with make_server(model=tiny_model, served_name="tiny-judge", faults=[]) as server:
        judge = JudgeClient("tiny-judge", base_url=server.base_url, api_key_env="",
                            cache_path=tmp_path / "c.sqlite", max_workers=4)
        full = judge.complete_full([{"role": "user", "content": "Which is better, A or B?"}],
                                   max_tokens=3, temperature=0.0, logprobs=True, top_logprobs=5)
        assert full.logprobs and len(full.logprobs[0]["top_logprobs"]) == 5
        assert all(lp["logprob"] <= 0 for lp in full.logprobs[0]["top_logprobs"])
        assert 1 <= full.completion_tokens <= 3 and full.prompt_tokens > 5
        # Prompts of different lengths arriving together: batched with padding on the worker thread
        # (a tokenizer shared with the HTTP threads once corrupted such batches: backend_errors > 0).
        verdicts = judge.pairwise_many([(f"Question {i}?", "answer one " * (i + 1), f"answer two {i}")
                                        for i in range(6)])
        assert len(verdicts) == 6
        stats = server.stats()
        assert stats.get("backend_errors", 0) == 0
        assert stats["completed"] == 13
        assert stats["prompt_tokens"] == judge.usage()["tiny-judge"]["prompt_tokens"]
        assert max(int(k) for k in stats["batch_sizes"]) >= 2
        with pytest.raises(Exception, match="context"):
            judge.complete([{"role": "user", "content": "word " * 1200}], max_tokens=2)
        judge.close()


def test_server_contract_errors(tmp_path):
    with make_server(scripted="longer", faults=[]) as server:
        url = server.base_url + "/chat/completions"

        def post(body: dict) -> tuple[int, dict]:
            req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=10) as resp:
                    return resp.status, json.loads(resp.read())
            except urllib.error.HTTPError as err:
                return err.code, json.loads(err.read())

        ok_status, ok = post({"model": "scripted-judge", "messages": [{"role": "user", "content": "hi"}]})
        assert ok_status == 200 and ok["object"] == "chat.completion"
        assert ok["choices"][0]["message"]["role"] == "assistant" and ok["usage"]["total_tokens"] > 0
        assert post({"model": "other", "messages": [{"role": "user", "content": "x"}]})[0] == 404
        assert post({"model": "scripted-judge", "messages": []})[0] == 400
        assert post({"model": "scripted-judge", "messages": [{"role": "user", "content": "x"}],
                     "stream": True})[0] == 400
    assert parse_faults("429, 2x500") == [429, 500, 500]
    with pytest.raises(ValueError, match="loopback"):
        make_server(scripted="longer", host="0.0.0.0")


@pytest.mark.slow
def test_smollm2_judge_over_http(smollm2, tmp_path):
    """SmolLM2-135M-Instruct served by `harness serve-judge` judging real AlpacaEval pairs in both orders."""
    from harness.judge.alpaca import evaluate_alpaca_eval, load_reference

    proc, base_url = _start(["--model", "smollm2-135m-instruct", "--max-batch", "4", "--threads", "2"], tmp_path,
                            timeout=600)
    try:
        judge = JudgeClient("smollm2-135m-instruct", base_url=base_url, api_key_env="",
                            cache_path=tmp_path / "c.sqlite", max_workers=4)
        verdict = judge.pairwise("What is the capital of France?", "The capital of France is Paris.",
                                 "Bananas are yellow.")
        assert len(verdict.raw[0]) > 0 and len(verdict.raw[1]) > 0  # the model answered both orders
        assert verdict == JudgeClient.verdict_from_replies(*verdict.raw)
        assert _get(base_url[:-3] + "/stats")["completed"] == 2
        instructions, references = load_reference(1, limit=3)
        result = evaluate_alpaca_eval(judge, instructions, references, references[::-1], version=2)
        assert result.n + result.n_invalid == 3
        assert all(a["preference"] is None or 1.0 <= a["preference"] <= 2.0 for a in result.annotations)
        judge.close()
    finally:
        _stop(proc)
