"""The in-process engine (`kind: hf`): `HFGenerator`, a transformers causal LM behind the interface of
`harness.generation`.

Prompts are tokenized once, left-truncated to `max_prompt_tokens` (an over-long prompt loses its start,
never the question at its end), sorted by token length into buckets of `batch_size` prompts (less
padding). Three batchings (`EngineSettings.batching`; `auto` chooses per device, see
`harness.generation.default_batching`):
  `static`: `model.generate` per bucket; a bucket runs until its longest answer ends.
  `compact`: the project's decode loop (KV cache, same forward as `generate`) that drops finished
    rows from the batch, so a bucket costs what its live rows cost ("finished-row compaction").
  `continuous`: transformers' continuous batching (`generate_batch`, paged attention). Slower on this
    2-core CPU (0.54x of `model.generate` in the issue's measurement; 0.81x of `static` in CPU time at
    bf16, 16 AlpacaEval prompts x 256 tokens); selectable, never the CPU default; its GPU speed was not
    measured here.

Sampling is the same in every batching: greedy at temperature 0; otherwise each row draws from exactly
softmax(logits / temperature), cut to top_p, with its own seeded generator (seed derived from
`SamplingParams.seed`, the prompt's index and the sample's index), so a row's sample does not depend on
which rows share its batch: `static` and `compact` give identical samples, and a server built on this
engine answers a seeded request the same however requests are batched. Nothing else shapes the
distribution: the sampling settings a checkpoint ships in `generation_config.json` (repetition_penalty,
top_k, min_p, ...) are ignored (`neutral_generation_config`). `continuous` samples with transformers' own
sampler (seeded once per call, not per row).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal

from harness.generation import (
    Batching,
    EngineSettings,
    GeneratedSample,
    Messages,
    ResolvedEngine,
    SamplingParams,
    default_batching,
    derive_seed,
    prompt_seeds_for,
    render_prompt,
    truncate_at_stop,
)


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
# Sampling and stopping, the same in every batching.
# ==================================================================================================


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
