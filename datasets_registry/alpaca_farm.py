"""AlpacaFarm human and GPT-4 preferences (Dubois et al. 2023), the 'preference' splits (App. B).

Raw rows: instruction, optional input, output_1, output_2, preference (1 or 2: the preferred output).
The prompt is the instruction followed by the input, as AlpacaFarm formats them.
"""

from __future__ import annotations

from typing import Any

from datasets_registry.core import preference_row
from datasets_registry.raw_files import require_fields, text_field, where
from datasets_registry.raw_sources import source_spec
from datasets_registry.spec import DropRow, register

REVISION = "e576524ca841af3c36fd6912e68e5920430928c1"


def _curate(source: str, raw: dict[str, Any]) -> dict[str, Any]:
    require_fields(raw, ["instruction", "output_1", "output_2", "preference"], where(raw))
    instruction = text_field(raw, "instruction").strip()
    extra = raw.get("input") or ""
    prompt = f"{instruction}\n\n{extra.strip()}" if isinstance(extra, str) and extra.strip() else instruction
    preference = raw["preference"]
    if preference not in (1, 2):
        raise DropRow("invalid_preference")
    out_1, out_2 = text_field(raw, "output_1"), text_field(raw, "output_2")
    chosen, rejected = (out_1, out_2) if preference == 1 else (out_2, out_1)
    return preference_row(source, [{"role": "user", "content": prompt}], chosen, rejected)


def curate_human(raw: dict[str, Any]) -> dict[str, Any]:
    return _curate("alpacafarm-human", raw)


def curate_gpt4(raw: dict[str, Any]) -> dict[str, Any]:
    return _curate("alpacafarm-gpt4", raw)


for _name, _file, _curate_fn, _type, _size, _what, _released in (
    ("alpacafarm-human", "alpaca_human_preference.json", curate_human, "human", 9_686, "human",
     "alpaca_farm_human_pref"),
    ("alpacafarm-gpt4", "alpaca_gpt4_preference.json", curate_gpt4, "synthetic", 19_465, "GPT-4",
     "alpaca_farm_gpt4_pref"),
):
    register(source_spec(
        name=_name,
        kind="preference",
        source_type=_type,
        group="table1",
        description=f"AlpacaFarm {_what} pairwise preferences over Alpaca instructions.",
        curate=_curate_fn,
        hub_id="tatsu-lab/alpaca_farm",
        split="preference",
        revision=REVISION,
        hub_files=(_file,),
        license="CC-BY-NC-4.0",
        paper_size=_size,
        expected_size=_size,
        rule="prompt = instruction (+ blank line + input when present); preference 1 -> output_1 chosen, "
             "2 -> output_2 chosen",
        rule_source="App. B (the 'preference' splits); the authors' script has no branch for it (released split "
                    f"{_released})",
        released_as=f"tulu25-{_released}",
        local_files=(f"tatsu-lab/alpaca_farm/{_file}", f"alpaca_farm/{_file}"),
        how_to_get=f"download {_file} of the hub repo tatsu-lab/alpaca_farm into <data dir>/tatsu-lab/alpaca_farm/",
    ))
