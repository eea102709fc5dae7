"""Preference datasets, prompt sets and mixes, registered by name (see `core.py` for the row schema).

Adding a dataset: one module that calls `register(DatasetSpec(...))` (or `source_spec(...)` for a
dataset read from local files / the hub), plus one import line below.
"""

from datasets_registry import (  # noqa: F401  (importing registers the datasets)
    alpaca_farm,
    capybara,
    chatbot_arena,
    helpsteer,
    hh_rlhf,
    mixes,
    nectar,
    orca,
    prm800k,
    prompts,
    shp2,
    smoke_lowercase,
    stack_exchange,
    tagging,
    ultrafeedback,
)
from datasets_registry.core import (
    DATASETS,
    DataFormatError,
    DatasetSpec,
    DataUnavailableError,
    DropRow,
    PreparedSplit,
    fingerprint_rows,
    prepare,
    register,
    stable_id,
    write_prepared,
)

__all__ = [
    "DATASETS", "DataFormatError", "DataUnavailableError", "DatasetSpec", "DropRow", "PreparedSplit",
    "fingerprint_rows", "prepare", "register", "stable_id", "write_prepared",
]
