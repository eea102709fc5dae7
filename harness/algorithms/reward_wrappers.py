"""Reward callables in TRL `reward_funcs` style, shared by the online algorithms (GRPO, RLOO, Online DPO).

- `build_reward`: the cell's reward source as one callable: a trained reward model (scored through
  `harness.reward_model.RewardScorer`, the one place that formats RM inputs) or a verifiable function.
- `with_eos_trick`: the paper's "EOS trick" (Ivison et al. 2024, App. E.2): a completion that stopped at
  the token limit instead of emitting EOS gets a fixed, large negative reward (-10.0). TRL's GRPO and
  RLOO have no `missing_eos_penalty`, and Online DPO's subtracts rather than replaces, so all three use
  this wrapper and behave identically.
- `SampleStats`: records what the reward saw in the last batch (raw reward mean, completion length, EOS
  rate) so trainers that do not log those (Online DPO logs no length) still produce the common curves.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from typing import Any, Literal, get_args

RewardFn = Callable[..., list[float]]


def finished_with_eos(ids: Sequence[int], eos_ids: set[int]) -> bool:
    """True when the completion contains an EOS token. GRPO/RLOO cut ids after the first EOS; Online DPO
    pads them (pad may equal EOS), so "contains" rather than "ends with" is the test that fits all three."""
    return any(int(t) in eos_ids for t in ids)


class SampleStats:
    """What the reward function saw in its latest calls, drained into the step's log row."""

    def __init__(self) -> None:
        self._raw: list[float] = []
        self._lengths: list[int] = []
        self._eos: list[bool] = []

    def record(self, raw: Sequence[float], completion_ids: Sequence[Sequence[int]] | None, eos_ids: set[int]) -> None:
        self._raw.extend(float(r) for r in raw)
        if completion_ids is not None:
            for ids in completion_ids:
                # Length up to and including the first EOS (Online DPO's ids carry padding after it).
                length = next((i + 1 for i, t in enumerate(ids) if int(t) in eos_ids), len(ids))
                self._lengths.append(length)
                self._eos.append(finished_with_eos(ids, eos_ids))

    def drain(self) -> dict[str, float]:
        out: dict[str, float] = {}
        if self._raw:
            out["train/reward_raw_mean"] = statistics.fmean(self._raw)
        if self._lengths:
            out["train/response_length"] = statistics.fmean(self._lengths)
            out["train/eos_rate"] = statistics.fmean(float(e) for e in self._eos)
        self._raw, self._lengths, self._eos = [], [], []
        return out


def with_eos_trick(
    reward_fn: RewardFn, eos_ids: set[int], penalty_reward: float | None, stats: SampleStats | None = None,
) -> RewardFn:
    """Wrap `reward_fn`: completions without EOS get `penalty_reward` (None = no trick, only recording)."""

    def wrapped(prompts: Sequence[Any], completions: Sequence[Any], completion_ids: Sequence[Sequence[int]] | None = None,
                **kwargs: Any) -> list[float]:
        raw = list(reward_fn(prompts=prompts, completions=completions, completion_ids=completion_ids, **kwargs))
        if stats is not None:
            stats.record(raw, completion_ids, eos_ids)
        if penalty_reward is None or completion_ids is None:
            return raw
        return [r if finished_with_eos(ids, eos_ids) else penalty_reward for r, ids in zip(raw, completion_ids, strict=True)]

    wrapped.__name__ = getattr(reward_fn, "__name__", type(reward_fn).__name__)
    return wrapped


def eos_token_ids(tokenizer: Any, model: Any | None = None) -> set[int]:
    """EOS ids from the tokenizer and the model's generation config (chat models often stop on several)."""
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    gen = getattr(model, "generation_config", None) if model is not None else None
    extra = getattr(gen, "eos_token_id", None) if gen is not None else None
    if isinstance(extra, int):
        ids.add(extra)
    elif isinstance(extra, (list, tuple)):
        ids.update(int(x) for x in extra)
    return ids


def check_reward_source(ctx: Any) -> None:
    """Exactly one reward source, and training rows with every column a verifier reads: raised before any
    model is loaded, naming what is missing (not a KeyError inside the trainer's first reward call)."""
    given = [name for name in ("reward_model_path", "reward_function", "reward_ensemble")
             if getattr(ctx, name) is not None]
    if len(given) > 1:
        raise ValueError(f"give exactly one reward source (a reward model, a reward function or an ensemble), "
                         f"not both: got {', '.join(given)}")
    if not given:
        raise ValueError("this algorithm needs a reward: exactly one reward source (`reward_model`: dataset, path, "
                         "verifier or ensemble) must be set in the cell")
    if ctx.reward_function is not None:
        from harness.rewards import missing_columns

        missing = missing_columns(ctx.reward_function, ctx.train_rows)
        if missing:
            first = ctx.train_rows[0] if ctx.train_rows else {}
            raise ValueError(f"reward {getattr(ctx.reward_function, '__name__', 'function')!r} reads the prompt "
                             f"columns {missing}, which the training rows lack (the first row has "
                             f"{sorted(first)}): train on prompts that carry them (see harness/rewards.py)")


# Where the EOS trick applies (the config field `eos_trick` of the online algorithms).
EosTrickMode = Literal["reward_model", "always", "never"]
EOS_TRICK_MODES: tuple[str, ...] = get_args(EosTrickMode)


def build_reward(
    ctx: Any, tokenizer: Any, model: Any, eos_trick: str, eos_penalty_reward: float,
) -> tuple[RewardFn, SampleStats]:
    """The cell's reward as one TRL reward callable, with the EOS trick applied per `eos_trick`:
    "reward_model" (default; the paper applies it to RM scores), "always", or "never".

    A verifiable function and a reward model are mutually exclusive: plan-time validation asks for one,
    and silently preferring either would make the run mean something other than its config says.
    """
    if eos_trick not in EOS_TRICK_MODES:
        raise ValueError(f"eos_trick must be one of {EOS_TRICK_MODES}, got {eos_trick!r}")
    check_reward_source(ctx)
    if ctx.reward_model_path is not None or ctx.reward_ensemble is not None:
        from harness.models import default_device

        if ctx.reward_ensemble is not None:
            from harness.reward_ensemble import EnsembleScorer

            base = EnsembleScorer(ctx.reward_ensemble, device=default_device()).as_reward_function()
            base.__name__ = f"ensemble_{ctx.reward_ensemble.combine}"
        else:
            from harness.reward_model import RewardScorer

            base = RewardScorer(ctx.reward_model_path, device=default_device()).as_reward_function()
            base.__name__ = "reward_model"
        apply_trick = eos_trick != "never"  # a learned reward, as the paper's RM
    else:
        base = ctx.reward_function
        apply_trick = eos_trick == "always"
    stats = SampleStats()
    fn = with_eos_trick(base, eos_token_ids(tokenizer, model), eos_penalty_reward if apply_trick else None, stats)
    return fn, stats
