"""The `paper` setting's shared rules: what allenai/open-instruct's 2024 `eval/` scripts did for every task.

The paper's numbers come from open-instruct at `ea3467dbb` (main, June 2024; every task but the coding
ones) and `b6737f623` (branch `mbpp_humaneval_plus`, HumanEval+ and MBPP+); `docs/open-instruct-2024-eval.md`
compares them with the `harness` setting and `tests/fixtures/open_instruct_2024/` holds their prompts
rendered for real rows, which the `paper` setting of each task is tested against. Each task module keeps
its own paper choices (subset, prompt, decoding, judge); this module holds what they share:

- The chat format is hard-coded, not the model's template: `<|user|>\\n{user}\\n<|assistant|>\\n`
  (`eval/templates.py` `create_prompt_with_tulu_chat_format`, called with `add_bos=False`), and an answer
  prefix ("Answer:", "A:", ...) is appended with a space unless the prompt ends in whitespace. For the
  paper's Tulu 2 models this is their own format; any other model is prompted in it too, as open-instruct
  did (a SmolLM2 evaluated in the `paper` setting is not prompted in its own chat format).
- BOS: not in the prompt text; the tokenizer adds it (open-instruct's HF calls keep
  `add_special_tokens=True`, vLLM encodes text prompts with the tokenizer's defaults), so a Llama-2 / Tulu-2
  model sees `<s>` and a tokenizer that adds no BOS (SmolLM2's) sees none. The rule is keyed on the
  tokenizer itself, not on a list of model names. Scoring paths here (MMLU, TruthfulQA's judges) encode
  with `add_special_tokens=True` (in-process, whatever the engine); generation prompts get the BOS written
  in front, since the engines encode without special tokens (`generation_prompts`), each checked to
  encode to exactly the ids the tokenizer gives with its special tokens.
- Random subsets: every `run_eval.py` starts with `random.seed(42)`; GSM8K draws 200 questions, BBH 40 per
  task and ToxiGen shuffles each group's file with that one generator. BBH and ToxiGen draw file after
  file in `glob.glob` order, which is the file system's: the paper's exact draws cannot be rebuilt, and
  the sorted file order is used here (`seeded_draws`), as in the fixtures.
- Not reproduced: MMLU and TruthfulQA ran the evaluated model in 8-bit (`--load_in_8bit`); it runs in
  full precision here.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

OPEN_INSTRUCT = "allenai/open-instruct@ea3467dbb"  # main, 2024-06-03 .. 2024-07-05
OPEN_INSTRUCT_CODING = "allenai/open-instruct@b6737f623"  # branch mbpp_humaneval_plus (PR #154)
SEED = 42  # `random.seed(42)` at the start of every run_eval.py
CHAT_FORMAT = "open-instruct's Tulu chat format <|user|>\\n{user}\\n<|assistant|>\\n (not the model's template)"
BOS_RULE = "BOS as the model's tokenizer adds it (Llama-2/Tulu-2: <s>; SmolLM2: none)"
INT8_NOTE = "open-instruct ran the evaluated model in 8-bit (--load_in_8bit); full precision here"


def tulu_chat(user: str, assistant_prefix: str = "") -> str:
    """One user turn in open-instruct's Tulu chat format, the assistant turn started with `assistant_prefix`
    (a space in between unless the prompt ends in whitespace, as the scripts append it)."""
    prompt = "<|user|>\n" + user + "\n<|assistant|>\n"
    if assistant_prefix:
        prompt += assistant_prefix if prompt[-1] in ("\n", " ") else " " + assistant_prefix
    return prompt


def sample_indices(n: int, k: int) -> list[int]:
    """`random.seed(42); random.sample(rows, k)` as row indices, in the order drawn (all rows when k >= n:
    the scripts only sample when there are more)."""
    if n <= k:
        return list(range(n))
    return random.Random(SEED).sample(range(n), k)


def seeded_draws(sizes: dict[str, int], draw: Callable[[random.Random, int], list[int]]) -> dict[str, list[int]]:
    """One `random.Random(42)` drawn file after file, in sorted file order (open-instruct's order was
    `glob.glob`'s, the file system's): {file: indices `draw(rng, size)` picked}."""
    rng = random.Random(SEED)
    return {name: draw(rng, sizes[name]) for name in sorted(sizes)}


def tokenizer_adds_bos(tokenizer: Any) -> bool:
    """Whether encoding with the tokenizer's special tokens puts its BOS first (what open-instruct's calls
    did): true for Llama-2 / Tulu-2 tokenizers, false for SmolLM2's."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return False
    ids = tokenizer("x", add_special_tokens=True)["input_ids"]
    return bool(ids) and ids[0] == bos and tokenizer("x", add_special_tokens=False)["input_ids"][:1] != [bos]


def _engine(generator: Any) -> Any:
    """The engine under wrappers such as best-of-N's (`.base`)."""
    while hasattr(generator, "base"):
        generator = generator.base
    return generator


def generation_prompts(generator: Any, texts: Sequence[str]) -> list[str]:
    """Prompts for `generator.generate(..., chat=False)` that reach the model as open-instruct's tokenizer
    encoded them: with the tokenizer's BOS when it adds one.

    The engines encode a prompt without special tokens (the in-process engine, and the OpenAI-compatible
    one, which sends the ids it encodes), so the BOS is written into the text, in the form that encodes to
    exactly the ids of `tokenizer(text, add_special_tokens=True)`: its token followed directly by the text,
    or by a space for sentencepiece-style tokenizers that mark a word start only at the start of the
    string (a Llama tokenizer read with `legacy=False` turns "<s>" + " <|user|>" into the ids of "<|user|>"
    at the start). Every prompt is checked; a tokenizer neither form reproduces fails here, before
    generating. An OpenAI-compatible engine set to send text (`tokenized_prompts: false`) leaves the
    encoding to the server, which adds the special tokens itself (vLLM's default, as for open-instruct's
    vLLM runs; not checked here): the texts go unchanged."""
    tokenizer = generator.tokenizer
    if getattr(_engine(generator), "tokenized_prompts", True) is False or not texts or not tokenizer_adds_bos(tokenizer):
        return list(texts)

    def encodes_as_open_instruct(prefix: str, text: str) -> bool:
        return (tokenizer(prefix + text, add_special_tokens=False)["input_ids"]
                == tokenizer(text, add_special_tokens=True)["input_ids"])

    bos = tokenizer.bos_token
    prefix = next((p for p in (bos, bos + " ") if encodes_as_open_instruct(p, texts[0])), None)
    if prefix is None or not all(encodes_as_open_instruct(prefix, t) for t in texts[1:]):
        raise ValueError(
            f"paper setting: tokenizer {getattr(tokenizer, 'name_or_path', '')!r} adds the BOS token {bos!r}, and no "
            "text in front of the prompt makes the engine (which encodes without special tokens) see the same "
            "ids as the tokenizer's own encoding; use an OpenAI-compatible server fed text "
            "(engine.tokenized_prompts: false), which adds the special tokens itself")
    return [prefix + t for t in texts]
