"""Reference log-probs computed once per grid: the `reference_logps` stage and what reads it.

DPO-family losses (`AlgorithmSpec.reference_logps`: dpo, ipo, dpo-hinge, dpo-robust) compare the policy's
log-probs of each pair's chosen and rejected answers with those of the frozen reference (the starting model).
Those reference numbers depend on the reference model, the pairs, how a sequence is cut to `max_length`
(TRL's `truncation_mode`) and the precision, not on beta, the loss, the learning rate or the seed. So every
cell of a grid that shares these shares one content-addressed `reference_logps` stage, which computes them
once; the cells' `train_policy` stages read them (`TrainContext.reference_logps`) instead of each running
the reference pass again.

How, in TRL 1.16: `DPOTrainer(precompute_ref_log_probs=True)` runs the reference pass in its constructor
(`_precompute_ref_logps`: the training rows in order, in batches, no gradient, under the trainer's autocast)
and adds the columns `ref_chosen_logps` / `ref_rejected_logps` to its dataset; its collator passes such
columns through and its loss reads them from the batch. The stage runs exactly that pass (a `DPOTrainer` built
with the cell's `max_length`, truncation mode and precision) and stores the columns; the training stage gives
the same columns with its rows to `PrecomputedReferenceDPOTrainer`, whose `_precompute_ref_logps` keeps them
instead of computing them again. TRL offers no public switch for this: the override is checked against TRL's
own computation by tests/test_reference_logps.py (same numbers; the trained model equal to tolerance).

The pass runs in batches of `BATCH_SIZE` pairs whatever the cells' batch sizes (they are then free to differ
and still share it): padding a row with other rows changes its numbers only by rounding, so a cell whose
per-device batch differs gets reference numbers equal to its own to float tolerance (bf16: to bf16 rounding).

Not shared (each cell's trainer computes its own, as before): `precompute_ref_log_probs: false`, and QLoRA
(`peft.quantization`: the reference is the 4-bit base model). KTO is not among the algorithms: TRL's KTO
takes precomputed `ref_logps` / `ref_KL_logps` too, but its KL term pairs each example with its neighbours in
a batch, so those values depend on the batch size and the seed's shuffle, and a shared stage would have to
be keyed on both; not done.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harness.generation import EngineSettings

KIND = "reference_logps"  # the stage kind
FILE = "reference_logps.json"  # in the stage folder
# Pairs per batch of the reference pass (part of the stage key, so changing it recomputes).
BATCH_SIZE = 8
# TRL's default (`DPOConfig.truncation_mode`), set explicitly on both sides so that they cannot drift apart.
TRUNCATION_MODE = "keep_start"
COLUMNS = ("ref_chosen_logps", "ref_rejected_logps")


def stage_config(model: str, algorithm: dict[str, Any], training_key: dict[str, Any]) -> dict[str, Any] | None:
    """The `reference_logps` stage config of a cell training `algorithm` (its resolved config) from `model` at
    the precision `training_key` (`ResolvedEngine.training_key()`), or None when its trainer computes its own."""
    if not algorithm.get("precompute_ref_log_probs", False):
        return None  # the user asked for the reference forward at every step
    peft = algorithm.get("peft") or {}
    if peft.get("quantization"):
        return None  # the reference is the 4-bit base model (CUDA only): not shared
    return {"model": model, "max_length": algorithm["max_length"], "truncation_mode": TRUNCATION_MODE,
            "batch_size": BATCH_SIZE, "engine": training_key}


def rows_digest(rows: list[dict[str, Any]]) -> str:
    """The pairs' identity (prompt, chosen, rejected of every row, in order): the stored numbers are aligned
    with exactly these rows."""
    h = hashlib.sha256()
    for row in rows:
        h.update(json.dumps([row["prompt"], row["chosen"], row["rejected"]], sort_keys=True).encode())
        h.update(b"\n")
    return h.hexdigest()


@dataclass
class ReferenceLogps:
    """Summed log-probs of each row's chosen and rejected answer under the reference model, one per row in
    the rows' order; None for a row the trainer drops (its prompt alone fills `max_length`)."""

    chosen: list[float | None]
    rejected: list[float | None]
    rows_sha256: str

    def save(self, folder: Path) -> None:
        (folder / FILE).write_text(json.dumps({"rows_sha256": self.rows_sha256, "chosen": self.chosen,
                                               "rejected": self.rejected}))

    @classmethod
    def load(cls, folder: Path, rows: list[dict[str, Any]]) -> ReferenceLogps:
        """The stored numbers, checked against the rows they will be paired with."""
        data = json.loads((folder / FILE).read_text())
        found = cls(data["chosen"], data["rejected"], data["rows_sha256"])
        if found.rows_sha256 != rows_digest(rows) or len(found.chosen) != len(rows):
            raise RuntimeError(f"{folder / FILE}: reference log-probs of other rows than the {len(rows)} this stage "
                               "trains on (the plan pairs them with the same data stage): re-run the grid")
        return found

    def metrics(self) -> dict[str, float]:
        kept = [(c, r) for c, r in zip(self.chosen, self.rejected, strict=True) if c is not None and r is not None]
        out = {"ref/pairs": float(len(kept)), "ref/dropped_pairs": float(len(self.chosen) - len(kept))}
        if kept:
            out["ref/chosen_logps_mean"] = sum(c for c, _ in kept) / len(kept)
            out["ref/rejected_logps_mean"] = sum(r for _, r in kept) / len(kept)
        return out

    def with_columns(self, dataset: Any) -> Any:
        """`dataset` (one row per pair, in this order) with TRL's reference columns; NaN where a row has none
        (the trainer drops such rows; `PrecomputedReferenceDPOTrainer` checks that none is left)."""
        nan = float("nan")
        dataset = dataset.add_column(COLUMNS[0], [nan if v is None else v for v in self.chosen])
        return dataset.add_column(COLUMNS[1], [nan if v is None else v for v in self.rejected])


def compute(model_path: str, rows: list[dict[str, Any]], config: dict[str, Any], engine: EngineSettings,
            out_dir: Path) -> ReferenceLogps:
    """The reference pass of TRL's DPOTrainer over `rows`, as a cell's trainer would run it (same
    tokenization, truncation, collator and autocast), in batches of `config["batch_size"]` pairs."""
    import shutil

    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from harness.algorithms.trl_common import device_kwargs, preference_dataset, quiet_trainer

    tok = AutoTokenizer.from_pretrained(model_path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_path)
    args = DPOConfig(
        output_dir=str(out_dir / "trainer"), max_length=config["max_length"],
        truncation_mode=config["truncation_mode"], precompute_ref_log_probs=True,
        per_device_train_batch_size=config["batch_size"], precompute_ref_batch_size=config["batch_size"],
        report_to=[], disable_tqdm=True, dataloader_num_workers=0, **device_kwargs(engine),
    )
    dataset = preference_dataset(rows).add_column("_row", list(range(len(rows))))
    trainer = DPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=tok)
    quiet_trainer(trainer)
    done = trainer.train_dataset.select_columns(["_row", *COLUMNS])
    chosen: list[float | None] = [None] * len(rows)
    rejected: list[float | None] = [None] * len(rows)
    for row, c, r in zip(done["_row"], done[COLUMNS[0]], done[COLUMNS[1]], strict=True):
        chosen[row], rejected[row] = float(c), float(r)
    del trainer, model
    shutil.rmtree(out_dir / "trainer", ignore_errors=True)
    return ReferenceLogps(chosen, rejected, rows_digest(rows))


def precomputed_trainer_class() -> type:
    """TRL's DPOTrainer taking the reference columns its dataset already has instead of computing them
    (built with `precompute_ref_log_probs=True`, so it keeps no reference model and its loss reads them)."""
    from trl import DPOTrainer

    if not hasattr(DPOTrainer, "_precompute_ref_logps"):  # the TRL 1.16 hook this relies on
        import trl

        raise RuntimeError(f"TRL {trl.__version__}'s DPOTrainer has no `_precompute_ref_logps`: the shared "
                           "reference log-probs (harness/reference_logps.py) need adapting to this version")

    class PrecomputedReferenceDPOTrainer(DPOTrainer):
        def _precompute_ref_logps(self, dataset: Any, name: str, batch_size: int) -> Any:
            if not set(COLUMNS) <= set(dataset.column_names):
                return super()._precompute_ref_logps(dataset, name, batch_size)
            for column in COLUMNS:
                if any(math.isnan(v) for v in dataset[column]):
                    raise RuntimeError(f"{name} dataset: a row the trainer keeps has no precomputed {column} (the "
                                       "reference_logps stage was computed with another max_length or truncation)")
            return dataset

    return PrecomputedReferenceDPOTrainer
