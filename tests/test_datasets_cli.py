"""`harness data list | show | prepare` (through `add_commands`, the hook `harness/cli.py` imports)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from datasets_registry import DATASETS
from datasets_registry.cli import add_commands

FIXTURES = Path(__file__).parent / "fixtures" / "datasets"


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="harness")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_list_shows_every_registered_dataset_with_type_size_licence_and_availability(capsys, shared_data):
    assert _run(["data", "list"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines()[1:] if line.strip() and not line.startswith(" ")}
    assert set(DATASETS.names()) <= set(lines)
    assert lines["hh-rlhf"].split()[1:6] == ["table1", "human", "preference", "158,530", "yes"]
    assert lines["shp-2"].split()[1:6] == ["table1", "web", "preference", "500,000", "no"]
    assert "CC BY-SA" in lines["shp-2"]
    assert lines["rm-mix"].split()[1:5] == ["mix", "mixed", "preference", "259,851"]


def test_prepare_writes_the_split_and_prints_counts_by_reason(capsys, isolated_results):
    assert _run(["data", "prepare", "chatbot-arena-2023", "--file",
                 str(FIXTURES / "chatbot_arena_conversations.jsonl")]) == 0
    out = capsys.readouterr().out
    assert "chatbot-arena-2023: raw 6  kept 2  dropped 4" in out
    assert "dropped tie: 2" in out and "dropped multi_turn: 1" in out and "dropped empty_turn_chosen: 1" in out
    path = isolated_results / "prepared" / "chatbot-arena-2023" / "seed0-n2.jsonl"
    assert path.exists() and len(path.read_text().splitlines()) == 2
    assert json.loads(path.with_suffix(".meta.json").read_text())["dropped"]["tie"] == 2


def test_prepare_every_locally_available_dataset(capsys, shared_data):
    available = [name for name, spec in DATASETS.items() if spec.is_available()]
    assert {"hh-rlhf", "ultrafeedback-fg", "ultrafeedback-overall", "chatbot-arena-2024",
            "prompts-gsm8k-train"} <= set(available)
    for name in available:
        assert _run(["data", "prepare", name, "--max-rows", "20"]) == 0, name
        assert f"{name}: raw " in capsys.readouterr().out


def test_show_prints_normalised_rows(capsys):
    assert _run(["data", "show", "nectar", "-n", "1", "--file", str(FIXTURES / "nectar.jsonl")]) == 0
    out = capsys.readouterr().out
    assert "source=nectar" in out and "chosen:" in out and "rejected:" in out


def test_errors_exit_2_with_a_message(capsys, tmp_path, monkeypatch):
    assert _run(["data", "prepare", "hh-rhlf"]) == 2
    assert "valid dataset names" in capsys.readouterr().err
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("HARNESS_NO_HUB", "1")
    assert _run(["data", "prepare", "capybara-7k"]) == 2
    assert "argilla/distilabel-capybara-dpo-7k-binarized" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "x"}\n')
    assert _run(["data", "prepare", "nectar", "--file", str(bad)]) == 2
    assert "bad.jsonl:1: missing field(s) ['answers']" in capsys.readouterr().err
