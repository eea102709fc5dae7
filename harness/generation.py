"""The generation engine: one interface for every generation task (eval, best-of-N, PPO rollouts, the
local judge server), several engines behind it, and the settings that choose one per device.

Settings. `EngineSettings` (pydantic, so it can become a grid cell's `engine:` block) says which engine
and precision to use; `resolved()` says what "auto" became on this device (`ResolvedEngine`: what goes
into stage keys and MLflow params). The same settings choose the training precision (`train_bf16`):
bf16 autocast over fp32 weights where the device computes bf16 natively.

- `dtype: auto`: bfloat16 on CUDA devices that support it and on CPUs with AMX or AVX-512 BF16 (read at
  run time from torch's CPU capability report or /proc/cpuinfo), float32 elsewhere. `float32` pins the
  exact-parity path. bf16 changes outputs (greedy answers differ from fp32 as they do on GPUs).
- `batching: auto`: `compact` on CPU (measured faster there: benchmarks/bench_generation.py), `static`
  on CUDA (the engine used there so far; the others are unmeasured on GPUs).

Engines (`kind`):
- `hf`: `HFGenerator`, an in-process transformers model, with three batchings. Prompts are tokenized
  once, left-truncated to `max_prompt_tokens` (an over-long prompt loses its start, never the question
  at its end), sorted by token length into buckets of `batch_size` prompts (less padding).
    `static`: `model.generate` per bucket; a bucket runs until its longest answer ends.
    `compact`: the project's decode loop (KV cache, same forward as `generate`) that drops finished
      rows from the batch, so a bucket costs what its live rows cost ("finished-row compaction").
    `continuous`: transformers' continuous batching (`generate_batch`, paged attention). Slower on this
      2-core CPU (0.54x of `model.generate` in the issue's measurement; 0.81x of `static` in CPU time at
      bf16, 16 AlpacaEval prompts x 256 tokens); selectable, never the CPU default; its GPU speed was not
      measured here.
- `openai`: `harness.openai_engine.OpenAIGenerator`, any server speaking the OpenAI API (vllm serve,
  SGLang, TGI, llama.cpp's server, `harness serve-judge`), with bounded concurrency and retries;
  log-likelihoods through the completions endpoint's prompt log-probs (`echo` + `logprobs`).
- `vllm`: the harness starts `vllm serve` for the model (`harness.openai_engine.serve_model`), talks
  to it as `openai`, and stops it afterwards. Untested here: vLLM cannot be installed on the project's
  CPU machines; the start/stop logic is tested with `harness serve-judge` standing in for `vllm serve`.
`harness.engines.make_generator` builds the engine a settings block names.

Sampling is the same on every in-process engine: greedy at temperature 0; otherwise each row draws
from exactly softmax(logits / temperature), cut to top_p, with its own seeded generator (seed derived
from `SamplingParams.seed`, the prompt's index and the sample's index), so a row's sample does not
depend on which rows share its batch: `static` and `compact` give identical samples, and a server
built on this engine answers a seeded request the same however requests are batched. Nothing else
shapes the distribution: the sampling settings a checkpoint ships in `generation_config.json`
(repetition_penalty, top_k, min_p, ...) are ignored (`neutral_generation_config`). `continuous`
samples with transformers' own sampler (seeded once per call, not per row).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveFloat, PositiveInt, model_validator

Messages = list[dict[str, str]]

EngineKind = Literal["hf", "openai", "vllm"]
DType = Literal["float32", "bfloat16"]
Batching = Literal["static", "compact", "continuous"]

# Sampling fields vLLM and SGLang accept beyond the OpenAI API, at their neutral values. Sent with every
# request of the OpenAI engine: both servers otherwise default them from the model's
# generation_config.json. A server that rejects unknown fields (OpenAI's own API) needs `extra_body: {}`.
NEUTRAL_SAMPLING_EXTENSIONS: dict[str, Any] = {"top_k": -1, "min_p": 0.0, "repetition_penalty": 1.0}


@dataclass
class SamplingParams:
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    num_return_sequences: int = 1
    stop: tuple[str, ...] = ()
    seed: int = 0


class Generator(Protocol):
    def generate(
        self, prompts: Sequence[Messages | str], params: SamplingParams, chat: bool = True
    ) -> list[list[str]]: ...


@dataclass
class GeneratedSample:
    """One completion with its token ids, for callers that train on the tokens (PPO rollouts)."""

    text: str  # decoded completion (special tokens skipped), cut at stop sequences
    prompt_ids: list[int]  # the rendered prompt's ids, unpadded (after left truncation)
    # generated ids up to and including the EOS, or the token that completed a stop string; no padding
    completion_ids: list[int]
    finished: bool  # True when the model ended the answer (EOS or a stop string); False at max_new_tokens

    @property
    def truncated(self) -> bool:
        """Cut off by the token budget (the EOS trick's "no EOS" case when no stop strings are used)."""
        return not self.finished


class TokenGenerator(Generator, Protocol):
    """A generator that also returns token ids (an engine for RL rollouts must implement this)."""

    def generate_samples(
        self, prompts: Sequence[Messages | str], params: SamplingParams, chat: bool = True
    ) -> list[list[GeneratedSample]]: ...


# ==================================================================================================
# Settings: which engine and precision, and what "auto" becomes on this device.
# ==================================================================================================


class EngineSettings(BaseModel):
    """The engine and precision of a stage (the future `engine:` block of a grid cell).

    `dtype` is the compute precision of everything the harness runs in-process: generation and scoring
    weights, and training (bf16 autocast over fp32 master weights). `kind: openai` and `kind: vllm` move
    generation and log-likelihood scoring to a server; training stays in-process at `dtype`.
    """

    model_config = ConfigDict(extra="forbid")

    kind: EngineKind = "hf"
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    batching: Literal["auto", "static", "compact", "continuous"] = "auto"  # kind hf only
    # --- kind openai: the server; kind vllm: `model` is the served name (default: the stage's model) ---
    base_url: str | None = None  # e.g. http://127.0.0.1:8000/v1
    model: str | None = None  # the model name the server serves
    api_key_env: str | None = None  # environment variable holding the key (the key is never stored)
    max_concurrency: PositiveInt = 8  # requests in flight
    max_retries: NonNegativeInt = 6  # per request, on connection errors, timeouts, 408/409/429/5xx
    request_timeout_s: PositiveFloat = 600.0
    # Prompts as token ids rendered by the local tokenizer (the same ids the hf engine sees; needed for
    # log-likelihoods). False sends text, for servers that accept only strings (log-likelihoods then fail).
    tokenized_prompts: bool = True
    extra_body: dict[str, Any] = Field(default_factory=lambda: dict(NEUTRAL_SAMPLING_EXTENSIONS))
    # --- kind vllm ---
    server_args: tuple[str, ...] = ()  # extra `vllm serve` arguments (e.g. --gpu-memory-utilization 0.5)
    startup_timeout_s: PositiveFloat = 900.0

    @model_validator(mode="after")
    def _fields_fit_kind(self) -> EngineSettings:
        problems = []
        if self.kind == "openai":
            problems += [f"{name}: required when kind is 'openai'" for name in ("base_url", "model")
                         if not getattr(self, name)]
        elif self.base_url is not None:
            problems.append(f"base_url: only for kind 'openai' (kind is {self.kind!r})")
        if self.kind != "hf" and self.batching != "auto":
            problems.append(f"batching: only for kind 'hf' (a server batches itself; kind is {self.kind!r})")
        if self.kind == "hf":
            remote = {"model": None, "api_key_env": None, "server_args": ()}
            problems += [f"{name}: only for kind 'openai' or 'vllm'" for name, unset in remote.items()
                         if getattr(self, name) != unset]
        if self.kind != "vllm" and self.server_args:
            problems.append("server_args: only for kind 'vllm'")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def resolved(self, device: str | None = None) -> ResolvedEngine:
        """What this engine is on `device` (default: CUDA when present, else CPU): "auto" made concrete."""
        from harness.models import default_device

        device = device or default_device()
        native, why = native_bf16(device)
        if self.dtype == "auto":
            dtype: DType = "bfloat16" if native else "float32"
            reason = f"auto: {why}"
        else:
            dtype, reason = self.dtype, f"pinned ({why})"
        batching: Batching | None = None
        if self.kind == "hf":
            batching = default_batching(device) if self.batching == "auto" else self.batching
        remote_key: dict[str, Any] = {}
        if self.kind != "hf":  # server-side settings that change answers, only where not at their defaults
            if self.extra_body != NEUTRAL_SAMPLING_EXTENSIONS:
                remote_key["extra_body"] = dict(sorted(self.extra_body.items()))
            if not self.tokenized_prompts:
                remote_key["tokenized_prompts"] = False
            if self.server_args:
                remote_key["server_args"] = list(self.server_args)
        return ResolvedEngine(kind=self.kind, dtype=dtype, batching=batching, device=device,
                              model=self.model, base_url=self.base_url, dtype_reason=reason,
                              remote_key=remote_key)

    def pinned(self, device: str | None = None) -> EngineSettings:
        """These settings with every "auto" replaced by what it resolves to on `device` (default: this
        machine's): what a grid's plan hands to the machines that run its stages, so that a worker runs what
        the plan resolved instead of resolving "auto" again (a worker of another kind would choose otherwise).
        `pinned().resolved(d).key()` equals `resolved().key()` on any device `d`."""
        resolved = self.resolved(device)
        update: dict[str, Any] = {"dtype": resolved.dtype}
        if resolved.batching is not None:
            update["batching"] = resolved.batching
        return self.model_copy(update=update)


class ResolvedEngine(BaseModel):
    """An engine with every choice made, for the record: `key()` for stage keys (what changes outputs),
    `params()` for MLflow (also where it ran and why)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: EngineKind
    dtype: DType  # in-process compute precision (generation and scoring weights, training autocast)
    batching: Batching | None  # kind hf only
    device: str
    model: str | None = None  # kind openai: the served model's name
    base_url: str | None = None
    dtype_reason: str = ""
    # kind openai/vllm: the server-side settings that change answers, where set away from their defaults
    # (`extra_body`, text prompts, `server_args`); empty otherwise, so the usual keys stay short.
    remote_key: dict[str, Any] = Field(default_factory=dict)

    @property
    def train_bf16(self) -> bool:
        """Training runs under bf16 autocast (fp32 master weights): TRL's `bf16=True`, PPO's forwards."""
        return self.dtype == "bfloat16"

    def key(self) -> dict[str, Any]:
        """What a stage's outputs depend on. Not the device or URL: a result is reusable wherever the
        same engine at the same precision produced it. For a server, its model name stands for it."""
        key: dict[str, Any] = {"kind": self.kind, "dtype": self.dtype}
        if self.kind == "hf":
            key["batching"] = self.batching
        if self.kind == "openai":
            key["model"] = self.model
        key.update(self.remote_key)
        return key

    def training_key(self) -> dict[str, Any]:
        """What a stage that computes in-process without generating through the engine depends on (training
        by TRL's trainers, the reward model, reference log-probs): the precision only. The engine's kind and
        batching change generated text, not these results."""
        return {"dtype": self.dtype}

    def params(self) -> dict[str, str]:
        """Flat `engine.*` MLflow params."""
        out = {f"engine.{k}": str(v) for k, v in self.key().items()}
        out["engine.device"] = self.device
        out["engine.dtype_reason"] = self.dtype_reason
        if self.base_url:
            out["engine.base_url"] = self.base_url
        return out


def _cpu_flags() -> set[str]:
    """CPU feature names this process can use: torch's own capability report (what its kernels check),
    else the kernel's /proc/cpuinfo flags."""
    try:
        import torch

        report = torch._C._cpu._get_cpu_capability()  # private API; present in torch 2.x
        return {name for name, present in report.items() if present is True}
    except (AttributeError, RuntimeError, TypeError):
        pass
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


# CPU features with native bf16 arithmetic: Intel AMX (Sapphire Rapids on) and AVX-512 BF16 (Cooper
# Lake, AMD Zen 4 on). Measured on this project's AVX-512 BF16 CPU: bf16 generation 1.61x, a training
# step under autocast 1.5x faster than fp32.
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


@functools.cache
def native_bf16(device: str) -> tuple[bool, str]:
    """(does `device` compute bf16 natively, why we think so)."""
    import torch

    if device.startswith("cuda"):
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return True, f"{device} supports bf16"
        return False, f"{device} does not support bf16"
    if device == "cpu":
        found = [flag for flag in CPU_BF16_FLAGS if flag in _cpu_flags()]
        if found:
            return True, f"CPU has {'/'.join(found)}"
        return False, f"CPU has none of {'/'.join(CPU_BF16_FLAGS)}"
    return False, f"bf16 not known to be native on {device}"


def default_batching(device: str) -> Batching:
    """`compact` on CPU (measured faster than `static` there for long, uneven answers); `static`
    elsewhere (the only batching used on GPUs so far; none was measured on one here)."""
    return "compact" if device == "cpu" else "static"


def record_engine(out_dir: Path, resolved: ResolvedEngine) -> None:
    """`<out_dir>/artifacts/engine.json`: what the engine resolved to for a stage (the runner logs a
    stage's artifacts/ to MLflow)."""
    import json

    (out_dir / "artifacts").mkdir(parents=True, exist_ok=True)
    (out_dir / "artifacts" / "engine.json").write_text(json.dumps(resolved.params(), indent=2))


def autocast_context(device: Any, resolved: ResolvedEngine) -> Any:
    """The forward context for training at `resolved.dtype`: bf16 autocast (on CUDA also without the
    cuDNN attention kernel, see `models.cuda_bf16_forward`), or nothing for float32."""
    from contextlib import nullcontext

    import torch

    device_type = torch.device(device).type
    if not resolved.train_bf16:
        return nullcontext()
    if device_type == "cuda":
        from harness.models import cuda_bf16_forward

        return cuda_bf16_forward()
    return torch.autocast(device_type, dtype=torch.bfloat16)


# ==================================================================================================
# Shared pieces: prompts, stop strings, seeds, sampling.
# ==================================================================================================


def truncate_at_stop(text: str, stop: Sequence[str]) -> str:
    cut = len(text)
    for s in stop:
        idx = text.find(s)
        if idx != -1:
            cut = min(cut, idx)
    return text[:cut]


def render_prompt(tokenizer: Any, prompt: Messages | str, chat: bool) -> str:
    if isinstance(prompt, str):
        if not chat:
            return prompt
        prompt = [{"role": "user", "content": prompt}]
    if not chat:
        return "\n\n".join(m["content"] for m in prompt)
    return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers (a call's seed, a prompt's index, a sample's index): stable across
    processes and machines, unlike `hash`."""
    digest = hashlib.sha256(",".join(str(int(p)) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def prompt_seeds_for(seed: int, n_prompts: int) -> list[int]:
    """Each prompt's seed in a call with `SamplingParams.seed = seed` (the OpenAI engine sends these as
    the requests' `seed`, so a server built on this engine samples what the in-process one does)."""
    return [derive_seed(seed, i) for i in range(n_prompts)]


def sample_rows(logits: Any, generators: Sequence[Any], temperature: float, top_p: float) -> Any:
    """One token per row from softmax(logits / temperature) cut to the smallest top-probability set
    whose mass reaches top_p (the first token always kept), each row with its own generator."""
    import torch

    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        sorted_p = sorted_p * ((sorted_p.cumsum(dim=-1) - sorted_p) < top_p)
        probs = torch.zeros_like(probs).scatter_(1, order, sorted_p)
    return torch.cat([torch.multinomial(probs[r], 1, generator=g) for r, g in enumerate(generators)])


def _row_generators(seeds: Sequence[int], device: Any) -> list[Any]:
    import torch

    return [torch.Generator(device=device).manual_seed(s) for s in seeds]


# The fields of a generation config that name tokens rather than shape the sampling distribution.
GENERATION_TOKEN_ID_FIELDS = ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id")


@contextmanager
def neutral_generation_config(model: Any) -> Iterator[None]:
    """Within the block, `model.generate` sees transformers' global defaults, not the checkpoint's own
    generation config (only its token ids are kept); the original is restored (and saved with the model).

    Passing a `GenerationConfig` to `generate` is not enough: transformers fills each of its unset
    (None) fields from `model.generation_config`, and the neutral value of several logits processors
    (min_p, suppress_tokens, sequence_bias, ...) is None itself."""
    from transformers import GenerationConfig

    target = model.get_base_model() if hasattr(model, "get_base_model") else model  # a PEFT wrapper's model
    original = target.generation_config
    token_ids = {k: getattr(original, k, None) for k in GENERATION_TOKEN_ID_FIELDS}
    target.generation_config = GenerationConfig(**{k: v for k, v in token_ids.items() if v is not None})
    try:
        yield
    finally:
        target.generation_config = original


class _StopChecker:
    """Does a row's completion so far contain a stop string? Decodes only its last tokens: enough
    characters for the longest stop string (a token decodes to at least one character, special tokens
    aside, hence the margin)."""

    def __init__(self, tokenizer: Any, stop: Sequence[str]):
        self.tokenizer, self.stop = tokenizer, tuple(s for s in stop if s)
        self.window = max((len(s) for s in self.stop), default=0) + 8

    def __call__(self, ids: Sequence[int]) -> bool:
        if not self.stop:
            return False
        tail = self.tokenizer.decode(ids[-self.window:], skip_special_tokens=True)
        return any(s in tail for s in self.stop)


def finish_row(tokenizer: Any, prompt_ids: list[int], new_ids: Sequence[int], eos_id: int | None,
               stop: Sequence[str]) -> GeneratedSample:
    """A sample from a row's generated ids, the same whatever the engine ran past its end: ids up to
    the first EOS, or up to the token that completed the first stop string when that comes earlier
    (what follows is padding or tokens an engine generated before it noticed); text cut at the stop."""
    ids = [int(t) for t in new_ids]
    finished = eos_id is not None and eos_id in ids
    end = ids.index(eos_id) + 1 if finished else len(ids)
    stop = tuple(s for s in stop if s)
    if stop and any(s in tokenizer.decode(ids[:end], skip_special_tokens=True) for s in stop):
        # Bisect for the shortest prefix whose text holds a stop string (containment only grows with
        # the prefix), so every engine returns the same ids.
        lo, hi = 1, end
        while lo < hi:
            mid = (lo + hi) // 2
            if any(s in tokenizer.decode(ids[:mid], skip_special_tokens=True) for s in stop):
                hi = mid
            else:
                lo = mid + 1
        end, finished = lo, True
    ids = ids[:end]
    text = truncate_at_stop(tokenizer.decode(ids, skip_special_tokens=True), stop)
    return GeneratedSample(text, list(prompt_ids), ids, finished)


def _left_pad(rows: Sequence[Sequence[int]], pad_id: int, device: Any) -> tuple[Any, Any]:
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
            mask[i, width - len(r):] = 1
    return ids.to(device), mask.to(device)


class _RowSampler:
    """A logits processor for `model.generate` that samples each row with its own generator (see
    `sample_rows`) and leaves only that token: `generate` then runs greedy over one-hot scores, so
    `static` samples exactly what `compact` does."""

    def __init__(self, seeds: Sequence[int], temperature: float, top_p: float, device: Any):
        self.generators = _row_generators(seeds, device)
        self.temperature, self.top_p = temperature, top_p

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        tokens = sample_rows(scores, self.generators, self.temperature, self.top_p)
        out = torch.full_like(scores, float("-inf"))
        return out.scatter_(1, tokens[:, None], 0.0)


# ==================================================================================================
# The in-process engine.
# ==================================================================================================


class HFGenerator:
    """An in-process transformers causal LM (see the module docstring for the batchings)."""

    resolved: ResolvedEngine | None = None  # set by `from_name`: the settings it was built from

    # 4096: the longest paper-suite prompt (BBH geometric_shapes' 3-shot CoT) is ~2,500 tokens.
    def __init__(self, model: Any, tokenizer: Any, batch_size: int = 16, max_prompt_tokens: int = 4096,
                 batching: Literal["auto", "static", "compact", "continuous"] = "auto"):
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_prompt_tokens = max_prompt_tokens
        device = str(next(model.parameters()).device)
        self.batching: Batching = default_batching(device.split(":")[0]) if batching == "auto" else batching
        if self.batching not in ("static", "compact", "continuous"):
            raise ValueError(f"batching must be 'auto', 'static', 'compact' or 'continuous', got {batching!r}")

    @classmethod
    def from_name(cls, name_or_path: str, batch_size: int = 16, device: str | None = None,
                  engine: EngineSettings | None = None) -> HFGenerator:
        from harness.models import load_causal_lm

        resolved = (engine or EngineSettings()).resolved(device)
        if resolved.kind != "hf":
            raise ValueError(f"HFGenerator runs engine kind 'hf', not {resolved.kind!r}")
        model, tok = load_causal_lm(name_or_path, device=resolved.device, dtype=resolved.dtype)
        generator = cls(model, tok, batch_size=batch_size, batching=resolved.batching or "auto")
        generator.resolved = resolved
        return generator

    def generate(
        self, prompts: Sequence[Messages | str], params: SamplingParams, chat: bool = True
    ) -> list[list[str]]:
        return [[s.text for s in row] for row in self.generate_samples(prompts, params, chat)]

    def generate_samples(
        self, prompts: Sequence[Messages | str], params: SamplingParams, chat: bool = True
    ) -> list[list[GeneratedSample]]:
        texts = [render_prompt(self.tokenizer, p, chat) for p in prompts]
        ids = self.tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
        return self.generate_from_ids(ids, params)

    def generate_from_ids(self, prompt_ids: Sequence[Sequence[int]], params: SamplingParams,
                          prompt_seeds: Sequence[int] | None = None) -> list[list[GeneratedSample]]:
        """Samples for already tokenized prompts. `prompt_seeds`: each prompt's sampling seed (default
        `prompt_seeds_for(params.seed, len(prompt_ids))`); a server passes its requests' own seeds."""
        import torch

        if params.num_return_sequences < 1 or params.max_new_tokens < 1:
            raise ValueError("num_return_sequences and max_new_tokens must be >= 1")
        prompts = [[int(t) for t in p][-self.max_prompt_tokens:] for p in prompt_ids]
        if not prompts:
            return []
        if any(not p for p in prompts):
            raise ValueError("an empty prompt cannot be generated from")
        seeds = list(prompt_seeds) if prompt_seeds is not None else prompt_seeds_for(params.seed, len(prompts))
        n = params.num_return_sequences
        results: list[list[GeneratedSample]] = [[] for _ in prompts]
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad(), neutral_generation_config(self.model):
                if self.batching == "continuous":
                    buckets = [sorted(range(len(prompts)), key=lambda i: len(prompts[i]))]
                else:
                    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
                    buckets = [order[s:s + self.batch_size] for s in range(0, len(order), self.batch_size)]
                for idx in buckets:
                    rows = [prompts[i] for i in idx for _ in range(n)]
                    row_seeds = [derive_seed(seeds[i], k) for i in idx for k in range(n)]
                    run = {"static": self._static, "compact": self._compact,
                           "continuous": self._continuous}[self.batching]
                    new = run(rows, params, row_seeds)
                    eos = self.tokenizer.eos_token_id
                    for j, i in enumerate(idx):
                        results[i] = [finish_row(self.tokenizer, prompts[i], new[j * n + k], eos, params.stop)
                                      for k in range(n)]
        finally:
            self.model.train(was_training)
        return results

    def loglikelihood(self, pairs: Sequence[tuple[str, str]], batch_size: int | None = None
                      ) -> list[tuple[float, bool]]:
        """(log-likelihood of each continuation given its context, is it the greedy continuation)."""
        from harness.loglikelihood import continuation_logprobs

        return continuation_logprobs(self.model, self.tokenizer, pairs, batch_size=batch_size or self.batch_size)

    def close(self) -> None:
        """Nothing to release (the model goes with the object); engines with a server stop it here."""

    # --- batchings: each takes the rows' prompt ids and returns each row's generated ids ---

    def _device(self) -> Any:
        return next(self.model.parameters()).device

    def _pad_id(self) -> int:
        tok = self.tokenizer
        return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    def _static(self, rows: list[list[int]], params: SamplingParams, seeds: list[int]) -> list[list[int]]:
        from transformers import LogitsProcessorList

        tok = self.tokenizer
        input_ids, mask = _left_pad(rows, self._pad_id(), self._device())
        kwargs: dict[str, Any] = dict(
            max_new_tokens=params.max_new_tokens, pad_token_id=self._pad_id(), eos_token_id=tok.eos_token_id,
            use_cache=True, do_sample=False, temperature=None, top_p=None, top_k=None,
        )
        if params.stop:
            # Each row stops as soon as it emits a stop string (transformers checks per row), so a bucket
            # ends early instead of running to max_new_tokens; `finish_row` cuts the rest.
            kwargs.update(stop_strings=list(params.stop), tokenizer=tok)
        if params.temperature > 0:
            kwargs["logits_processor"] = LogitsProcessorList(
                [_RowSampler(seeds, params.temperature, params.top_p, self._device())])
        out = self.model.generate(input_ids=input_ids, attention_mask=mask, **kwargs)
        return out[:, input_ids.shape[1]:].tolist()

    def _forward(self, **inputs: Any) -> Any:
        try:
            return self.model(**inputs, logits_to_keep=1).logits[:, -1]
        except TypeError:  # architectures without `logits_to_keep`
            return self.model(**inputs).logits[:, -1]

    def _compact(self, rows: list[list[int]], params: SamplingParams, seeds: list[int]) -> list[list[int]]:
        """Greedy or sampled decoding with the KV cache; rows that end (EOS, stop string) leave the batch
        (their cache rows are dropped), so later steps compute only the rows still generating."""
        import torch
        from transformers import DynamicCache

        device = self._device()
        input_ids, mask = _left_pad(rows, self._pad_id(), device)
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)  # as `generate` derives them from the mask
        cache = DynamicCache(config=self.model.config)
        generators = _row_generators(seeds, device) if params.temperature > 0 else []
        eos = self.tokenizer.eos_token_id
        stop_hit = _StopChecker(self.tokenizer, params.stop)
        outputs: list[list[int]] = [[] for _ in rows]
        live = list(range(len(rows)))  # batch position -> row
        step_input = input_ids
        for step in range(params.max_new_tokens):
            logits = self._forward(input_ids=step_input, attention_mask=mask, position_ids=positions,
                                   past_key_values=cache, use_cache=True).float()
            if params.temperature > 0:
                tokens = sample_rows(logits, [generators[r] for r in live], params.temperature, params.top_p)
            else:
                tokens = logits.argmax(dim=-1)
            keep = []
            for b, (row, token) in enumerate(zip(live, tokens.tolist())):
                outputs[row].append(token)
                if token != eos and not stop_hit(outputs[row]):
                    keep.append(b)
            if not keep or step == params.max_new_tokens - 1:
                break
            if len(keep) < len(live):
                index = torch.tensor(keep, device=device)
                cache.batch_select_indices(index)
                mask, positions, tokens = mask[index], positions[index], tokens[index]
                live = [live[b] for b in keep]
            mask = torch.cat([mask, mask.new_ones((len(live), 1))], dim=1)
            positions = positions[:, -1:] + 1
            step_input = tokens[:, None]
        from harness import usage

        usage.count_generated(sum(len(o) for o in outputs))  # `generate` calls are counted by harness.usage itself
        return outputs

    def _continuous(self, rows: list[list[int]], params: SamplingParams, seeds: list[int]) -> list[list[int]]:
        """transformers' continuous batching: every row in one call; it schedules by KV-cache memory.
        Stop strings are applied afterwards (`finish_row`), so rows run to EOS or the token budget."""
        import math

        from transformers import ContinuousBatchingConfig, GenerationConfig

        tok = self.tokenizer
        config = GenerationConfig(
            max_new_tokens=params.max_new_tokens, eos_token_id=tok.eos_token_id, pad_token_id=self._pad_id(),
            do_sample=params.temperature > 0, temperature=params.temperature if params.temperature > 0 else None,
            top_p=params.top_p if params.temperature > 0 else None, top_k=0 if params.temperature > 0 else None,
        )
        # The paged cache is sized for these rows: left to itself it takes most of the free memory (on a CPU,
        # the machine's RAM: 14 GB on a shared 24 GB machine, killed by the OOM killer).
        page = 256
        cb_config = ContinuousBatchingConfig(
            page_size=page, num_blocks=sum(math.ceil((len(r) + params.max_new_tokens) / page) + 1 for r in rows),
            max_batch_tokens=max(2048, max(len(r) for r in rows) + 1), max_requests_per_batch=self.batch_size,
            seed=derive_seed(*seeds), auto_switch_to_flash=False,
        )
        # generate_batch switches the model to a paged attention and back when it is done.
        outputs = self.model.generate_batch(inputs=rows, generation_config=config, continuous_batching_config=cb_config,
                                            progress_bar=False)
        ordered = list(outputs.values())
        if len(ordered) != len(rows) or any(o.error for o in ordered):
            errors = [o.error for o in ordered if o.error]
            raise RuntimeError(f"continuous batching returned {len(ordered)} of {len(rows)} rows; errors: {errors}")
        from harness import usage

        generated = [list(o.generated_tokens) for o in ordered]
        usage.count_generated(sum(len(g) for g in generated))
        return generated


# ==================================================================================================
# What this machine can run.
# ==================================================================================================


def vllm_available() -> bool:
    """vLLM installed and a CUDA GPU present (what `vllm serve` needs)."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        return False
    import torch

    return torch.cuda.is_available()
