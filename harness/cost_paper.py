"""The paper's reported compute as estimator inputs: the calibration of `harness.cost` (docs/cost.md).

The paper (App. K, Table 11) reports wall time on TPUv3 slices: 13B DPO on UltraFeedback "9 hours";
the 13B reward model "roughly 10 hours"; 13B PPO with a 13B RM "3 days on a 256-size pod"; Table 11's
PPO rows 60 h, 12 h, 16 h, 32 h. What it does not say (sequence lengths, whether the reference is
recomputed) is taken from the authors' public EasyLM scripts, read as reference:
- DPO: `llama_train_dpo` computes the reference log-probs with every step and pads to `seq_length`,
  6144 in the fork's documented DPO example (EasyLM docs/ai2.md, hamishivi and yizhongw forks);
- reward model: `llama_train_rm` with `seq_length=4096`, batch 64 x 8 accumulation = 512
  (liujch1998/EasyLM examples/rm_13b_tpu512.sh; App. F.2's batch 512);
- PPO: `llama_train_ppo` on a v3-256 with prompts padded to 1024 and 1024 new tokens, B = b = 64,
  1 epoch, 1 inner epoch (yizhongw/EasyLM examples/ppo_13b_tpu256.sh; Table 9).
Every EasyLM loader pads to its length limit (XLA compiles fixed shapes): the TPU profiles have
`static_shapes: true`, so the mean token lengths below matter only on GPU and CPU profiles.

Two efficiency factors of the TPU profiles are fitted here (`fit_tpu_efficiencies`); the remaining
figures are predictions (`calibration_rows` says which is which).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from harness.cost import OnlineTraining, PairwiseTraining, PreferencePairs, estimate
from harness.cost_profiles import DeviceProfile, device_profile, model_shape, with_profile_overrides

UF_ROWS = 60908  # UltraFeedback (fine-grained), Table 1 / Table 6
# Mean tokens of an UltraFeedback prompt / chosen / rejected answer: measured on the 1,000-row
# argilla-cleaned sample in ../shared/data with the SmolLM2 tokenizer (the Llama 2 tokenizer is not
# available offline; both are ~32-49k-entry BPEs): 170.9 / 328.1 / 246.0.
UF_TOKENS = PreferencePairs(UF_ROWS, prompt_tokens=171.0, chosen_tokens=328.0, rejected_tokens=246.0)

DPO_SEQ_LENGTH = 6144
RM_SEQ_LENGTH = 4096
PPO_PROMPT_LENGTH = 1024
PPO_NEW_TOKENS = 1024


@dataclass(frozen=True)
class PaperFigure:
    name: str
    hours: float
    quote: str


FIGURES = {
    "dpo": PaperFigure("13B DPO on UltraFeedback, 3 epochs", 9.0,
                       "App. K: DPO training on UltraFeedback (roughly 60,000 samples) for a 13B model takes 9 hours"),
    "reward_model": PaperFigure("13B reward model on UltraFeedback, 1 epoch", 10.0,
                                "App. K: the reward model training taking roughly 10 hours"),
    "ppo": PaperFigure("13B PPO, 13B UltraF. RM, UltraFeedback prompts", 72.0,
                       "App. K: PPO training with a 13B reward model and 13B policy on the UltraFeedback set "
                       "takes 3 days on a 256-size pod"),
    "table11_64_1_1": PaperFigure("Table 11: B=64, r=1, g=1", 60.0, "Table 11, row 1: 60 h"),
    "table11_512_1_1": PaperFigure("Table 11: B=512, r=1, g=1", 12.0, "Table 11, row 2: 12 h"),
    "table11_512_2_2": PaperFigure("Table 11: B=512, r=2, g=2", 16.0, "Table 11, row 3: 16 h"),
    "table11_256_4_4": PaperFigure("Table 11: B=256, r=4, g=4", 32.0, "Table 11, row 4: 32 h"),
}


def dpo_13b(seq_length: int = DPO_SEQ_LENGTH, reference: str = "per_step") -> PairwiseTraining:
    return PairwiseTraining("dpo", model_shape("allenai/tulu-2-13b"), UF_TOKENS, epochs=3, batch_size=32,
                            max_length=seq_length, reference=reference, label="DPO 13B, UltraFeedback, 3 epochs")


def reward_model_13b(seq_length: int = RM_SEQ_LENGTH) -> PairwiseTraining:
    return PairwiseTraining("reward_model", model_shape("allenai/tulu-2-13b"), UF_TOKENS, epochs=1, batch_size=512,
                            max_length=seq_length, label="RM 13B, UltraFeedback, 1 epoch")


def ppo_13b(prompt_batch_size: int = 64, rollouts_per_prompt: int = 1) -> OnlineTraining:
    # Table 11 keeps the gradient updates fixed (g = r), which changes no FLOPs: every rollout is
    # trained on once either way.
    tulu = model_shape("allenai/tulu-2-13b")
    return OnlineTraining("ppo", tulu, reward_model=tulu, prompts=UF_ROWS, prompt_tokens=UF_TOKENS.prompt_tokens,
                          response_tokens=UF_TOKENS.chosen_tokens, max_prompt_length=PPO_PROMPT_LENGTH,
                          max_new_tokens=PPO_NEW_TOKENS, prompt_batch_size=prompt_batch_size,
                          rollouts_per_prompt=rollouts_per_prompt,
                          label=f"PPO 13B (B={prompt_batch_size}, r={rollouts_per_prompt}), 13B RM")


TABLE11 = {"table11_64_1_1": (64, 1), "table11_512_1_1": (512, 1), "table11_512_2_2": (512, 2),
           "table11_256_4_4": (256, 4)}


def fit_tpu_efficiencies(profile: DeviceProfile | None = None) -> tuple[float, float]:
    """(train_efficiency, decode_layer_latency_s) for EasyLM on a TPUv3 slice, from the paper.

    train_efficiency: the one MFU that puts the DPO (9 h) and reward-model (10 h) estimates equally far
    from the paper in log space (both are compute-bound, so an estimate scales as 1/MFU).
    decode_layer_latency_s: then the per-layer, per-step latency that makes Table 11's first row 60 h
    (the estimate is linear in it)."""
    base = profile or device_profile("tpu-v3-256")
    unit = with_profile_overrides(base, train_efficiency=1.0, decode_layer_latency_s=0.0)
    dpo_h = estimate(dpo_13b(), unit).hours
    rm_h = estimate(reward_model_13b(), unit).hours
    mfu = math.sqrt(dpo_h * rm_h / (FIGURES["dpo"].hours * FIGURES["reward_model"].hours))
    fitted = with_profile_overrides(base, train_efficiency=mfu, decode_layer_latency_s=0.0)
    ppo = ppo_13b()
    without = estimate(ppo, fitted).hours
    with_one = estimate(ppo, with_profile_overrides(fitted, decode_layer_latency_s=1.0)).hours
    latency = (FIGURES["table11_64_1_1"].hours - without) / (with_one - without)
    return mfu, latency


@dataclass(frozen=True)
class CalibrationRow:
    key: str
    figure: PaperFigure
    profile: str
    estimate_hours: float
    fitted: bool  # the figure was used to fit the profile (not a prediction)

    @property
    def ratio(self) -> float:
        """estimate / paper."""
        return self.estimate_hours / self.figure.hours


FIT_PROFILE = "tpu-v3-256"  # the profile `fit_tpu_efficiencies` fits (the paper's PPO pod)
FITTED_FIGURES = ("dpo", "reward_model", "table11_64_1_1")


def calibration_rows(profile: str = FIT_PROFILE) -> list[CalibrationRow]:
    """Every paper figure against the estimate on a TPU profile."""
    tpu = device_profile(profile)
    workloads = {"dpo": dpo_13b(), "reward_model": reward_model_13b(), "ppo": ppo_13b(),
                 **{key: ppo_13b(batch, rollouts) for key, (batch, rollouts) in TABLE11.items()}}
    return [CalibrationRow(key, FIGURES[key], profile, estimate(work, tpu).hours,
                           fitted=profile == FIT_PROFILE and key in FITTED_FIGURES)
            for key, work in workloads.items()]


def calibration_table(profile: str = FIT_PROFILE) -> str:
    """Markdown: paper figure vs estimate (docs/cost.md)."""
    lines = ["| run | paper | estimate | estimate / paper | role |", "| --- | ---: | ---: | ---: | --- |"]
    for row in calibration_rows(profile):
        role = "fitted" if row.fitted else "predicted" if row.profile == FIT_PROFILE else f"{FIT_PROFILE}'s fit, another slice"
        lines.append(f"| {row.figure.name} | {row.figure.hours:g} h | {row.estimate_hours:.1f} h | "
                     f"{row.ratio:.2f}x | {role} |")
    return "\n".join(lines)


def sensitivity_table(profile: str = FIT_PROFILE) -> str:
    """Markdown: the DPO and RM estimates under the sequence lengths the paper leaves open, and this
    project's own defaults (dpo max_length 2048 with precomputed reference log-probs, RM 2048)."""
    tpu = device_profile(profile)
    cases = [("DPO, seq 6144, reference per step (calibration input)", dpo_13b(), "dpo"),
             ("DPO, seq 4096, reference per step", dpo_13b(4096), "dpo"),
             ("DPO, seq 2048, reference per step", dpo_13b(2048), "dpo"),
             ("DPO, seq 2048, reference precomputed (this project's DPO defaults)", dpo_13b(2048, "precomputed"), "dpo"),
             ("RM, seq 4096 (calibration input)", reward_model_13b(), "reward_model"),
             ("RM, seq 2048 (this project's RM default)", reward_model_13b(2048), "reward_model")]
    lines = ["| inputs | FLOPs | estimate | paper | estimate / paper |", "| --- | ---: | ---: | ---: | ---: |"]
    for text, work, key in cases:
        est = estimate(work, tpu)
        lines.append(f"| {text} | {est.flops:.3g} | {est.hours:.1f} h | {FIGURES[key].hours:g} h | "
                     f"{est.hours / FIGURES[key].hours:.2f}x |")
    return "\n".join(lines)


def dpo_vs_ppo_table(profiles: tuple[str, ...] = (FIT_PROFILE, "h100")) -> str:
    """Markdown: what one Table 2 configuration costs, DPO against RM + PPO (the paper's settings), per
    device profile; the paper's Limitations say it never measured this."""
    lines = ["| profile | DPO | RM + PPO | RM + PPO / DPO (device-hours) |", "| --- | ---: | ---: | ---: |"]
    for name in profiles:
        dpo = estimate(dpo_13b(), name)
        rm, ppo = estimate(reward_model_13b(), name), estimate(ppo_13b(), name)
        both = rm.device_hours + ppo.device_hours
        lines.append(f"| {name} | {dpo.flops:.3g} FLOPs, {dpo.device_hours:,.0f} device-h | "
                     f"{rm.flops + ppo.flops:.3g} FLOPs, {both:,.0f} device-h | {both / dpo.device_hours:.1f}x |")
    paper = (FIGURES["reward_model"].hours + FIGURES["ppo"].hours) / FIGURES["dpo"].hours
    lines.append(f"| paper (App. K, wall hours on a TPUv3 pod) | 9 h | 10 h + 72 h | {paper:.1f}x |")
    return "\n".join(lines)


if __name__ == "__main__":
    mfu, latency = fit_tpu_efficiencies()
    print(f"fitted: train_efficiency {mfu:.4f}, decode_layer_latency_s {latency:.4g}")
    for name in ("tpu-v3-256", "tpu-v3-128"):
        print(f"\n{name}\n{calibration_table(name)}")
    print(f"\nsensitivity ({FIT_PROFILE})\n{sensitivity_table()}")
    print(f"\nDPO vs RM + PPO\n{dpo_vs_ppo_table()}")
