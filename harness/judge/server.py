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
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import math
import os
import queue
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harness.generation import EngineSettings

log = logging.getLogger(__name__)

Messages = list[dict[str, str]]

# The markers of the harness's own pairwise template (see prompts.py) and of AlpacaEval's templates;
# the scripted "longer" strategy reads the candidate responses from between them.
_PAIR_RE = re.compile(
    r"\[Response A\]\n(?P<a>.*?)\n\[End of Response A\].*?\[Response B\]\n(?P<b>.*?)\n\[End of Response B\]",
    re.S,
)
_TRIPLE_QUOTED = re.compile(r'"""(.*?)"""', re.S)


TokenLogprob = tuple[str, "float | None", list[tuple[str, float]]]  # (token, logprob, [(alternative, logprob)])


@dataclass
class Reply:
    text: str
    # per generated token: (token, logprob, [(alternative token, logprob), ...]); None = not computed
    logprobs: list[TokenLogprob] | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"
    # completions with echo: the prompt's text and, with logprobs, its tokens' (the first has none)
    prompt_text: str = ""
    prompt_logprobs: list[TokenLogprob] | None = None


@dataclass
class Request:
    messages: Messages | None  # chat: the conversation; None for completions
    max_tokens: int
    temperature: float
    top_p: float
    seed: int
    stop: tuple[str, ...]
    logprobs: bool
    top_logprobs: int
    n: int = 1
    prompt: str | None = None  # completions: a text prompt (tokenized without added special tokens)
    prompt_ids: list[int] | None = None  # completions: a prompt given as token ids
    echo: bool = False  # completions: the prompt comes back too (with its tokens' log-probs when asked)


class ServerError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind


def _approx_tokens(text: str) -> int:
    """Scripted mode has no tokenizer: whitespace words stand in for tokens (usage is then approximate)."""
    return max(1, len(text.split()))


class ScriptedBackend:
    """Deterministic replies. `rules`: [{"pattern": regex, "reply": str}], matched (re.S) against the
    conversation rendered as "role: content" lines, first match wins; otherwise `strategy` "longer"
    (prefer the longer candidate in a recognised pairwise prompt; equal lengths -> the first position,
    a position bias the order swap must turn into a tie) or the literal `default` reply."""

    name = "scripted"

    def __init__(self, rules: Sequence[dict[str, str]] = (), default: str = "A", strategy: str | None = None):
        if strategy not in (None, "longer"):
            raise ValueError(f"unknown scripted strategy {strategy!r}; valid: 'longer'")
        self.rules = [(re.compile(r["pattern"], re.S), str(r["reply"])) for r in rules]
        self.default = default
        self.strategy = strategy

    @classmethod
    def from_spec(cls, spec: str) -> ScriptedBackend:
        """`longer`, or a JSON file {"rules": [...], "default": ..., "strategy": ...}."""
        if spec == "longer":
            return cls(strategy="longer")
        with open(spec) as fh:
            data = json.load(fh)
        return cls(data.get("rules", ()), data.get("default", "A"), data.get("strategy"))

    def _longer(self, text: str) -> tuple[str, float] | None:
        """(reply, probability that the first-shown candidate is better) for a recognised template."""
        match = _PAIR_RE.search(text)
        if match:
            a, b = len(match["a"]), len(match["b"])
            return ("A" if a >= b else "B"), _soft(a, b)
        quoted = _TRIPLE_QUOTED.findall(text)
        if len(quoted) >= 3:  # AlpacaEval templates: instruction, output_1, output_2
            one, two = len(quoted[1]), len(quoted[2])
            if '"model_identifier": "m"' in text:  # AlpacaEval 2 classifier: "m" = output_1
                return ("m" if one >= two else "M"), _soft(one, two)
            first = 1 if one >= two else 2
            ranking = f"[{{'model': 'model_1', 'rank': {first}}}, {{'model': 'model_2', 'rank': {3 - first}}}]"
            return ranking, _soft(one, two)
        return None

    def complete(self, requests: list[Request]) -> list[list[Reply]]:
        replies = []
        for req in requests:
            if req.messages is None and (req.prompt is None or req.echo):
                raise ServerError(400, "the scripted judge answers text prompts only (no token ids, no echo)")
            messages = req.messages or [{"role": "user", "content": req.prompt or ""}]
            text = "\n".join(f"{m['role']}: {m['content']}" for m in messages)
            reply, p_first = self.default, None
            for pattern, rule_reply in self.rules:
                if pattern.search(text):
                    reply = rule_reply
                    break
            else:
                found = self._longer(text) if self.strategy == "longer" else None
                if found is not None:
                    reply, p_first = found
            logprobs = None
            if req.logprobs:
                logprobs = [(reply, 0.0, [(reply, 0.0)])]
                if p_first is not None and reply in ("m", "M"):  # a soft AlpacaEval 2 preference
                    p_m = min(max(p_first, 1e-6), 1 - 1e-6)
                    alts = [("m", math.log(p_m)), ("M", math.log(1 - p_m))]
                    alts.sort(key=lambda t: -t[1])
                    logprobs = [(reply, dict(alts)[reply], alts[: max(req.top_logprobs, 1)])]
            replies.append([Reply(reply, logprobs, _approx_tokens(text), _approx_tokens(reply))] * req.n)
        return replies


def _soft(first_len: int, second_len: int) -> float:
    """Probability that the first candidate wins for a purely length-biased judge (logistic in log ratio)."""
    return 1 / (1 + math.exp(-2.0 * math.log((first_len + 1) / (second_len + 1))))


class ModelBackend:
    """A local causal LM behind the shared generation engine; one worker thread owns the model, so
    concurrent HTTP requests are queued and generated in batches of up to `max_batch`."""

    def __init__(self, model: str, max_batch: int = 8, batch_wait_s: float = 0.02, max_new_tokens_cap: int = 512,
                 engine: EngineSettings | None = None):
        from harness.generation import HFGenerator

        self.name = model
        self.generator = HFGenerator.from_name(model, batch_size=max_batch, engine=engine)
        self.tokenizer = self.generator.tokenizer
        # A judge prompt must never be silently truncated (the question comes last): allow the model's
        # whole context and refuse longer prompts with a 400, as OpenAI does.
        config = self.generator.model.config
        self.context = int(getattr(config, "max_position_embeddings", 2048) or 2048)
        self.generator.max_prompt_tokens = self.context
        self.max_batch = max_batch
        self.batch_wait_s = batch_wait_s
        self.max_new_tokens_cap = max_new_tokens_cap
        self._queue: queue.Queue[tuple[Request, dict[str, Any], threading.Event] | None] = queue.Queue()
        self.batch_sizes: Counter[int] = Counter()  # how many generate() calls ran with each batch size
        self._worker = threading.Thread(target=self._loop, name="judge-model-worker", daemon=True)
        self._worker.start()

    def close(self) -> None:
        self._queue.put(None)
        self._worker.join(timeout=30)

    def complete(self, requests: list[Request]) -> list[list[Reply]]:
        # Everything that touches the tokenizer or the model runs on the worker thread: a fast
        # tokenizer's padding/truncation settings are shared state, so concurrent calls corrupt batches.
        slots = []
        for req in requests:
            slot: dict[str, Any] = {}
            done = threading.Event()
            self._queue.put((req, slot, done))
            slots.append((slot, done))
        replies = []
        for slot, done in slots:
            done.wait()
            if "error" in slot:
                raise slot["error"]
            replies.append(slot["replies"])
        return replies

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            jobs = [first]
            deadline = time.monotonic() + self.batch_wait_s
            while len(jobs) < self.max_batch:  # gather requests that arrive together
                try:
                    nxt = self._queue.get(timeout=max(deadline - time.monotonic(), 0))
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)
                    break
                jobs.append(nxt)
            groups: dict[tuple, list] = {}
            for job in jobs:  # one generate() call per distinct set of sampling parameters
                r = job[0]
                try:
                    prompt_ids = self._prompt_ids(r)
                except ServerError as err:
                    job[1]["error"] = err
                    job[2].set()
                    continue
                too_long = self._context_error(r, prompt_ids)
                if too_long is not None:
                    job[1]["error"] = too_long
                    job[2].set()
                    continue
                key = (min(r.max_tokens, self.max_new_tokens_cap), r.temperature, r.top_p, r.stop, r.n)
                if self.generator.batching == "continuous":  # no per-row seeds there: one seed per call
                    key += (r.seed,)
                groups.setdefault(key, []).append((*job, prompt_ids))
            for key, group in groups.items():
                self.batch_sizes[len(group)] += 1
                try:
                    for (_, slot, _, _), replies in zip(group, self._run(key, [(j[0], j[3]) for j in group])):
                        slot["replies"] = replies
                except Exception as exc:  # reported to the HTTP handler as a 500, never swallowed
                    for _, slot, _, _ in group:
                        slot["error"] = exc
                for _, _, done, _ in group:
                    done.set()

    def _prompt_ids(self, req: Request) -> list[int]:
        from harness.generation import render_prompt

        if req.prompt_ids is not None:
            if any(not 0 <= t < len(self.tokenizer) for t in req.prompt_ids):
                raise ServerError(400, f"prompt token ids must be in [0, {len(self.tokenizer)})")
            return list(req.prompt_ids)
        text = req.prompt if req.messages is None else render_prompt(self.tokenizer, req.messages, chat=True)
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if not ids:
            raise ServerError(400, "the prompt is empty")
        return ids

    def _context_error(self, req: Request, prompt_ids: list[int]) -> ServerError | None:
        n_prompt = len(prompt_ids)
        if n_prompt + min(req.max_tokens, self.max_new_tokens_cap) <= self.context:
            return None
        return ServerError(400, f"prompt of {n_prompt} tokens plus max_tokens exceeds the model's context "
                           f"of {self.context} tokens", "context_length_exceeded")

    def stats(self) -> dict[str, Any]:
        return {"batch_sizes": {str(k): v for k, v in sorted(self.batch_sizes.items())}}

    def _run(self, key: tuple, reqs: list[tuple[Request, list[int]]]) -> list[list[Reply]]:
        from harness.generation import SamplingParams

        max_tokens, temperature, top_p, stop, n = key[:5]
        params = SamplingParams(max_new_tokens=max_tokens, temperature=temperature, top_p=top_p, stop=stop,
                                num_return_sequences=n)
        rows = self.generator.generate_from_ids([ids for _, ids in reqs], params,
                                                prompt_seeds=[req.seed for req, _ in reqs])
        out = []
        for (req, prompt_ids), samples in zip(reqs, rows):
            replies = []
            for sample in samples:
                gen_ids = list(sample.completion_ids)
                if gen_ids and gen_ids[-1] == self.tokenizer.eos_token_id:
                    gen_ids.pop()  # not part of the answer, as OpenAI's servers count it
                if self.tokenizer.decode(gen_ids, skip_special_tokens=True) != sample.text:
                    # Cut at a stop string inside the last token: the returned text's own tokens.
                    gen_ids = self.tokenizer(sample.text, add_special_tokens=False)["input_ids"]
                finish = "stop" if sample.finished else "length"
                logprobs, prompt_logprobs = self._logprobs(prompt_ids, gen_ids, req.top_logprobs,
                                                           prompt=req.echo and req.logprobs) if req.logprobs else (None, None)
                prompt_text = self.tokenizer.decode(prompt_ids) if req.echo else ""
                replies.append(Reply(sample.text, logprobs, len(prompt_ids), len(gen_ids), finish,
                                     prompt_text, prompt_logprobs))
            out.append(replies)
        return out

    def _logprobs(self, prompt_ids: list[int], gen_ids: list[int], k: int, prompt: bool = False
                  ) -> tuple[list[TokenLogprob], list[TokenLogprob] | None]:
        """Score the tokens under the model (teacher forcing): each generated token's logprob and the
        top-k alternatives at its position (with no generated token, the first position's top-k); with
        `prompt`, the same for the prompt's tokens (the first has no logprob: nothing precedes it)."""
        import torch

        model = self.generator.model
        device = next(model.parameters()).device
        ids = torch.tensor([prompt_ids + gen_ids], device=device)
        with torch.no_grad():
            logits = model(ids).logits[0].float()
        logp = torch.log_softmax(logits, dim=-1)

        def entry(pos: int, tok_id: int | None) -> TokenLogprob:
            top = torch.topk(logp[pos], k=max(k, 1))
            alts = [(self.tokenizer.decode([int(i)]), float(v)) for v, i in zip(top.values, top.indices)]
            if tok_id is None:
                return alts[0][0], alts[0][1], alts[:k]
            return self.tokenizer.decode([tok_id]), float(logp[pos, tok_id]), alts[:k]

        first = len(prompt_ids) - 1
        generated = [entry(first + i, gen_ids[i] if i < len(gen_ids) else None) for i in range(max(len(gen_ids), 1))]
        if not prompt:
            return generated, None
        prompt_part: list[TokenLogprob] = [(self.tokenizer.decode([prompt_ids[0]]), None, [])]
        prompt_part += [entry(j - 1, prompt_ids[j]) for j in range(1, len(prompt_ids))]
        return generated, prompt_part


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


# Sampling fields some servers add to the OpenAI API, with the values at which they change nothing. Only
# those values are accepted: this server samples from exactly softmax(logits / temperature) cut to top_p.
NEUTRAL_FIELDS = {"top_k": (-1, 0), "min_p": (0,), "repetition_penalty": (1,), "frequency_penalty": (0,),
                  "presence_penalty": (0,)}


def _common_fields(body: dict[str, Any], served_model: str, default_max_tokens: int) -> dict[str, Any]:
    """The fields chat and completions share, validated: Request keyword arguments."""
    if body.get("stream"):
        raise ServerError(400, "streaming is not supported by the local judge server")
    model = body.get("model")
    if model != served_model:
        raise ServerError(404, f"The model {model!r} does not exist; this server serves {served_model!r}",
                          "model_not_found")
    for name, neutral in NEUTRAL_FIELDS.items():
        value = body.get(name)
        if value is not None and (not isinstance(value, (int, float)) or float(value) not in neutral):
            raise ServerError(400, f"{name}={value!r} is not supported: this server samples from exactly "
                              f"softmax(logits / temperature) cut to top_p (accepted: {list(neutral)})")
    stop = body.get("stop") or ()
    stop = (stop,) if isinstance(stop, str) else tuple(stop)
    if not all(isinstance(x, str) for x in stop):
        raise ServerError(400, "'stop' must be a string or a list of strings")
    temperature = body.get("temperature")
    try:
        fields = dict(
            max_tokens=int(body.get("max_completion_tokens") or body.get("max_tokens") or default_max_tokens),
            temperature=float(1.0 if temperature is None else temperature), top_p=float(body.get("top_p") or 1.0),
            seed=int(body.get("seed") or 0), stop=stop, n=int(body.get("n") or 1),
        )
    except (TypeError, ValueError) as err:
        raise ServerError(400, f"bad sampling field: {err}") from None
    if fields["max_tokens"] < 1 or fields["n"] < 1 or fields["temperature"] < 0 or not 0 < fields["top_p"] <= 1:
        raise ServerError(400, "max_tokens and n must be >= 1, temperature >= 0 and top_p in (0, 1]")
    return fields


def parse_request(body: dict[str, Any], served_model: str) -> tuple[Request, int]:
    """Validate an OpenAI chat-completions body; (request, n)."""
    fields = _common_fields(body, served_model, default_max_tokens=256)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(
        isinstance(m, dict) and isinstance(m.get("content"), str) and m.get("role") for m in messages
    ):
        raise ServerError(400, "'messages' must be a non-empty list of {role, content} objects")
    req = Request(
        messages=[{"role": str(m["role"]), "content": m["content"]} for m in messages],
        logprobs=bool(body.get("logprobs")), top_logprobs=int(body.get("top_logprobs") or 0), **fields,
    )
    if not 0 <= req.top_logprobs <= 20:
        raise ServerError(400, "top_logprobs must be in [0, 20]")
    return req, req.n


def parse_completion_request(body: dict[str, Any], served_model: str) -> list[Request]:
    """Validate an OpenAI completions body: one Request per prompt (a string, a list of token ids, or a
    list of either). `logprobs: k` = the k most likely alternatives per token; with `echo` the prompt's
    tokens are scored too."""
    fields = _common_fields(body, served_model, default_max_tokens=16)  # OpenAI's completions default
    prompt = body.get("prompt")

    def is_ids(x: Any) -> bool:
        return isinstance(x, list) and bool(x) and all(isinstance(t, int) and not isinstance(t, bool) for t in x)

    if isinstance(prompt, str) or is_ids(prompt):
        prompts = [prompt]
    elif isinstance(prompt, list) and prompt and all(isinstance(p, str) or is_ids(p) for p in prompt):
        prompts = prompt
    else:
        raise ServerError(400, "'prompt' must be a string, a list of token ids, or a non-empty list of either")
    logprobs = body.get("logprobs")
    if logprobs is not None and (not isinstance(logprobs, int) or isinstance(logprobs, bool) or not 0 <= logprobs <= 20):
        raise ServerError(400, "'logprobs' must be an integer in [0, 20] (the alternatives per token)")
    return [Request(messages=None, prompt=p if isinstance(p, str) else None, prompt_ids=None if isinstance(p, str) else p,
                    logprobs=logprobs is not None, top_logprobs=logprobs or 0, echo=bool(body.get("echo")), **fields)
            for p in prompts]


def _usage(replies: list[list[Reply]]) -> dict[str, int]:
    prompt = sum(r[0].prompt_tokens for r in replies if r)  # each prompt once, however many samples
    completion = sum(x.completion_tokens for r in replies for x in r)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def completion_body(replies: list[Reply], served_model: str) -> dict[str, Any]:
    """A chat.completion: one choice per sample of the one prompt."""
    choices = []
    for index, reply in enumerate(replies):
        choice: dict[str, Any] = {
            "index": index, "finish_reason": reply.finish_reason,
            "message": {"role": "assistant", "content": reply.text},
            "logprobs": None,
        }
        if reply.logprobs is not None:
            choice["logprobs"] = {"content": [
                {"token": tok, "logprob": lp, "bytes": list(tok.encode()),
                 "top_logprobs": [{"token": t, "logprob": v, "bytes": list(t.encode())} for t, v in alts]}
                for tok, lp, alts in reply.logprobs
            ]}
        choices.append(choice)
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion", "created": int(time.time()),
        "model": served_model, "choices": choices, "usage": _usage([replies]),
    }


def text_completion_body(replies: list[list[Reply]], served_model: str, echo: bool) -> dict[str, Any]:
    """A text_completion: choices in prompt order, n per prompt (index = prompt * n + sample), with the
    legacy logprobs layout (tokens, token_logprobs, top_logprobs, text_offset) when asked for."""
    choices = []
    for samples in replies:
        for reply in samples:
            text = (reply.prompt_text if echo else "") + reply.text
            logprobs = None
            if reply.logprobs is not None:
                entries = (reply.prompt_logprobs or []) + reply.logprobs if echo else reply.logprobs
                offsets, at = [], 0 if echo else len(reply.prompt_text)
                for tok, _, _ in entries:
                    offsets.append(at)
                    at += len(tok)
                logprobs = {"tokens": [t for t, _, _ in entries], "token_logprobs": [v for _, v, _ in entries],
                            "top_logprobs": [dict(alts) if alts else None for _, _, alts in entries],
                            "text_offset": offsets}
            choices.append({"index": len(choices), "text": text, "finish_reason": reply.finish_reason,
                            "logprobs": logprobs})
    return {
        "id": f"cmpl-{uuid.uuid4().hex[:24]}", "object": "text_completion", "created": int(time.time()),
        "model": served_model, "choices": choices, "usage": _usage(replies),
    }


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
            usage = _usage(replies)
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
