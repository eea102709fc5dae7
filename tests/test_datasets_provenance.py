"""Provenance of every dataset: its rule and the rule's source, hub pins, the authors' released splits
(allenai/tulu-2.5-preference-data, fixture `tulu25_hh_rlhf.jsonl` in the release's schema: chosen / rejected
message lists + source), "as released" vs "rebuilt" in a grid, and `harness data show / list`.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from datasets_registry import DATASETS, prepare, released_name
from datasets_registry.cli import add_commands
from datasets_registry.released import RELEASED_REVISION, RELEASED_SPLITS

FIXTURES = Path(__file__).parent / "fixtures" / "datasets"
README = Path(__file__).parent.parent / "datasets_registry" / "README.md"
COMMIT = re.compile(r"[0-9a-f]{40}")


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="harness")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_every_table1_dataset_states_its_rule_source_and_expected_size():
    for name, spec in DATASETS.items():
        if spec.group != "table1":
            continue
        assert spec.rule and spec.rule_source, name
        assert spec.expected_size, name
        assert spec.released_as in DATASETS and DATASETS.get(spec.released_as).group == "released", name
    # Where the released split's size differs from Table 1, the expected size is the released one.
    assert DATASETS.get("ultrafeedback-overall").expected_size == RELEASED_SPLITS["ultrafeedback_overall"][0] == 58_933
    assert DATASETS.get("ultrafeedback-overall").paper_size == 60_908
    assert DATASETS.get("ultrafeedback-overall").downsample_to is None  # 60,908 is not forced


def test_every_hub_source_is_pinned_to_a_commit_or_says_why_not():
    unpinned = {}
    for name, spec in DATASETS.items():
        if spec.hub_id is None:
            continue
        if spec.revision is None:
            assert spec.unpinned_reason, f"{name}: unpinned hub source without a reason"
            unpinned[name] = spec.hub_id
        else:
            assert COMMIT.fullmatch(spec.revision), f"{name}: revision {spec.revision!r} is not a commit id"
    # Only the paired StackExchange source: no commit id of it could be found.
    assert unpinned == {"stack-exchange": "lvwerra/stack-exchange-paired",
                        "stack-exchange-60k": "lvwerra/stack-exchange-paired"}
    for name in ("capybara-7k", "chatbot-arena-2023", "chatbot-arena-2024", "prompts-gsm8k-train",
                 "prompts-wildchat", "prompts-lmsys-chat-1m", "hh-rlhf"):
        assert DATASETS.get(name).pinned, name


def test_every_released_split_is_registered_with_its_published_size():
    released = {name: spec for name, spec in DATASETS.items() if spec.group == "released"}
    assert set(released) == {f"tulu25-{split}" for split in RELEASED_SPLITS}
    assert len(released) == 28 and sum(rows for rows, _, _ in RELEASED_SPLITS.values()) == 2_122_287
    for spec in released.values():
        assert spec.revision == RELEASED_REVISION and spec.downsample_to is None and not spec.drop_identical
        assert spec.hub_files == (f"data/{spec.split}-00000-of-00001.jsonl",)
    assert released["tulu25-prm800k_pairs_phase2"].expected_size == 6_949  # = Table 1's PRM800k count
    assert released["tulu25-preference_big_mixture"].expected_size == 259_851  # = Table 6's total


def test_released_rows_are_read_as_published_duplicates_and_identical_pairs_kept(tmp_path, monkeypatch):
    folder = tmp_path / "allenai" / "tulu-2.5-preference-data" / "data"
    folder.mkdir(parents=True)
    (folder / "hh_rlhf-00000-of-00001.jsonl").write_bytes((FIXTURES / "tulu25_hh_rlhf.jsonl").read_bytes())
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path))
    assert DATASETS.get("tulu25-hh_rlhf").is_available() and not DATASETS.get("tulu25-hh_rlhf_60k").is_available()
    split = prepare("tulu25-hh_rlhf")
    assert split.raw_count == 5
    assert split.dropped == {"no_shared_prompt": 1, "empty_turn_chosen": 1}
    multi = [r for r in split.rows if len(r["prompt"]) == 3]
    assert len(multi) == 2 and multi[0]["id"] != multi[1]["id"]  # a released duplicate stays, with its own id
    assert [m["role"] for m in multi[0]["prompt"]] == ["user", "assistant", "user"]
    assert multi[0]["chosen"] == [{"role": "assistant", "content": "Use four cups of water and simmer for 18 minutes."}]
    same = next(r for r in split.rows if r["prompt"][0]["content"] == "What is 2+2?")
    assert same["chosen"] == same["rejected"] and same["released_source"] == "hh-rlhf"
    assert split.sources == [str(folder / "hh_rlhf-00000-of-00001.jsonl")]


def test_released_name_maps_rebuilt_datasets_to_their_split_and_refuses_others():
    assert released_name("hh-rlhf") == "tulu25-hh_rlhf"
    assert released_name("ultrafeedback-fg") == "tulu25-ultrafeedback_mean_aspects"
    assert released_name("prm800k") == "tulu25-prm800k_pairs_phase2"
    assert released_name("rm-mix") == "tulu25-preference_big_mixture"
    assert released_name("tulu25-nectar") == "tulu25-nectar"
    with pytest.raises(ValueError, match="'smoke-lowercase' has no released split.*hh-rlhf"):
        released_name("smoke-lowercase")


def test_grid_chooses_as_released_or_rebuilt_per_dataset_validated_at_load():
    from harness.config import DatasetRef
    from harness.grid import GridError, build_grid

    assert DatasetRef.model_validate({"name": "hh-rlhf"}).name == "hh-rlhf"
    released = DatasetRef.model_validate({"name": "hh-rlhf", "build": "released", "max_rows": 10})
    assert (released.name, released.max_rows) == ("tulu25-hh_rlhf", 10)
    assert DatasetRef.model_validate(released.model_dump()).name == "tulu25-hh_rlhf"  # re-validation is stable
    raw = {"experiment": "t",
           "base": {"model": "tiny-random-llama", "dataset": {"name": "hh-rlhf", "max_rows": 8},
                    "algorithm": {"name": "dpo", "max_steps": 1}, "eval": {"tasks": ["smoke_lowercase"], "limit": 2}},
           "axes": {"dataset.build": ["rebuilt", "released"]}}
    grid = build_grid(raw)
    assert sorted(c.config.dataset.name for c in grid.cells if c.config.algorithm) == ["hh-rlhf", "tulu25-hh_rlhf"]
    raw["base"]["dataset"]["name"] = "smoke-lowercase"
    with pytest.raises(GridError, match="has no released split"):
        build_grid(raw)


def test_show_prints_the_rule_its_source_and_the_pin(capsys):
    assert _run(["data", "show", "helpsteer", "--no-rows"]) == 0
    out = capsys.readouterr().out
    assert "rule:" in out and "verbosity excluded" in out
    assert "source:    App. B" in out and "convert_preference_data.py" in out
    assert "samples[0]" in out  # the documented disagreement with the authors' script
    assert "revision=4d715889bb2581702d73cd98e58162e7b90e569b" in out and "released:  tulu25-helpsteer" in out
    assert _run(["data", "show", "stack-exchange", "--no-rows"]) == 0
    out = capsys.readouterr().out
    assert "UNPINNED (no commit revision): no commit id of lvwerra/stack-exchange-paired was found" in out


def test_show_prints_the_card_then_the_rows(capsys):
    assert _run(["data", "show", "prm800k", "-n", "1", "--file", str(FIXTURES / "prm800k_phase2.jsonl")]) == 0
    out = capsys.readouterr().out
    assert out.index("found_error") < out.index("prm800k: raw 4  kept 2")
    assert "source=prm800k" in out


def test_list_marks_unpinned_sources(capsys):
    assert _run(["data", "list", "--unpinned"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines()[1:] if line.strip() and " preference " in line}
    assert set(lines) == {"stack-exchange", "stack-exchange-60k"}
    assert all(" UNPINNED " in line for line in lines.values())
    assert "UNPINNED hub sources (2): stack-exchange, stack-exchange-60k" in out
    assert _run(["data", "list", "--group", "table1"]) == 0
    out = capsys.readouterr().out
    hh = next(line for line in out.splitlines() if line.startswith("hh-rlhf "))
    assert hh.split()[6:8] == ["158,530", "09be8c5"]  # expected size, pin


def test_readme_table_covers_every_table1_dataset():
    text = README.read_text()
    table = [line for line in text.splitlines() if line.startswith("| `")]
    names = {line.split("`")[1] for line in table}
    assert {n for n, s in DATASETS.items() if s.group == "table1"} <= names
    for line in table:
        name = line.split("`")[1]
        if name in DATASETS and DATASETS.get(name).expected_size:
            assert f"{DATASETS.get(name).expected_size:,}" in line, name


def test_fig3_ultrafeedback_prompt_set_is_20k_random_prompts(tmp_path):
    # 20,500 prompts in Argilla's schema: the named Fig. 3 set keeps a seeded 20,000 of them.
    raw = tmp_path / "argilla.jsonl"
    raw.write_text("".join(f'{{"source": "sharegpt", "prompt": "Question number {i}?"}}\n' for i in range(20_500)))
    full = prepare("prompts-ultrafeedback", files=[raw])
    fig3 = prepare("prompts-ultrafeedback-20k", files=[raw])
    assert (full.kept, fig3.kept) == (20_500, 20_000)
    assert {r["id"] for r in fig3.rows} <= {r["id"] for r in full.rows}
    assert prepare("prompts-ultrafeedback-20k", seed=1, files=[raw]).fingerprint != fig3.fingerprint
