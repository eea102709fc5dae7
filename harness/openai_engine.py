"""Generation and log-likelihoods through any OpenAI-compatible server, and a managed `vllm serve`.

`OpenAIGenerator` (engine kind `openai`) implements the generation interface of `harness.generation`
over HTTP, through the completions endpoint (`/v1/completions`):
- prompts are rendered locally with the model's tokenizer (chat template included) and sent as token
  ids, left-truncated as the in-process engine does, so the server sees the ids `HFGenerator` would;
  `tokenized_prompts=False` sends the text instead, for servers that accept only strings;
- every sampling field is explicit: temperature, top_p, n, seed (each prompt's seed is
  `generation.prompt_seeds_for(params.seed, ...)`, what the in-process engine uses), stop, no
  frequency/presence penalty, plus `extra_body` (by default vLLM/SGLang's top_k, min_p and
  repetition_penalty at their neutral values, which those servers would otherwise take from the
  model's generation_config.json);
- at most `max_concurrency` requests in flight; a request that meets a connection error, a timeout or
  a 408/409/429/5xx answer is retried with exponential backoff (honouring Retry-After) up to
  `max_retries` times; a call returns only when every prompt has its answer, and raises `EngineError`
  otherwise: a server that dies mid-run never turns into an empty or partial answer;
- `loglikelihood` (MMLU, TruthfulQA MC2) asks for the prompt's own log-probs (`echo: true`,
  `logprobs: 1`, `max_tokens: 1`, as lm-eval's OpenAI-compatible backend does) on context + continuation
  split as the in-process scorer splits them (`harness.loglikelihood.encode_pair`). A server that does not
  return them raises `PromptLogprobsUnsupported`, naming the server and what it answered.

PPO needs the sampled token ids and trains the weights between rollouts, so it runs in-process only.

`serve_model` (engine kind `vllm`) starts `vllm serve` for a model on a free local port, waits until it
lists the model, returns an `OpenAIGenerator` bound to it, and stops the server on `close()` (or at
exit). Not run here: vLLM cannot be installed on the project's CPU machines. The same start/wait/stop
path is tested with `harness serve-judge` standing in for `vllm serve` (`command_for`).
"""

from __future__ import annotations

import atexit
import importlib.util
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from harness.generation import (
    EngineSettings,
    Messages,
    ResolvedEngine,
    SamplingParams,
    prompt_seeds_for,
    render_prompt,
    truncate_at_stop,
)
from harness.loglikelihood import encode_pair

log = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({408, 409, 429})  # and every 5xx


class EngineError(RuntimeError):
    """A server gave no usable answer (after retries, or a request it refuses): nothing is recorded."""


class PromptLogprobsUnsupported(EngineError):
    """The server does not return a prompt's own log-probs (completions with echo + logprobs)."""


class _Aborted(Exception):
    """Another request of the same call failed: this one makes no further attempts."""


class OpenAIGenerator:
    """The generation interface over an OpenAI-compatible server (see the module docstring)."""

    def __init__(self, base_url: str, model: str, tokenizer: Any, *, max_concurrency: int = 8,
                 max_retries: int = 6, request_timeout_s: float = 600.0, api_key: str | None = None,
                 tokenized_prompts: bool = True, extra_body: dict[str, Any] | None = None,
                 max_prompt_tokens: int = 4096, max_context_tokens: int = 2048, backoff_s: float = 0.5,
                 max_backoff_s: float = 8.0, resolved: ResolvedEngine | None = None, server: ManagedServer | None = None):
        from openai import OpenAI

        self.base_url, self.model, self.tokenizer = base_url.rstrip("/"), model, tokenizer
        self.max_concurrency, self.max_retries = max_concurrency, max_retries
        self.tokenized_prompts = tokenized_prompts
        self.extra_body = dict(extra_body or {})
        self.max_prompt_tokens = max_prompt_tokens  # generation prompts: left-truncated, as HFGenerator does
        self.max_context_tokens = max_context_tokens  # log-likelihood inputs: as `continuation_logprobs`
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        self.resolved, self.server = resolved, server
        # The client's own retries are off: retries are counted and bounded here, per request.
        self.client = OpenAI(base_url=self.base_url, api_key=api_key or "EMPTY", max_retries=0,
                             timeout=request_timeout_s)
        self._lock = threading.Lock()
        self.stats = {"requests": 0, "retries": 0, "prompt_tokens": 0, "completion_tokens": 0}

    @classmethod
    def from_settings(cls, settings: EngineSettings, tokenizer: Any, resolved: ResolvedEngine | None = None,
                      base_url: str | None = None, server: ManagedServer | None = None,
                      served_model: str | None = None) -> OpenAIGenerator:
        api_key = None
        if settings.api_key_env:
            api_key = os.environ.get(settings.api_key_env)
            if not api_key:
                raise ValueError(f"engine.api_key_env: environment variable {settings.api_key_env} is empty")
        url, model = base_url or settings.base_url, served_model or settings.model
        if not url or not model:
            raise ValueError("engine: base_url and model are required for an OpenAI-compatible engine")
        return cls(url, model, tokenizer, max_concurrency=settings.max_concurrency, max_retries=settings.max_retries,
                   request_timeout_s=settings.request_timeout_s, api_key=api_key,
                   tokenized_prompts=settings.tokenized_prompts, extra_body=settings.extra_body,
                   resolved=resolved, server=server)

    # --- the generation interface ---

    def generate(self, prompts: Sequence[Messages | str], params: SamplingParams, chat: bool = True
                 ) -> list[list[str]]:
        if params.num_return_sequences < 1 or params.max_new_tokens < 1:
            raise ValueError("num_return_sequences and max_new_tokens must be >= 1")
        texts = [render_prompt(self.tokenizer, p, chat) for p in prompts]
        seeds = prompt_seeds_for(params.seed, len(texts))
        requests = [self._generation_request(text, params, seed) for text, seed in zip(texts, seeds)]
        replies = self._map(requests, self._checked_generation(params.num_return_sequences))
        return [[truncate_at_stop(choice.text, params.stop) for choice in reply] for reply in replies]

    def loglikelihood(self, pairs: Sequence[tuple[str, str]], batch_size: int | None = None
                      ) -> list[tuple[float, bool]]:
        """(log-likelihood of each continuation given its context, is it the greedy continuation) from the
        server's prompt log-probs. `batch_size` is unused (concurrency bounds the requests). The greedy
        flag is False where the server returns no top log-probs for the prompt."""
        if not self.tokenized_prompts:
            raise PromptLogprobsUnsupported(
                "log-likelihoods need token-id prompts (the context/continuation boundary is a token "
                "position): set engine.tokenized_prompts: true")
        requests, spans = [], []
        for i, (context, continuation) in enumerate(pairs):
            ctx_ids, cont_ids = encode_pair(self.tokenizer, context, continuation)
            if not ctx_ids or not cont_ids:
                raise ValueError(f"pair {i}: an empty context or continuation cannot be scored from prompt log-probs")
            ids = (ctx_ids + cont_ids)[-(self.max_context_tokens + 1):]
            spans.append((len(ids) - len(cont_ids), len(ids)))
            requests.append({"model": self.model, "prompt": ids, "max_tokens": 1, "temperature": 0.0, "echo": True,
                             "logprobs": 1, "extra_body": self.extra_body})

        def parse(index: int, reply: Any) -> tuple[float, bool]:
            start, end = spans[index]
            lp = reply.choices[0].logprobs if reply.choices else None
            values = getattr(lp, "token_logprobs", None) if lp is not None else None
            if not values or len(values) < end or any(v is None for v in values[start:end]):
                raise PromptLogprobsUnsupported(
                    f"{self.base_url}: model {self.model!r} returned no log-probs for the prompt's tokens "
                    "(completions with echo=true and logprobs); MMLU and TruthfulQA MC2 score "
                    "log-likelihoods and need them: serve the model with vLLM or SGLang, or use engine kind 'hf'")
            tops = getattr(lp, "top_logprobs", None) or []
            greedy = len(tops) >= end and all(
                top and values[i] >= max(top.values()) - 1e-6 for i, top in enumerate(tops[start:end], start))
            return float(sum(values[start:end])), bool(greedy)

        return self._map(requests, parse, scoring=True)

    def close(self) -> None:
        self.client.close()
        if self.server is not None:
            self.server.stop()

    # --- requests ---

    def _generation_request(self, text: str, params: SamplingParams, seed: int) -> dict[str, Any]:
        prompt: str | list[int] = text
        if self.tokenized_prompts:
            prompt = self.tokenizer(text, add_special_tokens=False)["input_ids"][-self.max_prompt_tokens:]
        request: dict[str, Any] = {
            "model": self.model, "prompt": prompt, "max_tokens": params.max_new_tokens,
            "temperature": params.temperature, "top_p": params.top_p, "n": params.num_return_sequences,
            "seed": seed, "frequency_penalty": 0.0, "presence_penalty": 0.0, "extra_body": self.extra_body,
        }
        if params.stop:
            request["stop"] = list(params.stop)
        return request

    def _checked_generation(self, n: int) -> Callable[[int, Any], list[Any]]:
        def check(index: int, reply: Any) -> list[Any]:
            choices = sorted(reply.choices or [], key=lambda c: c.index)
            if len(choices) != n or any(c.text is None for c in choices):
                raise EngineError(f"{self.base_url}: {len(choices)} answer(s) for prompt {index}, asked for {n}")
            return choices
        return check

    def _map(self, requests: list[dict[str, Any]], parse: Callable[[int, Any], Any], scoring: bool = False
             ) -> list[Any]:
        """Every request's parsed reply, in order, with at most `max_concurrency` in flight. The first
        failure stops the rest (no new attempts) and is raised: no call returns a partial result."""
        results: list[Any] = [None] * len(requests)
        errors: list[BaseException] = []
        abort = threading.Event()

        def one(index: int) -> None:
            if abort.is_set():
                return
            try:
                results[index] = parse(index, self._create(requests[index], scoring, abort))
            except _Aborted:
                return
            except BaseException as err:  # noqa: BLE001 - re-raised below, in the caller's thread
                with self._lock:
                    errors.append(err)
                abort.set()

        with ThreadPoolExecutor(max_workers=self.max_concurrency, thread_name_prefix="openai-engine") as pool:
            for i in range(len(requests)):
                pool.submit(one, i)
        if errors:
            raise errors[0]
        return results

    def _create(self, request: dict[str, Any], scoring: bool, abort: threading.Event) -> Any:
        import openai

        delay = self.backoff_s
        for attempt in range(self.max_retries + 1):
            if abort.is_set():
                raise _Aborted
            with self._lock:
                self.stats["requests"] += 1
                if attempt:
                    self.stats["retries"] += 1
            try:
                reply = self.client.completions.create(**request)
            except (openai.APIConnectionError, openai.APITimeoutError) as err:
                failure: str = f"{type(err).__name__}: {err}"
                retry_after = None
            except openai.APIStatusError as err:
                status = err.status_code
                if status not in RETRYABLE_STATUS and status < 500:
                    message = _error_message(err)
                    if scoring and status in (400, 422):
                        raise PromptLogprobsUnsupported(
                            f"{self.base_url} refused a prompt log-probs request (completions with echo=true, "
                            f"logprobs=1) with {status}: {message}; MMLU and TruthfulQA MC2 need them") from err
                    raise EngineError(f"{self.base_url} refused the request with {status}: {message}") from err
                failure = f"HTTP {status}: {_error_message(err)}"
                retry_after = _retry_after(err)
            else:
                usage = getattr(reply, "usage", None)
                if usage is not None:
                    with self._lock:
                        self.stats["prompt_tokens"] += int(usage.prompt_tokens or 0)
                        self.stats["completion_tokens"] += int(usage.completion_tokens or 0)
                    from harness.usage import count_generated

                    count_generated(int(usage.completion_tokens or 0))  # the stage's cost (harness.usage)
                return reply
            if attempt == self.max_retries:
                break
            log.warning("%s: %s; retry %d of %d", self.base_url, failure, attempt + 1, self.max_retries)
            time.sleep(min(retry_after if retry_after is not None else delay, self.max_backoff_s))
            delay = min(delay * 2, self.max_backoff_s)
        raise EngineError(f"{self.base_url}: no answer after {self.max_retries + 1} attempts (last: {failure})")


def _error_message(err: Any) -> str:
    body = getattr(err, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
        if isinstance(inner, str):
            return inner
    return str(getattr(err, "message", err))


def _retry_after(err: Any) -> float | None:
    response = getattr(err, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


# ==================================================================================================
# A server process the harness starts and stops (kind vllm).
# ==================================================================================================


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def vllm_serve_command(model_path: str, served_name: str, host: str, port: int, dtype: str,
                       extra_args: Sequence[str] = ()) -> list[str]:
    """`vllm serve` for one model. `--generation-config vllm`: vLLM's own sampling defaults, not the
    checkpoint's generation_config.json (the harness sends every sampling field anyway)."""
    return [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model_path,
            "--served-model-name", served_name, "--host", host, "--port", str(port), "--dtype", dtype,
            "--generation-config", "vllm", *extra_args]


class ManagedServer:
    """An OpenAI-compatible server process: `start()` launches `command` in its own process group and
    waits until GET `<base_url>/models` lists `served_name`; `stop()` sends SIGTERM to the group, then
    SIGKILL after `stop_timeout_s`. Also stopped at interpreter exit."""

    def __init__(self, command: Sequence[str], base_url: str, served_name: str, startup_timeout_s: float = 900.0,
                 log_path: Path | None = None, stop_timeout_s: float = 30.0):
        self.command, self.base_url, self.served_name = list(command), base_url.rstrip("/"), served_name
        self.startup_timeout_s, self.stop_timeout_s = startup_timeout_s, stop_timeout_s
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def start(self) -> ManagedServer:
        import tempfile

        if self.log_path is None:
            self.log_path = Path(tempfile.mkstemp(prefix="harness-server-", suffix=".log")[1])
        with open(self.log_path, "wb") as log_file:
            self.process = subprocess.Popen(self.command, stdout=log_file, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        atexit.register(self.stop)
        deadline = time.monotonic() + self.startup_timeout_s
        while True:
            if self.process.poll() is not None:
                tail = self._log_tail()
                self.stop()
                raise EngineError(f"server command exited with {self.process.returncode} before serving "
                                  f"(log {self.log_path}):\n{tail}")
            if self._serving():
                return self
            if time.monotonic() > deadline:
                self.stop()
                raise EngineError(f"server did not list model {self.served_name!r} at {self.base_url} within "
                                  f"{self.startup_timeout_s:.0f} s (log {self.log_path})")
            time.sleep(0.5)

    def _serving(self) -> bool:
        import json
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(f"{self.base_url}/models", timeout=5) as resp:
                listed = [m.get("id") for m in json.loads(resp.read()).get("data", [])]
        except (OSError, ValueError, urllib.error.URLError):
            return False
        return self.served_name in listed

    def _log_tail(self) -> str:
        try:
            return Path(self.log_path).read_text(errors="replace")[-2000:] if self.log_path else ""
        except OSError:
            return ""

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        process = self.process
        if process is None:
            return
        atexit.unregister(self.stop)
        if process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            except ProcessLookupError:
                pass

    def __enter__(self) -> ManagedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_model(name_or_path: str, settings: EngineSettings, resolved: ResolvedEngine | None = None,
                command_for: Callable[[int], Sequence[str]] | None = None) -> OpenAIGenerator:
    """Start a server for the model (by default `vllm serve`; `command_for(port)` gives another command
    speaking the same API) and return an engine bound to it; `close()` stops the server."""
    from harness.models import load_tokenizer, resolve_model

    resolved = resolved or settings.resolved()
    path = resolve_model(name_or_path)
    served = settings.model or name_or_path
    port = free_port()
    if command_for is None:
        if importlib.util.find_spec("vllm") is None:
            raise EngineError("engine kind 'vllm' needs vLLM installed (it needs a CUDA GPU); or start any "
                              "OpenAI-compatible server yourself and use kind 'openai' with its base_url")
        command: Sequence[str] = vllm_serve_command(path, served, "127.0.0.1", port, resolved.dtype, settings.server_args)
    else:
        command = command_for(port)
    server = ManagedServer(command, f"http://127.0.0.1:{port}/v1", served, settings.startup_timeout_s).start()
    try:
        return OpenAIGenerator.from_settings(settings, load_tokenizer(name_or_path), resolved=resolved,
                                             base_url=server.base_url, server=server, served_model=served)
    except BaseException:
        server.stop()
        raise
