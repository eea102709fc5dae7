"""AlpacaEval 1/2 through the judge client over real HTTP, on the real AlpacaEval set, and parity of the
re-implemented length-controlled GLM with the `alpaca_eval` package's own code on saved annotations."""

from __future__ import annotations

import importlib.metadata
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from harness.judge import JudgeClient
from harness.judge.alpaca import (
    evaluate_alpaca_eval,
    length_controlled_win_rate,
    load_annotator,
    load_reference,
    parse_chatml,
)
from harness.judge.server import make_server

SAVED = Path(__file__).parent / "data" / "judge" / "alpaca_eval2_scripted_annotations.jsonl"
has_package = importlib.util.find_spec("alpaca_eval") is not None


@pytest.fixture(scope="module")
def length_biased_judge():
    """The scripted judge with the 'longer' strategy: prefers the longer output, softly (logprobs)."""
    with make_server(scripted="longer", faults=[]) as server:
        yield server


@pytest.fixture
def judge(length_biased_judge, tmp_path):
    client = JudgeClient(length_biased_judge.state.served_model, base_url=length_biased_judge.base_url,
                         api_key_env="", cache_path=tmp_path / "cache.sqlite")
    yield client
    client.close()


@pytest.mark.skipif(not has_package, reason="alpaca_eval not installed")
def test_annotator_prompts_come_from_the_package():
    v1, v2 = load_annotator(1), load_annotator(2)
    assert v1.source.startswith("alpaca_eval==") and "alpaca_eval_gpt4" in v1.source
    assert "weighted_alpaca_eval_gpt4_turbo" in v2.source
    assert v2.decoding == {"temperature": 1.0, "max_tokens": 1, "logprobs": True, "top_logprobs": 5}
    messages = v2.render("INSTR {output_2}", "REF", "MODEL")
    assert [m["role"] for m in messages] == ["system", "user"]
    user = messages[1]["content"]
    # Fields substituted once: the literal "{output_2}" inside the instruction is not expanded again.
    assert "INSTR {output_2}" in user and user.index("REF") < user.index("MODEL")


def test_chatml_parser():
    turns = parse_chatml("<|im_start|>system\nS\n<|im_end|>\n<|im_start|>user\nU {x}\n<|im_end|>")
    assert turns == [("system", "S"), ("user", "U {x}")]
    with pytest.raises(ValueError):
        parse_chatml("no blocks")


def test_alpaca_eval2_win_rate_and_lc_on_real_data(judge, shared_data):
    instructions, references = load_reference(2, limit=60)
    _, davinci = load_reference(1, limit=60)
    result = evaluate_alpaca_eval(judge, instructions, davinci, references, version=2)
    assert result.n == 60 and result.n_invalid == 0
    prefs = [a["preference"] for a in result.annotations]
    # The judge prefers longer outputs: the unswapped preference must say so for every example, in
    # whichever order the pair was shown (the order is randomised per instruction).
    assert {a["swapped"] for a in result.annotations} == {True, False}
    for a, p in zip(result.annotations, prefs):
        assert (p > 1.5) == (len(a["output_2"]) > len(a["output_1"]))
    assert result.win_rate == pytest.approx(100 * np.mean([p - 1 for p in prefs]))
    # text-davinci-003 answers are much shorter than gpt-4-1106's: a length-biased judge rarely picks
    # them, and controlling for length moves the win rate up.
    assert result.win_rate < 20 and result.lc_win_rate > result.win_rate + 5
    assert set(result.metrics()) >= {"alpaca_eval2/win_rate", "alpaca_eval2/lc_win_rate"}


def test_alpaca_eval1_ranking_replies(judge, shared_data, length_biased_judge):
    instructions, references = load_reference(1, limit=20)
    _, gpt4 = load_reference(2, limit=20)
    result = evaluate_alpaca_eval(judge, instructions, gpt4, references, version=1)
    assert result.n == 20 and result.n_invalid == 0
    for a in result.annotations:
        assert a["preference"] in (1.0, 2.0)
        assert (a["preference"] == 2.0) == (len(a["output_2"]) >= len(a["output_1"]))
    rerun = evaluate_alpaca_eval(judge, instructions, gpt4, references, version=1)
    assert rerun.win_rate == result.win_rate
    assert judge.usage()[judge.model]["cache_hits"] == 20  # the rerun came from the cache


def test_identical_outputs_are_ties_without_calls(judge, length_biased_judge):
    before = length_biased_judge.stats().get("requests", 0)
    result = evaluate_alpaca_eval(judge, ["a", "b"], ["same", "x"], ["same", "x"], version=2)
    assert [a["preference"] for a in result.annotations] == [1.5, 1.5]
    assert length_biased_judge.stats().get("requests", 0) == before


def _saved() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows = [json.loads(line) for line in SAVED.read_text().splitlines()]
    prefs = np.array([r["preference"] - 1 for r in rows])
    return prefs, np.array([r["len_output_2"] for r in rows]), np.array([r["len_output_1"] for r in rows])


def test_lc_is_half_when_preferences_only_follow_length():
    rng = np.random.default_rng(0)
    ref_len = rng.integers(100, 2000, size=400)
    model_len = rng.integers(100, 2000, size=400)
    delta = ref_len - model_len
    prefs = 1 / (1 + np.exp(2 * np.tanh(delta / delta.std(ddof=1))))  # symmetric pure length bias
    assert length_controlled_win_rate(prefs, model_len, ref_len) == pytest.approx(50, abs=1)


@pytest.mark.skipif(not has_package, reason="alpaca_eval not installed")
@pytest.mark.filterwarnings("ignore::FutureWarning")  # sklearn deprecations inside the package's fit
def test_lc_glm_parity_with_alpaca_eval_package(monkeypatch):
    """Same design matrix and fit as the package's `length_controlled_minimal` (and, with a difficulty
    column, `length_controlled_noreg`), through the package's own functions."""
    try:
        import pkg_resources  # noqa: F401
    except ImportError:
        # alpaca_eval 0.6.6 imports pkg_resources (gone from setuptools >= 81) for two version helpers
        # the GLM never calls; a minimal stand-in lets the package import.
        from packaging.version import parse

        shim = types.ModuleType("pkg_resources")
        shim.parse_version = parse
        shim.get_distribution = lambda name: types.SimpleNamespace(version=importlib.metadata.version(name))
        monkeypatch.setitem(sys.modules, "pkg_resources", shim)
    pd = pytest.importorskip("pandas")
    from alpaca_eval.metrics.glm_winrate import fit_LogisticRegressionCV, make_dmatrix_for_model

    prefs, model_len, ref_len = _saved()
    delta = ref_len - model_len
    rng = np.random.default_rng(0)
    difficulty = rng.normal(size=prefs.size) + 0.5 * (prefs - 0.5)
    data = pd.DataFrame({"preference": prefs, "std_delta_len": delta / delta.std(ddof=1),
                         "not_gamed_baseline": True, "instruction_difficulty": difficulty})
    test = data[["instruction_difficulty", "not_gamed_baseline"]].copy()
    test["std_delta_len"] = 0.0
    formulas = {
        False: "np.tanh(std_delta_len) + not_gamed_baseline.astype(float) - 1",
        True: "np.tanh(std_delta_len) + instruction_difficulty + not_gamed_baseline.astype(float) - 1",
    }
    for with_difficulty, formula in formulas.items():
        train, predict = make_dmatrix_for_model(data, test, formula=formula)
        model = fit_LogisticRegressionCV(train, "preference", is_ytrue_proba=True, n_splits=5)
        theirs = 100 * model.predict_proba(predict)[:, 1].mean()
        ours = length_controlled_win_rate(prefs, model_len, ref_len, difficulty if with_difficulty else None)
        assert ours == pytest.approx(theirs, abs=0.5), formula
    raw = 100 * prefs.mean()
    assert raw < 10 and ours > 20  # the saved annotations are strongly length-driven
