"""Judge client for any OpenAI-compatible chat endpoint: cached, retried, concurrent, costed.

- The API key is read from the environment variable named by `api_key_env` and handed to the `openai`
  client only; it is not stored on this object, not part of any cache key, and redacted from every
  error message this module raises or logs.
- Every successful completion is stored in a SQLite cache keyed by (endpoint model, template version,
  messages, decoding parameters), so a rerun makes zero calls. Failures are never cached.
- Rate limits (429), timeouts, connection errors and server errors (5xx, 408, 409) are retried with
  exponential backoff and jitter (honouring `Retry-After`); other errors fail at once with the
  server's message.
- Pairwise judgements ask both orders; a side wins only when both orders agree, otherwise it is a tie
  (position-bias control). A reply that names neither side makes the verdict invalid (`valid=False`):
  statistics exclude it and count it, rather than guessing.
- Token usage and cost (list prices, USD) are accumulated per model; `usage()` reports them.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import os
import random
import re
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from harness.judge.cache import CompletionCache, judge_dir
from harness.judge.prompts import (
    GRADE,
    PAIRWISE,
    Messages,
    Template,
    parse_grade,
    parse_label,
    parse_pairwise,
    template_tag,
)

log = logging.getLogger(__name__)

# List prices in USD per million (prompt, completion) tokens, as published by the provider; matched by
# the longest model-name prefix. Override or extend with HARNESS_JUDGE_PRICES='{"model": [in, out]}'.
DEFAULT_PRICES_PER_MTOK: dict[str, tuple[float, float]] = {
    "gpt-4-32k": (60.0, 120.0),
    "gpt-4": (30.0, 60.0),  # gpt-4-0314 / gpt-4-0613, the paper's judge generation
    "gpt-4-1106-preview": (10.0, 30.0),  # AlpacaEval 2's annotator
    "gpt-4-0125-preview": (10.0, 30.0),
    "gpt-4-turbo": (10.0, 30.0),
    "gpt-4o": (2.5, 10.0),
    "gpt-4o-mini": (0.15, 0.6),
    "gpt-4.1": (2.0, 8.0),
    "gpt-4.1-mini": (0.4, 1.6),
    "gpt-3.5-turbo": (0.5, 1.5),
}

PAIRWISE_DECODING: dict[str, Any] = {"temperature": 0.0, "max_tokens": 16}
LABEL_DECODING: dict[str, Any] = {"temperature": 0.0, "max_tokens": 16}

_RETRYABLE_STATUS = {408, 409, 429}
_KEYLIKE = re.compile(r"sk-[A-Za-z0-9_\-*]{4,}")


class JudgeError(RuntimeError):
    """A judge call that failed (after retries, or at once for a non-retryable error)."""


class JudgeParseError(ValueError):
    """The judge answered, but not with one of the expected labels; `raw` holds its reply."""

    def __init__(self, message: str, raw: str):
        super().__init__(message)
        self.raw = raw


@dataclass
class Completion:
    text: str
    # OpenAI's `choices[0].logprobs.content`: [{token, logprob, top_logprobs: [{token, logprob}]}], or None
    logprobs: list[dict[str, Any]] | None
    prompt_tokens: int
    completion_tokens: int
    cached: bool
    finish_reason: str | None = None

    def first_token_logprobs(self) -> dict[str, float]:
        """{token: logprob} among the first generated token's alternatives (empty if none were returned)."""
        if not self.logprobs:
            return {}
        first = self.logprobs[0]
        alts = {a["token"]: float(a["logprob"]) for a in first.get("top_logprobs") or []}
        alts.setdefault(first["token"], float(first["logprob"]))
        return alts


@dataclass(frozen=True)
class PairVerdict:
    """Outcome for output_a against output_b. `first`/`second`: the vote ('a', 'b' or None when the reply
    named neither) with output_a shown first, and with output_b shown first."""

    winner: Literal["a", "b", "tie"]
    first: str | None
    second: str | None
    valid: bool
    raw: tuple[str, str] = ("", "")
    identical: bool = False  # the two outputs were equal: a tie without asking

    @property
    def score(self) -> float:
        """1 if output_a wins, 0 if output_b wins, 0.5 for a tie (the standard 'ties count half')."""
        return {"a": 1.0, "b": 0.0, "tie": 0.5}[self.winner]


def combine_votes(first: str | None, second: str | None) -> tuple[Literal["a", "b", "tie"], bool]:
    """(winner, valid): a win only when both orders agree; disagreement is a tie; an unparsed vote
    makes the verdict invalid."""
    if first is None or second is None:
        return "tie", False
    if first == second:
        return first, True  # type: ignore[return-value]
    return "tie", True


def is_loopback_url(base_url: str | None) -> bool:
    if not base_url:
        return False
    host = urlparse(base_url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def price_for(model: str) -> tuple[float, float] | None:
    prices = dict(DEFAULT_PRICES_PER_MTOK)
    override = os.environ.get("HARNESS_JUDGE_PRICES")
    if override:
        prices.update({k: (float(v[0]), float(v[1])) for k, v in json.loads(override).items()})
    if model in prices:
        return prices[model]
    matches = [name for name in prices if model.startswith(name)]
    return prices[max(matches, key=len)] if matches else None


@dataclass
class _ModelUsage:
    requests: int = 0  # HTTP calls that succeeded
    cache_hits: int = 0
    retries: int = 0
    failures: int = 0  # calls abandoned (non-retryable error, or retries exhausted)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = 0.0


@dataclass
class _Usage:
    by_model: dict[str, _ModelUsage] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


class JudgeClient:
    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        cache_path: Path | None = None,
        max_workers: int = 8,
        max_retries: int = 5,
        *,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
        timeout: float = 300.0,
    ):
        import openai

        if max_workers < 1 or max_retries < 0:
            raise ValueError("max_workers must be >= 1 and max_retries >= 0")
        self.model = model
        self.base_url = base_url
        self.api_key_env = api_key_env
        self.max_workers = max_workers
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.local = is_loopback_url(base_url)
        key = os.environ.get(api_key_env) if api_key_env else None
        if not key:
            if base_url is None or not self.local:
                raise JudgeError(
                    f"no API key for judge model {model!r}: set the environment variable "
                    f"{api_key_env or 'OPENAI_API_KEY'} (the key is read from the environment only; for a "
                    "remote endpoint without authentication set it to any value)"
                )
            key = "EMPTY"  # local servers accept any key; the client refuses an empty one
        self._secrets = [key] if key != "EMPTY" else []
        # Our own retry loop (below) counts and controls retries; the client's is switched off.
        self._client = openai.OpenAI(api_key=key, base_url=base_url, max_retries=0, timeout=timeout)
        self.cache = CompletionCache(cache_path or judge_dir() / "cache.sqlite")
        self._usage = _Usage()
        self._inflight_lock = threading.Lock()
        self._inflight: dict[str, threading.Lock] = {}

    def __repr__(self) -> str:
        return f"JudgeClient(model={self.model!r}, base_url={self.base_url!r}, api_key_env={self.api_key_env!r})"

    # -- low level -----------------------------------------------------------------------------------

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return _KEYLIKE.sub("sk-***", text)

    def _model_usage(self) -> _ModelUsage:
        return self._usage.by_model.setdefault(self.model, _ModelUsage())

    def _record(self, **deltas: int) -> None:
        with self._usage.lock:
            usage = self._model_usage()
            for name, delta in deltas.items():
                setattr(usage, name, getattr(usage, name) + delta)
            if "prompt_tokens" in deltas or "completion_tokens" in deltas:
                price = (0.0, 0.0) if self.local else price_for(self.model)
                if price is None:
                    usage.cost_usd = None  # unknown price: say so rather than report 0
                elif usage.cost_usd is not None:
                    usage.cost_usd += (deltas.get("prompt_tokens", 0) * price[0]
                                       + deltas.get("completion_tokens", 0) * price[1]) / 1e6

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        delay = min(self.backoff_max, self.backoff_base * 2**attempt) * random.uniform(0.5, 1.0)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.backoff_max))
        return delay

    def _call(self, request: dict[str, Any]) -> dict[str, Any]:
        import openai

        attempt = 0
        while True:
            try:
                resp = self._client.chat.completions.create(**request)
            except (openai.APIConnectionError, openai.APIStatusError) as exc:  # timeouts are connection errors
                status = getattr(exc, "status_code", None)
                retryable = status is None or status >= 500 or status in _RETRYABLE_STATUS
                message = self._redact(str(exc))
                if not retryable or attempt >= self.max_retries:
                    self._record(failures=1)
                    why = f"gave up after {attempt} retries" if retryable else "not retryable"
                    raise JudgeError(
                        f"judge call to {self.model!r} failed ({why}): "
                        f"{status or type(exc).__name__}: {message}"
                    ) from None
                retry_after = None
                response = getattr(exc, "response", None)
                if response is not None:
                    try:
                        retry_after = float(response.headers.get("retry-after", ""))
                    except ValueError:
                        retry_after = None
                delay = self._backoff(attempt, retry_after)
                log.warning("judge %s: %s (attempt %d/%d), retrying in %.2fs", self.model,
                            status or type(exc).__name__, attempt + 1, self.max_retries, delay)
                self._record(retries=1)
                time.sleep(delay)
                attempt += 1
                continue
            if not resp.choices:
                self._record(failures=1)
                raise JudgeError(f"judge {self.model!r} returned no choices")
            choice = resp.choices[0]
            logprobs = None
            if choice.logprobs is not None and choice.logprobs.content is not None:
                logprobs = [
                    {"token": c.token, "logprob": c.logprob,
                     "top_logprobs": [{"token": t.token, "logprob": t.logprob} for t in (c.top_logprobs or [])]}
                    for c in choice.logprobs.content
                ]
            usage = resp.usage
            return {
                "text": choice.message.content or "",
                "logprobs": logprobs,
                "finish_reason": choice.finish_reason,
                "prompt_tokens": int(usage.prompt_tokens) if usage else 0,
                "completion_tokens": int(usage.completion_tokens) if usage else 0,
            }

    def complete_full(self, messages: Messages, *, template: str = "raw", **decoding: Any) -> Completion:
        """One chat completion with its logprobs and token counts, from the cache when possible.

        `template` names the prompt template and its version (part of the cache key); `decoding` holds
        the request's parameters (temperature, max_tokens, top_p, seed, stop, logprobs, top_logprobs)."""
        decoding = {k: v for k, v in decoding.items() if v is not None}
        key = CompletionCache.key(self.model, template, messages, decoding)
        with self._inflight_lock:  # identical concurrent requests: one call, the others wait for it
            key_lock = self._inflight.setdefault(key, threading.Lock())
        with key_lock:
            hit = self.cache.get(key)
            if hit is not None:
                self._record(cache_hits=1)
                return Completion(hit["text"], hit["logprobs"], hit["prompt_tokens"], hit["completion_tokens"],
                                  cached=True, finish_reason=hit.get("finish_reason"))
            request = {"model": self.model, "messages": messages, **decoding}
            response = self._call(request)
            self._record(requests=1, prompt_tokens=response["prompt_tokens"],
                         completion_tokens=response["completion_tokens"])
            self.cache.put(key, self.model, template, {"messages": messages, "decoding": decoding}, response,
                           response["prompt_tokens"], response["completion_tokens"])
        with self._inflight_lock:  # waiters already hold the lock object; later callers hit the cache
            self._inflight.pop(key, None)
        return Completion(response["text"], response["logprobs"], response["prompt_tokens"],
                          response["completion_tokens"], cached=False, finish_reason=response["finish_reason"])

    def complete(self, messages: Messages, *, template: str = "raw", **decoding: Any) -> str:
        """The reply text of one chat completion (cached, retried)."""
        return self.complete_full(messages, template=template, **decoding).text

    def complete_many(self, requests: Sequence[Messages], *, template: str = "raw",
                      **decoding: Any) -> list[Completion | JudgeError]:
        """Completions for many conversations with at most `max_workers` in flight; a failed call is
        returned as its JudgeError (nothing of it is cached) so the others are kept."""

        def one(messages: Messages) -> Completion | JudgeError:
            try:
                return self.complete_full(messages, template=template, **decoding)
            except JudgeError as exc:
                return exc

        if len(requests) <= 1 or self.max_workers == 1:
            return [one(m) for m in requests]
        with ThreadPoolExecutor(max_workers=self.max_workers, thread_name_prefix="judge") as pool:
            return list(pool.map(one, requests))

    # -- pairwise ------------------------------------------------------------------------------------

    @staticmethod
    def pair_messages(instruction: str, output_a: str, output_b: str,
                      template: Template = PAIRWISE) -> tuple[Messages, Messages]:
        """(output_a shown first, output_b shown first)."""
        return (template.render(instruction=instruction, output_a=output_a, output_b=output_b),
                template.render(instruction=instruction, output_a=output_b, output_b=output_a))

    @staticmethod
    def verdict_from_replies(first_reply: str, second_reply: str) -> PairVerdict:
        p1, p2 = parse_pairwise(first_reply), parse_pairwise(second_reply)
        first = {"A": "a", "B": "b"}.get(p1 or "")
        second = {"A": "b", "B": "a"}.get(p2 or "")  # output_b was shown as "A" in the second order
        winner, valid = combine_votes(first, second)
        return PairVerdict(winner, first, second, valid, (first_reply, second_reply))

    def pairwise(self, instruction: str, output_a: str, output_b: str) -> PairVerdict:
        """Judge output_a against output_b, asked in both orders (a win needs both orders to agree)."""
        return self.pairwise_many([(instruction, output_a, output_b)])[0]

    def pairwise_many(self, items: Iterable[tuple[str, str, str] | dict[str, str]],
                      on_error: Literal["raise", "skip"] = "raise") -> list[PairVerdict]:
        """Verdicts for (instruction, output_a, output_b) triples (or dicts with those keys), both orders
        of every pair asked concurrently (bounded by `max_workers`).

        A failed call never becomes a verdict: with on_error="raise" a JudgeError names how many pairs
        failed (the successful calls are cached, so a rerun asks only for the rest); with "skip" a failed
        pair comes back as an invalid verdict (`valid=False`) that statistics exclude."""
        triples = [(i["instruction"], i["output_a"], i["output_b"]) if isinstance(i, dict) else tuple(i)
                   for i in items]
        to_ask: list[Messages] = []
        slots: list[int | None] = []
        for instruction, a, b in triples:
            if a == b:
                slots.append(None)
                continue
            slots.append(len(to_ask))
            to_ask.extend(self.pair_messages(instruction, a, b))
        results = self.complete_many(to_ask, template=PAIRWISE.tag, **PAIRWISE_DECODING)
        errors = [r for r in results if isinstance(r, JudgeError)]
        if errors and on_error == "raise":
            raise JudgeError(f"{len(errors)} of {len(results)} judge calls failed (the others are cached; "
                             f"rerun to retry them). First error: {errors[0]}")
        verdicts = []
        for slot in slots:
            if slot is None:
                verdicts.append(PairVerdict("tie", "tie", "tie", True, identical=True))
                continue
            r1, r2 = results[slot], results[slot + 1]
            if isinstance(r1, JudgeError) or isinstance(r2, JudgeError):
                verdicts.append(PairVerdict("tie", None, None, False))
            else:
                verdicts.append(self.verdict_from_replies(r1.text, r2.text))
        return verdicts

    # -- single grade and classification -------------------------------------------------------------

    def grade(self, instruction: str, output: str, low: int = 1, high: int = 10) -> float:
        """A single-response grade in [low, high]; JudgeParseError if the reply holds no such number."""
        messages = GRADE.render(instruction=instruction, output=output, low=str(low), high=str(high))
        reply = self.complete(messages, template=GRADE.tag, **LABEL_DECODING)
        value = parse_grade(reply, low, high)
        if value is None:
            raise JudgeParseError(f"judge reply has no grade in [{low}, {high}]: {reply[:200]!r}", reply)
        return value

    def classify(self, template: str, fields: dict[str, str], labels: list[str]) -> str:
        """One of `labels` for `template.format(**fields)` (sent as the user message); the label named
        first in the reply wins. JudgeParseError if it names none."""
        if not labels:
            raise ValueError("classify needs at least one label")
        reply = self.complete([{"role": "user", "content": template.format(**fields)}],
                              template=template_tag(template), **LABEL_DECODING)
        label = parse_label(reply, labels)
        if label is None:
            raise JudgeParseError(f"judge reply names none of {labels}: {reply[:200]!r}", reply)
        return label

    def classify_many(self, template: str, fields_list: Sequence[dict[str, str]],
                      labels: list[str]) -> list[str | None]:
        """Labels for many inputs, concurrently; None where the reply named no label. A failed call
        raises JudgeError (after the others finished and were cached)."""
        requests = [[{"role": "user", "content": template.format(**f)}] for f in fields_list]
        results = self.complete_many(requests, template=template_tag(template), **LABEL_DECODING)
        errors = [r for r in results if isinstance(r, JudgeError)]
        if errors:
            raise JudgeError(f"{len(errors)} of {len(results)} judge calls failed; first: {errors[0]}")
        return [parse_label(r.text, labels) for r in results]  # type: ignore[union-attr]

    # -- accounting ----------------------------------------------------------------------------------

    def usage(self) -> dict[str, Any]:
        """{model: {requests, cache_hits, retries, failures, prompt_tokens, completion_tokens, cost_usd}}.
        cost_usd is None when the model's price is unknown (set HARNESS_JUDGE_PRICES); 0 for a local
        (loopback) endpoint."""
        with self._usage.lock:
            return {m: dict(vars(u)) for m, u in self._usage.by_model.items()}

    def close(self) -> None:
        self._client.close()
        self.cache.close()


def usage_metrics(usage: dict[str, Any], prefix: str = "judge/usage") -> dict[str, float]:
    """Flat MLflow metrics from `JudgeClient.usage()` (unknown cost is left out, not logged as 0)."""
    out: dict[str, float] = {}
    for model, stats in usage.items():
        safe = re.sub(r"[^A-Za-z0-9_\-./ ]", "_", model)
        for name, value in stats.items():
            if value is None or (isinstance(value, float) and math.isnan(value)):
                continue
            out[f"{prefix}/{safe}/{name}"] = float(value)
    return out


def judge_client_from_settings(settings: dict[str, Any] | None, **overrides: Any) -> JudgeClient | None:
    """A client from judge settings {model, base_url, api_key_env} (extra keys such as `prompts`,
    `num_prompts`, `reference` are ignored); None when no judge is configured."""
    if not settings:
        return None
    if not settings.get("model"):
        raise ValueError("judge settings need a 'model' (the endpoint's model name)")
    kwargs: dict[str, Any] = {
        "model": settings["model"],
        "base_url": settings.get("base_url"),
        "api_key_env": settings.get("api_key_env") or "OPENAI_API_KEY",
    }
    for name in ("cache_path", "max_workers", "max_retries"):
        if settings.get(name) is not None:
            kwargs[name] = settings[name]
    kwargs.update(overrides)
    return JudgeClient(**kwargs)
