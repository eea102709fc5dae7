"""The open_instruct_2024 fixtures (open-instruct's 2024 evaluation settings, issue #20) are complete and
are exactly what `transcribe.py` renders from the real rows in ../shared/data, so a `paper` setting tested
against them is tested against open-instruct's formatting rules, not against a stale copy."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "open_instruct_2024"
BENCHMARKS = ("mmlu", "gsm8k", "bbh", "truthfulqa", "humaneval_plus", "mbpp_plus", "toxigen", "xstest",
              "alpaca_eval1", "alpaca_eval2", "ifeval")
KEYS = ("open_instruct", "subset", "prompt", "bos", "stop_sequences", "decoding", "judge", "scoring", "examples")


def _transcribe():
    spec = importlib.util.spec_from_file_location("open_instruct_2024_transcribe", FIXTURES / "transcribe.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", BENCHMARKS)
def test_each_benchmark_fixture_has_the_settings_and_two_rendered_real_rows(name: str):
    fixture = json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))
    assert fixture["benchmark"] == name and all(k in fixture for k in KEYS)
    assert len(fixture["open_instruct"]["commit"]) == 40
    assert fixture["prompt"]["chat"]["function"] == "eval.templates.create_prompt_with_tulu_chat_format"
    assert fixture["bos"]["in_rendered_prompt"] is False and fixture["bos"]["added_by_tokenizer"] is True
    assert len(fixture["examples"]) == 2
    for example in fixture["examples"]:
        assert example["rendered_prompt"].startswith("<|user|>\n" + example["user_turn"] + "\n<|assistant|>\n")


def test_the_fixtures_are_what_the_transcription_renders_from_the_shared_data(shared_data: Path):
    transcribe = _transcribe()
    built = transcribe.build(shared_data)
    assert sorted(built) == sorted(BENCHMARKS)
    for name, fixture in built.items():
        assert (FIXTURES / f"{name}.json").read_text(encoding="utf-8") == transcribe.dump(fixture), name


def test_transcribed_subsets_follow_pythons_seeded_random():
    """The subset rules themselves, on known sizes: GSM8K 200 of 1,319, BBH 40 per task, ToxiGen 500 of 1,000."""
    transcribe = _transcribe()
    gsm = transcribe.gsm8k_subset(1319)
    assert len(gsm) == len(set(gsm)) == 200 and max(gsm) < 1319
    assert gsm == json.loads((FIXTURES / "gsm8k.json").read_text())["subset"]["row_indices"]
    bbh = transcribe.bbh_subsets({"a": 250, "b": 187})
    assert [len(v) for v in bbh.values()] == [40, 40]
    tox = transcribe.toxigen_subsets(["women", "asian"])
    assert list(tox) == ["asian", "women"] and all(len(set(v)) == 500 for v in tox.values())
