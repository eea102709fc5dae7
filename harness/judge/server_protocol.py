"""The OpenAI API as the local judge server speaks it (`server.py`): requests parsed and validated into
`Request`s, backends' `Reply`s turned into chat / text completion bodies, and `ServerError` for what
the API answers with an error status."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

Messages = list[dict[str, str]]


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


def usage_body(replies: list[list[Reply]]) -> dict[str, int]:
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
        "model": served_model, "choices": choices, "usage": usage_body([replies]),
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
        "model": served_model, "choices": choices, "usage": usage_body(replies),
    }
