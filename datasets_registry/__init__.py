"""Preference datasets, prompt sets and mixes, registered by name (see `core.py` for the row schema).

Adding a dataset: one module that calls `register(DatasetSpec(...))`, plus one import line below.
"""

from datasets_registry import smoke_lowercase  # noqa: F401  (registers built-in smoke data)
from datasets_registry.core import (
    DATASETS,
    DataFormatError,
    DatasetSpec,
    DropRow,
    PreparedSplit,
    fingerprint_rows,
    prepare,
    register,
    stable_id,
)

__all__ = [
    "DATASETS", "DataFormatError", "DatasetSpec", "DropRow", "PreparedSplit", "fingerprint_rows",
    "prepare", "register", "stable_id",
]
