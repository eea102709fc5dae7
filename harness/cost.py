"""Compute cost before compute: tokens, FLOPs, device-hours and money per stage, from plain data.

Every input is a number a grid already knows or a dataset already tells (parameter counts from a model
config, rows and mean token lengths, epochs, batch sizes, rollouts, generation budgets); every device
is a profile in `harness/device_profiles.yaml` (peak FLOP/s, memory bandwidth, efficiency factors,
each with its source). Model shapes and device profiles are read by `harness/cost_profiles.py`; this
module turns a stage's workload into an estimate. docs/cost.md says what is counted and how it was calibrated.

    from harness import cost
    from harness.cost_profiles import device_profile, model_shape
    policy = model_shape("allenai/tulu-2-13b")
    dpo = cost.PairwiseTraining("dpo", policy, cost.PreferencePairs(60908, 180, 280, 230),
                                epochs=3, batch_size=32, max_length=2048)
    est = cost.estimate(dpo, device_profile("h100"))
    est.flops, est.seconds, est.device_hours, est.usd

What is counted (model FLOPs, the convention of MFU):
- a forward pass over a sequence of T tokens: T x (2 x matmul parameters + 4 x layers x attention width x T)
  (the attention term is Chowdhery et al. 2022's, full T: no saving for the causal mask);
  a training pass (forward + backward) is 3 forwards;
- generation: a prefill forward over the prompts, then one decode step per generated position for a
  whole batch, whose time is the larger of its compute time and the time to read the weights and the
  KV cache, plus a fixed latency per layer (`decode_layer_latency_s`): a static batch waits for its
  longest answer, so a batch runs `decode_steps_per_batch` steps (default: the budget);
- not counted: data preparation (tokenisation on the host), optimizer updates, evaluation judges
  behind an API (the judge client reports their tokens and price), checkpoint I/O, compile time.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.cost_profiles import CostInputError, DeviceProfile, ModelShape, device_profile

# Weights + gradients + AdamW moments + fp32 master weights (mixed precision), per trained parameter;
# plain fp32 training holds the same 16 bytes (4 + 4 + 8). Activations are not counted.
TRAINED_BYTES_PER_PARAM = 16


# ------------------------------------------------------------------------------------------------
# Workloads (plain data)
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PreferencePairs:
    """A preference dataset: rows, and the mean tokens of a prompt and of each answer."""

    pairs: int
    prompt_tokens: float
    chosen_tokens: float
    rejected_tokens: float


# The `PairwiseTraining.algorithm` of a Bradley-Terry reward model (no reference, a scalar head); every
# other name is a registered algorithm, whose `AlgorithmSpec` says how it costs (harness/algorithms/base.py).
REWARD_MODEL = "reward_model"
# The `PairwiseTraining.algorithm` of the shared reference pass alone (`reference_only`, the
# `reference_logps` stage of harness/reference_logps.py): one frozen forward, whichever algorithm reads it.
REFERENCE_PASS = "reference_logps"


@dataclass(frozen=True)
class PairwiseTraining:
    """Training on both answers of each pair: an offline algorithm (`algorithm` its registered name: the DPO
    family, KTO, SimPO, ORPO, ...) or a Bradley-Terry reward model (`algorithm="reward_model"`, scored with a
    scalar head)."""

    algorithm: str
    model: ModelShape
    data: PreferencePairs
    epochs: float
    batch_size: int  # pairs per optimizer step, over all devices
    max_length: int  # tokens per sequence (prompt + one answer)
    max_steps: int = -1  # > 0 overrides the epochs, as in TRL
    reference: str | None = None  # precomputed | per_step | none; None: the algorithm spec's `reference_pass`
    eval_pairs: int = 0  # pairs scored once after training (held-out accuracy, RewardBench)
    label: str = ""
    # Only the reference forward over the data (reference="precomputed"): the shared `reference_logps`
    # stage, whose training stages then run with reference="none".
    reference_only: bool = False


@dataclass(frozen=True)
class OnlineTraining:
    """RL from a reward: the policy samples answers to prompts, a reward scores them, the policy
    (and PPO's value model) trains on them. Per rollout, PPO runs forwards of the policy (old
    log-probs), the reference, the value model and the reward model, then `inner_epochs` training
    passes of policy and value model; GRPO/RLOO have no value model; online DPO samples 2 answers.
    What each algorithm runs is its `AlgorithmSpec`'s (`trains_value_model`, `keeps_old_logprobs`,
    `samples_per_prompt`), looked up by `algorithm`, a registered online algorithm's name."""

    algorithm: str
    policy: ModelShape
    reward_model: RewardModels  # None: a rule-based reward (no forward); a tuple: an ensemble
    prompts: int
    prompt_tokens: float  # mean
    response_tokens: float  # mean generated per rollout
    max_prompt_length: int
    max_new_tokens: int
    prompt_batch_size: int
    epochs: float = 1.0
    max_steps: int = -1  # rollout batches; > 0 overrides the epochs
    rollouts_per_prompt: int = 1
    inner_epochs: int = 1
    reference: bool = True  # a KL penalty needs the reference's log-probs
    value_model: ModelShape | None = None  # PPO: None = the reward model's shape (the paper's init)
    generation_batch_size: int | None = None  # sequences decoded together; None = a whole rollout batch
    decode_steps_per_batch: float | None = None  # None = max_new_tokens (a batch waits for its longest)
    label: str = ""


@dataclass(frozen=True)
class EvalTask:
    """One benchmark: `examples` prompts, each scored (log-likelihood, `max_new_tokens=0`) or answered
    `samples_per_example` times, optionally scored by another model (a reward model picking the best
    of N, a toxicity classifier)."""

    name: str
    examples: int
    prompt_tokens: float
    max_new_tokens: int = 0
    mean_new_tokens: float | None = None  # None = max_new_tokens
    samples_per_example: int = 1
    scored_tokens: float = 0.0  # continuation tokens scored per example (log-likelihood tasks)
    batch_size: int = 16
    decode_steps_per_batch: float | None = None  # None = max_new_tokens
    scorer: RewardModels = None  # a tuple: an ensemble of reward models, each scoring every answer
    # False: the answers were generated by another stage (best-of-N's picks among the `sample_candidates`
    # stage's samples): only the scorer runs here.
    generated: bool = True


@dataclass(frozen=True)
class Evaluation:
    model: ModelShape
    tasks: tuple[EvalTask, ...]
    label: str = ""


@dataclass(frozen=True)
class DataPreparation:
    """Curation and tokenisation on the host: counted as tokens read, no device time."""

    rows: int
    tokens: float
    label: str = ""


Workload = PairwiseTraining | OnlineTraining | Evaluation | DataPreparation
# A reward's models: one, an ensemble (a tuple: every member scores every sample), or None (a rule-based
# reward, e.g. a verifier: no model FLOPs).
RewardModels = ModelShape | tuple[ModelShape, ...] | None


def reward_members(reward: RewardModels) -> tuple[ModelShape, ...]:
    """The models a reward runs a forward of per scored sequence."""
    if reward is None:
        return ()
    return reward if isinstance(reward, tuple) else (reward,)


# ------------------------------------------------------------------------------------------------
# Estimates
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class StageEstimate:
    label: str
    kind: str  # prepare_data | train_reward_model | train_policy | evaluate
    profile: str
    devices: int
    tokens_trained: float  # tokens through training passes (each model counted)
    tokens_forward: float  # tokens through forward-only passes (reference, reward, value, prefill, scoring)
    tokens_generated: float  # answer tokens sampled
    flops: float
    seconds: float
    device_hours: float
    usd: float | None  # None: the profile has no rate and none was given
    flops_by_part: dict[str, float] = field(default_factory=dict)
    seconds_by_part: dict[str, float] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def hours(self) -> float:
        return self.seconds / 3600.0


class _Tally:
    """Accumulates the parts of one stage's estimate."""

    def __init__(self, profile: DeviceProfile, devices: int):
        self.profile, self.devices = profile, devices
        self.flops: dict[str, float] = {}
        self.seconds: dict[str, float] = {}
        self.trained = self.forward = self.generated = 0.0

    def batched(self, part: str, flops: float) -> None:
        """A compute-bound pass (training, scoring, prefill)."""
        self.flops[part] = self.flops.get(part, 0.0) + flops
        rate = self.devices * self.profile.peak_flops * self.profile.train_efficiency
        self.seconds[part] = self.seconds.get(part, 0.0) + flops / rate

    def decode(self, part: str, model: ModelShape, sequences: float, batch: int, prompt_len: float,
               steps: float, new_tokens: float) -> None:
        """Autoregressive sampling of `sequences` answers in batches of `batch`, `steps` steps a batch."""
        if sequences <= 0 or steps <= 0:
            return
        p = self.profile
        batches = math.ceil(sequences / batch)
        rows = min(batch, sequences)
        context = prompt_len + steps / 2.0  # mean attended length over the steps
        step_flops = rows * model.forward_flops_per_token(context)
        step_bytes = model.params * p.bytes_per_value + rows * context * model.kv_bytes_per_token(p.bytes_per_value)
        compute = step_flops / (self.devices * p.peak_flops * p.train_efficiency)
        memory = step_bytes / (self.devices * p.memory_bandwidth * p.decode_bandwidth_efficiency)
        step_seconds = max(compute, memory) + model.n_layers * p.decode_layer_latency_s
        self.flops[part] = self.flops.get(part, 0.0) + batches * steps * step_flops
        self.seconds[part] = self.seconds.get(part, 0.0) + batches * steps * step_seconds
        self.generated += sequences * new_tokens

    def result(self, label: str, kind: str, notes: list[str], usd_per_device_hour: float | None) -> StageEstimate:
        seconds = sum(self.seconds.values())
        device_hours = seconds / 3600.0 * self.devices
        rate = usd_per_device_hour if usd_per_device_hour is not None else self.profile.usd_per_device_hour
        return StageEstimate(label=label, kind=kind, profile=self.profile.name, devices=self.devices,
                             tokens_trained=self.trained, tokens_forward=self.forward, tokens_generated=self.generated,
                             flops=sum(self.flops.values()), seconds=seconds, device_hours=device_hours,
                             usd=None if rate is None else device_hours * rate, flops_by_part=dict(self.flops),
                             seconds_by_part=dict(self.seconds), notes=tuple(notes))


def _devices_for(profile: DeviceProfile, trained: Sequence[ModelShape], frozen: Sequence[ModelShape],
                 notes: list[str]) -> int:
    """Devices the stage runs on: the profile's, or more of them (scalable kinds) when the weights and
    optimizer states do not fit; a note either way when they do not."""
    need = (sum(m.params for m in trained) * TRAINED_BYTES_PER_PARAM
            + sum(m.params for m in frozen) * profile.bytes_per_value)
    devices_needed = math.ceil(need / profile.memory_bytes)
    if devices_needed <= profile.devices:
        return profile.devices
    gb = need / 1e9
    if profile.scalable:
        notes.append(f"{gb:,.0f} GB of weights and optimizer states (activations not counted) need "
                     f"{devices_needed} x {profile.device}: estimated on {devices_needed}")
        return devices_needed
    notes.append(f"does not fit: {gb:,.0f} GB of weights and optimizer states on {profile.devices} x "
                 f"{profile.memory_bytes / 1e9:.0f} GB (activations not counted); estimated as if it did")
    return profile.devices


def _positive(value: float, name: str, label: str) -> None:
    if not value > 0:
        raise CostInputError(f"{label or 'stage'}: {name} must be > 0, got {value}")


def _spec(name: str) -> Any:
    """The registered `AlgorithmSpec` of `name`, or None."""
    from harness.algorithms import spec_or_none

    return spec_or_none(name)


def _registered(online: bool) -> list[str]:
    from harness.algorithms import ALGORITHMS

    return [name for name in ALGORITHMS.names() if ALGORITHMS.get(name).online == online]


def _pairwise(w: PairwiseTraining, profile: DeviceProfile, rate: float | None) -> StageEstimate:
    label = w.label or f"{w.algorithm} {w.model.name}"
    is_rm = w.algorithm == REWARD_MODEL
    spec = None if is_rm or w.algorithm == REFERENCE_PASS else _spec(w.algorithm)
    default = "none" if is_rm else (spec.reference_pass if spec is not None and not spec.online else None)
    reference = w.reference or default
    if reference not in ("precomputed", "per_step", "none"):
        raise CostInputError(f"{label}: reference must be precomputed, per_step or none (unknown algorithm "
                             f"{w.algorithm!r} has no default; known: {', '.join([*_registered(False), REWARD_MODEL])})")
    for name in ("batch_size", "max_length"):
        _positive(getattr(w, name), name, label)
    if w.max_steps <= 0:  # otherwise the steps decide and the epochs are unused, as in TRL
        _positive(w.epochs, "epochs", label)
    _positive(w.data.pairs, "data.pairs", label)
    notes: list[str] = []
    frozen = [w.model] if reference == "per_step" else []
    tally = _Tally(profile, _devices_for(profile, [w.model], frozen, notes))
    seen = w.max_steps * w.batch_size if w.max_steps > 0 else w.epochs * w.data.pairs

    def length(answer: float) -> float:
        return w.max_length if profile.static_shapes else min(w.data.prompt_tokens + answer, w.max_length)

    chosen, rejected = length(w.data.chosen_tokens), length(w.data.rejected_tokens)
    pair_forward = (w.model.sequence_forward_flops(chosen, lm_head=not is_rm)
                    + w.model.sequence_forward_flops(rejected, lm_head=not is_rm))
    if w.reference_only:
        if reference != "precomputed":
            raise CostInputError(f"{label}: a reference-only pass is the precomputed reference, got {reference!r}")
        tally.batched("reference forward (precomputed)", w.data.pairs * pair_forward)
        tally.forward += w.data.pairs * (chosen + rejected)
        if profile.static_shapes:
            notes.append(f"static shapes: every sequence padded to {w.max_length} tokens")
        return tally.result(label, "reference_logps", notes, rate)
    tally.batched("train (forward + backward)", 3.0 * seen * pair_forward)
    tally.trained += seen * (chosen + rejected)
    if reference != "none":
        ref_pairs = w.data.pairs if reference == "precomputed" else seen
        tally.batched(f"reference forward ({reference})", ref_pairs * pair_forward)
        tally.forward += ref_pairs * (chosen + rejected)
    if w.eval_pairs:
        tally.batched("scoring held-out pairs", w.eval_pairs * pair_forward)
        tally.forward += w.eval_pairs * (chosen + rejected)
    if spec is not None:
        notes.extend(spec.uncounted_compute)
    if profile.static_shapes:
        notes.append(f"static shapes: every sequence padded to {w.max_length} tokens")
    return tally.result(label, "train_reward_model" if is_rm else "train_policy", notes, rate)


def _online(w: OnlineTraining, profile: DeviceProfile, rate: float | None) -> StageEstimate:
    label = w.label or f"{w.algorithm} {w.policy.name}"
    spec = _spec(w.algorithm)
    if spec is None or not spec.online:
        raise CostInputError(f"{label}: algorithm {w.algorithm!r} is not online; online: {', '.join(_registered(True))}")
    for name in ("prompt_batch_size", "rollouts_per_prompt", "inner_epochs", "max_new_tokens", "max_prompt_length"):
        _positive(getattr(w, name), name, label)
    if w.max_steps <= 0:
        _positive(w.epochs, "epochs", label)
    _positive(w.prompts, "prompts", label)
    rollouts_per_prompt = spec.samples_per_prompt or w.rollouts_per_prompt
    rewards = reward_members(w.reward_model)
    # PPO's value model defaults to the reward model's shape (the paper's init); an ensemble has no one RM
    single_rm = rewards[0] if len(rewards) == 1 else None
    value = (w.value_model or single_rm or w.policy) if spec.trains_value_model else None
    trained = [w.policy] + ([value] if value is not None else [])
    frozen = ([w.policy] if w.reference else []) + list(rewards)
    notes: list[str] = []
    tally = _Tally(profile, _devices_for(profile, trained, frozen, notes))

    prompts_seen = w.max_steps * w.prompt_batch_size if w.max_steps > 0 else w.epochs * w.prompts
    rollouts = prompts_seen * rollouts_per_prompt
    static = profile.static_shapes
    prompt_len = w.max_prompt_length if static else min(w.prompt_tokens, w.max_prompt_length)
    answer_len = w.max_new_tokens if static else min(w.response_tokens, w.max_new_tokens)
    seq = prompt_len + answer_len

    # Generation: prefill the prompts once per rollout, then decode.
    batch = w.generation_batch_size or w.prompt_batch_size * rollouts_per_prompt
    tally.batched("generation: prefill", rollouts * w.policy.sequence_forward_flops(prompt_len))
    tally.forward += rollouts * prompt_len
    steps = w.decode_steps_per_batch if w.decode_steps_per_batch is not None else w.max_new_tokens
    tally.decode("generation: decode", w.policy, rollouts, batch, prompt_len, steps,
                 min(w.response_tokens, w.max_new_tokens))

    # Scoring and training passes over prompt + answer.
    policy_fwd = w.policy.sequence_forward_flops(seq)
    old_logprobs = spec.keeps_old_logprobs or w.inner_epochs > 1
    # part -> the FLOPs of each forward it runs over one rollout's prompt + answer
    forwards = {"policy forward (old log-probs)": [policy_fwd] if old_logprobs else [],
                "reference forward": [policy_fwd] if w.reference else [],
                "reward forward": [m.sequence_forward_flops(seq, lm_head=False) for m in rewards],
                "value forward": [value.sequence_forward_flops(seq, lm_head=False)] if value is not None else []}
    for part, passes in forwards.items():
        if passes:
            tally.batched(part, rollouts * sum(passes))
            tally.forward += rollouts * seq * len(passes)
    tally.batched("policy train (forward + backward)", 3.0 * w.inner_epochs * rollouts * policy_fwd)
    tally.trained += w.inner_epochs * rollouts * seq
    if value is not None:
        tally.batched("value train (forward + backward)",
                      3.0 * w.inner_epochs * rollouts * value.sequence_forward_flops(seq, lm_head=False))
        tally.trained += w.inner_epochs * rollouts * seq
    if not rewards:
        notes.append("rule-based reward: no reward-model forward")
    elif len(rewards) > 1:
        notes.append(f"reward-model ensemble: {len(rewards)} reward forwards per rollout")
    if static:
        notes.append(f"static shapes: prompts padded to {w.max_prompt_length}, answers to {w.max_new_tokens}")
    return tally.result(label, "train_policy", notes, rate)


def _evaluation(w: Evaluation, profile: DeviceProfile, rate: float | None) -> StageEstimate:
    label = w.label or f"evaluate {w.model.name}"
    notes: list[str] = []
    scorers = [m for t in w.tasks for m in reward_members(t.scorer)]
    tally = _Tally(profile, _devices_for(profile, [], [w.model, *scorers], notes))
    for task in w.tasks:
        _positive(task.examples, f"tasks[{task.name}].examples", label)
        _positive(task.batch_size, f"tasks[{task.name}].batch_size", label)
        prompt = task.prompt_tokens
        if task.max_new_tokens <= 0:
            tokens = prompt + task.scored_tokens
            tally.batched(f"{task.name}: scoring", task.examples * w.model.sequence_forward_flops(tokens))
            tally.forward += task.examples * tokens
            continue
        sequences = task.examples * task.samples_per_example
        new = task.mean_new_tokens if task.mean_new_tokens is not None else task.max_new_tokens
        if task.generated:
            tally.batched(f"{task.name}: prefill", sequences * w.model.sequence_forward_flops(prompt))
            tally.forward += sequences * prompt
            steps = task.decode_steps_per_batch if task.decode_steps_per_batch is not None else task.max_new_tokens
            tally.decode(f"{task.name}: decode", w.model, sequences, task.batch_size, prompt, steps, new)
        members = reward_members(task.scorer)
        if members:
            tally.batched(f"{task.name}: scorer forward",
                          sequences * sum(m.sequence_forward_flops(prompt + new, lm_head=False) for m in members))
            tally.forward += sequences * (prompt + new) * len(members)
    notes.append("API judges (AlpacaEval, XSTest, TruthfulQA's GPT judges) are not counted: the judge client "
                 "reports their tokens and price")
    return tally.result(label, "evaluate", notes, rate)


def estimate(workload: Workload, profile: DeviceProfile | str, usd_per_device_hour: float | None = None) -> StageEstimate:
    """The estimate of one stage on a device profile (money at the profile's rate unless one is given)."""
    if isinstance(profile, str):
        profile = device_profile(profile)
    if usd_per_device_hour is not None and usd_per_device_hour < 0:
        raise CostInputError(f"usd_per_device_hour must be >= 0, got {usd_per_device_hour}")
    if isinstance(workload, PairwiseTraining):
        return _pairwise(workload, profile, usd_per_device_hour)
    if isinstance(workload, OnlineTraining):
        return _online(workload, profile, usd_per_device_hour)
    if isinstance(workload, Evaluation):
        return _evaluation(workload, profile, usd_per_device_hour)
    if isinstance(workload, DataPreparation):
        return StageEstimate(label=workload.label or "prepare_data", kind="prepare_data", profile=profile.name,
                             devices=0, tokens_trained=0.0, tokens_forward=workload.tokens, tokens_generated=0.0,
                             flops=0.0, seconds=0.0, device_hours=0.0, usd=0.0,
                             notes=("host-side curation and tokenisation: no device time estimated",))
    raise CostInputError(f"no estimator for {type(workload).__name__}")


def total(estimates: Iterable[StageEstimate], label: str = "total") -> StageEstimate:
    """Sum of stage estimates (device-hours and money add; wall seconds add as if run one after another)."""
    items = list(estimates)
    if not items:
        raise CostInputError("no stage estimates to add")
    usd = None if any(e.usd is None for e in items) else sum(e.usd for e in items)  # type: ignore[misc]
    return StageEstimate(label=label, kind="total", profile=",".join(dict.fromkeys(e.profile for e in items)),
                         devices=max(e.devices for e in items),
                         tokens_trained=sum(e.tokens_trained for e in items),
                         tokens_forward=sum(e.tokens_forward for e in items),
                         tokens_generated=sum(e.tokens_generated for e in items),
                         flops=sum(e.flops for e in items), seconds=sum(e.seconds for e in items),
                         device_hours=sum(e.device_hours for e in items), usd=usd,
                         notes=tuple(dict.fromkeys(n for e in items for n in e.notes)))


def human(x: float, unit: str = "") -> str:
    """1.23e15 -> "1.23P" (SI prefixes, 3 significant digits)."""
    for scale, suffix in ((1e21, "Z"), (1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{suffix}{unit}"
    return f"{x:.3g}{unit}"


def format_table(estimates: Sequence[StageEstimate]) -> str:
    """A plain-text table: one line per stage and a total, for `--dry-run` and the docs."""
    rows = [*estimates, total(estimates)] if len(estimates) > 1 else list(estimates)
    lines = [f"{'stage':<40} {'profile':<11} {'trained':>8} {'fwd':>8} {'gen':>8} {'FLOPs':>8} {'hours':>9} "
             f"{'dev-h':>9} {'USD':>9}"]
    for e in rows:
        usd = "n/a" if e.usd is None else f"{e.usd:,.2f}"
        lines.append(f"{e.label[:40]:<40} {e.profile[:11]:<11} {human(e.tokens_trained):>8} {human(e.tokens_forward):>8} "
                     f"{human(e.tokens_generated):>8} {human(e.flops):>8} {e.hours:>9.3g} {e.device_hours:>9.3g} {usd:>9}")
    return "\n".join(lines)
