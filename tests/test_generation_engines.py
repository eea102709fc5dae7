"""The in-process engines of `harness.generation`: every batching returns what the static fp32 engine
returns at equal precision (greedy text, token ids, finished flags; stop strings, n samples, left
truncation), seeded sampling is reproducible and independent of batching, and the settings resolve and
validate as documented. On a perturbed tiny Llama (varied greedy answers) whose EOS is a token it emits
at different steps, so rows finish at different times and compaction has something to drop."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.generation import EngineSettings, SamplingParams, native_bf16, prompt_seeds_for
from harness.hf_engine import HFGenerator, finish_row


def _generator(path: str, batching: str, dtype: str = "float32", batch_size: int = 3) -> HFGenerator:
    return HFGenerator.from_name(path, batch_size=batch_size, engine=EngineSettings(dtype=dtype, batching=batching))


def _as_tuples(rows):
    return [[(s.text, s.prompt_ids, s.completion_ids, s.finished) for s in row] for row in rows]


GREEDY = SamplingParams(max_new_tokens=24)
STOPPED = SamplingParams(max_new_tokens=24, stop=("alt", "re "))
SAMPLED = SamplingParams(max_new_tokens=16, temperature=0.9, top_p=0.9, num_return_sequences=2, seed=11)


def test_finished_rows_end_at_different_steps(varied_model: str, varied_prompts: list[str]):
    """The fixture does what the equality tests below need: some rows end early, others run out."""
    rows = _generator(varied_model, "static").generate_samples(varied_prompts, GREEDY, chat=False)
    lengths = [len(r[0].completion_ids) for r in rows]
    assert any(r[0].finished for r in rows) and not all(r[0].finished for r in rows)
    assert len(set(lengths)) >= 3, lengths
    eos = rows[0][0] and _generator(varied_model, "static").tokenizer.eos_token_id
    assert all(r[0].completion_ids[-1] == eos for r in rows if r[0].finished)


@pytest.mark.parametrize("batching", ["compact", "continuous"])
def test_every_batching_returns_the_static_fp32_greedy_answers(varied_model: str, varied_prompts: list[str], batching: str):
    static = _generator(varied_model, "static")
    other = _generator(varied_model, batching)
    for params in (GREEDY, STOPPED):
        expected = _as_tuples(static.generate_samples(varied_prompts, params, chat=False))
        assert _as_tuples(other.generate_samples(varied_prompts, params, chat=False)) == expected
    stopped = [s for row in static.generate_samples(varied_prompts, STOPPED, chat=False) for s in row]
    eos = static.tokenizer.eos_token_id
    assert any(s.finished and s.completion_ids[-1] != eos for s in stopped)  # ended by a stop string
    assert all("alt" not in s.text and "re " not in s.text for s in stopped)


def test_compaction_matches_static_at_bf16_too(varied_model: str, varied_prompts: list[str]):
    """Equal precision, equal answers: the bf16 engines agree with each other as the fp32 ones do."""
    static = _generator(varied_model, "static", dtype="bfloat16")
    compact = _generator(varied_model, "compact", dtype="bfloat16")
    assert _as_tuples(compact.generate_samples(varied_prompts, GREEDY, chat=False)) == \
        _as_tuples(static.generate_samples(varied_prompts, GREEDY, chat=False))


def test_seeded_sampling_is_reproducible_and_independent_of_batching(varied_model: str, varied_prompts: list[str]):
    static = _generator(varied_model, "static")
    compact = _generator(varied_model, "compact", batch_size=2)
    one_by_one = _generator(varied_model, "compact", batch_size=1)
    first = _as_tuples(static.generate_samples(varied_prompts, SAMPLED, chat=False))
    assert _as_tuples(static.generate_samples(varied_prompts, SAMPLED, chat=False)) == first
    assert _as_tuples(compact.generate_samples(varied_prompts, SAMPLED, chat=False)) == first
    assert _as_tuples(one_by_one.generate_samples(varied_prompts, SAMPLED, chat=False)) == first
    assert all(len(row) == 2 for row in first) and any(row[0] != row[1] for row in first)  # n samples differ
    other_seed = SamplingParams(**{**SAMPLED.__dict__, "seed": 12})
    assert _as_tuples(compact.generate_samples(varied_prompts, other_seed, chat=False)) != first
    # A prompt's samples depend on its own seed only: alone, with its seed, it gets the same answers.
    alone = compact.generate_from_ids([first[3][0][1]], SAMPLED, prompt_seeds=[prompt_seeds_for(11, 7)[3]])
    assert _as_tuples(alone) == [first[3]]


def test_continuous_batching_sampling_is_reproducible(varied_model: str, varied_prompts: list[str]):
    continuous = _generator(varied_model, "continuous")
    first = _as_tuples(continuous.generate_samples(varied_prompts[:3], SAMPLED, chat=False))
    assert _as_tuples(continuous.generate_samples(varied_prompts[:3], SAMPLED, chat=False)) == first


def test_prompts_are_left_truncated_and_the_checkpoint_sampling_config_is_ignored(varied_model: str, varied_prompts: list[str]):
    """An over-long prompt loses its start (as before); a repetition penalty in the checkpoint's
    generation config changes nothing (the engine samples from the logits alone)."""
    static = _generator(varied_model, "static")
    compact = _generator(varied_model, "compact")
    long_prompt = "word " * 50 + varied_prompts[2]
    for generator in (static, compact):
        generator.max_prompt_tokens = 8
    full_ids = static.tokenizer(long_prompt, add_special_tokens=False)["input_ids"]
    for generator in (static, compact):
        (sample,) = generator.generate_samples([long_prompt], GREEDY, chat=False)[0]
        assert sample.prompt_ids == full_ids[-8:]
    baseline = _as_tuples(static.generate_samples(varied_prompts, GREEDY, chat=False))
    for generator in (static, compact):
        generator.model.generation_config.repetition_penalty = 5.0
        generator.model.generation_config.top_k = 3
        assert _as_tuples(generator.generate_samples(varied_prompts, GREEDY, chat=False)) == baseline


def test_finish_row_cuts_at_eos_or_the_first_stop_string(tiny_model: str):
    from harness.models import load_tokenizer

    tok = load_tokenizer(tiny_model)
    ids = tok("The capital of France is Paris. The capital", add_special_tokens=False)["input_ids"]
    eos = tok.eos_token_id
    assert finish_row(tok, [1], ids + [eos, eos], eos, ()).completion_ids == ids + [eos]
    cut = finish_row(tok, [1], ids + [eos], eos, ("Paris",))
    assert cut.finished and "Paris" in tok.decode(cut.completion_ids) and "Paris" not in cut.text
    assert "Paris" not in tok.decode(cut.completion_ids[:-1])  # the token that completed it, no further
    open_ended = finish_row(tok, [1], ids, eos, ("Tokyo",))
    assert not open_ended.finished and open_ended.truncated and open_ended.completion_ids == ids


def test_settings_resolve_per_device_and_validate(monkeypatch):
    import harness.generation as generation

    monkeypatch.setattr(generation, "_cpu_flags", lambda: {"avx2", "avx512_bf16"})
    native_bf16.cache_clear()
    try:
        auto = EngineSettings().resolved("cpu")
        assert (auto.kind, auto.dtype, auto.batching) == ("hf", "bfloat16", "compact") and auto.train_bf16
        assert "avx512_bf16" in auto.dtype_reason
        monkeypatch.setattr(generation, "_cpu_flags", lambda: {"avx2"})
        native_bf16.cache_clear()
        assert EngineSettings().resolved("cpu").dtype == "float32"
        pinned = EngineSettings(dtype="bfloat16", batching="static").resolved("cpu")
        assert (pinned.dtype, pinned.batching) == ("bfloat16", "static") and pinned.dtype_reason.startswith("pinned")
    finally:
        monkeypatch.undo()
        native_bf16.cache_clear()
    exact = EngineSettings(dtype="float32").resolved("cpu")
    assert exact.key() == {"kind": "hf", "dtype": "float32", "batching": "compact"} and not exact.train_bf16
    assert exact.params()["engine.device"] == "cpu"
    remote = EngineSettings(kind="openai", base_url="http://127.0.0.1:1/v1", model="m").resolved("cpu")
    assert remote.key() == {"kind": "openai", "dtype": remote.dtype, "model": "m"} and remote.batching is None
    with pytest.raises(ValueError, match="base_url: required"):
        EngineSettings(kind="openai", model="m")
    with pytest.raises(ValueError, match="batching: only for kind 'hf'"):
        EngineSettings(kind="openai", base_url="http://x/v1", model="m", batching="static")
    with pytest.raises(ValueError, match="base_url: only for kind 'openai'"):
        EngineSettings(base_url="http://x/v1")
    with pytest.raises(ValueError, match="dtype"):
        EngineSettings(dtype="float16")


def test_this_machine_detection_matches_its_cpu_flags():
    """What `auto` picks here follows /proc/cpuinfo (on the project's machines: AVX-512 BF16 -> bf16)."""
    flags = set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    if not flags:
        pytest.skip("no /proc/cpuinfo flags on this machine")
    expected = "bfloat16" if {"amx_bf16", "avx512_bf16"} & flags else "float32"
    assert EngineSettings().resolved("cpu").dtype == expected


def test_training_precision_follows_the_engine():
    from harness.algorithms.trl_common import device_kwargs

    assert device_kwargs(EngineSettings(dtype="float32"))["bf16"] is False
    assert device_kwargs(EngineSettings(dtype="bfloat16"))["bf16"] is True
    assert device_kwargs()["bf16"] == EngineSettings().resolved().train_bf16


def test_harness_eval_engine_flags_fail_naming_the_flag(tiny_model: str, tmp_path: Path, capsys):
    from harness.cli import main

    common = ["eval", "--model", tiny_model, "--tasks", "gsm8k", "--no-mlflow", "--out", str(tmp_path)]
    assert main([*common, "--engine", "openai", "--engine-model", "m"]) == 2
    assert "--base-url: required when kind is 'openai'" in capsys.readouterr().err
    assert main([*common, "--batching", "static", "--engine", "openai", "--engine-model", "m",
                 "--base-url", "http://127.0.0.1:9/v1"]) == 2
    assert "--batching: only for kind 'hf'" in capsys.readouterr().err
    assert not (tmp_path / "gsm8k.samples.jsonl").exists()
