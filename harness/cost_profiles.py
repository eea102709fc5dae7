"""The profiles the cost estimator (`harness/cost.py`) prices a workload against: model shapes
(parameter counts from a model's `config.json`, or from the known shapes of the paper's models, so a
plan at the paper's scale needs no download) and device profiles (`harness/device_profiles.yaml`: peak
FLOP/s, memory, bandwidth, efficiency factors, each with its source), and `CostInputError` for an input
the estimator cannot use.

    from harness.cost_profiles import device_profile, model_shape
    model_shape("allenai/tulu-2-13b").params, device_profile("h100").peak_flops
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

DEVICE_PROFILES_FILE = Path(__file__).with_name("device_profiles.yaml")
BYTES_PER_VALUE = {"bf16": 2, "fp16": 2, "fp32": 4}


class CostInputError(ValueError):
    """An input the estimator cannot use; the message names the field (and the profile or model)."""


# ------------------------------------------------------------------------------------------------
# Models
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelShape:
    """A decoder-only transformer (Llama layout: attention with grouped KV heads, a 3-matrix MLP)."""

    name: str
    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    d_ff: int
    vocab_size: int
    tied_embeddings: bool

    @property
    def layer_params(self) -> int:
        attention = self.d_model * self.head_dim * (2 * self.n_heads + 2 * self.n_kv_heads)
        return attention + 3 * self.d_model * self.d_ff + 2 * self.d_model

    @property
    def params(self) -> int:
        embeddings = self.vocab_size * self.d_model * (1 if self.tied_embeddings else 2)
        return self.n_layers * self.layer_params + embeddings + self.d_model

    def matmul_params(self, lm_head: bool = True) -> int:
        """The weights a token is multiplied by: the layers, and the LM head unless the model scores with
        a scalar head (reward and value models); the input embedding is a lookup."""
        return self.n_layers * self.layer_params + (self.vocab_size * self.d_model if lm_head else 0)

    def forward_flops_per_token(self, context: float, lm_head: bool = True) -> float:
        return 2.0 * self.matmul_params(lm_head) + 4.0 * self.n_layers * self.n_heads * self.head_dim * context

    def sequence_forward_flops(self, tokens: float, lm_head: bool = True) -> float:
        """A forward pass over one sequence of `tokens` (every token attends over the full length)."""
        return tokens * self.forward_flops_per_token(tokens, lm_head)

    def kv_bytes_per_token(self, bytes_per_value: int) -> int:
        return 2 * self.n_layers * self.n_kv_heads * self.head_dim * bytes_per_value

    @classmethod
    def from_config(cls, name: str, config: Mapping[str, Any]) -> ModelShape:
        """From a Hugging Face `config.json` of a Llama-layout model."""
        try:
            n_heads = int(config["num_attention_heads"])
            d_model = int(config["hidden_size"])
            return cls(name=name, n_layers=int(config["num_hidden_layers"]), d_model=d_model, n_heads=n_heads,
                       n_kv_heads=int(config.get("num_key_value_heads") or n_heads),
                       head_dim=int(config.get("head_dim") or d_model // n_heads),
                       d_ff=int(config["intermediate_size"]), vocab_size=int(config["vocab_size"]),
                       tied_embeddings=bool(config.get("tie_word_embeddings", False)))
        except KeyError as exc:
            raise CostInputError(f"model {name!r}: its config has no {exc.args[0]!r} (a Llama-layout "
                                 "config.json is needed for a cost estimate)") from None


# The paper's models and the zoo's SmolLM2, from their published `config.json` files, so a plan at the
# paper's scale needs no download. Anything else is read from its local folder.
KNOWN_CONFIGS: dict[str, dict[str, Any]] = {
    # huggingface.co/meta-llama/Llama-2-13b-hf/config.json (Tulu 2 13B keeps the architecture)
    "meta-llama/Llama-2-13b-hf": {"num_hidden_layers": 40, "hidden_size": 5120, "num_attention_heads": 40,
                                  "num_key_value_heads": 40, "intermediate_size": 13824, "vocab_size": 32000,
                                  "tie_word_embeddings": False},
    # huggingface.co/meta-llama/Llama-2-70b-hf/config.json (grouped-query attention, 8 KV heads)
    "meta-llama/Llama-2-70b-hf": {"num_hidden_layers": 80, "hidden_size": 8192, "num_attention_heads": 64,
                                  "num_key_value_heads": 8, "intermediate_size": 28672, "vocab_size": 32000,
                                  "tie_word_embeddings": False},
    # huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct/config.json (the zoo's smollm2-135m-instruct)
    "HuggingFaceTB/SmolLM2-135M-Instruct": {"num_hidden_layers": 30, "hidden_size": 576, "num_attention_heads": 9,
                                            "num_key_value_heads": 3, "head_dim": 64, "intermediate_size": 1536,
                                            "vocab_size": 49152, "tie_word_embeddings": True},
    # huggingface.co/HuggingFaceTB/SmolLM2-360M-Instruct/config.json (the gpu profiles' larger reward model)
    "HuggingFaceTB/SmolLM2-360M-Instruct": {"num_hidden_layers": 32, "hidden_size": 960, "num_attention_heads": 15,
                                            "num_key_value_heads": 5, "head_dim": 64, "intermediate_size": 2560,
                                            "vocab_size": 49152, "tie_word_embeddings": True},
}
KNOWN_ALIASES = {
    "allenai/tulu-2-13b": "meta-llama/Llama-2-13b-hf",
    "allenai/tulu-2-dpo-13b": "meta-llama/Llama-2-13b-hf",
    "allenai/tulu-2-70b": "meta-llama/Llama-2-70b-hf",
    "smollm2-135m-instruct": "HuggingFaceTB/SmolLM2-135M-Instruct",
}


def model_shape(name_or_path: str) -> ModelShape:
    """A model's shape without downloading: a local folder's config.json, a built zoo model, the
    paper's models and SmolLM2 from `KNOWN_CONFIGS`, or a zoo model built here (the tiny model)."""
    from harness.models import MODEL_BUILDERS
    from harness.paths import model_cache_dir

    candidates = [Path(name_or_path).expanduser(), model_cache_dir() / name_or_path]
    for folder in candidates:
        if (folder / "config.json").is_file():
            return ModelShape.from_config(name_or_path, json.loads((folder / "config.json").read_text()))
    known = KNOWN_ALIASES.get(name_or_path, name_or_path)
    if known in KNOWN_CONFIGS:
        return ModelShape.from_config(name_or_path, KNOWN_CONFIGS[known])
    if name_or_path in MODEL_BUILDERS:  # built locally from code, no download
        from harness.models import resolve_model

        return ModelShape.from_config(name_or_path, json.loads((Path(resolve_model(name_or_path)) / "config.json").read_text()))
    raise CostInputError(
        f"model {name_or_path!r}: no local config.json and not among the known shapes "
        f"({', '.join(sorted({*KNOWN_CONFIGS, *KNOWN_ALIASES}))}); download its config.json into a folder and "
        "name the folder, or add the hub id's config to harness.cost.KNOWN_CONFIGS")


# ------------------------------------------------------------------------------------------------
# Devices
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DeviceProfile:
    name: str
    description: str
    devices: int
    device: str
    dtype: str
    peak_flops: float
    memory_bytes: float
    memory_bandwidth: float
    train_efficiency: float
    decode_bandwidth_efficiency: float
    decode_layer_latency_s: float
    static_shapes: bool
    scalable: bool
    usd_per_device_hour: float | None
    sources: dict[str, str] = field(default_factory=dict)
    calibration: tuple[dict[str, Any], ...] = ()

    @property
    def bytes_per_value(self) -> int:
        return BYTES_PER_VALUE[self.dtype]


_PROFILE_NUMBERS = ("peak_flops", "memory_bytes", "memory_bandwidth", "train_efficiency",
                    "decode_bandwidth_efficiency", "decode_layer_latency_s")


def _parse_profile(name: str, spec: Mapping[str, Any], origin: str) -> DeviceProfile:
    where = f"{origin}: profiles.{name}"
    known = {f for f in DeviceProfile.__dataclass_fields__ if f != "name"}
    unknown = sorted(set(spec) - known)
    if unknown:
        raise CostInputError(f"{where}: unknown field(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
    missing = sorted(known - set(spec) - {"sources", "calibration"})
    if missing:
        raise CostInputError(f"{where}: missing {', '.join(missing)}")
    for key in (*_PROFILE_NUMBERS, "devices"):
        value = spec[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise CostInputError(f"{where}.{key}: expected a positive number, got {value!r}")
    for key in ("train_efficiency", "decode_bandwidth_efficiency"):
        if spec[key] > 1:
            raise CostInputError(f"{where}.{key}: an efficiency is a fraction of peak (<= 1), got {spec[key]}")
    if spec["dtype"] not in BYTES_PER_VALUE:
        raise CostInputError(f"{where}.dtype: {spec['dtype']!r} is not one of {', '.join(BYTES_PER_VALUE)}")
    rate = spec["usd_per_device_hour"]
    if rate is not None and (isinstance(rate, bool) or not isinstance(rate, (int, float)) or rate < 0):
        raise CostInputError(f"{where}.usd_per_device_hour: expected a number >= 0 or null, got {rate!r}")
    return DeviceProfile(name=name, **{**spec, "devices": int(spec["devices"]),
                                       "calibration": tuple(spec.get("calibration") or ()),
                                       "sources": dict(spec.get("sources") or {})})


@functools.cache
def device_profiles(path: str | None = None) -> dict[str, DeviceProfile]:
    file = Path(path) if path else DEVICE_PROFILES_FILE
    raw = yaml.safe_load(file.read_text()) or {}
    if not isinstance(raw.get("profiles"), Mapping):
        raise CostInputError(f"{file}: expected a `profiles` mapping")
    return {name: _parse_profile(name, spec, str(file)) for name, spec in raw["profiles"].items()}


def device_profile(name: str) -> DeviceProfile:
    profiles = device_profiles()
    if name not in profiles:
        raise CostInputError(f"unknown device profile {name!r}; valid: {', '.join(sorted(profiles))}")
    return profiles[name]


def with_profile_overrides(profile: DeviceProfile, **fields: Any) -> DeviceProfile:
    """A copy with some fields changed (e.g. `devices=8` for a node of eight GPUs)."""
    unknown = sorted(set(fields) - set(DeviceProfile.__dataclass_fields__))
    if unknown:
        raise CostInputError(f"unknown device profile field(s): {', '.join(unknown)}")
    return replace(profile, **fields)
