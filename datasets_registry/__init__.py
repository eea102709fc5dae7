"""Preference datasets, prompt sets and mixes, registered by name (see `core.py` for the row schema).

Adding a dataset: one module that calls `register(DatasetSpec(...))` (`spec.py`; or `source_spec(...)`,
`raw_sources.py`, for a dataset read from local files / the hub), plus one import line below. Give it its
curation `rule`, the rule's `rule_source` (paper section, authors' script), a pinned hub `revision` (or
`unpinned_reason`), and `released_as` when the authors released a split of it.
"""

from datasets_registry import (  # noqa: F401  (importing registers the datasets)
    alpaca_farm,
    capybara,
    chatbot_arena,
    helpsteer,
    hh_rlhf,
    ifeval_synthetic,
    mixes,
    nectar,
    orca,
    prm800k,
    prompts,
    released,
    shp2,
    smoke_lowercase,
    stack_exchange,
    tagging,
    ultrafeedback,
)
from datasets_registry.core import PreparedSplit, fingerprint_rows, prepare, stable_id, write_prepared
from datasets_registry.released import released_name
from datasets_registry.spec import (
    DATASETS,
    DataFormatError,
    DatasetSpec,
    DataUnavailableError,
    DropRow,
    register,
)

__all__ = [
    "DATASETS", "DataFormatError", "DataUnavailableError", "DatasetSpec", "DropRow", "PreparedSplit",
    "fingerprint_rows", "prepare", "register", "released_name", "stable_id", "write_prepared",
]
