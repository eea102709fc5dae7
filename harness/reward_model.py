"""Bradley-Terry reward models: training (TRL `RewardTrainer`), scoring, and direct evaluation.

Training minimises the Bradley-Terry negative log-likelihood of the human preference (paper Eq. 1):

    L_R(psi) = -E_{(x, y_c, y_r) ~ D} [ log sigma( r_psi(x, y_c) - r_psi(x, y_r) ) ]

where r_psi is a sequence-classification head read at the last token of the chat-formatted
conversation. Defaults = App. F.2 ("Reward model hyperparameters"): 1 epoch, learning rate 1e-5 with
linear warm-up over the first 3% of steps and linear decay to 1e-6, batch size 512. Grid files scale
the batch and length down for small runs (`per_device_train_batch_size`, `gradient_accumulation_steps`,
`max_length`, `max_steps`).

One formatting function (`encode_conversation`) tokenises for training, evaluation, PPO scoring and
best-of-N, so a reward model always sees text in exactly the layout it was trained on. It scores
decoded text with its own tokenizer, so it works with any policy whatever that policy's vocabulary.

Evaluation (`evaluate_reward_model`): held-out pairwise accuracy, reward mean/std over all scored
responses, chosen/rejected score distributions (as in the seed RM report: accuracy, reward_mean,
reward_std), per-pair scores as a JSONL artifact and a histogram. `evaluate_rewardbench` scores
RewardBench when its data is present locally (the paper's weighting: prior sets count 0.5).
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field

from harness.config_fields import (
    CheckedConfig,
    MaxSteps,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    Problem,
    WarmupRatio,
)
from harness.lora import PeftField

if TYPE_CHECKING:
    from harness.generation import EngineSettings

Messages = list[dict[str, str]]

# Written next to the saved model so scoring later uses the training-time length and truncation.
RM_META_FILE = "harness_reward_model.json"


@dataclass
class RewardModelConfig(CheckedConfig):
    """Reward-model training settings. Defaults: Ivison et al. 2024, App. F.2."""

    OMITTED_AT_DEFAULT = ("peft",)  # added later: left out of the stage key while null (older keys unchanged)

    num_train_epochs: NonNegativeFloat = 1.0  # App. F.2: one epoch (following InstructGPT / Tulu RM practice)
    learning_rate: PositiveFloat = 1e-5  # App. F.2: peak learning rate
    min_learning_rate: NonNegativeFloat = 1e-6  # App. F.2: linear decay ends at 1e-6 (not 0)
    warmup_ratio: WarmupRatio = 0.03  # App. F.2: warm-up over the first 3% of steps
    per_device_train_batch_size: PositiveInt = 8
    gradient_accumulation_steps: PositiveInt = 64  # 8 x 64 = 512, App. F.2's batch size
    # Prompt (1024) + continuation (1024) tokens, the lengths of Table 9, so the RM reads what PPO makes.
    max_length: Annotated[int, Field(ge=8)] = 2048
    # Pairs longer than max_length: "truncate_left" drops the oldest prompt tokens (the response, where
    # the score is read, survives); "drop" removes the pair (TRL's own behaviour).
    overlong: Literal["truncate_left", "drop"] = "truncate_left"
    max_steps: MaxSteps = -1  # -1 = run the epochs; small grids set a step budget
    weight_decay: NonNegativeFloat = 0.0
    center_rewards_coefficient: NonNegativeFloat | None = None  # off in the paper; TRL's mean-zero regulariser
    peft: PeftField = None  # LoRA on the backbone, score head trainable (harness/lora.py); null = full fine-tuning
    gradient_checkpointing: bool = False  # off: on CPU it costs time and the small models fit
    eval_batch_size: PositiveInt = 16
    logging_steps: PositiveInt = 1
    # share of the RM's pairs kept out of training for its accuracy
    heldout_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.1

    def cross_field_problems(self) -> list[Problem]:
        problems: list[Problem] = []
        if self.min_learning_rate >= self.learning_rate:
            problems.append(("min_learning_rate", f"min_learning_rate ({self.min_learning_rate}) must be below "
                             f"learning_rate ({self.learning_rate})"))
        if self.num_train_epochs <= 0 and self.max_steps <= 0:
            problems.append(("num_train_epochs", "num_train_epochs is 0 and max_steps is -1: set num_train_epochs > 0 "
                             "or max_steps > 0"))
        return problems


# --------------------------------------------------------------------------------------------------
# Formatting: the single place where (prompt, response) becomes reward-model tokens.
# --------------------------------------------------------------------------------------------------


def render_conversation(tokenizer: Any, prompt: Messages, response: Messages | str) -> str:
    """The full conversation as text, in the tokenizer's chat template (plain turns without one)."""
    if isinstance(response, str):
        response = [{"role": "assistant", "content": response}]
    messages = list(prompt) + list(response)
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False)
    return "".join(f"{m['role']}: {m['content']}\n\n" for m in messages)


def encode_conversation(
    tokenizer: Any, prompt: Messages, response: Messages | str, max_length: int
) -> tuple[list[int], bool]:
    """(token ids, truncated?). Overlong conversations keep their last `max_length` tokens: the score is
    read at the final token, so the response must survive; the oldest context goes first."""
    ids = tokenizer(render_conversation(tokenizer, prompt, response), add_special_tokens=False)["input_ids"]
    if len(ids) > max_length:
        return ids[-max_length:], True
    return ids, False


def check_preference_rows(rows: Sequence[dict[str, Any]], where: str = "rows") -> None:
    """Fail before any compute on rows that are not in the registry's preference schema."""
    if not rows:
        raise ValueError(f"{where}: no preference rows given")
    for i, row in enumerate(rows):
        for key in ("prompt", "chosen", "rejected"):
            value = row.get(key)
            if not isinstance(value, list) or not value or not all(
                isinstance(m, dict) and isinstance(m.get("content"), str) and "role" in m for m in value
            ):
                raise ValueError(
                    f"{where}[{i}] (id={row.get('id')!r}): field {key!r} must be a non-empty list of "
                    "{role, content} messages (the registry's preference schema, datasets_registry/core.py)"
                )


def split_heldout(
    rows: Sequence[dict[str, Any]], fraction: float, seed: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train, heldout). Membership depends only on (row id, seed), not on row order, so the same pair is
    held out whichever subset or mix it arrives in. At least one row lands on each side."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"heldout fraction must be in (0, 1), got {fraction}")
    if len(rows) < 2:
        raise ValueError(f"need at least 2 rows to hold some out, got {len(rows)}")

    def rank(row: dict[str, Any]) -> str:
        key = row.get("id") or json.dumps(row, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()

    ordered = sorted(rows, key=rank)
    n_held = min(max(1, round(fraction * len(rows))), len(rows) - 1)
    held_ids = {id(r) for r in ordered[:n_held]}
    return [r for r in rows if id(r) not in held_ids], [r for r in rows if id(r) in held_ids]


# --------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------


def _tokenised_pairs(
    rows: Sequence[dict[str, Any]], tokenizer: Any, config: RewardModelConfig
) -> tuple[list[dict[str, list[int]]], dict[str, int]]:
    pairs, counts = [], {"pairs_truncated": 0, "pairs_dropped_overlong": 0}
    for row in rows:
        chosen, cut_c = encode_conversation(tokenizer, row["prompt"], row["chosen"], config.max_length)
        rejected, cut_r = encode_conversation(tokenizer, row["prompt"], row["rejected"], config.max_length)
        if cut_c or cut_r:
            if config.overlong == "drop":
                counts["pairs_dropped_overlong"] += 1
                continue
            counts["pairs_truncated"] += 1
        pairs.append({"chosen_ids": chosen, "rejected_ids": rejected})
    return pairs, counts


def train_reward_model(
    rows: list[dict[str, Any]],
    base_model: str,
    config: RewardModelConfig,
    out_dir: Path,
    seed: int,
    log: Callable[[dict[str, float], int], None] = lambda metrics, step: None,
    engine: EngineSettings | None = None,
) -> dict[str, float]:
    """Train a Bradley-Terry RM (Eq. 1) on preference rows; save model + tokenizer to out_dir/"model".
    `engine`: its precision (bf16 autocast where it resolves to bf16; default the detected choice)."""
    from datasets import Dataset
    from transformers import set_seed
    from trl import RewardConfig, RewardTrainer

    from harness import lora, resume
    from harness.algorithms.base import history_callback
    from harness.algorithms.trl_common import device_kwargs, quiet_trainer
    from harness.generation import EngineSettings, record_engine
    from harness.models import load_reward_model

    check_preference_rows(rows)
    lora.check_quantization(config.peft)
    set_seed(seed)  # the new score head is initialised at load time: seed first
    model, tokenizer = load_reward_model(base_model, device="cpu", dtype="float32", **lora.load_kwargs(config.peft))
    pairs, counts = _tokenised_pairs(rows, tokenizer, config)
    if not pairs:
        raise ValueError(
            f"all {len(rows)} pairs are longer than max_length={config.max_length} and overlong='drop'"
        )

    # Optimizer steps as the Trainer counts them; warm-up is a whole number of steps, strictly fewer than
    # the total (transformers' polynomial schedule divides by the decay length).
    steps_per_epoch = math.ceil(math.ceil(len(pairs) / config.per_device_train_batch_size)
                                / config.gradient_accumulation_steps)
    total_steps = config.max_steps if config.max_steps > 0 else math.ceil(config.num_train_epochs * steps_per_epoch)
    warmup_steps = min(math.ceil(config.warmup_ratio * total_steps), max(total_steps - 1, 0))
    args = RewardConfig(
        output_dir=str(out_dir / "trainer"),
        learning_rate=config.learning_rate,
        num_train_epochs=config.num_train_epochs,
        max_steps=config.max_steps,
        warmup_steps=warmup_steps,
        # Polynomial decay with power 1 = linear warm-up, then linear decay to lr_end (App. F.2: 1e-6).
        lr_scheduler_type="polynomial",
        lr_scheduler_kwargs={"lr_end": config.min_learning_rate, "power": 1.0},
        per_device_train_batch_size=config.per_device_train_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        max_length=config.max_length,
        weight_decay=config.weight_decay,
        center_rewards_coefficient=config.center_rewards_coefficient,
        activation_checkpointing=config.gradient_checkpointing,  # transformers 5 name of gradient checkpointing
        logging_steps=config.logging_steps,
        save_strategy="no",
        report_to=[],
        seed=seed,
        data_seed=seed,
        **device_kwargs(engine),
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    trainer = RewardTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(pairs),
        processing_class=tokenizer,
        callbacks=[history_callback(log)],
        # LoRA on the backbone; peft's SEQ_CLS task keeps the new score head fully trainable.
        **({"peft_config": lora.lora_config(config.peft, "SEQ_CLS")} if config.peft else {}),
    )
    quiet_trainer(trainer)  # the metrics go to the history and MLflow, not stdout (noise only with -v)
    result = resume.train(trainer, out_dir)
    model_dir = out_dir / "model"
    record_engine(out_dir, (engine or EngineSettings()).resolved())
    if lora.is_peft_model(trainer.model):  # the adapter to out_dir/adapter, the merged RM to model/
        lora.save_adapter_and_merged(trainer.model, tokenizer, out_dir, config.peft, base_model, "SEQ_CLS")
    else:
        trainer.save_model(str(model_dir))
        tokenizer.save_pretrained(str(model_dir))
    meta = {"max_length": config.max_length, "base_model": base_model, "config": asdict(config), "seed": seed}
    (model_dir / RM_META_FILE).write_text(json.dumps(meta, indent=2))
    return {
        "rm_train/runtime_seconds": float(result.metrics.get("train_runtime", 0.0)),
        "rm_train/final_loss": float(result.training_loss),
        "rm_train/steps": float(result.global_step),
        "rm_train/pairs": float(len(pairs)),
        "rm_train/pairs_truncated": float(counts["pairs_truncated"]),
        "rm_train/pairs_dropped_overlong": float(counts["pairs_dropped_overlong"]),
    }


# --------------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------------


class RewardScorer:
    """Scores (prompt, response) pairs with a trained sequence-classification reward model.

    Uses the RM's own tokenizer on decoded text, so the policy may use a different vocabulary.
    Batches are sorted by length (less padding); scores come back in input order, as floats.
    """

    def __init__(
        self, model_path: str, device: str | None = None, batch_size: int = 16, max_length: int | None = None
    ):
        from harness.models import default_device, load_reward_model, resolve_model

        self.model_path = resolve_model(model_path)
        self.device = device or default_device()
        self.model, self.tokenizer = load_reward_model(self.model_path, device=self.device)
        self.model.eval()
        self.batch_size = batch_size
        meta_file = Path(self.model_path) / RM_META_FILE
        meta = json.loads(meta_file.read_text()) if meta_file.exists() else {}
        self.max_length = max_length or int(meta.get("max_length", 2048))

    def score(self, prompts: Sequence[Messages], responses: Sequence[Messages | str]) -> list[float]:
        import torch

        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        encoded = [encode_conversation(self.tokenizer, p, r, self.max_length)[0] for p, r in zip(prompts, responses)]
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        scores = [0.0] * len(encoded)
        pad = self.tokenizer.pad_token_id
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            width = max(len(encoded[i]) for i in idx)
            # Right padding: the classifier reads the last non-pad token of each row.
            ids = torch.full((len(idx), width), pad, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):
                ids[row, : len(encoded[i])] = torch.tensor(encoded[i])
                mask[row, : len(encoded[i])] = 1
            with torch.no_grad():
                logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits
            for row, i in enumerate(idx):
                scores[i] = float(logits[row, 0].float())
        return scores

    def as_reward_function(self) -> Callable[..., list[float]]:
        return reward_function_of(self)


def reward_function_of(scorer: Any) -> Callable[..., list[float]]:
    """A scorer (`score(prompts, responses)`: an RM, an ensemble) in TRL `reward_funcs` style:
    f(prompts=[messages], completions=[[assistant message]]) -> scores."""

    def reward(prompts: Sequence[Messages], completions: Sequence[Any], **_: Any) -> list[float]:
        return scorer.score(prompts, [c if isinstance(c, list) else str(c) for c in completions])

    return reward


# --------------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------------


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), (statistics.pstdev(values) if len(values) > 1 else 0.0)


def evaluate_reward_model(
    model_path: str, rows: list[dict[str, Any]], out_dir: Path, batch_size: int = 16
) -> dict[str, float]:
    """Pairwise accuracy and score statistics on (held-out) preference rows.

    Writes `out_dir/artifacts/rm_scores.jsonl` (one line per pair) and `rm_score_hist.png`.
    `rm/reward_mean`/`rm/reward_std` are over all 2N scored responses (chosen and rejected together).
    """
    check_preference_rows(rows, where="evaluation rows")
    scorer = RewardScorer(model_path, batch_size=batch_size)
    prompts = [r["prompt"] for r in rows]
    chosen = scorer.score(prompts, [r["chosen"] for r in rows])
    rejected = scorer.score(prompts, [r["rejected"] for r in rows])
    artifacts = out_dir / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    with (artifacts / "rm_scores.jsonl").open("w") as fh:
        for row, c, r in zip(rows, chosen, rejected):
            fh.write(json.dumps({"id": row.get("id"), "source": row.get("source"), "chosen_score": c,
                                 "rejected_score": r, "margin": c - r, "correct": c > r}) + "\n")
    _plot_scores(chosen, rejected, artifacts / "rm_score_hist.png")
    reward_mean, reward_std = _mean_std(chosen + rejected)
    chosen_mean, chosen_std = _mean_std(chosen)
    rejected_mean, rejected_std = _mean_std(rejected)
    margins = [c - r for c, r in zip(chosen, rejected)]
    return {
        "rm/accuracy": sum(c > r for c, r in zip(chosen, rejected)) / len(rows),
        "rm/ties": float(sum(c == r for c, r in zip(chosen, rejected))),
        "rm/reward_mean": reward_mean,
        "rm/reward_std": reward_std,
        "rm/chosen_mean": chosen_mean,
        "rm/chosen_std": chosen_std,
        "rm/rejected_mean": rejected_mean,
        "rm/rejected_std": rejected_std,
        "rm/margin_mean": statistics.fmean(margins),
        "rm/n_pairs": float(len(rows)),
    }


def _plot_scores(chosen: Sequence[float], rejected: Sequence[float], path: Path) -> None:
    """Chosen vs rejected score histograms (the seed RM report's distribution plot)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    bins = 30
    ax.hist(chosen, bins=bins, alpha=0.6, label=f"chosen (mean {statistics.fmean(chosen):.2f})")
    ax.hist(rejected, bins=bins, alpha=0.6, label=f"rejected (mean {statistics.fmean(rejected):.2f})")
    ax.set_xlabel("reward-model score")
    ax.set_ylabel("pairs")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# RewardBench (Lambert et al., 2024) sections; scores are example-count-weighted within a section.
# Counts are RewardBench's published ones (math-prm upweighted to equal the code subsets together).
REWARDBENCH_SECTIONS: dict[str, dict[str, int]] = {
    "chat": {"alpacaeval-easy": 100, "alpacaeval-length": 95, "alpacaeval-hard": 95, "mt-bench-easy": 28,
             "mt-bench-med": 40},
    "chat_hard": {"mt-bench-hard": 37, "llmbar-natural": 100, "llmbar-adver-neighbor": 134,
                  "llmbar-adver-GPTInst": 92, "llmbar-adver-GPTOut": 47, "llmbar-adver-manual": 46},
    "safety": {"refusals-dangerous": 100, "refusals-offensive": 100, "xstest-should-refuse": 250,
               "xstest-should-respond": 154, "donotanswer": 136},
    "reasoning": {"math-prm": 984, "hep-cpp": 164, "hep-go": 164, "hep-java": 164, "hep-js": 164,
                  "hep-python": 164, "hep-rust": 164},
}
REWARDBENCH_PRIOR_SETS = ("anthropic_harmless", "anthropic_helpful", "anthropic_hhh", "mtbench_gpt4",
                          "mtbench_human", "shp", "summarize")
# Paper Table 13: "weighted average of subsets with prior sets given weight 0.5 and all other sets 1".
REWARDBENCH_SECTION_WEIGHTS = {"chat": 1.0, "chat_hard": 1.0, "safety": 1.0, "reasoning": 1.0, "prior_sets": 0.5}
REWARDBENCH_FILES = ("rewardbench/filtered.jsonl", "rewardbench/filtered.jsonl.gz",
                     "rewardbench/pref_test_sets.jsonl", "rewardbench/pref_test_sets.jsonl.gz")


def rewardbench_score(subset_accuracy: dict[str, float]) -> dict[str, float]:
    """Section scores and the weighted total from per-subset accuracies (0-1)."""
    out: dict[str, float] = {}
    sections: dict[str, float] = {}
    for section, counts in REWARDBENCH_SECTIONS.items():
        present = {s: n for s, n in counts.items() if s in subset_accuracy}
        if present:
            sections[section] = sum(subset_accuracy[s] * n for s, n in present.items()) / sum(present.values())
    prior = [subset_accuracy[s] for s in REWARDBENCH_PRIOR_SETS if s in subset_accuracy]
    if prior:
        sections["prior_sets"] = statistics.fmean(prior)
    for section, value in sections.items():
        out[f"rewardbench/{section}"] = value
    if sections:
        weights = {s: REWARDBENCH_SECTION_WEIGHTS[s] for s in sections}
        out["rewardbench/score"] = sum(sections[s] * w for s, w in weights.items()) / sum(weights.values())
    return out


def rewardbench_files() -> list[Path]:
    """The RewardBench files found in the local data dirs (first dir holding each name), maybe none."""
    from harness.paths import find_data_file

    found: dict[str, Path] = {}
    for rel in REWARDBENCH_FILES:  # one file per split: `x.jsonl` wins over `x.jsonl.gz` (never both)
        path = find_data_file(rel)
        split = rel.removesuffix(".gz")
        if path is not None and split not in found:
            found[split] = path
    return list(found.values())


def rewardbench_missing_reason() -> str:
    """Why RewardBench is not scored, naming every path that was looked at."""
    from harness.paths import data_dirs

    looked = [str(d / rel) for d in data_dirs() for rel in REWARDBENCH_FILES]
    return ("RewardBench data not found locally; looked for " + ", ".join(looked)
            + " (put allenai/reward-bench's `filtered` split there as JSONL, or point HARNESS_DATA_DIR at it)")


_FINGERPRINTS: dict[tuple[str, int, int], str] = {}


def rewardbench_fingerprint() -> str | None:
    """Content hash of the local RewardBench files (None when absent), for the reward-model stage key.

    Part of the key so that a stage trained while the data was missing is redone (with RewardBench)
    once the data is there, and redone again if the data changes. Cached per (path, size, mtime).
    """
    from harness.cache import file_sha256

    files = rewardbench_files()
    if not files:
        return None
    digest = hashlib.sha256()
    for path in files:
        stat = path.stat()
        ident = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        if ident not in _FINGERPRINTS:
            _FINGERPRINTS[ident] = file_sha256(path)
        digest.update(f"{path.name}:{_FINGERPRINTS[ident]}\n".encode())
    return digest.hexdigest()[:16]


def evaluate_rewardbench(model_path: str, out_dir: Path, batch_size: int = 16) -> tuple[dict[str, float], str | None]:
    """(metrics, skipped_reason). Reads RewardBench rows (`prompt`, `chosen`, `rejected`, `subset`: the
    hub schema) from the local data dirs; when they are absent returns no numbers and the reason."""
    from datasets_registry.raw_files import read_jsonl

    files = rewardbench_files()
    if not files:
        return {}, rewardbench_missing_reason()
    rows = []
    for path in files:
        for i, row in enumerate(read_jsonl(path)):
            missing = {"prompt", "chosen", "rejected", "subset"} - set(row)
            if missing:
                raise ValueError(f"{path}: RewardBench row {i} lacks {sorted(missing)}; present: {sorted(row)}")
            rows.append(row)
    scorer = RewardScorer(model_path, batch_size=batch_size)
    prompts = [[{"role": "user", "content": r["prompt"]}] for r in rows]
    chosen = scorer.score(prompts, [r["chosen"] for r in rows])
    rejected = scorer.score(prompts, [r["rejected"] for r in rows])
    per_subset: dict[str, list[bool]] = {}
    for row, c, r in zip(rows, chosen, rejected):
        per_subset.setdefault(row["subset"], []).append(c > r)
    accuracy = {s: sum(v) / len(v) for s, v in per_subset.items()}
    artifacts = out_dir / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    (artifacts / "rewardbench_subsets.json").write_text(json.dumps(accuracy, indent=2))
    metrics = rewardbench_score(accuracy)
    metrics["rewardbench/n"] = float(len(rows))
    return metrics, None
