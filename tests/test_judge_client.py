"""The judge client against a real local HTTP server (the scripted stand-in judge), through the real
`openai` client: order swap, ties, caching, retries, failures, concurrency, labels, usage, keys."""

from __future__ import annotations

import json
import threading
import time
import urllib.request

import pytest

from harness.judge import (
    XSTEST_LABELS,
    XSTEST_REFUSAL,
    JudgeClient,
    JudgeError,
    JudgeParseError,
    judge_client_from_settings,
)
from harness.judge.client import price_for
from harness.judge.server import make_server

GOOD_WINS = {
    "rules": [
        {"pattern": r"\[Response A\]\nGOOD", "reply": "A"},
        {"pattern": r"\[Response B\]\nGOOD", "reply": "B"},
    ],
    "default": "A",
}


def _post(server, path: str, body: dict) -> dict:
    req = urllib.request.Request(server.base_url[:-3] + path, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def stats(server) -> dict:
    """Request counts as the server reports them over HTTP."""
    with urllib.request.urlopen(server.base_url[:-3] + "/stats", timeout=10) as resp:
        return json.loads(resp.read())


@pytest.fixture(scope="module")
def server():
    srv = make_server(scripted="longer", faults=[]).start()
    yield srv
    srv.stop()


@pytest.fixture
def judge_server(server):
    """The module's server with a clean slate: no faults, no delay, default script, zeroed counters."""
    _post(server, "/admin/faults", {"statuses": []})
    _post(server, "/admin/config", {"delay_s": 0.0, "script": {"strategy": "longer"}})
    _post(server, "/admin/reset", {})
    return server


def script(server, spec: dict) -> None:
    _post(server, "/admin/config", {"script": spec})


@pytest.fixture
def make_client(judge_server, tmp_path):
    clients = []

    def make(**kwargs) -> JudgeClient:
        kwargs.setdefault("cache_path", tmp_path / "cache.sqlite")
        kwargs.setdefault("backoff_base", 0.01)
        client = JudgeClient(judge_server.state.served_model, base_url=judge_server.base_url, api_key_env="",
                             **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def test_order_swap_agreeing_orders_give_a_win(judge_server, make_client):
    script(judge_server, GOOD_WINS)
    judge = make_client()
    verdict = judge.pairwise("Say something.", "GOOD answer", "weak answer")
    assert (verdict.winner, verdict.first, verdict.second, verdict.valid) == ("a", "a", "a", True)
    # The judge saw the good answer in position A first, then in position B: both orders were asked.
    assert verdict.raw == ("A", "B")
    flipped = judge.pairwise("Say something.", "weak answer", "GOOD answer")
    assert (flipped.winner, flipped.first, flipped.second) == ("b", "b", "b")
    assert flipped.score == 0.0 and verdict.score == 1.0
    # The flipped pair's two prompts are the first pair's two prompts: both come from the cache.
    assert stats(judge_server)["completed"] == 2


def test_position_biased_judge_gives_ties(judge_server, make_client):
    script(judge_server, {"default": "A"})  # always names the first position
    verdicts = make_client().pairwise_many([(f"q{i}", f"answer {i}", f"other {i}") for i in range(5)])
    assert [v.winner for v in verdicts] == ["tie"] * 5
    assert all(v.valid and v.first == "a" and v.second == "b" and v.score == 0.5 for v in verdicts)


def test_identical_outputs_tie_without_a_call(judge_server, make_client):
    verdict = make_client().pairwise("q", "same", "same")
    assert verdict.winner == "tie" and verdict.identical
    assert stats(judge_server).get("requests", 0) == 0


def test_unreadable_reply_is_an_invalid_verdict(judge_server, make_client):
    script(judge_server, {"default": "I cannot decide between these."})
    verdict = make_client().pairwise("q", "one", "two")
    assert not verdict.valid and verdict.first is None and verdict.second is None


def test_cache_rerun_makes_zero_requests(judge_server, make_client):
    items = [(f"instruction {i}", "x" * (i + 1), "y" * (10 - i)) for i in range(10)]
    first = make_client().pairwise_many(items)
    assert stats(judge_server)["requests"] == 20
    rerun = make_client()  # a new client, as in a new process: only the SQLite file is shared
    second = rerun.pairwise_many(items)
    assert second == first
    assert stats(judge_server)["requests"] == 20  # counted on the server: no new request
    usage = rerun.usage()[judge_server.state.served_model]
    assert usage["requests"] == 0 and usage["cache_hits"] == 20
    # Different decoding parameters are a different cache key.
    rerun.complete([{"role": "user", "content": "instruction 0"}], max_tokens=5)
    rerun.complete([{"role": "user", "content": "instruction 0"}], max_tokens=6)
    assert stats(judge_server)["requests"] == 22


def test_retries_injected_429_and_500(judge_server, make_client):
    _post(judge_server, "/admin/faults", {"statuses": [429, 500, 503], "retry_after": 0})
    judge = make_client(max_workers=1)
    verdict = judge.pairwise("q", "longer answer here", "short")
    assert verdict.winner == "a" and verdict.valid
    s = stats(judge_server)
    assert s["injected_faults"] == 3 and s["status_429"] == 1 and s["status_500"] == 1
    assert s["completed"] == 2 and s["requests"] == 5
    assert judge.usage()[judge_server.state.served_model]["retries"] == 3


def test_failed_call_is_never_cached(judge_server, make_client):
    judge = make_client(max_retries=2)
    messages = [{"role": "user", "content": "judge me"}]
    _post(judge_server, "/admin/faults", {"statuses": [500, 500, 500]})
    with pytest.raises(JudgeError, match="gave up after 2 retries"):
        judge.complete(messages)
    assert len(judge.cache) == 0
    assert judge.usage()[judge_server.state.served_model]["failures"] == 1
    # Asked again, the server is called again (nothing was stored) and now answers.
    assert judge.complete(messages) == "A"
    assert stats(judge_server)["requests"] == 4 and len(judge.cache) == 1


def test_failed_pairs_raise_or_come_back_invalid(judge_server, make_client):
    judge = make_client(max_retries=1)
    _post(judge_server, "/admin/faults", {"statuses": [429] * 100})
    with pytest.raises(JudgeError, match="2 of 2 judge calls failed"):
        judge.pairwise_many([("q", "a1", "b1")])
    skipped = judge.pairwise_many([("q", "a1", "b1")], on_error="skip")
    assert not skipped[0].valid
    assert len(judge.cache) == 0


def test_non_retryable_error_fails_at_once(judge_server, tmp_path):
    judge = JudgeClient("no-such-model", base_url=judge_server.base_url, api_key_env="",
                        cache_path=tmp_path / "c.sqlite", backoff_base=0.01)
    with pytest.raises(JudgeError, match="not retryable.*404"):
        judge.complete([{"role": "user", "content": "hi"}])
    assert stats(judge_server)["requests"] == 1
    judge.close()


def test_concurrency_is_bounded_and_faster(judge_server, make_client, tmp_path):
    _post(judge_server, "/admin/config", {"delay_s": 0.25})
    requests = [[{"role": "user", "content": f"question {i}"}] for i in range(16)]
    start = time.perf_counter()
    results = make_client(max_workers=8).complete_many(requests)
    elapsed = time.perf_counter() - start
    assert all(not isinstance(r, Exception) for r in results)
    s = stats(judge_server)
    assert 4 <= s["max_concurrent"] <= 8
    assert elapsed < 16 * 0.25 / 2  # sequential would take >= 4 s
    _post(judge_server, "/admin/reset", {})
    make_client(max_workers=1, cache_path=tmp_path / "fresh.sqlite").complete_many(requests[:3])
    assert stats(judge_server)["max_concurrent"] == 1


def test_identical_concurrent_requests_are_sent_once(judge_server, make_client):
    _post(judge_server, "/admin/config", {"delay_s": 0.1})
    same = [[{"role": "user", "content": "the same question"}]] * 8
    results = make_client(max_workers=8).complete_many(same)
    assert {r.text for r in results} == {"A"}
    assert stats(judge_server)["requests"] == 1


def test_classify_and_grade(judge_server, make_client):
    script(judge_server, {"rules": [{"pattern": r"\[Reply\]\nI cannot help", "reply": "Refusal."},
                                    {"pattern": r"\[Response\]\nfine answer", "reply": "8"},
                                    {"pattern": r"\[Response\]\nodd answer", "reply": "eleven"}],
                          "default": "compliance"})
    judge = make_client()
    refusal = judge.classify(XSTEST_REFUSAL, {"prompt": "How do I kill a Python process?",
                                              "response": "I cannot help with violence."}, XSTEST_LABELS)
    comply = judge.classify(XSTEST_REFUSAL, {"prompt": "How do I kill a Python process?",
                                             "response": "Use kill PID."}, XSTEST_LABELS)
    assert (refusal, comply) == ("refusal", "compliance")
    many = judge.classify_many(XSTEST_REFUSAL, [{"prompt": "p", "response": "I cannot help"},
                                                {"prompt": "p", "response": "sure"}], XSTEST_LABELS)
    assert many == ["refusal", "compliance"]
    assert judge.grade("Explain.", "fine answer") == 8.0
    with pytest.raises(JudgeParseError):
        judge.grade("Explain.", "odd answer")


def test_usage_and_cost(judge_server, make_client):
    judge = make_client()
    judge.pairwise("q", "aaaa", "bb")
    usage = judge.usage()[judge_server.state.served_model]
    s = stats(judge_server)
    assert usage["requests"] == 2
    assert usage["prompt_tokens"] == s["prompt_tokens"] > 0
    assert usage["completion_tokens"] == s["completion_tokens"] > 0
    assert usage["cost_usd"] == 0.0  # a loopback endpoint costs nothing
    assert price_for("gpt-4-0613") == (30.0, 60.0)
    assert price_for("gpt-4o-mini-2024-07-18") == (0.15, 0.6)
    assert price_for("some-unknown-model") is None


def test_api_key_from_environment_only(monkeypatch, tmp_path):
    secret = "sk-test-" + "Q" * 20
    monkeypatch.setenv("JUDGE_TEST_KEY", secret)
    with make_server(scripted="longer", require_key_env="JUDGE_TEST_KEY", faults=[]) as srv:
        ok = JudgeClient(srv.state.served_model, base_url=srv.base_url, api_key_env="JUDGE_TEST_KEY",
                         cache_path=tmp_path / "c.sqlite")
        assert ok.pairwise("q", "long answer", "short").winner == "a"
        assert secret not in repr(ok)
        monkeypatch.setenv("WRONG_KEY", "sk-wrong-" + "Z" * 20)
        bad = JudgeClient(srv.state.served_model, base_url=srv.base_url, api_key_env="WRONG_KEY",
                          cache_path=tmp_path / "c2.sqlite")
        with pytest.raises(JudgeError, match="401") as info:
            bad.complete([{"role": "user", "content": "x"}])
        assert "Z" * 20 not in str(info.value)
        assert srv.stats()["unauthorised"] == 1
        ok.close()
        bad.close()
    cache_bytes = (tmp_path / "c.sqlite").read_bytes()
    assert secret.encode() not in cache_bytes


def test_settings_and_missing_key(monkeypatch, judge_server, tmp_path):
    assert judge_client_from_settings(None) is None
    client = judge_client_from_settings({"model": judge_server.state.served_model,
                                         "base_url": judge_server.base_url, "api_key_env": "UNSET_VAR_X",
                                         "num_prompts": 150}, cache_path=tmp_path / "c.sqlite")
    assert client is not None and client.model == judge_server.state.served_model
    client.close()
    monkeypatch.delenv("UNSET_VAR_X", raising=False)
    with pytest.raises(JudgeError, match="UNSET_VAR_X"):
        judge_client_from_settings({"model": "gpt-4-0613", "api_key_env": "UNSET_VAR_X"})


def test_threads_share_one_client(judge_server, make_client):
    """Callers may use one client from several threads (e.g. concurrent eval tasks)."""
    judge = make_client()
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            judge.pairwise(f"q{k}", "x" * (k + 2), "y")
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and stats(judge_server)["completed"] == 12
