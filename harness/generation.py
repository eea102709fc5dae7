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
- `hf`: `harness.hf_engine.HFGenerator`, an in-process transformers model, with three batchings
  (`static`, `compact`, `continuous`) and per-row seeded sampling (see that module).
- `openai`: `harness.openai_engine.OpenAIGenerator`, any server speaking the OpenAI API (vllm serve,
  SGLang, TGI, llama.cpp's server, `harness serve-judge`), with bounded concurrency and retries;
  log-likelihoods through the completions endpoint's prompt log-probs (`echo` + `logprobs`).
- `vllm`: the harness starts `vllm serve` for the model (`harness.openai_engine.serve_model`), talks
  to it as `openai`, and stops it afterwards. Untested here: vLLM cannot be installed on the project's
  CPU machines; the start/stop logic is tested with `harness serve-judge` standing in for `vllm serve`.
`harness.engines.make_generator` builds the engine a settings block names.

Every engine renders prompts (`render_prompt`), cuts answers at stop strings (`truncate_at_stop`) and
seeds each prompt's samples (`prompt_seeds_for`) with the functions at the end of this module, so a
server built on the in-process engine answers a seeded request as that engine does.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
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
# Shared by every engine: prompts, stop strings, seeds.
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
