"""A cell's reward resolved to local things at execution time: one reward-model folder, an ensemble of
them, or a verifier. The plan side (`harness.planning.reward_plan`) turns a grid's `reward_model` block into
RM stages plus a plain-data config; `resolve` turns that config and the published inputs back into a
`RewardSource`, which gives what each consumer needs: the `TrainContext` fields of the online algorithms
and a `score(prompts, responses)` scorer for best-of-N and the over-optimisation monitor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.reward_ensemble import EnsembleSpec
from harness.rewards import VerifierReward


@dataclass(frozen=True)
class RewardSource:
    model_path: str | None = None
    ensemble: EnsembleSpec | None = None
    verifier: VerifierReward | None = None

    def __post_init__(self) -> None:
        if sum(x is not None for x in (self.model_path, self.ensemble, self.verifier)) != 1:
            raise ValueError("a reward source is exactly one of a reward model, an ensemble or a verifier")

    @property
    def label(self) -> str:
        if self.verifier is not None:
            return f"verifier:{self.verifier.__name__}"
        if self.ensemble is not None:
            return f"ensemble:{self.ensemble.combine}x{len(self.ensemble.paths)}"
        return "reward_model"

    def train_fields(self) -> dict[str, Any]:
        """The `TrainContext` fields that carry this reward."""
        if self.verifier is not None:
            return {"reward_function": self.verifier}
        if self.ensemble is not None:
            return {"reward_ensemble": self.ensemble}
        return {"reward_model_path": self.model_path}

    def fingerprint(self) -> dict[str, Any]:
        """What a score of this reward depends on (an eval task's key): the reward model's content, each
        ensemble member's and the combination, or the verifier's name, format weight and code."""
        from harness.cache import code_fingerprint, model_fingerprint

        if self.verifier is not None:
            return {"verifier": self.verifier.verifier.name, "format_weight": self.verifier.format_weight,
                    "code": code_fingerprint("harness.rewards", ("harness.rewards",))}
        if self.ensemble is not None:
            return {"ensemble": [model_fingerprint(p) for p in self.ensemble.paths],
                    "combine": self.ensemble.combine, "uwo_lambda": self.ensemble.uwo_lambda}
        assert self.model_path is not None
        return {"model": model_fingerprint(self.model_path)}

    def scorer(self, device: str | None = None, batch_size: int = 16) -> Any:
        """An object with `score(prompts, responses) -> list[float]` (responses: text or messages)."""
        if self.verifier is not None:
            return VerifierScorer(self.verifier)
        if self.ensemble is not None:
            from harness.reward_ensemble import EnsembleScorer

            return EnsembleScorer(self.ensemble, device=device, batch_size=batch_size)
        from harness.reward_model import RewardScorer

        assert self.model_path is not None
        return RewardScorer(self.model_path, device=device, batch_size=batch_size)


class VerifierScorer:
    """A verifier that reads no per-prompt column, as a scorer (best-of-N, the monitor's gold signal);
    `columns` are passed through when the caller has them (dict of column -> list)."""

    def __init__(self, reward: VerifierReward):
        self.reward = reward

    def score(self, prompts: Sequence[Any], responses: Sequence[Any],
              columns: dict[str, list[Any]] | None = None) -> list[float]:
        missing = [c for c in self.reward.columns if c not in (columns or {})]
        if missing:
            raise ValueError(f"verifier {self.reward.__name__!r} needs the prompt columns {missing}, which this "
                             "caller does not have")
        completions = [r if isinstance(r, list) else [{"role": "assistant", "content": str(r)}] for r in responses]
        return [float(v) for v in self.reward(prompts=list(prompts), completions=completions, **(columns or {}))]


def resolve(config: dict[str, Any] | None, inputs: dict[str, Path], role: str = "reward_model") -> RewardSource | None:
    """The reward of a stage from its planned config (`RewardPlan.config`) and its published inputs:
    `<role>` (one trained RM) or `<role>.<i>` (trained ensemble members)."""
    from harness.models import resolve_model

    if role in inputs:
        return RewardSource(model_path=str(inputs[role] / "model"))
    if not config:
        return None
    if "path" in config:
        return RewardSource(model_path=resolve_model(config["path"]))
    if "verifier" in config:
        return RewardSource(verifier=VerifierReward(config["verifier"], config.get("format_weight", 0.0)))
    paths = tuple(str(inputs[m["input"]] / "model") if "input" in m else resolve_model(m["path"])
                  for m in config["ensemble"])
    return RewardSource(ensemble=EnsembleSpec(paths, config["combine"], config.get("uwo_lambda", 0.0)))
