"""Log-likelihood scoring with a causal LM: lm-eval's `loglikelihood` (the log-prob of a continuation
given its context, and whether it is the greedy one), on an in-process model.

Below both the generation engines (`HFGenerator.loglikelihood`; `OpenAIGenerator` splits pairs with
`encode_pair` so a server scores the same tokens) and the benchmarks that score answer options
(MMLU, TruthfulQA; `harness.evaluation.common.loglikelihoods` picks the context's engine).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def encode_pair(tokenizer: Any, context: str, continuation: str,
                add_special_tokens: bool = False) -> tuple[list[int], list[int]]:
    """Token ids of (context, continuation) split the way lm-eval's HF backend splits them.

    Trailing spaces of the context move into the continuation, the whole string is encoded once and
    the continuation is what follows the separately encoded context; so " A" after "Answer:" is scored
    as the tokenizer would produce it in running text. `add_special_tokens=True` encodes both with the
    tokenizer's special tokens (its BOS), as open-instruct's scoring calls did.
    """
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = tokenizer(context + continuation, add_special_tokens=add_special_tokens)["input_ids"]
    ctx_ids = tokenizer(context, add_special_tokens=add_special_tokens)["input_ids"]
    return ctx_ids, whole[len(ctx_ids):]


def continuation_logprobs(
    model: Any, tokenizer: Any, pairs: Sequence[tuple[str, str]], batch_size: int = 8,
    max_length: int = 2048, add_special_tokens: bool = False,
) -> list[tuple[float, bool]]:
    """(sum of log-probs of the continuation given the context, whether it is the greedy continuation)
    for each (context, continuation) pair; what lm-eval's `loglikelihood` returns.

    Pairs whose context is shared and whose continuations are single tokens (MMLU's " A".." D") cost one
    forward pass of the context together. `add_special_tokens`: see `encode_pair`.
    """
    encoded = [encode_pair(tokenizer, c, x, add_special_tokens) for c, x in pairs]
    for i, (_, cont_ids) in enumerate(encoded):
        if not cont_ids:
            raise ValueError(f"empty continuation after encoding pair {i}: {pairs[i][1]!r}")
    return encoded_logprobs(model, tokenizer, encoded, batch_size=batch_size, max_length=max_length)


def encoded_logprobs(model: Any, tokenizer: Any, encoded: Sequence[tuple[list[int], list[int]]],
                     batch_size: int = 8, max_length: int = 2048) -> list[tuple[float, bool]]:
    """`continuation_logprobs` on pairs already encoded as (context ids, continuation ids)."""
    import torch

    results: list[tuple[float, bool] | None] = [None] * len(encoded)
    # Each forward input is (token ids, [(pair index, position of first continuation logit, cont ids)]).
    jobs: dict[tuple[int, ...], list[tuple[int, list[int]]]] = {}
    singles: list[tuple[list[int], list[tuple[int, int, list[int]]]]] = []
    for i, (ctx_ids, cont_ids) in enumerate(encoded):
        if not cont_ids:
            raise ValueError(f"empty continuation ids for pair {i}")
        if len(cont_ids) == 1 and ctx_ids:
            jobs.setdefault(tuple(ctx_ids), []).append((i, cont_ids))
        else:
            full = (ctx_ids + cont_ids)[-(max_length + 1):]
            n_ctx = len(full) - len(cont_ids)
            singles.append((full[:-1], [(i, n_ctx - 1, cont_ids)]))
    forwards = [(list(k), [(i, len(k) - 1, c) for i, c in v]) for k, v in jobs.items()] + singles
    forwards.sort(key=lambda f: len(f[0]))
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(forwards), batch_size):
            batch = forwards[start:start + batch_size]
            # Left padding: every row's needed logits are its last positions, so only the last `keep`
            # positions go through the LM head (a [batch, seq, vocab] tensor would cost gigabytes).
            rows = [ids[-max_length:] for ids, _ in batch]
            width = max(len(ids) for ids in rows)
            keep = max(len(ids) - pos for (ids, targets) in batch for _, pos, _ in targets)
            input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, ids in enumerate(rows):
                input_ids[row, width - len(ids):] = torch.tensor(ids)
                mask[row, width - len(ids):] = 1
            positions = (mask.cumsum(dim=1) - 1).clamp(min=0)  # real tokens at 0..n-1, as unpadded
            inputs = dict(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                          position_ids=positions.to(device))
            with torch.no_grad():
                try:
                    logits = model(**inputs, logits_to_keep=keep).logits
                except TypeError:  # architectures without `logits_to_keep`
                    logits = model(**inputs).logits[:, -keep:]
            logprobs = torch.log_softmax(logits.float(), dim=-1).cpu()
            for row, (ids, targets) in enumerate(batch):
                for i, pos, cont in targets:
                    # `pos` indexes the untruncated row; count it from the end instead.
                    from_end = len(ids) - pos
                    span = logprobs[row, keep - from_end: keep - from_end + len(cont)]
                    cont_t = torch.tensor(cont)
                    total = float(span.gather(1, cont_t[:, None]).sum())
                    greedy = bool((span.argmax(dim=-1) == cont_t).all())
                    results[i] = (total, greedy)
    finally:
        model.train(was_training)
    return [r for r in results if r is not None]
