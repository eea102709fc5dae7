"""DPO-family losses that differ from DPO only in the per-pair loss: IPO, hinge (SLiC/RSO) and robust DPO.

They run through the same `train_dpo` (TRL `DPOTrainer`, one `loss_type` each), so the training recipe
is DPO's (Ivison et al. 2024, App. F.1: 3 epochs, lr 5e-7, 10% warm-up then linear decay, batch 32)
and an algorithm sweep isolates the loss. Each variant's own coefficient is documented where it is set.
With Δ = log π(y_c|x)/π_ref(y_c|x) − log π(y_r|x)/π_ref(y_r|x):

- `ipo` (Azar et al., 2023): (Δ̄ − 1/(2τ))², Δ̄ being the per-token average (TRL normalises IPO by length).
- `dpo-hinge` (SLiC-HF, Zhao et al., 2023; RSO, Liu et al., 2024): max(0, 1 − βΔ).
- `dpo-robust` (Chowdhury et al., 2024): DPO debiased for labels flipped with probability ε.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from harness.algorithms.base import AlgorithmSpec, register
from harness.algorithms.dpo import DPOAlgoConfig, DPOLossType, train_dpo
from harness.config_fields import PositiveFloat, Problem, requirement

FlipRate = Annotated[float, requirement(lambda eps: 0 < eps < 0.5, "(flip rate ε) must be in (0, 0.5)")]


class _FixedLoss:
    """Mixin check: a variant's `loss_type` is its identity; changing it would silently run another method."""

    expected_loss: str

    def cross_field_problems(self) -> list[Problem]:
        if self.loss_type != self.expected_loss:  # type: ignore[attr-defined]
            return [("loss_type", f"loss_type is fixed to {self.expected_loss!r} for this algorithm; "
                     f"use algorithm `dpo` with loss_type={self.loss_type!r} instead")]  # type: ignore[attr-defined]
        return super().cross_field_problems()  # type: ignore[misc]


@dataclass
class IPOConfig(_FixedLoss, DPOAlgoConfig):
    # τ of Azar et al. (2023) is TRL's `beta` for IPO. 0.1 = the value of the KTO authors' HALOs IPO config
    # (ContextualAI/HALOs config/loss/ipo.yaml) and TRL's default; the IPO paper itself has no LLM setting.
    beta: PositiveFloat = 0.1
    loss_type: DPOLossType = "ipo"
    expected_loss = "ipo"


@dataclass
class HingeConfig(_FixedLoss, DPOAlgoConfig):
    # TRL's hinge is max(0, 1 − βΔ): β is the inverse margin (1/δ of SLiC). 0.1 keeps DPO's β (App. F.1),
    # so hinge vs sigmoid compares loss shapes at the same scale of Δ.
    beta: PositiveFloat = 0.1
    loss_type: DPOLossType = "hinge"
    expected_loss = "hinge"


@dataclass
class RobustDPOConfig(_FixedLoss, DPOAlgoConfig):
    # ε = assumed label-flip rate; 0.1 is the value Chowdhury et al. (2024) recommend (as quoted in TRL's
    # DPOConfig docs). Must lie in (0, 0.5): at 0 the loss is plain DPO, at 0.5 it divides by zero.
    label_smoothing: FlipRate = 0.1
    loss_type: DPOLossType = "robust"
    expected_loss = "robust"


_F1 = "training recipe: Ivison et al. 2024 App. F.1 (DPO)"

register(AlgorithmSpec(
    name="ipo",
    config_cls=IPOConfig,
    data="pairs",
    needs_reference=True,
    needs_reward=False,
    train=train_dpo,
    reference_logps=True,
    kl_coefficient_field="beta",  # IPO: τ, the same pull towards the reference
    defaults_source=f"{_F1}; tau 0.1 (HALOs ipo.yaml, TRL default; Azar et al. 2023)",
    description="Identity Preference Optimisation: squared loss on the length-averaged log-ratio margin",
))

register(AlgorithmSpec(
    name="dpo-hinge",
    config_cls=HingeConfig,
    data="pairs",
    needs_reference=True,
    needs_reward=False,
    train=train_dpo,
    reference_logps=True,
    kl_coefficient_field="beta",
    defaults_source=f"{_F1}; beta 0.1 = DPO's (hinge margin 1/beta; SLiC-HF / RSO loss)",
    description="Hinge loss on the DPO log-ratio margin (SLiC-HF, RSO)",
))

register(AlgorithmSpec(
    name="dpo-robust",
    config_cls=RobustDPOConfig,
    data="pairs",
    needs_reference=True,
    needs_reward=False,
    train=train_dpo,
    reference_logps=True,
    kl_coefficient_field="beta",
    defaults_source=f"{_F1}; flip rate eps 0.1 (Chowdhury et al. 2024, as quoted in TRL docs)",
    description="Provably robust DPO: unbiased DPO loss under label-flip noise eps",
))
