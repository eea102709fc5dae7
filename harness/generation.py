"""One batched generation engine for every generation task (eval, best-of-N, PPO rollouts, local judge).

`HFGenerator` runs `model.generate` with left padding and the KV cache, in batches sorted by prompt
length (less padding), applies the model's chat template, and cuts outputs at stop sequences.
`make_generator` returns a vLLM engine when vLLM is installed and a GPU is present, otherwise the HF one.

`SamplingParams` is the whole decoding specification: sampling settings a checkpoint ships in its
`generation_config.json` (repetition_penalty, min_p, no_repeat_ngram_size, top_k, ...) are ignored
(`neutral_generation_config`), as vLLM ignores them when given explicit sampling parameters. Otherwise
PPO would sample from another distribution than the logits/tau its KL and gradient use, and an
evaluation's decoding would depend on a file next to the weights.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

Messages = list[dict[str, str]]


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
    prompt_ids: list[int]  # the rendered prompt's ids, unpadded
    completion_ids: list[int]  # generated ids up to and including the first EOS; padding removed
    finished: bool  # True when the model emitted EOS; False when it hit max_new_tokens


class TokenGenerator(Generator, Protocol):
    """A generator that also returns token ids (an engine for RL rollouts must implement this)."""

    def generate_samples(
        self, prompts: Sequence[Messages | str], params: SamplingParams, chat: bool = True
    ) -> list[list[GeneratedSample]]: ...


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


class HFGenerator:
    # 4096: the longest paper-suite prompt (BBH geometric_shapes' 3-shot CoT) is ~2,500 tokens.
    def __init__(self, model: Any, tokenizer: Any, batch_size: int = 16, max_prompt_tokens: int = 4096):
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_prompt_tokens = max_prompt_tokens

    @classmethod
    def from_name(cls, name_or_path: str, batch_size: int = 16, device: str | None = None) -> HFGenerator:
        from harness.models import load_causal_lm

        model, tok = load_causal_lm(name_or_path, device=device)
        return cls(model, tok, batch_size=batch_size)

    def generate(
        self, prompts: Sequence[Messages | str], params: SamplingParams, chat: bool = True
    ) -> list[list[str]]:
        return [[s.text for s in row] for row in self.generate_samples(prompts, params, chat)]

    def generate_samples(
        self, prompts: Sequence[Messages | str], params: SamplingParams, chat: bool = True
    ) -> list[list[GeneratedSample]]:
        import torch

        texts = [render_prompt(self.tokenizer, p, chat) for p in prompts]
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        results: list[list[GeneratedSample]] = [[] for _ in texts]
        tok = self.tokenizer
        tok.padding_side = "left"
        tok.truncation_side = "left"  # an over-long prompt loses its start, never the question at its end
        device = next(self.model.parameters()).device
        generator_seed = torch.Generator(device="cpu").manual_seed(params.seed)
        was_training = self.model.training
        self.model.eval()
        try:
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                batch = tok(
                    [texts[i] for i in idx], return_tensors="pt", padding=True, truncation=True,
                    max_length=self.max_prompt_tokens, add_special_tokens=False,
                ).to(device)
                kwargs: dict[str, Any] = dict(
                    max_new_tokens=params.max_new_tokens,
                    num_return_sequences=params.num_return_sequences,
                    pad_token_id=tok.pad_token_id,
                    eos_token_id=tok.eos_token_id,
                    use_cache=True,
                )
                if params.stop:
                    # Stop each sequence as soon as it emits a stop string (transformers checks this
                    # per row), so a batch ends early instead of running to max_new_tokens; the text is
                    # still cut at the stop string below.
                    kwargs.update(stop_strings=list(params.stop), tokenizer=tok)
                if params.temperature > 0:
                    torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator_seed)))
                    # top_k=0 overrides the model's generation_config default (often 50): samples come
                    # from the full (temperature, top-p) distribution, as PPO's and the KL's maths assume.
                    kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=0)
                else:
                    kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
                with torch.no_grad(), neutral_generation_config(self.model):
                    out = self.model.generate(**batch, **kwargs)
                new_tokens = out[:, batch["input_ids"].shape[1] :]
                decoded = tok.batch_decode(new_tokens, skip_special_tokens=True)
                n = params.num_return_sequences
                for j, i in enumerate(idx):
                    prompt_ids = batch["input_ids"][j][batch["attention_mask"][j].bool()].tolist()
                    results[i] = [
                        _sample(decoded[k], prompt_ids, new_tokens[k].tolist(), tok.eos_token_id, params.stop)
                        for k in range(j * n, (j + 1) * n)
                    ]
        finally:
            self.model.train(was_training)
        return results


def _sample(text: str, prompt_ids: list[int], new_ids: list[int], eos_id: int, stop: Sequence[str]) -> GeneratedSample:
    # After EOS, generate() pads (often with EOS itself): keep ids up to and including the first EOS.
    finished = eos_id in new_ids
    ids = new_ids[: new_ids.index(eos_id) + 1] if finished else new_ids
    return GeneratedSample(truncate_at_stop(text, stop), prompt_ids, ids, finished)


def vllm_available() -> bool:
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        return False
    import torch

    return torch.cuda.is_available()


class VLLMGenerator:
    """vLLM engine behind the same interface (used only when vLLM and a GPU are present)."""

    def __init__(self, name_or_path: str):
        from vllm import LLM

        from harness.models import resolve_model

        self.llm = LLM(model=resolve_model(name_or_path))
        self.tokenizer = self.llm.get_tokenizer()

    def generate(
        self, prompts: Sequence[Messages | str], params: SamplingParams, chat: bool = True
    ) -> list[list[str]]:
        from vllm import SamplingParams as VParams

        texts = [render_prompt(self.tokenizer, p, chat) for p in prompts]
        vparams = VParams(
            n=params.num_return_sequences, temperature=params.temperature, top_p=params.top_p,
            max_tokens=params.max_new_tokens, stop=list(params.stop) or None, seed=params.seed,
        )
        outputs = self.llm.generate(texts, vparams)
        return [[c.text for c in o.outputs] for o in outputs]


def make_generator(name_or_path: str, batch_size: int = 16, engine: str = "auto") -> Generator:
    if engine == "vllm" or (engine == "auto" and vllm_available()):
        return VLLMGenerator(name_or_path)
    return HFGenerator.from_name(name_or_path, batch_size=batch_size)
