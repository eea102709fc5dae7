"""Registry contents, determinism of prepared splits, bad-input errors, mixes and the prepared-split cache."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from datasets_registry import DATASETS, DataFormatError, DataUnavailableError, prepare, write_prepared
from datasets_registry.core import PreparedSplit, prepare_spec
from datasets_registry.mixes import RM_MIX, RM_MIX_SIZE
from datasets_registry.raw_sources import source_spec, variant
from datasets_registry.spec import DropRow
from harness.registry import UnknownNameError

FIXTURES = Path(__file__).parent / "fixtures" / "datasets"

TABLE1 = {  # Table 1 '# Samples' after curation
    "shp-2": 500_000, "stack-exchange": 500_000, "prm800k": 6_949, "chatbot-arena-2023": 20_465,
    "chatbot-arena-2024": 34_269, "alpacafarm-human": 9_686, "hh-rlhf": 158_530, "helpsteer": 9_270,
    "alpacafarm-gpt4": 19_465, "capybara-7k": 7_563, "orca-pairs": 12_859, "nectar": 180_099,
    "ultrafeedback-overall": 60_908, "ultrafeedback-fg": 60_908,
}


def test_the_14_datasets_of_table1_with_hub_source_licence_and_size():
    table1 = {name: spec for name, spec in DATASETS.items() if spec.group == "table1"}
    assert {name: spec.paper_size for name, spec in table1.items()} == TABLE1
    for spec in table1.values():
        assert spec.hub_id and spec.split and spec.license and spec.local_files and spec.how_to_get
        assert spec.source_type in ("human", "web", "synthetic")
    assert {n for n, s in table1.items() if s.source_type == "web"} == {"shp-2", "stack-exchange"}
    assert DATASETS.get("shp-2").downsample_to == DATASETS.get("stack-exchange").downsample_to == 500_000


def test_variants_mixes_and_prompt_sets_are_registered():
    for name in ("hh-rlhf-60k", "stack-exchange-60k", "nectar-60k"):
        assert DATASETS.get(name).downsample_to == 60_908  # Table 2 size-matched splits
    for group in ("top", "middle", "bottom"):
        assert DATASETS.get(f"ultrafeedback-{group}").downsample_to == 10_000  # Table 7
    for source in ("falseqa", "evol-instruct", "truthfulqa", "flan-v2", "sharegpt", "ultrachat"):
        assert f"ultrafeedback-src-{source}" in DATASETS
    assert sum(count for _, count in RM_MIX) == RM_MIX_SIZE == DATASETS.get("rm-mix").paper_size == 259_851
    for name in ("prompts-ultrafeedback", "prompts-gsm8k-train", "prompts-mined-math", "prompts-mined-code",
                 "prompts-remix"):
        assert DATASETS.get(name).kind == "prompts"
    assert DATASETS.get("prompts-remix").downsample_to == 60_908


def test_unknown_name_lists_the_valid_names():
    with pytest.raises(UnknownNameError) as err:
        prepare("hh-rlhf-typo")
    assert "hh-rlhf" in str(err.value) and "ultrafeedback-fg" in str(err.value)


def _hh_rows(n: int) -> list[dict[str, str]]:
    return [{"chosen": f"\n\nHuman: question {i}?\n\nAssistant: good answer {i}",
             "rejected": f"\n\nHuman: question {i}?\n\nAssistant: bad answer {i}"} for i in range(n)]


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    with path.open("w") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)
    return path


def test_same_seed_byte_identical_and_other_seed_another_60908_subsample(tmp_path):
    raw = _write_jsonl(tmp_path / "train.jsonl", _hh_rows(61_000))
    first = prepare("hh-rlhf-60k", seed=0, files=[raw])
    again = prepare("hh-rlhf-60k", seed=0, files=[raw])
    other = prepare("hh-rlhf-60k", seed=1, files=[raw])
    assert first.kept == again.kept == other.kept == 60_908
    a = write_prepared(first, tmp_path / "a").read_bytes()
    b = write_prepared(again, tmp_path / "b").read_bytes()
    assert a == b and first.fingerprint == again.fingerprint
    assert other.fingerprint != first.fingerprint
    assert {r["id"] for r in other.rows} != {r["id"] for r in first.rows}


def test_subsample_is_independent_of_file_order_and_nested_across_sizes(tmp_path):
    rows = _hh_rows(700)
    forward = _write_jsonl(tmp_path / "forward.jsonl", rows)
    backward = _write_jsonl(tmp_path / "backward.jsonl", rows[::-1])
    small = variant(DATASETS.get("hh-rlhf"), name="hh-rlhf-small", downsample_to=600)
    a = prepare_spec(small, seed=3, files=[forward])
    b = prepare_spec(small, seed=3, files=[backward])
    assert a.kept == 600 and a.fingerprint == b.fingerprint
    # a smaller max_rows takes the first rows of the same seeded order: a subset of the larger sample
    c = prepare_spec(small, seed=3, max_rows=100, files=[forward])
    assert {r["id"] for r in c.rows} <= {r["id"] for r in a.rows}


def test_bad_json_line_names_file_and_line(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps(_hh_rows(1)[0]) + "\n{not json\n")
    with pytest.raises(DataFormatError, match=r"train\.jsonl:2: not valid JSON"):
        prepare("hh-rlhf", files=[path])


def test_missing_field_names_file_line_and_field(tmp_path):
    path = tmp_path / "train.jsonl.gz"
    with gzip.open(path, "wt") as fh:
        fh.write(json.dumps(_hh_rows(1)[0]) + "\n" + json.dumps({"chosen": "\n\nHuman: x\n\nAssistant: y"}) + "\n")
    with pytest.raises(DataFormatError, match=r"train\.jsonl\.gz:2: missing field\(s\) \['rejected'\]"):
        prepare("hh-rlhf", files=[path])


def test_csv_with_wrong_columns_names_file_and_fields(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("id,question\n1,hello\n")
    with pytest.raises(DataFormatError, match=r"train\.csv:2: missing field\(s\) \['prompt'"):
        prepare("chatbot-arena-2024", files=[path])


def test_wrong_type_names_the_field(tmp_path):
    path = _write_jsonl(tmp_path / "orca.jsonl", [{"input": "q", "chosen": ["not", "a", "string"], "rejected": "r"}])
    with pytest.raises(DataFormatError, match=r"orca\.jsonl:1: field 'chosen' should be a string, got list"):
        prepare("orca-pairs", files=[path])


@pytest.mark.parametrize("name", ["train.jsonl", "train.jsonl.gz", "train.csv", "train.json"])
def test_non_utf8_file_names_file_and_line(tmp_path, name):
    """A cp1252 byte on line 3 (after two good lines): the error names the file and that line, for every
    shared reader (a spreadsheet export is the usual culprit), not a raw UnicodeDecodeError."""
    from datasets_registry.raw_files import read_any

    good = [json.dumps(row) for row in _hh_rows(2)]
    if name == "train.csv":
        lines = ["chosen,rejected", "a,b", 'caf\xe9,d']
    elif name == "train.json":
        lines = ["[", good[0] + ",", '{"chosen": "caf\xe9", "rejected": "x"}', "]"]
    else:
        lines = [*good, '{"chosen": "caf\xe9", "rejected": "x"}']
    data = ("\n".join(lines) + "\n").encode("latin-1")
    path = tmp_path / name
    if name.endswith(".gz"):
        with gzip.open(path, "wb") as fh:
            fh.write(data)
    else:
        path.write_bytes(data)
    line = 3
    with pytest.raises(DataFormatError, match=rf"{name}:{line}: not UTF-8 text \(byte 0xe9 at column \d+\)"):
        list(read_any(path))
    if name.endswith(("jsonl", "jsonl.gz")):  # through a dataset's own loader too
        with pytest.raises(DataFormatError, match=rf"{name}:{line}: not UTF-8"):
            prepare("hh-rlhf", files=[path])


def test_missing_data_names_dataset_files_and_how_to_provide(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("HARNESS_NO_HUB", "1")
    with pytest.raises(DataUnavailableError) as err:
        prepare("nectar")
    message = str(err.value)
    assert "'nectar'" in message and "berkeley-nest/Nectar/data/*.parquet" in message
    assert str(tmp_path) in message and "to provide it:" in message
    assert not DATASETS.get("nectar").is_available()


def test_hub_layout_under_harness_data_dir_is_found(tmp_path, monkeypatch):
    folder = tmp_path / "berkeley-nest" / "Nectar"
    folder.mkdir(parents=True)
    (folder / "train.jsonl").write_bytes((FIXTURES / "nectar.jsonl").read_bytes())
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path))
    assert DATASETS.get("nectar").is_available()
    split = prepare("nectar")
    assert split.kept == 2 and split.sources == [str(folder / "train.jsonl")]


def test_loader_drops_are_counted_with_curation_drops():
    spec = source_spec(name="t", kind="preference", source_type="human", description="t",
                       curate=lambda raw: raw, read=lambda path: iter(()),
                       group_raw=lambda rows: iter([DropRow("bad_unit"), DropRow("bad_unit")]))
    split = prepare_spec(spec, files=[FIXTURES / "nectar.jsonl"])
    assert (split.raw_count, split.kept, split.dropped) == (2, 0, {"bad_unit": 2})


def test_mix_takes_counts_per_component_and_reports_shortfalls(tmp_path, monkeypatch, shared_data):  # real arena sample
    folder = tmp_path / "berkeley-nest" / "Nectar"
    folder.mkdir(parents=True)
    (folder / "train.jsonl").write_bytes((FIXTURES / "nectar.jsonl").read_bytes())
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path))
    from datasets_registry.spec import mix_spec

    spec = mix_spec(name="t-mix", kind="preference", source_type="mixed", description="t",
                    components=(("nectar", 1), ("chatbot-arena-2024", 30)))
    split = prepare_spec(spec, seed=0)
    assert split.kept == 1 + 24  # Nectar has 2 pairs (1 taken), the arena sample 24 (< 30)
    assert split.dropped["chatbot-arena-2024/short_by"] == 6
    assert split.dropped["chatbot-arena-2024/tie"] == 15
    assert {r["source"] for r in split.rows} == {"nectar", "chatbot-arena-2024"}


def test_write_prepared_records_counts_and_fingerprint(tmp_path):
    split = prepare("alpacafarm-human", files=[FIXTURES / "alpaca_human_preference.json"])
    path = write_prepared(split)
    assert path.parent.name == "alpacafarm-human" and path.name == "seed0-n2.jsonl"
    meta = json.loads(path.with_suffix(".meta.json").read_text())
    assert meta["fingerprint"] == split.fingerprint and meta["kept"] == 2 and meta["raw"] == 4
    assert meta["dropped"] == {"identical_chosen_rejected": 1, "invalid_preference": 1}
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["id"] for r in rows] == sorted(r["id"] for r in rows)


def test_grid_can_name_a_locally_available_dataset(shared_data):
    from harness.config import DatasetRef

    ref = DatasetRef.model_validate({"name": "hh-rlhf", "max_rows": 50})
    assert DATASETS.get(ref.name).is_available()
    split = prepare(ref.name, seed=0, max_rows=ref.max_rows)  # what the runner's prepare_data stage calls
    assert isinstance(split, PreparedSplit) and split.kept == 50
    with pytest.raises(ValueError, match="valid dataset names"):
        DatasetRef.model_validate({"name": "no-such-dataset"})
