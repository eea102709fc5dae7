"""Mined math/code prompts (App. J): Fig. 5 tagging through a real OpenAI-compatible HTTP endpoint,
the SQLite cache (a rerun makes no new calls), and the selection rules.

The endpoint is a local `http.server` speaking the chat-completions protocol with canned tags: it stands
in for the paid tagger (Tulu 2 70B in the paper) behind the same interface.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from datasets_registry import prepare
from datasets_registry.tagging import cached_tags, openai_complete, parse_tags, select_mined, tag_prompts

FIXTURES = Path(__file__).parent / "fixtures" / "datasets"

# prompt keyword -> the tagger's canned answer
CANNED = {
    "Python function": '{"tags": ["Coding"]}',
    "Solve 3x": "'''\n{\n    \"tags\": [\"Math\", \"Closed Question Answering\"]\n}\n'''",
    "Is 7 prime": '```json\n{"tags": ["Math"]}\n```',
    "haiku": '{"tags": ["Creative Writing"]}',
    "fish fly": '{"tags": ["Math", "Unclear"]}',
    "Say hello": "I cannot answer in JSON, sorry.",
}


class _Tagger(BaseHTTPRequestHandler):
    calls: list[str] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        assert self.path == "/v1/chat/completions"
        prompt = body["messages"][-1]["content"]
        _Tagger.calls.append(prompt)
        answer = next((reply for key, reply in CANNED.items() if key in prompt), '{"tags": ["Unclear"]}')
        payload = json.dumps({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": answer}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def tagger_url():
    _Tagger.calls = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Tagger)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()
    thread.join()


def test_parse_tags_accepts_fenced_and_quoted_json():
    assert parse_tags('{"tags": ["coding", "Math"]}') == ["Coding", "Math"]
    assert parse_tags("```json\n{\"tags\": [\"Math\"]}\n```") == ["Math"]
    assert parse_tags("no json here") is None
    assert parse_tags('{"tags": "Math"}') is None


def test_tagging_through_an_openai_compatible_endpoint_is_cached(tagger_url, monkeypatch):
    monkeypatch.setenv("TAGGER_KEY", "test-key")
    pools = {"prompts-wildchat": prepare("prompts-wildchat", files=[FIXTURES / "wildchat.jsonl"]).rows,
             "prompts-ultrafeedback": prepare("prompts-ultrafeedback",
                                              files=[FIXTURES / "ultrafeedback_raw.jsonl"]).rows}
    complete = openai_complete("tagger-model", tagger_url, "TAGGER_KEY")
    first = {pool: tag_prompts(rows, complete, model="tagger-model", pool=pool) for pool, rows in pools.items()}
    assert first["prompts-wildchat"].called == 2 and first["prompts-ultrafeedback"].called == 4
    assert first["prompts-ultrafeedback"].parse_failed == 1  # "Say hello" got a non-JSON answer
    assert len(_Tagger.calls) == 6
    assert "## User Query" in _Tagger.calls[0] and '"Coding"' in _Tagger.calls[0]  # the Fig. 5 template

    again = {pool: tag_prompts(rows, complete, model="tagger-model", pool=pool) for pool, rows in pools.items()}
    assert len(_Tagger.calls) == 6  # the rerun asked nothing
    assert again["prompts-wildchat"].cached == 2 and again["prompts-ultrafeedback"].cached == 4

    math = prepare("prompts-mined-math")
    assert {r["prompt"][0]["content"] for r in math.rows} == {"Solve 3x + 5 = 20.", "Is 7 prime? Explain."}
    assert math.dropped == {"tag_parse_failed": 1, "unclear": 1, "not_math": 2}
    code = prepare("prompts-mined-code")
    assert [r["prompt"][0]["content"] for r in code.rows] == ["Write a Python function that reverses a string."]
    assert code.rows[0]["pool"] == "prompts-wildchat" and code.rows[0]["tags"] == ["Coding"]


def test_plain_openai_client_is_used_without_the_judge_module(tagger_url, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "harness.judge", None)  # as in a checkout without harness/judge
    complete = openai_complete("tagger-model", tagger_url, "UNSET_KEY_VAR")
    rows = prepare("prompts-wildchat", files=[FIXTURES / "wildchat.jsonl"]).rows
    stats = tag_prompts(rows, complete, model="tagger-model", pool="prompts-wildchat")
    assert (stats.called, stats.parse_failed, len(_Tagger.calls)) == (2, 0, 2)
    assert sorted(r["tags"] for r in cached_tags()) == [["Closed Question Answering", "Math"], ["Coding"]]


def test_selection_prefers_fewest_tags_and_applies_the_quota():
    records = [
        {"prompt_id": "a", "prompt": "p1", "pool": "x", "tags": ["Math", "Rewriting", "Extraction"]},
        {"prompt_id": "b", "prompt": "p2", "pool": "x", "tags": ["Math"]},
        {"prompt_id": "c", "prompt": "p3", "pool": "x", "tags": ["Coding", "Math"]},
        {"prompt_id": "d", "prompt": "p4", "pool": "x", "tags": ["Math", "Multilingual"]},
    ]
    out = list(select_mined(records, "Math", quota=2))
    kept = [r["prompt_id"] for r in out if isinstance(r, dict)]
    assert kept == ["b", "c"]  # 1 tag, then 2 tags; the 3-tag prompt is over the quota
    assert sorted(r.reason for r in out if not isinstance(r, dict)) == ["multilingual", "over_quota"]


def test_remix_pools_mined_and_ultrafeedback_prompts(tagger_url, monkeypatch, tmp_path):
    # UltraFeedback prompts come from the raw fixture placed in the hub layout under HARNESS_DATA_DIR.
    folder = tmp_path / "openbmb" / "UltraFeedback"
    folder.mkdir(parents=True)
    (folder / "train.jsonl").write_bytes((FIXTURES / "ultrafeedback_raw.jsonl").read_bytes())
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path))
    complete = openai_complete("tagger-model", tagger_url, "UNSET_KEY_VAR")
    tag_prompts(prepare("prompts-ultrafeedback").rows, complete, model="tagger-model", pool="prompts-ultrafeedback")
    assert len(cached_tags()) == 4
    remix = prepare("prompts-remix")
    # mined math (1: "Is 7 prime", the other Math prompt is Unclear) + code (none) + the 4 UltraFeedback
    # prompts: the overlap is counted once, as a duplicate
    assert remix.kept == 4
    assert remix.dropped["duplicate"] == 1 and remix.dropped["prompts-mined-code/short_by"] == 20_000


def test_tag_prompt_is_figure5_verbatim():
    """The template is the paper's Fig. 5 text, compared with the paper itself when ../shared/seeds is here."""
    from datasets_registry.tagging import TAG_PLACEHOLDER, TAG_PROMPT, tag_messages

    paper = Path(__file__).resolve().parents[2] / "shared" / "seeds" / "004_70e872f392b3e839.txt"
    if not paper.is_file():
        pytest.skip("the paper's text (../shared/seeds/004_70e872f392b3e839.txt) is not present")
    text = paper.read_text()
    start = text.index("# Instruction\n\nPlease label the task tags")
    end = text.index("Do not add any additional characters.", start) + len("Do not add any additional characters.")
    assert TAG_PROMPT == text[start:end]
    (message,) = tag_messages("Solve 3x + 5 = 20.")
    assert TAG_PLACEHOLDER not in message["content"]
    assert "'''\nSolve 3x + 5 = 20.\n'''" in message["content"]
    assert '{\n    "tags": ["[tag 1]", "[tag 2]", ... ]\n}' in message["content"]  # JSON braces kept literally


def test_tag_cache_is_keyed_by_template(tmp_path):
    """Answers cached for another template (the earlier paraphrase) are not reused for Fig. 5's prompt."""
    import sqlite3

    from datasets_registry.tagging import TAG_TEMPLATE_ID, cache_path

    calls: list[str] = []

    def complete(messages):
        calls.append(messages[-1]["content"])
        return '{"tags": ["Math"]}'

    rows = prepare("prompts-wildchat", files=[FIXTURES / "wildchat.jsonl"]).rows
    path = cache_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as conn:  # the cache as an older template left it
        conn.execute("""CREATE TABLE task_tags (template TEXT NOT NULL, model TEXT NOT NULL, prompt_id TEXT NOT NULL,
            pool TEXT NOT NULL, prompt TEXT NOT NULL, response TEXT NOT NULL, tags TEXT, created REAL NOT NULL,
            PRIMARY KEY (template, model, prompt_id))""")
        conn.executemany("INSERT INTO task_tags VALUES ('prompt-task-tags-fig5/v1', 'm', ?, 'p', ?, '', '[\"Coding\"]', 0)",
                         [(r["id"], r["prompt"][0]["content"]) for r in rows])
    assert cached_tags() == []
    stats = tag_prompts(rows, complete, model="m", pool="prompts-wildchat")
    assert (stats.called, stats.cached, len(calls)) == (2, 0, 2)
    assert {r["tags"][0] for r in cached_tags()} == {"Math"} and TAG_TEMPLATE_ID.endswith("verbatim")
