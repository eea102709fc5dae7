"""A local OpenAI-compatible judge server, for offline work and for tests.

The real judge (GPT-4) is unreachable from the project's machines, so the same HTTP interface is served
locally: `POST /v1/chat/completions`, `POST /v1/completions` and `GET /v1/models`, answered either by

- a local model through the shared generation engine (`harness.generation.HFGenerator`, the same
  engine choice as everywhere: `EngineSettings`, by default the detected fastest for the device), with
  micro-batching (requests that arrive together are generated in one batch) and per-token logprobs
  (AlpacaEval 2's annotator reads the logprobs of its first answer token). What the harness's own
  OpenAI-compatible engine (`harness.openai_engine`) sends is served: `n` samples per prompt, a `seed`
  per request (the engine samples each row with its own seeded generator, so a seeded request gets
  the same answer however requests are batched), `stop` strings, prompts as text or token ids, and on
  `/v1/completions` the prompt's own log-probs (`echo: true` with `logprobs: k`) for log-likelihood
  scoring. Sampling extensions other servers accept (top_k, min_p, repetition_penalty, frequency and
  presence penalties) are accepted at their neutral values only: samples come from exactly
  softmax(logits / temperature) cut to top_p; or
- a scripted judge: deterministic replies from regex rules or a built-in "prefer the longer response"
  strategy. It stands in for the judge in logic tests (order swap, ties, retries), behind the very same
  HTTP interface, so the real `openai` client is exercised end to end.

For tests and benchmarks the server counts requests (`GET /stats`), can inject faults (the next N
requests answer 429/500/..., from `--fail-first`/`--fail-status`, `HARNESS_JUDGE_FAULTS="429,500"` or
`POST /admin/faults`), can add latency, and can require an API key (`require_key_env`): the key is
compared, never printed or logged. Only loopback addresses are served.

With `engine="vllm"` (or "auto" when vLLM and a GPU are present) `harness serve-judge` execs vLLM's own
OpenAI server instead (untested here: no vLLM on the project's CPU machines); that one has no `/stats`
or fault injection.

This module is the HTTP layer (routes, auth, faults, stats, the server thread); the API's request and
response schemas are in `server_protocol.py`, the scripted and model backends in `server_backends.py`.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from harness.judge.server_backends import ModelBackend, ScriptedBackend
from harness.judge.server_protocol import (
    ServerError,
    completion_body,
    parse_completion_request,
    parse_request,
    text_completion_body,
    usage_body,
)

if TYPE_CHECKING:
    from harness.generation import EngineSettings

log = logging.getLogger(__name__)


@dataclass
class ServerState:
    served_model: str
    backend: Any
    api_key: str | None = None  # compared in constant time; never printed
    delay_s: float = 0.0
    faults: list[int] = field(default_factory=list)  # statuses for the next requests, consumed in order
    retry_after: float | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    stats: Counter = field(default_factory=Counter)
    in_flight: int = 0
    max_concurrent: int = 0

    def snapshot(self) -> dict[str, Any]:
        backend_stats = getattr(self.backend, "stats", None)
        with self.lock:
            return {**dict(self.stats), "in_flight": self.in_flight, "max_concurrent": self.max_concurrent,
                    "pending_faults": list(self.faults), "model": self.served_model,
                    **(backend_stats() if backend_stats else {})}

    def reset(self) -> None:
        with self.lock:
            self.stats.clear()
            if hasattr(self.backend, "batch_sizes"):
                self.backend.batch_sizes.clear()
            self.max_concurrent = self.in_flight


class _Handler(BaseHTTPRequestHandler):
    server_version = "harness-judge/1"
    protocol_version = "HTTP/1.1"
    state: ServerState  # set on the subclass built per server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - BaseHTTPRequestHandler's name
        # Method, path and status only: headers (Authorization) and bodies are never logged.
        log.debug("%s %s -> %s", self.command, self.path, args[1] if len(args) > 1 else "")

    def _send(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str, kind: str, headers: dict[str, str] | None = None) -> None:
        self._send(status, {"error": {"message": message, "type": kind, "code": status}}, headers)

    def _read_json(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b"{}"
        try:
            body = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ServerError(400, f"body is not JSON: {exc}") from None
        if not isinstance(body, dict):
            raise ServerError(400, "body must be a JSON object")
        return body

    def _authorised(self) -> bool:
        expected = self.state.api_key
        if not expected:
            return True
        given = self.headers.get("Authorization", "")
        token = given[7:] if given.startswith("Bearer ") else ""
        return hmac.compare_digest(token.encode(), expected.encode())

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path = self.path.split("?")[0].rstrip("/")
        if path in ("/health", "/v1/health"):
            self._send(200, {"status": "ok"})
        elif path == "/stats":
            self._send(200, self.state.snapshot())
        elif path == "/v1/models":
            self._send(200, {"object": "list", "data": [
                {"id": self.state.served_model, "object": "model", "created": 0, "owned_by": "harness"}]})
        else:
            self._error(404, f"no route {path}", "not_found")

    def do_POST(self) -> None:  # noqa: N802
        path = self.path.split("?")[0].rstrip("/")
        try:
            body = self._read_json()
            if path == "/admin/faults":
                with self.state.lock:
                    self.state.faults = [int(s) for s in body.get("statuses", [])]
                    self.state.retry_after = body.get("retry_after")
                self._send(200, {"pending_faults": self.state.faults})
            elif path == "/admin/reset":
                self.state.reset()
                self._send(200, {"ok": True})
            elif path == "/admin/config":
                with self.state.lock:
                    if "delay_s" in body:
                        self.state.delay_s = float(body["delay_s"])
                    if "script" in body and isinstance(self.state.backend, ScriptedBackend):
                        spec = body["script"]
                        self.state.backend = ScriptedBackend(spec.get("rules", ()), spec.get("default", "A"),
                                                             spec.get("strategy"))
                self._send(200, {"ok": True})
            elif path == "/v1/chat/completions":
                self._generate(body, completions=False)
            elif path == "/v1/completions":
                self._generate(body, completions=True)
            else:
                self._error(404, f"no route {path}", "not_found")
        except ServerError as err:
            self._error(err.status, err.message, err.kind)

    def _generate(self, body: dict[str, Any], completions: bool) -> None:
        state = self.state
        with state.lock:
            state.stats["requests"] += 1
            state.in_flight += 1
            state.max_concurrent = max(state.max_concurrent, state.in_flight)
            fault = state.faults.pop(0) if state.faults else None
        try:
            if not self._authorised():
                with state.lock:
                    state.stats["unauthorised"] += 1
                self._error(401, "Incorrect API key provided.", "invalid_api_key")
                return
            if state.delay_s:
                time.sleep(state.delay_s)
            if fault is not None:
                with state.lock:
                    state.stats["injected_faults"] += 1
                    state.stats[f"status_{fault}"] += 1
                headers = {}
                if state.retry_after is not None:
                    headers["Retry-After"] = str(state.retry_after)
                kind = "rate_limit_exceeded" if fault == 429 else "server_error"
                self._error(fault, f"injected fault {fault}", kind, headers)
                return
            reqs = (parse_completion_request(body, state.served_model) if completions
                    else [parse_request(body, state.served_model)[0]])
            try:
                replies = state.backend.complete(reqs)
            except ServerError:
                raise
            except Exception as exc:
                log.exception("local judge backend failed")
                with state.lock:
                    state.stats["backend_errors"] += 1
                self._error(500, f"backend error: {type(exc).__name__}", "server_error")
                return
            usage = usage_body(replies)
            with state.lock:
                state.stats["completed"] += 1
                state.stats["prompt_tokens"] += usage["prompt_tokens"]
                state.stats["completion_tokens"] += usage["completion_tokens"]
            if completions:
                self._send(200, text_completion_body(replies, state.served_model, reqs[0].echo))
            else:
                self._send(200, completion_body(replies[0], state.served_model))
        finally:
            with state.lock:
                state.in_flight -= 1


def _check_loopback(host: str) -> None:
    try:
        ok = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"the local judge server binds loopback addresses only (127.0.0.1, ::1), not {host!r}")


def parse_faults(spec: str | None) -> list[int]:
    """'429,500,500' or '3x429' -> statuses for the next requests."""
    statuses: list[int] = []
    for part in (spec or "").replace(" ", "").split(","):
        if not part:
            continue
        count, _, status = part.rpartition("x")
        statuses.extend([int(status)] * (int(count) if count else 1))
    return statuses


class JudgeServer:
    """An OpenAI-compatible server on a background thread: `start()`, `.base_url`, `stats()`, `stop()`."""

    def __init__(self, backend: Any, served_model: str, host: str = "127.0.0.1", port: int = 0,
                 api_key: str | None = None, delay_s: float = 0.0, faults: Sequence[int] = (),
                 retry_after: float | None = None):
        _check_loopback(host)
        self.state = ServerState(served_model=served_model, backend=backend, api_key=api_key,
                                 delay_s=delay_s, faults=list(faults), retry_after=retry_after)
        handler = type("JudgeHandler", (_Handler,), {"state": self.state})
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.host, self.port = host, self.httpd.server_address[1]
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/v1"

    def start(self) -> JudgeServer:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="judge-server", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def stats(self) -> dict[str, Any]:
        return self.state.snapshot()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        close = getattr(self.state.backend, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> JudgeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def make_server(model: str | None = None, scripted: str | None = None, served_name: str | None = None,
                host: str = "127.0.0.1", port: int = 0, require_key_env: str | None = None,
                delay_s: float = 0.0, faults: Sequence[int] | None = None, max_batch: int = 8,
                max_new_tokens_cap: int = 512, retry_after: float | None = None,
                engine: EngineSettings | None = None) -> JudgeServer:
    """Build a server around a local model (zoo name or folder) or a scripted judge. `engine`: the
    model's in-process engine settings (default: the detected fastest for this device)."""
    if (model is None) == (scripted is None):
        raise ValueError("give exactly one of `model` (a zoo name or folder) or `scripted`")
    if scripted is not None:
        backend: Any = ScriptedBackend.from_spec(scripted)
        name = served_name or "scripted-judge"
    else:
        backend = ModelBackend(model, max_batch=max_batch, max_new_tokens_cap=max_new_tokens_cap, engine=engine)
        name = served_name or model
    api_key = None
    if require_key_env:
        api_key = os.environ.get(require_key_env)
        if not api_key:
            raise ValueError(f"require_key_env={require_key_env!r} but that environment variable is empty")
    if faults is None:
        faults = parse_faults(os.environ.get("HARNESS_JUDGE_FAULTS"))
    return JudgeServer(backend, name, host=host, port=port, api_key=api_key, delay_s=delay_s, faults=faults,
                       retry_after=retry_after)
