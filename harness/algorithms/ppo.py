"""PPO for language models, as in Ivison et al. (2024), App. F.2 / G, in one file (CleanRL spirit).

TRL 1.16 has no `PPOTrainer` (removed in PR #7020), and the paper's PPO differs from most open
implementations anyway (Table 10), so the project owns it. Read top to bottom:

  config (Table 9 defaults, Table 10/11 switches)  ->  math (Eq. 4, GAE, whitening, clipped losses,
  KL controllers; pure tensor functions, unit-tested by hand)  ->  model plumbing (log-probs, values)
  ->  `train_ppo`: rollout -> score -> forward passes -> advantages -> clipped updates -> log.

The paper's equations (App. F.2):

  Eq. 4  token reward   r_t = -beta * (log pi_theta(y_t|x,y_<t) - log pi_ref(y_t|x,y_<t))   for t < |y|
                        r_t = -beta * (...)  +  r(x, y)                                     for t = |y|
         return         G_t = sum_{t'>=t} gamma^(t'-t) r_t'      advantage  A_t = G_t - V_phi(x, y_<t)
                        (in practice GAE, footnote 15: A_t = sum_l (gamma*lambda)^l delta_{t+l},
                         delta_t = r_t + gamma V(s_{t+1}) - V(s_t); returns = A_t + V(s_t))
  Eq. 5  policy loss    L_pi = -E[ min(nu_t A_t, clip(nu_t, 1-eps, 1+eps) A_t) ],
                        nu_t = pi_theta(y_t|.) / pi_old(y_t|.)   (footnote 16). Eq. 5 prints the
                        denominator as pi_ref; every implementation Table 10 compares (and the
                        paper's own setting, where forward passes give pi_old) uses the policy the
                        log-probs were taken from; pi_ref enters only through Eq. 4's KL penalty.
  Eq. 6  value loss     L_V = E[ 1/2 (V_phi(x, y_<t) - G_t)^2 ], clipped around the old values by eps
         joint          L_PPO = L_pi + alpha * L_V

Implementation choices of the paper (App. F.2, Table 10 "Ours"), each a config switch here:
value model initialised from the reward model; EOS trick (truncated completions get reward -10);
no reward normalisation; no reward whitening; advantage whitening; fixed KL coefficient (no adaptive
controller); no KL clamping; 1 rollout per prompt; forward passes at minibatch level (App. G: log-probs
and values recomputed per minibatch with the current models, unlike most implementations).

One deliberate deviation from the authors' code, a switch like Table 10's: `logprobs_at_sampling_temperature`.
Rollouts are sampled at tau = 0.7 (Table 9). By default (True) every log-prob (policy, old policy,
reference) is log_softmax(logits / tau), the distribution the tokens were drawn from, as TRL's PPO and
AlpacaFarm do. The authors' EasyLM takes them at tau = 1 (False here): `liujch1998/EasyLM` branch
`ppo3.2` (62e217a), `EasyLM/models/llama/llama_train_ppo.py`, samples at FLAGS.temperature (l. 196) but
takes `log_softmax` of the raw logits for the policy, old policy and reference (ll. 133-134, 262-268). This is not a no-op: it changes Eq. 4's KL penalty, the policy ratio of
Eq. 5 and the gradient scale (d log pi / d logits is divided by tau). On the tiny random Llama, 6 updates
of 8 rollouts with the same seed: train/kl 0.90 (True) vs 0.71 (False) nats at the last update, policy
gradient norms 2.27 vs 1.59 (ratio 1/tau) at the first. Set False to reproduce EasyLM;
`ablations/table10_ppo_switches.yaml` runs both.

Sampling is from exactly logits/tau: no top-k / top-p, and none of the sampling settings a checkpoint
ships in `generation_config.json` (repetition_penalty, min_p, no_repeat_ngram_size, ...), which
`harness.hf_engine` ignores, so the tokens come from the distribution Eq. 4-5 score. Dropout is 0
(Table 9) wherever the model applies it, `nn.Dropout` modules and functional dropout such as Llama's
`attention_dropout` alike (`disable_dropout`, verified by `check_no_dropout` before training).

Generation goes through `harness.hf_engine.HFGenerator.generate_samples`, the engine every generation
task uses (`ctx.engine`, default `EngineSettings()`: the detected fastest batching and precision for the
device; rollouts need the sampled token ids and fresh weights after every update, so the engine must be
in-process, kind `hf`). Policy and value model keep fp32 master weights; where the engine's precision
is bf16 (CUDA, and CPUs with AMX/AVX-512 BF16) rollouts and every forward run under bf16 autocast and the
frozen reference model is held in bf16; `engine: {dtype: float32}` gives the fp32 path.

Data-parallel under `accelerate launch --num_processes N` (docs/scale-out.md): policy + value model
in DDP, reference and reward model replicated; each rank samples B/N of every prompt batch and
b/N of every minibatch (B, b stay global), whitening and the logged statistics are over all ranks,
and the main process alone writes. With one process every number is what it was without accelerate.
"""

from __future__ import annotations

import json
import math
import random
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import torch
import torch.nn.functional as F
from pydantic import Field

from harness import lora, resume
from harness.algorithms.base import AlgorithmSpec, RolloutShape, TrainContext, register
from harness.config_fields import (
    CheckedConfig,
    FiniteFloat,
    MaxSteps,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Probability,
    Problem,
    WarmupRatio,
)
from harness.lora import PeftField

# AdamW's moment decay rates: in [0, 1) (torch rejects 1 and beyond).
AdamBeta = Annotated[float, Field(ge=0, lt=1)]

Messages = list[dict[str, str]]
T = TypeVar("T")

# The loop state of a resume checkpoint (harness.resume): models, optimizer, scheduler, KL controller, RNGs, data position.
PPO_STATE_FILE = "ppo_state.pt"


# ==================================================================================================
# Config: Table 9 defaults; Table 10 and Table 11 implementation choices as switches.
# ==================================================================================================


@dataclass
class PPOConfig(CheckedConfig):
    OMITTED_AT_DEFAULT = ("peft",)  # added later: left out of the stage key while null (older keys unchanged)

    # --- Table 9, TRAINING ---
    prompt_batch_size: PositiveInt = 64  # B: prompts per rollout batch
    rollouts_per_prompt: PositiveInt = 1  # r: completions sampled per prompt (Table 10 "multiple rollouts": off)
    minibatch_size: PositiveInt = 64  # b: rollouts per forward-backward pass
    gradient_accumulation_steps: PositiveInt = 1  # g: minibatches per optimizer step
    num_epochs: NonNegativeFloat = 1.0  # E: passes over the prompt set (App. G: >1 epoch did not help)
    inner_epochs: PositiveInt = 1  # e: passes over each rollout batch (App. G: >1 destabilises)
    max_prompt_length: PositiveInt = 1024  # L_p: longer prompts are dropped (counted and logged)
    max_new_tokens: PositiveInt = 1024  # L_c: completion budget; hitting it = truncated completion
    max_steps: MaxSteps = -1  # rollout batches to run; -1 = E epochs over the prompts (small grids set it)
    # --- Table 9, RL ---
    temperature: PositiveFloat = 0.7  # tau: rollout sampling temperature (PPO samples its rollouts)
    kl_coef: NonNegativeFloat = 0.05  # beta (0.0325 for the paper's 70B reward models)
    gamma: Probability = 1.0  # discount
    lam: Probability = 0.95  # GAE lambda
    cliprange: PositiveFloat = 0.2  # epsilon, policy ratio clipping
    cliprange_value: PositiveFloat = 0.2  # epsilon, value clipping (Table 9 uses the same epsilon for both)
    vf_coef: NonNegativeFloat = 0.1  # alpha, value loss coefficient
    # Table 9's dropout 0.0 is always applied (dropout would make the old/new log-probs disagree); every
    # dropout probability of the policy and value model is zeroed (`disable_dropout`), not a switch.
    # --- Table 9, OPTIMIZATION (AdamW) ---
    learning_rate: PositiveFloat = 1e-6  # eta
    warmup_ratio: WarmupRatio = 0.1  # linear warm-up over the first 10% of optimizer steps
    lr_decay: Literal["constant", "linear"] = "constant"  # after warm-up: constant (App. F.2) or linear to 0
    adam_beta1: AdamBeta = 0.9
    adam_beta2: AdamBeta = 0.95
    adam_eps: PositiveFloat = 1e-5
    weight_decay: NonNegativeFloat = 0.0
    max_grad_norm: PositiveFloat = 1.0  # clipped per model (policy, value), as two separately optimised models
    # --- Table 10 switches (paper's choice is the default) ---
    # "reward": value model = copy of the RM (InstructGPT); "policy": SFT + new head
    value_init: Literal["reward", "policy"] = "reward"
    eos_trick: bool = True  # completions that never emit EOS get `eos_penalty` instead of the RM score
    eos_penalty: FiniteFloat = -10.0
    reward_normalization: bool = False  # standardise scores with a gain/bias fixed from the first batch
    reward_whitening: bool = False  # scale token rewards by their batch std (mean kept: shift_mean=False)
    advantage_whitening: bool = True  # standardise advantages over the (mini)batch
    adaptive_kl: bool = False  # Ziegler et al. (2019) proportional controller instead of a fixed beta
    adaptive_kl_target: PositiveFloat = 6.0  # target KL (nats per sequence) for the adaptive controller
    adaptive_kl_horizon: PositiveInt = 10000  # controller horizon, in rollouts
    kl_clamp: bool = False  # clamp per-token KL at >= 0 in the reward (AlpacaFarm)
    # --- Table 11 / App. G ---
    forward_at_minibatch_level: bool = True  # log-probs/values from the current models, per minibatch
    # --- Deliberate deviation from the authors' code, a Table-10-style switch (see the module docstring) ---
    logprobs_at_sampling_temperature: bool = True  # log pi = log_softmax(logits/tau); False: at tau = 1 (EasyLM)
    # --- LoRA / QLoRA (harness/lora.py): adapters on the policy and the value model's backbone (value head
    # fully trainable), reference = the policy with its adapter disabled; null = full fine-tuning ---
    peft: PeftField = None
    # --- engineering (no effect on the maths) ---
    generation_batch_size: PositiveInt = 64
    log_samples_per_step: NonNegativeInt = 4  # rows per step written to artifacts/ppo_samples.jsonl

    def cross_field_problems(self) -> list[Problem]:
        problems: list[Problem] = []
        rollouts = self.prompt_batch_size * self.rollouts_per_prompt
        if rollouts % self.minibatch_size:
            problems.append(("minibatch_size", f"minibatch_size ({self.minibatch_size}) must divide "
                             f"prompt_batch_size*rollouts_per_prompt ({rollouts}): prompt_batch_size*rollouts_per_prompt "
                             f"must be a multiple of minibatch_size"))
        elif (rollouts // self.minibatch_size) % self.gradient_accumulation_steps:
            problems.append(("gradient_accumulation_steps",
                             f"gradient_accumulation_steps ({self.gradient_accumulation_steps}) must divide the "
                             f"{rollouts // self.minibatch_size} minibatches per rollout batch"))
        if self.num_epochs <= 0 and self.max_steps <= 0:
            problems.append(("num_epochs", "num_epochs is 0 and max_steps is -1: set num_epochs > 0 or max_steps > 0"))
        if self.peft is not None and self.peft["dropout"]:
            problems.append(("peft", f"peft.dropout must be 0 for PPO (got {self.peft['dropout']}): PPO trains without "
                             "dropout (Table 9), or the old and new log-probs of Eq. 5 would disagree"))
        return problems


def check_world_size(cfg: PPOConfig, world_size: int) -> list[str]:
    """Problems with running `cfg` data-parallel on `world_size` ranks (empty when it can run).

    prompt_batch_size (B) and minibatch_size (b) are global, as in Table 9: each rank samples B/N
    prompts and takes b/N of its rollouts per forward-backward pass, and DDP averages the N ranks'
    gradients, so one optimizer step still sees b rollouts and the schedule (B*r/b minibatches per
    batch) is the one-process schedule whatever N is. Both must therefore split evenly over N."""
    if world_size < 1:
        return [f"the number of processes must be >= 1, got {world_size}"]
    return [f"{name} ({getattr(cfg, name)}) must be a multiple of the number of data-parallel processes "
            f"({world_size}): it is global and every rank takes {name} / {world_size}"
            for name in ("prompt_batch_size", "minibatch_size") if getattr(cfg, name) % world_size]


# ==================================================================================================
# The maths: pure functions on tensors (shape [batch, response_len]; `mask` = 1 on response tokens).
# ==================================================================================================


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def masked_var(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Unbiased (Bessel-corrected) variance over the masked entries."""
    n = mask.sum()
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    return var * n / (n - 1).clamp(min=1)


SumAcrossRanks = Callable[[torch.Tensor], torch.Tensor]


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum of `t` over every rank of the default torch.distributed group (a new tensor; `t` is kept)."""
    import torch.distributed as dist

    out = t.clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def pooled_mean_var(
    x: torch.Tensor, mask: torch.Tensor, sum_across_ranks: SumAcrossRanks | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and unbiased variance over the masked entries of `x` on *all* ranks, as if every rank's
    tensor were concatenated into one batch. Pooled moments (two passes, as masked_mean/masked_var):

        N = sum_r sum_t m_rt,   mu = (1/N) sum_r sum_t m_rt x_rt,
        sigma^2 = 1/(N-1) sum_r sum_t m_rt (x_rt - mu)^2

    Two all-reduces (count and sum, then squared deviations from the pooled mean) rather than one of
    (N, sum x, sum x^2): the same arithmetic as one process, without E[x^2] - E[x]^2's cancellation.
    Without `sum_across_ranks` (one process) it is exactly masked_mean and masked_var."""
    if sum_across_ranks is None:
        return masked_mean(x, mask), masked_var(x, mask)
    n, total = sum_across_ranks(torch.stack([mask.sum().to(x.dtype), (x * mask).sum()]))
    mean = total / n.clamp(min=1)
    squared_deviations = sum_across_ranks(((x - mean) ** 2 * mask).sum())
    return mean, squared_deviations / (n - 1).clamp(min=1)


def whiten(
    x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8,
    sum_across_ranks: SumAcrossRanks | None = None,
) -> torch.Tensor:
    """Standardise over masked entries. shift_mean=False only rescales: whitening *rewards* must not
    move their mean, or it would hand out a constant per-token bonus/penalty that pays for length.

    Data-parallel: x_hat = (x - mu) / sqrt(sigma^2 + eps) with the pooled mu, sigma^2 of *every* rank's
    (mini)batch (`pooled_mean_var`), so a batch split over N ranks is whitened exactly as the same batch
    on one process; per-rank statistics would make the advantages depend on the number of ranks."""
    mean, var = pooled_mean_var(x, mask, sum_across_ranks)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * mask


def token_rewards(
    scores: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    mask: torch.Tensor,
    kl_coef: float,
    kl_clamp: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 4: r_t = -beta * (log pi - log pi_ref) on every response token, plus the sequence reward on
    the last one. Returns (rewards, per-token KL as used in the reward). `scores` already carries the
    EOS trick / normalisation. kl_clamp (AlpacaFarm) floors each token's KL estimate at 0."""
    kl = (logprobs - ref_logprobs) * mask
    if kl_clamp:
        kl = kl.clamp(min=0.0)
    rewards = -kl_coef * kl
    last = (mask.sum(dim=1).long() - 1).clamp(min=0)  # index of y_|y|
    rewards[torch.arange(len(scores)), last] += scores
    return rewards * mask, kl


def apply_eos_trick(scores: torch.Tensor, finished: torch.Tensor, penalty: float) -> torch.Tensor:
    """EOS trick (App. F.2): a completion cut off at max_new_tokens gets `penalty` instead of its score."""
    return torch.where(finished, scores, torch.full_like(scores, penalty))


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (footnote 15), vectorised over the batch, right to left.
    Tokens past the end carry zero reward and value, so V(s_{|y|+1}) = 0 (episode end)."""
    rewards, values = rewards * mask, values * mask
    advantages = torch.zeros_like(rewards)
    last_gae = torch.zeros_like(rewards[:, 0])
    length = rewards.shape[1]
    for t in reversed(range(length)):
        next_values = values[:, t + 1] if t + 1 < length else torch.zeros_like(last_gae)
        delta = rewards[:, t] + gamma * next_values - values[:, t]
        last_gae = delta + gamma * lam * last_gae
        advantages[:, t] = last_gae
    advantages = advantages * mask
    returns = (advantages + values) * mask  # G_t estimate the value model regresses on (Eq. 6)
    return advantages, returns


def policy_loss(
    logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
    cliprange: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Eq. 5 with footnote 16's clipping. Returns (loss, stats: clipfrac, approx_kl, ratio_mean)."""
    log_ratio = (logprobs - old_logprobs) * mask
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = masked_mean(torch.max(unclipped, clipped), mask)
    with torch.no_grad():
        stats = {
            "clipfrac": masked_mean((clipped > unclipped).float(), mask),
            "approx_kl": 0.5 * masked_mean(log_ratio**2, mask),  # k2 estimator of KL(pi_old || pi_theta)
            "ratio_mean": masked_mean(ratio, mask),
        }
    return loss, stats


def value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, cliprange_value: float
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Eq. 6, 1/2 squared error against the returns, pessimistic over a clipped value prediction."""
    clipped_values = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    err_unclipped = (values - returns) ** 2
    err_clipped = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.max(err_unclipped, err_clipped), mask)
    with torch.no_grad():
        stats = {"value_clipfrac": masked_mean((err_clipped > err_unclipped).float(), mask)}
    return loss, stats


class FixedKLController:
    """The paper's choice: beta stays constant."""

    def __init__(self, kl_coef: float):
        self.value = kl_coef

    def update(self, current_kl: float, n_steps: int) -> None:
        return None


class AdaptiveKLController:
    """Ziegler et al. (2019): beta <- beta * (1 + clip(KL/target - 1, -0.2, 0.2) * n / horizon)."""

    def __init__(self, kl_coef: float, target: float, horizon: int):
        self.value = kl_coef
        self.target = target
        self.horizon = horizon

    def update(self, current_kl: float, n_steps: int) -> None:
        proportional_error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + proportional_error * n_steps / self.horizon


# ==================================================================================================
# Model plumbing: pack rollouts, per-token log-probs and values.
# ==================================================================================================


@dataclass
class Rollouts:
    """A batch of sampled completions, packed as [left-padded prompt | right-padded response]."""

    input_ids: torch.Tensor  # [N, P + R]
    attention_mask: torch.Tensor  # [N, P + R]
    response_mask: torch.Tensor  # [N, R], float: 1 on response tokens (EOS included when emitted)
    prompt_width: int  # P
    finished: torch.Tensor  # [N] bool: emitted EOS
    prompts: list[Messages]
    texts: list[str]

    def select(self, idx: torch.Tensor, trim: bool = True) -> Rollouts:
        """Rows `idx`; with `trim`, without the columns that are padding in all of them (a minibatch is
        usually narrower than its batch: less compute, same numbers)."""
        keep = idx.tolist()
        attention, response_mask = self.attention_mask[idx], self.response_mask[idx]
        first, width_r = 0, response_mask.shape[1]
        if trim:
            first = int(attention[:, : self.prompt_width].any(dim=0).float().argmax())  # first real prompt column
            width_r = max(int(response_mask.sum(dim=1).max()), 1)
        cols = slice(first, self.prompt_width + width_r)
        return Rollouts(self.input_ids[idx][:, cols], attention[:, cols], response_mask[:, :width_r],
                        self.prompt_width - first, self.finished[idx], [self.prompts[i] for i in keep],
                        [self.texts[i] for i in keep])


def pack_rollouts(samples: Sequence[Any], prompts: Sequence[Messages], pad_id: int) -> Rollouts:
    """`samples`: GeneratedSample-like (prompt_ids, completion_ids, finished, text), one per rollout."""
    width_p = max(len(s.prompt_ids) for s in samples)
    width_r = max(max(len(s.completion_ids) for s in samples), 1)
    n = len(samples)
    input_ids = torch.full((n, width_p + width_r), pad_id, dtype=torch.long)
    attention = torch.zeros((n, width_p + width_r), dtype=torch.long)
    response_mask = torch.zeros((n, width_r))
    for i, s in enumerate(samples):
        p, c = len(s.prompt_ids), len(s.completion_ids)
        input_ids[i, width_p - p : width_p] = torch.tensor(s.prompt_ids)
        attention[i, width_p - p : width_p] = 1
        if c:
            input_ids[i, width_p : width_p + c] = torch.tensor(s.completion_ids)
            attention[i, width_p : width_p + c] = 1
            response_mask[i, :c] = 1.0
    finished = torch.tensor([bool(s.finished) for s in samples])
    return Rollouts(input_ids, attention, response_mask, width_p, finished, list(prompts), [s.text for s in samples])


def _position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    # Left padding: positions must count real tokens only, as `generate` did when sampling.
    return (attention_mask.cumsum(dim=1) - 1).clamp(min=0)


def response_logits(model: Any, batch: Rollouts, temperature: float) -> torch.Tensor:
    """Logits predicting each response token y_t from x, y_<t: positions P-1 .. P+R-2."""
    width_r = batch.response_mask.shape[1]
    # logits_to_keep: the LM head runs only on the last R + 1 positions (P-1 .. P+R-1), not the prompt.
    out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                position_ids=_position_ids(batch.attention_mask), use_cache=False, logits_to_keep=width_r + 1)
    logits = out.logits[:, :width_r].float()
    return logits / temperature


def gather_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    return torch.gather(F.log_softmax(logits, dim=-1), 2, tokens.unsqueeze(-1)).squeeze(-1)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    logp = F.log_softmax(logits, dim=-1)
    return -(logp.exp() * logp).sum(dim=-1)


def response_values(value_model: Any, batch: Rollouts) -> torch.Tensor:
    """V_phi(x, y_<t) for each response token: the scalar head applied to every hidden state (the
    sequence-classification head normally reads only the last one), at positions P-1 .. P+R-2."""
    if hasattr(value_model, "get_base_model"):  # LoRA: its layers are injected into the base model itself
        value_model = value_model.get_base_model()
    backbone = getattr(value_model, value_model.base_model_prefix)
    hidden = backbone(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                      position_ids=_position_ids(batch.attention_mask), use_cache=False).last_hidden_state
    width_r = batch.response_mask.shape[1]
    hidden = hidden[:, batch.prompt_width - 1 : batch.prompt_width - 1 + width_r]
    return value_model.score(hidden).squeeze(-1).float()


class AdapterDisabled:
    """The reference policy of a LoRA run: the policy's forward with its adapter disabled (the SFT weights,
    which LoRA leaves frozen), so no second copy of the model is in memory."""

    def __init__(self, policy: Any):
        self.policy = policy

    def __call__(self, **kwargs: Any) -> Any:
        with self.policy.disable_adapter():
            return self.policy(**kwargs)


class PolicyAndValue(torch.nn.Module):
    """The two trained models as one module, for DistributedDataParallel.

    DDP averages gradients only for parameters used through the wrapped module's forward, and the
    value model is read through its backbone and score head (per-token values), not its own forward:
    one module whose forward returns both the policy logits and the values makes one backward pass
    all-reduce both models' gradients. The submodules are the very models the optimizer holds."""

    def __init__(self, policy: torch.nn.Module, value_model: torch.nn.Module):
        super().__init__()
        self.policy = policy
        self.value_model = value_model

    def forward(self, batch: Rollouts, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
        return response_logits(self.policy, batch, temperature), response_values(self.value_model, batch)


def response_tokens(batch: Rollouts) -> torch.Tensor:
    return batch.input_ids[:, batch.prompt_width :]


# Names of dropout probabilities in model configs and modules: attention_dropout (Llama, Mistral, Qwen2:
# applied as a number inside the attention kernel), hidden_dropout_prob, classifier_dropout, attn_pdrop,
# resid_pdrop, embd_pdrop, encoder_layerdrop, ...
_DROPOUT_NAME = re.compile(r"dropout|pdrop|layerdrop")


def disable_dropout(model: torch.nn.Module) -> list[str]:
    """Table 9's dropout 0.0, everywhere the model applies dropout in train mode; returns what was non-zero.

    Zeroing `nn.Dropout` modules is not enough: Llama-family attention passes `config.attention_dropout`,
    copied into each attention module at init, as a number to the attention kernel (0.27 nats between
    two train-mode forwards of a tiny Llama at 0.3), and other models read such probabilities from their
    config at forward time. So the config fields and the module attributes whose names say dropout are
    zeroed too (so the saved policy's config records the dropout it was trained with, 0);
    `check_no_dropout` then verifies the result by running the model."""
    from transformers import PretrainedConfig

    changed: list[str] = []
    configs = {id(c): c for m in model.modules() if isinstance(c := getattr(m, "config", None), PretrainedConfig)}
    for config in configs.values():
        for sub in [config, *(getattr(config, k) for k in config.sub_configs)]:
            for key, value in list(vars(sub).items()):
                if _DROPOUT_NAME.search(key) and _is_positive_number(value):
                    setattr(sub, key, 0.0)
                    changed.append(f"config.{key}={value}")
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Dropout):
            if module.p:
                changed.append(f"{name or type(module).__name__}.p={module.p}")
            module.p = 0.0
            continue
        for key, value in list(vars(module).items()):
            if _DROPOUT_NAME.search(key) and _is_positive_number(value):
                setattr(module, key, 0.0)
                changed.append(f"{name}.{key}={value}")
    return changed


def _is_positive_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def check_no_dropout(model: torch.nn.Module, what: str) -> None:
    """Two train-mode forwards of the same tokens must agree, or the policy ratio of Eq. 5 and the
    values would carry dropout noise. Raises (before any training) when a model still applies dropout
    that `disable_dropout` could not find, e.g. a probability hard-coded in its forward."""
    device = next(model.parameters()).device
    ids = torch.arange(3, 11, device=device).unsqueeze(0) % model.config.vocab_size
    was_training = model.training
    model.train()
    try:
        with torch.no_grad():
            first, second = (model(input_ids=ids, use_cache=False).logits.float() for _ in range(2))
    finally:
        model.train(was_training)
    gap = float((first - second).abs().max())
    if gap > 1e-4 * (1.0 + float(first.abs().max())):
        raise ValueError(f"the {what} applies dropout in train mode after every dropout probability in its config and "
                         f"modules was set to 0 (two forwards of the same tokens differ by {gap:.3g}): PPO needs "
                         "Table 9's dropout 0.0; use a model without hard-coded dropout")


def _last_user_text(prompt: Messages) -> str:
    users = [m["content"] for m in prompt if m.get("role") == "user"]
    return users[-1] if users else (prompt[-1]["content"] if prompt else "")


# ==================================================================================================
# Training
# ==================================================================================================


# score(prompts, texts, completion_ids, rows) -> floats; `rows` are the prompts' training rows, whose
# columns a verifier reads (TRL passes them the same way, as keyword arguments).
RewardFn = Callable[[list[Messages], list[str], list[list[int]], list[dict[str, Any]]], list[float]]


def _reward_source(ctx: TrainContext, device: str) -> tuple[RewardFn, Any]:
    """(score(prompts, texts, completion_ids, rows) -> floats, the RM / ensemble scorer or None)."""
    if ctx.reward_model_path or ctx.reward_ensemble is not None:
        if ctx.reward_ensemble is not None:
            from harness.reward_ensemble import EnsembleScorer

            scorer: Any = EnsembleScorer(ctx.reward_ensemble, device=device)
        else:
            from harness.reward_model import RewardScorer

            scorer = RewardScorer(ctx.reward_model_path, device=device)

        def score_rm(prompts: list[Messages], texts: list[str], ids: list[list[int]],
                     rows: list[dict[str, Any]]) -> list[float]:
            return scorer.score(prompts, texts)  # decoded text: works whatever the RM's tokenizer

        return score_rm, scorer
    fn = ctx.reward_function
    assert fn is not None
    columns = tuple(getattr(fn, "columns", ()))

    def score_fn(prompts: list[Messages], texts: list[str], ids: list[list[int]],
                 rows: list[dict[str, Any]]) -> list[float]:
        completions = [[{"role": "assistant", "content": t}] for t in texts]
        extra = {c: [row[c] for row in rows] for c in columns}
        return [float(v) for v in fn(prompts=prompts, completions=completions, completion_ids=ids, **extra)]

    return score_fn, None


def check_context(ctx: TrainContext) -> list[Messages]:
    """Everything that can be wrong with the inputs, checked before any model is loaded."""
    from harness.algorithms.reward_wrappers import check_reward_source

    cfg = ctx.config
    if not isinstance(cfg, PPOConfig):
        raise TypeError(f"PPO needs a PPOConfig, got {type(cfg).__name__}")
    if not ctx.train_rows:
        raise ValueError("PPO got no training prompts")
    check_reward_source(ctx)
    prompts = []
    for i, row in enumerate(ctx.train_rows):
        prompt = row.get("prompt")
        if not isinstance(prompt, list) or not prompt or not all(
            isinstance(m, dict) and isinstance(m.get("content"), str) for m in prompt
        ):
            raise ValueError(f"train_rows[{i}] (id={row.get('id')!r}): `prompt` must be a non-empty list of messages")
        prompts.append(prompt)
    if cfg.value_init == "reward":
        if ctx.reward_model_path is None:
            raise ValueError("value_init='reward' initialises the value model from the reward model, but the "
                             "reward is a function or an ensemble: set value_init='policy'")
        from harness.models import load_tokenizer

        if load_tokenizer(ctx.reward_model_path).get_vocab() != load_tokenizer(ctx.policy_path).get_vocab():
            raise ValueError("value_init='reward' needs the reward model to share the policy's tokenizer (the value "
                             "model reads policy tokens); this RM's differs: set value_init='policy'")
    return prompts


def _prompt_stream(prompts: list[T], seed: int) -> Iterator[T]:
    """Prompts in a fresh seeded shuffle each epoch, forever (the caller decides how many to draw)."""
    rng = random.Random(seed)
    while True:
        order = list(range(len(prompts)))
        rng.shuffle(order)
        for i in order:
            yield prompts[i]


def _make_accelerator() -> Any:
    """The process's Accelerator: under `accelerate launch` one rank of a torch.distributed group (NCCL
    on GPUs, gloo on CPU), otherwise a single process on the default device (CUDA when present)."""
    import torch.distributed as dist
    from accelerate import Accelerator

    # Without GPUs accelerate forms its (gloo) data-parallel group only when told cpu=True: otherwise,
    # under `accelerate launch`, it reports one process while torch.distributed has N.
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    if accelerator.num_processes == 1 and dist.is_available() and dist.is_initialized() \
            and dist.get_world_size() > 1:
        raise RuntimeError(f"torch.distributed has {dist.get_world_size()} processes but accelerate sees one: PPO "
                           "would train independent copies; launch with `accelerate launch --num_processes N`")
    if accelerator.mixed_precision == "fp16":
        # fp16 needs a loss scaler, which PPO's per-model gradient clipping does not unscale; bf16
        # autocast over fp32 master weights (what PPO does on CUDA anyway) needs none.
        raise ValueError("PPO does not support fp16 mixed precision; launch with --mixed_precision bf16 or no")
    # accelerate's gradient state is shared by every Accelerator of the process: a TRL trainer run
    # earlier in it can leave it mid-accumulation, which would make the prepared optimizer skip its
    # steps. PPO decides itself when to step (every g minibatches) and never uses `accumulate`.
    accelerator.gradient_state._set_sync_gradients(True)
    return accelerator


def train_ppo(ctx: TrainContext) -> dict[str, float]:
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from harness.generation import (
        EngineSettings,
        SamplingParams,
        autocast_context,
        record_engine,
        render_prompt,
    )
    from harness.hf_engine import HFGenerator
    from harness.models import load_tokenizer, resolve_model

    cfg: PPOConfig = ctx.config
    all_prompts = check_context(ctx)
    # ---- Data parallelism (`accelerate launch`): N ranks, each with its own models and B/N prompts. ----
    accelerator = _make_accelerator()
    world, rank, is_main = accelerator.num_processes, accelerator.process_index, accelerator.is_main_process
    problems = check_world_size(cfg, world)
    if problems:
        raise ValueError("invalid PPOConfig for data-parallel training: " + "; ".join(problems))
    # Cross-rank reductions only where there are ranks: one process keeps its exact arithmetic.
    sum_across_ranks: SumAcrossRanks | None = all_reduce_sum if world > 1 else None
    torch.manual_seed(ctx.seed)  # the same on every rank (DDP also broadcasts rank 0's weights when wrapping)
    device = accelerator.device
    engine = (ctx.engine or EngineSettings()).resolved(device.type)
    if engine.kind != "hf":
        raise ValueError(f"engine.kind: PPO samples its rollouts in-process (it trains on the sampled token ids and "
                         f"updates the weights between rollouts); use kind 'hf', not {engine.kind!r}")

    def autocast() -> Any:
        # bf16 at the engine's precision (on CUDA without cuDNN attention, whose backward gave NaN on
        # left-padded rows; see models.py), nothing in fp32.
        return autocast_context(device, engine)

    frozen_dtype = torch.bfloat16 if engine.train_bf16 else torch.float32
    artifacts = ctx.out_dir / "artifacts"
    if is_main:  # the stage writer convention: only the main process writes into the stage folder
        artifacts.mkdir(parents=True, exist_ok=True)
        record_engine(ctx.out_dir, engine)

    # ---- Models: policy pi_theta (trained), reference pi_ref (frozen SFT), value V_phi, reward r. ----
    policy_path = resolve_model(ctx.policy_path)
    tokenizer = load_tokenizer(policy_path)
    kept = [i for i, p in enumerate(all_prompts)
            if len(tokenizer(render_prompt(tokenizer, p, True), add_special_tokens=False)["input_ids"])
            <= cfg.max_prompt_length]
    prompts = [all_prompts[i] for i in kept]
    prompt_rows = [ctx.train_rows[i] for i in kept]  # their columns go to a verifier with the samples
    n_dropped = len(all_prompts) - len(prompts)
    if not prompts:
        raise ValueError(f"all {len(all_prompts)} prompts are longer than max_prompt_length={cfg.max_prompt_length}")
    lora.check_quantization(cfg.peft)
    quantized = lora.load_kwargs(cfg.peft)  # QLoRA: 4-bit frozen base weights, placed by bitsandbytes
    policy = AutoModelForCausalLM.from_pretrained(policy_path, dtype=torch.float32, **quantized)
    policy = policy if quantized else policy.to(device)
    value_source = resolve_model(ctx.reward_model_path) if cfg.value_init == "reward" else policy_path
    value_model = AutoModelForSequenceClassification.from_pretrained(
        value_source, num_labels=1, dtype=torch.float32, **quantized)
    value_model = value_model if quantized else value_model.to(device)
    value_model.config.pad_token_id = tokenizer.pad_token_id
    if cfg.peft is not None:
        # LoRA: adapters on the policy and on the value model's backbone (its score head fully trainable);
        # the reference is the policy with its adapter disabled, not a second copy of the weights.
        policy = lora.wrap(policy, cfg.peft, "CAUSAL_LM")
        value_model = lora.wrap(value_model, cfg.peft, "SEQ_CLS")
        reference: Any = AdapterDisabled(policy)
    else:
        reference = AutoModelForCausalLM.from_pretrained(policy_path, dtype=frozen_dtype).to(device).eval()
        reference.requires_grad_(False)
    for model, what in ((policy, "policy"), (value_model, "value model")):
        disable_dropout(model)
        check_no_dropout(model, what)
        model.train()
    # Reference and reward model: inference only, a full copy on every rank (no DDP, no gradients).
    score_fn, _scorer = _reward_source(ctx, str(device))
    # Sampling uses the bare policy (DDP has no `generate`); its weights are the ones DDP trains.
    generator = HFGenerator(policy, tokenizer, batch_size=cfg.generation_batch_size,
                            max_prompt_tokens=cfg.max_prompt_length, batching=engine.batching or "auto")

    # ---- Schedule: rollout batches, minibatches, optimizer steps (global: the same for any N). ----
    n_rollouts = cfg.prompt_batch_size * cfg.rollouts_per_prompt  # per rollout batch, all ranks together
    n_minibatches = n_rollouts // cfg.minibatch_size  # forward-backward passes per inner epoch, on every rank
    local_prompts = cfg.prompt_batch_size // world  # this rank's shard of each prompt batch
    local_minibatch = cfg.minibatch_size // world  # this rank's rollouts per forward-backward pass
    num_updates = cfg.max_steps if cfg.max_steps > 0 else math.ceil(cfg.num_epochs * len(prompts) / cfg.prompt_batch_size)
    optimizer_steps = num_updates * cfg.inner_epochs * n_minibatches // cfg.gradient_accumulation_steps
    from harness import progress, usage

    usage.watch_training_forwards(policy)  # the cost's trained tokens: the policy's training forwards
    progress.report(done=0, total=num_updates, unit="update", phase="training", force=True)
    warmup_steps = math.ceil(cfg.warmup_ratio * optimizer_steps)

    def lr_factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)  # nonzero from the first step: no wasted update
        if cfg.lr_decay == "linear":
            return max(0.0, (optimizer_steps - step) / max(1, optimizer_steps - warmup_steps))
        return 1.0

    optimizer = torch.optim.AdamW(
        [{"params": [p for p in policy.parameters() if p.requires_grad]},
         {"params": [p for p in value_model.parameters() if p.requires_grad]}],
        lr=cfg.learning_rate, betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_eps,
        weight_decay=cfg.weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    # DDP over policy + value (one module, see PolicyAndValue); the optimizer prepared with it. The
    # scheduler is not prepared: accelerate steps a prepared scheduler once per process per call
    # (for schedules counted in per-process batches), while lr_factor counts global optimizer steps.
    trained, optimizer = accelerator.prepare(PolicyAndValue(policy, value_model), optimizer)
    kl_ctl = (AdaptiveKLController(cfg.kl_coef, cfg.adaptive_kl_target, cfg.adaptive_kl_horizon)
              if cfg.adaptive_kl else FixedKLController(cfg.kl_coef))
    reward_gain_bias: tuple[float, float] | None = None  # reward normalisation, fixed after batch 1
    stream = _prompt_stream(list(range(len(prompts))), ctx.seed)  # indices into prompts / prompt_rows
    samples_file = artifacts / "ppo_samples.jsonl"
    start_time = time.perf_counter()
    last: dict[str, float] = {}
    global_optimizer_step = 0
    # ---- Mid-stage resume (harness.resume): the loop's whole state after update k, reloaded after a kill. ----
    checkpointer = resume.Checkpointer(ctx.out_dir)
    first_update = 1
    found = checkpointer.resume()
    if found is not None:
        saved = torch.load(found[1] / PPO_STATE_FILE, map_location=device, weights_only=False)
        policy.load_state_dict(saved["policy"])
        value_model.load_state_dict(saved["value_model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        kl_ctl.value = saved["kl_coef"]
        reward_gain_bias = saved["reward_gain_bias"]
        global_optimizer_step, last = saved["optimizer_steps"], saved["last"]
        for _ in range(saved["prompts_drawn"]):  # the data position: the seeded stream replayed to where it was
            next(stream)
        resume.restore_rng(saved["rng"])
        first_update = found[0] + 1
        if is_main:
            resume.truncate_rows(samples_file, found[0])
            progress.report(done=found[0], force=True)
    elif is_main:
        samples_file.write_text("")

    def save_state(folder: Path, update: int) -> None:
        torch.save({"policy": policy.state_dict(), "value_model": value_model.state_dict(),
                    "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "kl_coef": kl_ctl.value, "reward_gain_bias": reward_gain_bias,
                    "optimizer_steps": global_optimizer_step, "last": last,
                    "prompts_drawn": update * cfg.prompt_batch_size, "rng": resume.capture_rng()},
                   folder / PPO_STATE_FILE)

    # The temperature of every log-prob (policy, pi_old, reference): tau, or 1 as in the authors' EasyLM.
    logprob_tau = cfg.temperature if cfg.logprobs_at_sampling_temperature else 1.0

    def rollout_stats(batch: Rollouts, batch_scores: torch.Tensor, logprobs: torch.Tensor,
                      values: torch.Tensor) -> dict[str, torch.Tensor]:
        """Given pi_old log-probs and V_old values of a (mini)batch: reference log-probs, Eq. 4 token
        rewards, GAE advantages and returns, whitened as configured."""
        mask = batch.response_mask
        with torch.no_grad(), autocast():  # in chunks of b: full-vocabulary logits of a whole batch are large
            ref_logprobs = torch.cat([gather_logprobs(response_logits(reference, mb, logprob_tau), response_tokens(mb))
                                      for mb in _chunks(batch, local_minibatch)]) * mask
        rewards, _ = token_rewards(batch_scores, logprobs, ref_logprobs, mask, kl_ctl.value, cfg.kl_clamp)
        # Whitening over the global (mini)batch: every rank calls this at the same point of the loop
        # (each one's shard of the same minibatch k), so the all-reduces inside `whiten` line up.
        if cfg.reward_whitening:
            rewards = whiten(rewards, mask, shift_mean=False, sum_across_ranks=sum_across_ranks)
        advantages, returns = gae(rewards, values * mask, mask, cfg.gamma, cfg.lam)
        if cfg.advantage_whitening:
            advantages = whiten(advantages, mask, shift_mean=True, sum_across_ranks=sum_across_ranks)
        return {"old_logprobs": logprobs * mask, "old_values": values * mask, "advantages": advantages,
                "returns": returns, "rewards": rewards, "kl_seq": ((logprobs - ref_logprobs) * mask).sum(1)}

    for update in range(first_update, num_updates + 1):
        # ---- 1. Rollout: r samples per prompt from the current policy at temperature tau (cfg.temperature). ----
        t0 = time.perf_counter()
        # Every rank draws the same global batch from the same seeded stream and keeps its own slice.
        global_batch = [next(stream) for _ in range(cfg.prompt_batch_size)]
        batch = global_batch[rank * local_prompts : (rank + 1) * local_prompts]
        batch_prompts = [prompts[j] for j in batch]
        with torch.no_grad(), autocast():
            generated = generator.generate_samples(
                batch_prompts,
                # one sampling seed per (update, rank); with one process it is the single-process seed
                SamplingParams(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                               num_return_sequences=cfg.rollouts_per_prompt,
                               seed=(ctx.seed * 100003 + update) * world + rank),
            )
        flat = [s for row in generated for s in row]
        flat_prompts = [p for p, row in zip(batch_prompts, generated) for _ in row]
        flat_rows = [prompt_rows[j] for j, row in zip(batch, generated) for _ in row]
        rollouts = _to_device(pack_rollouts(flat, flat_prompts, tokenizer.pad_token_id), device)
        t_rollout = time.perf_counter() - t0

        # ---- 2. Sequence reward r(x, y): RM on decoded text (or the verifiable function). ----
        raw_scores = torch.tensor(score_fn(flat_prompts, rollouts.texts, [s.completion_ids for s in flat], flat_rows),
                                  dtype=torch.float32, device=device)
        scores = raw_scores.clone()
        all_raw_scores = accelerator.gather(raw_scores)  # the global batch's scores (ranks hold equal shares)
        if cfg.reward_normalization:
            # Quark/Rainier/FG-RLHF normalise the RM's output; the gain/bias is estimated once, on the
            # SFT policy's first rollout batch (all ranks'), then kept fixed so the objective does not drift.
            if reward_gain_bias is None:
                std = float(all_raw_scores.std()) if len(all_raw_scores) > 1 else 1.0
                reward_gain_bias = (1.0 / max(std, 1e-6), -float(all_raw_scores.mean()))
            scores = (scores + reward_gain_bias[1]) * reward_gain_bias[0]
        if cfg.eos_trick:
            scores = apply_eos_trick(scores, rollouts.finished.to(device), cfg.eos_penalty)

        # ---- 3. Forward passes (policy, value, reference) -> Eq. 4 rewards -> GAE -> whitening. ----
        stats_by_index: dict[int, dict[str, torch.Tensor]] = {}
        if not cfg.forward_at_minibatch_level:
            # Most implementations: one forward pass over the whole rollout batch, before any update, so
            # later minibatches see log-probs and values from models that have since changed.
            with torch.no_grad(), autocast():
                logprobs = torch.cat([gather_logprobs(response_logits(policy, mb, logprob_tau), response_tokens(mb))
                                      for mb in _chunks(rollouts, local_minibatch)])
                values = torch.cat([response_values(value_model, mb) for mb in _chunks(rollouts, local_minibatch)])
            _store(stats_by_index, torch.arange(len(flat)), rollout_stats(rollouts, scores, logprobs, values),
                   rollouts.response_mask)

        # ---- 4. PPO updates: e inner epochs over b-sized minibatches, stepping every g of them. ----
        acc: dict[str, list[float]] = {}
        lr_used = scheduler.get_last_lr()[0]
        t1 = time.perf_counter()
        g = torch.Generator().manual_seed(ctx.seed * 7919 + update)
        for _inner_epoch in range(cfg.inner_epochs):
            order = torch.randperm(len(flat), generator=g)
            for k in range(n_minibatches):
                # This rank's b/N rollouts of global minibatch k (every rank runs the same n_minibatches).
                idx = order[k * local_minibatch : (k + 1) * local_minibatch]
                mb = rollouts.select(idx)
                mask = mb.response_mask
                stepping = (k + 1) % cfg.gradient_accumulation_steps == 0
                with autocast():
                    # Through the DDP-wrapped module, so backward averages the gradients over ranks.
                    logits, new_values = trained(mb, logprob_tau)
                    new_logprobs = gather_logprobs(logits, response_tokens(mb))
                with torch.no_grad():
                    entropy = masked_mean(entropy_from_logits(logits), mask)
                del logits
                if any(i not in stats_by_index for i in idx.tolist()):
                    # App. G: forward passes at minibatch level. pi_old and V_old are the *current* models
                    # (this very forward pass, detached), so log-probs and values are never stale.
                    _store(stats_by_index, idx, rollout_stats(mb, scores[idx], new_logprobs.detach(),
                                                              new_values.detach()), mask)
                st = _gather(stats_by_index, idx, width=mask.shape[1])
                pg_loss, pg_stats = policy_loss(new_logprobs, st["old_logprobs"], st["advantages"], mask, cfg.cliprange)
                vf_loss, vf_stats = value_loss(new_values, st["old_values"], st["returns"], mask, cfg.cliprange_value)
                loss = pg_loss + cfg.vf_coef * vf_loss  # L_PPO = L_pi + alpha * L_V
                # Between optimizer steps, skip DDP's gradient all-reduce (no_sync): the accumulated local
                # gradients are averaged once, by the backward pass of the minibatch that steps.
                with nullcontext() if stepping else accelerator.no_sync(trained):
                    accelerator.backward(loss / cfg.gradient_accumulation_steps)
                if stepping:
                    gn_policy = torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.max_grad_norm)
                    gn_value = torch.nn.utils.clip_grad_norm_(value_model.parameters(), cfg.max_grad_norm)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                    global_optimizer_step += 1
                    _append(acc, grad_norm_policy=float(gn_policy), grad_norm_value=float(gn_value))
                _append(acc, loss=loss.item(), policy_loss=pg_loss.item(), value_loss=vf_loss.item(),
                        entropy=float(entropy), clipfrac=float(pg_stats["clipfrac"]),
                        approx_kl=float(pg_stats["approx_kl"]), ratio_mean=float(pg_stats["ratio_mean"]),
                        value_clipfrac=float(vf_stats["value_clipfrac"]),
                        value_mean=float(masked_mean(st["old_values"], mask)),
                        return_mean=float(masked_mean(st["returns"], mask)),
                        advantage_mean=float(masked_mean(st["advantages"], mask)))
        t_train = time.perf_counter() - t1

        # ---- 5. Log. KL to reference = mean over sequences of sum_t (log pi - log pi_ref). ----
        kl_seq = torch.stack([stats_by_index[i]["kl_seq"] for i in range(len(flat))])
        seq_reward_with_kl = torch.stack([stats_by_index[i]["rewards"].sum() for i in range(len(flat))])
        lengths = rollouts.response_mask.sum(1)
        # Per-rollout quantities of the global batch (all ranks' rollouts), minibatch statistics and
        # timings averaged over ranks: every rank computes the same numbers, the main process logs them.
        g_kl, g_scores, g_with_kl, g_lengths, g_finished = accelerator.gather(
            (kl_seq, scores, seq_reward_with_kl, lengths, rollouts.finished.to(device).float()))
        names = sorted(acc)
        local = torch.tensor([sum(acc[k]) / len(acc[k]) for k in names] + [t_rollout, t_train],
                             dtype=torch.float64, device=device)
        averaged = accelerator.reduce(local, "mean").tolist()
        metrics = {f"train/{k}": v for k, v in zip(names, averaged)}
        metrics.update({
            "train/reward_mean": float(all_raw_scores.mean()),
            "train/reward_std": float(all_raw_scores.std()) if len(all_raw_scores) > 1 else 0.0,
            "train/reward_penalized_mean": float(g_scores.mean()),  # after normalisation / EOS trick
            "train/reward_with_kl": float(g_with_kl.mean()),  # sum of Eq. 4 token rewards
            "train/kl": float(g_kl.mean()),
            "train/kl_coef": float(kl_ctl.value),
            "train/response_length": float(g_lengths.mean()),
            "train/truncated_frac": float(1.0 - g_finished.mean()),
            "train/learning_rate": float(lr_used),  # at the update's first optimizer step
            "train/episodes": float(update * n_rollouts),
            "train/optimizer_steps": float(global_optimizer_step),
            "train/rollout_seconds": averaged[-2],
            "train/update_seconds": averaged[-1],
            "train/world_size": float(world),
        })
        if update == 1:
            metrics["train/prompts_dropped_too_long"] = float(n_dropped)
        if is_main:
            ctx.log(metrics, update)
            progress.report(done=update)
        if is_main and ctx.checkpoint_every and update % ctx.checkpoint_every == 0 and update < num_updates:
            # Intermediate policy for the checkpoint evaluations, numbered like the history (PPO updates);
            # the final one is model/ below.
            from harness.checkpoints import checkpoint_dir

            ckpt = checkpoint_dir(ctx.out_dir, update)
            if cfg.peft is not None:  # merged into a fresh copy of the base: training goes on with the adapter
                lora.save_merged_copy(accelerator.unwrap_model(trained).policy, policy_path, ckpt)
            else:
                accelerator.unwrap_model(trained).policy.save_pretrained(str(ckpt))
            tokenizer.save_pretrained(str(ckpt))
        # The global KL: beta must stay the same on every rank, or their updates would diverge.
        kl_ctl.update(float(g_kl.mean()), n_rollouts)
        last = metrics
        if is_main:
            with samples_file.open("a") as fh:  # the main process's own rollouts
                for i in range(min(cfg.log_samples_per_step, len(flat))):
                    fh.write(json.dumps({
                        "step": update, "prompt": _last_user_text(flat_prompts[i]), "completion": rollouts.texts[i],
                        "score": float(raw_scores[i]), "score_used": float(scores[i]),
                        "finished": bool(rollouts.finished[i]), "kl": float(kl_seq[i]),
                        "length": int(lengths[i]),
                    }, ensure_ascii=False) + "\n")
        # Save (and stop, on a stop request) together: every rank sees the main process's decision.
        decision = torch.tensor([float(checkpointer.due(update)), float(checkpointer.stop_requested() is not None)],
                                device=device)
        if world > 1:
            decision = all_reduce_sum(decision)
        if is_main and decision[0] > 0:
            checkpointer.save(update, lambda folder, update=update: save_state(folder, update))
        if decision[1] > 0:
            accelerator.wait_for_everyone()
            raise resume.StageStopped(update, checkpointer.stop_requested() or "stop requested")

    if world > 1:
        # DDP keeps the ranks' policies identical (same initial weights, all-reduced gradients), which is
        # what makes rank 0's copy the result of all of them: checked once, with one scalar per rank.
        checksum = torch.stack([q.detach().double().sum() for q in policy.parameters()]).sum().reshape(1)
        checksums = accelerator.gather(checksum)
        if not torch.allclose(checksums, checksums[:1].expand_as(checksums), rtol=1e-9, atol=1e-9):
            raise RuntimeError(f"PPO ranks ended with different policies (parameter sums {checksums.tolist()})")
    if is_main:  # one writer saves the policy all ranks share
        model_dir = ctx.out_dir / "model"
        if cfg.peft is not None:  # the adapter to out_dir/adapter, the merged policy to model/
            lora.save_adapter_and_merged(accelerator.unwrap_model(trained).policy, tokenizer, ctx.out_dir, cfg.peft,
                                         policy_path)
        else:
            accelerator.unwrap_model(trained).policy.save_pretrained(str(model_dir))
            tokenizer.save_pretrained(str(model_dir))
    accelerator.wait_for_everyone()  # the ranks finish together, once the model is on disk
    return {
        "train/steps": float(num_updates),
        "train/optimizer_steps": float(global_optimizer_step),
        "train/episodes": float(num_updates * n_rollouts),
        "train/runtime_seconds": time.perf_counter() - start_time,
        "train/final_reward_mean": last.get("train/reward_mean", math.nan),
        "train/final_kl": last.get("train/kl", math.nan),
        "train/final_loss": last.get("train/loss", math.nan),
        "train/world_size": float(world),
    }


def _store(stats: dict[int, dict[str, torch.Tensor]], idx: torch.Tensor, batch_stats: dict[str, torch.Tensor],
           mask: torch.Tensor) -> None:
    """Keep each rollout's per-token stats at its own length, so any later minibatch can regroup them."""
    lengths = mask.sum(dim=1).long().tolist()
    for j, i in enumerate(idx.tolist()):
        stats[i] = {key: (v[j, : lengths[j]] if v.dim() == 2 else v[j]) for key, v in batch_stats.items()}


def _gather(stats: dict[int, dict[str, torch.Tensor]], idx: torch.Tensor, width: int) -> dict[str, torch.Tensor]:
    """Stack the stored stats of rows `idx`, right-padding per-token ones with zeros to `width`."""
    rows = [stats[i] for i in idx.tolist()]
    out = {}
    for key, first in rows[0].items():
        if first.dim() == 0:
            out[key] = torch.stack([r[key] for r in rows])
        else:
            out[key] = torch.stack([F.pad(r[key], (0, width - r[key].shape[0])) for r in rows])
    return out


def _append(acc: dict[str, list[float]], **values: float) -> None:
    for key, value in values.items():
        acc.setdefault(key, []).append(value)


def _to_device(batch: Rollouts, device: str | torch.device) -> Rollouts:
    return Rollouts(batch.input_ids.to(device), batch.attention_mask.to(device), batch.response_mask.to(device),
                    batch.prompt_width, batch.finished.to(device), batch.prompts, batch.texts)


def _chunks(batch: Rollouts, size: int) -> Iterator[Rollouts]:
    n = batch.input_ids.shape[0]
    for start in range(0, n, size):
        # untrimmed: chunk outputs are concatenated back to the batch's width
        yield batch.select(torch.arange(start, min(start + size, n), device=batch.input_ids.device), trim=False)


def rollout_shape(algo: dict[str, Any], processes: int) -> RolloutShape:
    """Table 9's B (global: split over the processes), r, e, E, L_p and L_c, for the cost estimate."""
    return RolloutShape(
        prompt_batch_size=algo["prompt_batch_size"], samples_per_prompt=algo["rollouts_per_prompt"],
        max_new_tokens=algo["max_new_tokens"], max_prompt_length=algo["max_prompt_length"], epochs=algo["num_epochs"],
        max_steps=algo["max_steps"], inner_epochs=algo["inner_epochs"],
        reference=algo["kl_coef"] > 0 or algo.get("adaptive_kl", False),
        generation_batch_size=algo.get("generation_batch_size"),
        value_from_reward_model=algo.get("value_init") == "reward")


register(AlgorithmSpec(
    name="ppo",
    config_cls=PPOConfig,
    data="prompts",
    needs_reference=True,
    needs_reward=True,
    train=train_ppo,
    defaults_source="Ivison et al. 2024, App. F.2 and Table 9 (Table 10 'Ours' for the implementation switches)",
    description="PPO with per-token KL penalty (Eq. 4), GAE, clipped policy/value losses (Eq. 5-6)",
    rollout_engine=True,
    kl_coefficient_field="kl_coef",
    launch_problems=check_world_size,
    data_parallel_only=True,  # docs/scale-out.md, 'PPO on N GPUs'
    needs_single_reward_model=lambda algo: (("value_init='reward' copies one reward model into the value model",
                                             "set algorithm.value_init: policy")
                                            if algo.get("value_init") == "reward" else None),
    trains_value_model=True,
    keeps_old_logprobs=True,  # the ratio's old log-probs: a policy forward over each rollout batch
    rollout_shape=rollout_shape,
))
