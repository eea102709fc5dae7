"""What answers the local judge server's requests (`server.py`): a scripted judge (regex rules or the
"prefer the longer response" strategy) or a local model behind the shared generation engine, with
micro-batching and per-token logprobs."""

from __future__ import annotations

import json
import math
import queue
import re
import threading
import time
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from harness.judge.server_protocol import Reply, Request, ServerError, TokenLogprob

if TYPE_CHECKING:
    from harness.generation import EngineSettings

# The markers of the harness's own pairwise template (see prompts.py) and of AlpacaEval's templates;
# the scripted "longer" strategy reads the candidate responses from between them.
_PAIR_RE = re.compile(
    r"\[Response A\]\n(?P<a>.*?)\n\[End of Response A\].*?\[Response B\]\n(?P<b>.*?)\n\[End of Response B\]",
    re.S,
)
_TRIPLE_QUOTED = re.compile(r'"""(.*?)"""', re.S)


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
