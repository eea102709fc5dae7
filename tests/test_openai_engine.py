"""The OpenAI-compatible engine against real HTTP servers (the project's own `harness serve-judge`, in
this process or as its own process): it returns what the in-process engine returns (greedy and seeded
samples, log-likelihoods), runs GSM8K and MMLU end to end through `harness eval --engine openai`,
survives a server that dies mid-run (retried; nothing recorded as an answer), says clearly when a
server offers no prompt log-probs, and starts/stops a server for a model (`kind: vllm`, with
`serve-judge` standing in for `vllm serve`)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from harness.generation import EngineSettings, SamplingParams
from harness.hf_engine import HFGenerator
from harness.judge.server import make_server
from harness.models import load_tokenizer
from harness.openai_engine import (
    EngineError,
    OpenAIGenerator,
    PromptLogprobsUnsupported,
    free_port,
    serve_model,
)

REPO = Path(__file__).resolve().parent.parent
FP32 = EngineSettings(dtype="float32")  # server and in-process reference at equal precision


def _serve_judge(args: list[str], log: Path, port: int = 0, ready: Path | None = None) -> tuple[subprocess.Popen, str]:
    """`harness serve-judge` as its own process; (process, base URL) once it serves."""
    ready = ready or log.with_suffix(".ready")
    ready.unlink(missing_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.judge.cli", "serve-judge", "--port", str(port), "--ready-file", str(ready),
         *args], cwd=REPO, stdout=log.open("w"), stderr=subprocess.STDOUT, env=dict(os.environ))
    deadline = time.monotonic() + 240
    while not ready.exists() or not ready.read_text():
        if proc.poll() is not None:
            raise RuntimeError(f"serve-judge exited with {proc.returncode}: {log.read_text()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise TimeoutError("serve-judge did not become ready")
        time.sleep(0.1)
    return proc, ready.read_text()


def _stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        proc.wait(timeout=30)


def _post(url: str, body: dict) -> tuple[int, dict]:
    """(status, JSON body) of a POST, error statuses included."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        connection.request("POST", parts.path, json.dumps(body), {"Content-Type": "application/json"})
        reply = connection.getresponse()
        return reply.status, json.loads(reply.read())
    finally:
        connection.close()


def test_engine_over_http_returns_the_in_process_answers(varied_model: str, varied_prompts: list[str]):
    """Same engine settings in-process and behind the server: identical greedy answers and seeded samples
    (the server batches concurrent requests however they arrive), equal log-likelihoods."""
    local = HFGenerator.from_name(varied_model, batch_size=3, engine=FP32)
    with make_server(model=varied_model, served_name="varied", faults=[], engine=FP32) as server:
        remote = OpenAIGenerator(server.base_url, "varied", load_tokenizer(varied_model), max_concurrency=4)
        for params in (SamplingParams(max_new_tokens=16, stop=("alt",)),
                       SamplingParams(max_new_tokens=16, temperature=0.9, top_p=0.9, num_return_sequences=2, seed=4)):
            assert remote.generate(varied_prompts, params, chat=False) == local.generate(varied_prompts, params, chat=False)
        pairs = [("Question: what is 12 plus 7? Answer:", " 19"), ("The capital of France is", " Paris. It is big")]
        for (ours, greedy_ours), (theirs, greedy_theirs) in zip(remote.loglikelihood(pairs), local.loglikelihood(pairs)):
            assert ours == pytest.approx(theirs, abs=1e-4) and greedy_ours == greedy_theirs
        stats = server.stats()
        assert stats["max_concurrent"] >= 2 and stats.get("backend_errors", 0) == 0
        assert remote.stats["retries"] == 0 and remote.stats["prompt_tokens"] == stats["prompt_tokens"]
        remote.close()


def test_completions_endpoint_contract(varied_model: str):
    """What the engine relies on: n choices per prompt in order, a seed per request, stop strings cut,
    echo + logprobs in the legacy layout, neutral sampling extensions only, bad prompts refused."""
    with make_server(model=varied_model, served_name="varied", faults=[], engine=FP32) as server:
        url = server.base_url + "/completions"
        tok = load_tokenizer(varied_model)
        ids = tok("The quick brown fox", add_special_tokens=False)["input_ids"]
        body = {"model": "varied", "prompt": [ids, "hello there"], "max_tokens": 6, "temperature": 1.0, "n": 3,
                "seed": 7, "top_k": -1, "min_p": 0.0, "repetition_penalty": 1.0}
        status, first = _post(url, body)
        assert status == 200 and first["object"] == "text_completion"
        assert [c["index"] for c in first["choices"]] == list(range(6))
        assert len({c["text"] for c in first["choices"][:3]}) > 1  # n samples, not copies
        assert _post(url, body)[1]["choices"] == first["choices"]  # the seed fixes them
        assert _post(url, {**body, "seed": 8})[1]["choices"] != first["choices"]
        status, scored = _post(url, {"model": "varied", "prompt": ids, "max_tokens": 1, "temperature": 0,
                                     "echo": True, "logprobs": 2})
        lp = scored["choices"][0]["logprobs"]
        assert status == 200 and len(lp["tokens"]) == len(ids) + 1 and lp["token_logprobs"][0] is None
        assert lp["top_logprobs"][0] is None and all(len(top) <= 2 for top in lp["top_logprobs"][1:])
        assert all(v <= 0 for v in lp["token_logprobs"][1:]) and lp["text_offset"][0] == 0
        assert scored["choices"][0]["text"].startswith(tok.decode(ids))
        assert _post(url, {**body, "repetition_penalty": 1.2})[0] == 400
        assert _post(url, {**body, "top_k": 40})[0] == 400
        assert _post(url, {"model": "varied", "prompt": [len(tok) + 5]})[0] == 400
        assert _post(url, {"model": "varied", "prompt": {"x": 1}})[0] == 400
        chat = _post(server.base_url + "/chat/completions", {"model": "varied", "n": 2, "temperature": 1.0, "seed": 1,
                                                             "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]})
        assert chat[0] == 200 and len(chat[1]["choices"]) == 2


def test_a_server_without_prompt_logprobs_is_named_clearly(varied_model: str):
    with make_server(scripted="longer", faults=[]) as server:  # answers text, refuses echo and token ids
        remote = OpenAIGenerator(server.base_url, "scripted-judge", load_tokenizer(varied_model), max_retries=0)
        with pytest.raises(PromptLogprobsUnsupported, match="MMLU and TruthfulQA MC2"):
            remote.loglikelihood([("The capital of France is", " Paris")])
        text_only = OpenAIGenerator(server.base_url, "scripted-judge", load_tokenizer(varied_model),
                                    tokenized_prompts=False, extra_body={})
        assert text_only.generate(["hello"], SamplingParams(max_new_tokens=4), chat=False) == [["A"]]
        with pytest.raises(PromptLogprobsUnsupported, match="tokenized_prompts"):
            text_only.loglikelihood([("a", " b")])
        remote.close()
        text_only.close()


def test_gsm8k_and_mmlu_end_to_end_through_harness_eval(varied_model: str, tmp_path: Path, shared_data: Path,
                                                         monkeypatch, capsys):
    """`harness eval --engine openai` against `harness serve-judge` as its own process equals the
    in-process engine at the same precision: the same GSM8K answers, the same MMLU log-likelihoods."""
    from harness.cli import main
    from harness.evaluation import mmlu

    rows = mmlu.load_rows(limit=57)[:5]
    monkeypatch.setattr(mmlu, "load_rows", lambda limit: rows)
    proc, base_url = _serve_judge(["--model", varied_model, "--served-name", "varied", "--dtype", "float32",
                                   "--batching", "compact", "--threads", "1"], tmp_path / "server.log")
    try:
        common = ["eval", "--model", varied_model, "--tasks", "gsm8k", "mmlu", "--limit", "2", "--no-mlflow"]
        assert main([*common, "--out", str(tmp_path / "remote"), "--engine", "openai", "--base-url", base_url,
                     "--engine-model", "varied", "--max-concurrency", "4"]) == 0
    finally:
        _stop(proc)
    assert main([*common, "--out", str(tmp_path / "local"), "--dtype", "float32", "--batching", "static"]) == 0
    capsys.readouterr()

    def samples(run: str, task: str) -> list[dict]:
        return [json.loads(line) for line in (tmp_path / run / f"{task}.samples.jsonl").read_text().splitlines()]

    remote, local = samples("remote", "gsm8k"), samples("local", "gsm8k")
    assert len(remote) == 2 and [s["output"] for s in remote] == [s["output"] for s in local]
    assert any(s["output"] for s in remote)
    remote, local = samples("remote", "mmlu"), samples("local", "mmlu")
    assert len(remote) == 5
    for a, b in zip(remote, local):
        assert a["loglikelihoods"] == pytest.approx(b["loglikelihoods"], abs=1e-4)
    results = json.loads((tmp_path / "remote" / "results.json").read_text())
    assert results["engine"]["engine.kind"] == "openai" and results["engine"]["engine.model"] == "varied"
    assert json.loads((tmp_path / "remote" / "engine.json").read_text())["kind"] == "openai"
    # Resuming the folder with another engine is refused (task resume keys do not name the engine).
    assert main([*common, "--out", str(tmp_path / "remote"), "--dtype", "float32"]) == 2
    assert "holds results from engine" in capsys.readouterr().err


def test_a_server_that_dies_mid_run_is_retried_and_nothing_is_recorded(varied_model: str, varied_prompts: list[str],
                                                                       tmp_path: Path, shared_data: Path):
    """The server process is killed (SIGKILL) while requests are in flight, and a server comes back on
    the same port (in this process: starting another process takes half a minute on a loaded machine):
    every answer equals the undisturbed in-process one. With the server gone for good, the run raises
    and the task leaves no samples and no result behind."""
    from harness.evaluation import EvalContext, run_tasks

    port = free_port()
    proc, base_url = _serve_judge(["--model", varied_model, "--served-name", "varied", "--dtype", "float32",
                                   "--threads", "1", "--delay-s", "0.3", "--max-batch", "2"],
                                  tmp_path / "server.log", port=port)
    prompts = varied_prompts * 2
    params = SamplingParams(max_new_tokens=12)
    expected = HFGenerator.from_name(varied_model, engine=FP32).generate(prompts, params, chat=False)
    remote = OpenAIGenerator(base_url, "varied", load_tokenizer(varied_model), max_concurrency=2, max_retries=8,
                             backoff_s=0.25, max_backoff_s=2.0)
    replacement: list = []
    answered_before_the_kill: list[int] = []

    def kill_and_replace() -> None:
        while (done := json.loads(urllib.request.urlopen(base_url[:-3] + "/stats", timeout=10).read())
               .get("completed", 0)) < 3:
            time.sleep(0.05)
        answered_before_the_kill.append(done)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        replacement.append(make_server(model=varied_model, served_name="varied", port=port, faults=[],
                                       engine=FP32).start())

    killer = threading.Thread(target=kill_and_replace)
    killer.start()
    try:
        answers = remote.generate(prompts, params, chat=False)
    finally:
        killer.join()
        _stop(proc, signal.SIGKILL)
    try:
        assert proc.returncode == -signal.SIGKILL and answered_before_the_kill[0] < len(prompts)
        assert answers == expected and remote.stats["retries"] >= 1
        assert replacement[0].stats()["completed"] >= 1  # the rest came from the server that came back
    finally:
        replacement[0].stop()  # gone for good
        remote.close()
    dead = OpenAIGenerator(base_url, "varied", load_tokenizer(varied_model), max_retries=2, backoff_s=0.05)
    ctx = EvalContext(model_path=varied_model, out_dir=tmp_path / "eval", limit=2, _generator=dead)
    with pytest.raises(EngineError, match="no answer after 3 attempts"):
        run_tasks(ctx, ["gsm8k"])
    assert not (tmp_path / "eval" / "gsm8k.samples.jsonl").exists()
    assert not (tmp_path / "eval" / "gsm8k.result.json").exists()


def test_kind_vllm_starts_a_server_for_the_model_and_stops_it(varied_model: str, varied_prompts: list[str]):
    """The managed-server path of `kind: vllm`, with `harness serve-judge` standing in for `vllm serve`
    (vLLM cannot be installed here): started on a free port, answers, stopped by `close()`."""
    settings = EngineSettings(kind="vllm", model="served-varied", dtype="float32")

    def stand_in(port: int) -> list[str]:
        return [sys.executable, "-m", "harness.judge.cli", "serve-judge", "--model", varied_model, "--served-name",
                "served-varied", "--port", str(port), "--dtype", "float32", "--threads", "1"]

    engine = serve_model(varied_model, settings, command_for=stand_in)
    server = engine.server
    assert server is not None and server.running
    params = SamplingParams(max_new_tokens=8)
    local = HFGenerator.from_name(varied_model, engine=FP32).generate(varied_prompts[:3], params, chat=False)
    assert engine.generate(varied_prompts[:3], params, chat=False) == local
    engine.close()
    assert not server.running
    with pytest.raises(OSError):
        urllib.request.urlopen(server.base_url + "/models", timeout=5)
    with pytest.raises(EngineError, match="exited with"):  # a command that dies at once: its log is shown
        serve_model(varied_model, settings, command_for=lambda port: [sys.executable, "-c", "import sys; sys.exit(3)"])


def test_kind_vllm_without_vllm_says_so():
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here")
    with pytest.raises(EngineError, match="needs vLLM installed"):
        serve_model("tiny-random-llama", EngineSettings(kind="vllm"))
