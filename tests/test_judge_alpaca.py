"""AlpacaEval 1/2 through the judge client over real HTTP, on the real AlpacaEval set; AlpacaEval 2's
length-controlled win rate against the published leaderboard, on the leaderboard's own annotations."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from harness.judge import JudgeClient
from harness.judge.alpaca import (
    LC_DATA_DIR,
    evaluate_alpaca_eval,
    load_annotator,
    load_reference,
    parse_chatml,
    score_annotations,
)
from harness.judge.server import make_server

# Published GPT-4-turbo annotations of 11 AlpacaEval 2 leaderboard models, reduced to what the LC GLM
# reads (see build_alpaca_eval2_leaderboard_fixture.py beside it for the source and the selection).
LEADERBOARD_ANNOTATIONS = Path(__file__).parent / "data" / "judge" / "alpaca_eval2_leaderboard_annotations.json.gz"


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


def _published_annotations() -> dict[str, list[dict]]:
    """model -> annotations in the project's convention (index, output_1, output_2, preference). Only the
    outputs' lengths were kept, so each output is a string of that many characters: the LC GLM reads
    nothing else of them."""
    with gzip.open(LEADERBOARD_ANNOTATIONS, "rt", encoding="utf-8") as fh:
        models = json.load(fh)["models"]
    return {model: [{"index": i, "output_1": "r" * n1, "output_2": "m" * n2, "preference": pref}
                    for i, (pref, n1, n2) in enumerate(zip(cols["preference"], cols["len_output_1"],
                                                           cols["len_output_2"]))]
            for model, cols in models.items()}


def _leaderboard():
    import pandas as pd

    from harness.judge.alpaca import _package_dir

    path = (_package_dir() / "leaderboards" / "data_AlpacaEval_2" /
            "weighted_alpaca_eval_gpt4_turbo_leaderboard.csv")
    return pd.read_csv(path, index_col=0)


def test_lc_win_rate_matches_the_leaderboard(shared_data: Path):
    """The project's AE2 scoring entry point on the published annotations of 11 leaderboard models: LC
    within 0.3 points of the leaderboard shipped in the alpaca_eval package on average, 1.0 at most; the
    raw win rate exact. The LC GLM's hub files are read from ../shared/data/benchmarks/alpaca_eval/."""
    import sklearn

    board = _leaderboard()
    errors = {}
    for model, published in _published_annotations().items():
        result = score_annotations(published, 2, "gpt-4-1106-preview", "published")
        assert result.lc_unavailable_reason is None, model
        assert result.win_rate == pytest.approx(board.loc[model, "win_rate"], abs=1e-6), model
        assert result.standard_error == pytest.approx(board.loc[model, "standard_error"], abs=1e-6), model
        errors[model] = result.lc_win_rate - board.loc[model, "length_controlled_winrate"]
        assert abs(errors[model]) <= 1.0, (model, result.lc_win_rate)
    assert len(errors) == 11
    assert np.mean(np.abs(list(errors.values()))) <= 0.3, errors
    assert sklearn.get_config()["enable_metadata_routing"] is False  # the package's global switch undone


def test_lc_unavailable_without_local_files_or_hub(data_dir_without_shared: Path, hub_off: Path):
    """No local copy of df_gamed.csv and the hub off: no LC (and no stand-in for it), with the reason;
    the raw win rate is unaffected."""
    annotations = _published_annotations()["alpaca-7b"]
    result = score_annotations(annotations, 2, "gpt-4-1106-preview", "published")
    assert result.lc_win_rate is None and result.lc_standard_error is None
    assert "df_gamed.csv is in no local data dir" in result.lc_unavailable_reason
    assert str(data_dir_without_shared / LC_DATA_DIR) in result.lc_unavailable_reason
    assert "tatsu-lab/alpaca_eval" in result.lc_unavailable_reason
    assert result.win_rate == pytest.approx(_leaderboard().loc["alpaca-7b", "win_rate"], abs=1e-6)
    assert set(result.metrics()) == {"alpaca_eval2/win_rate", "alpaca_eval2/standard_error",
                                     "alpaca_eval2/n", "alpaca_eval2/n_invalid"}


def test_lc_files_come_from_the_hub_when_no_data_dir_has_them(shared_data: Path, request: pytest.FixtureRequest):
    """Without local copies the package's own hub download is used: here from a hub cache (offline mode
    serves cached files), holding the real df_gamed.csv as revision `main` of the dataset."""
    from harness.judge.alpaca import length_controlled_win_rate

    annotations = _published_annotations()["gpt-3.5-turbo-1106"]
    local = length_controlled_win_rate(annotations)
    assert local.files == {"df_gamed.csv": str(shared_data / LC_DATA_DIR / "df_gamed.csv")}
    request.getfixturevalue("data_dir_without_shared")
    repo = request.getfixturevalue("hub_off") / "datasets--tatsu-lab--alpaca_eval"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "df_gamed.csv").symlink_to(shared_data / LC_DATA_DIR / "df_gamed.csv")
    hub = length_controlled_win_rate(annotations)
    assert hub.files["df_gamed.csv"].startswith("hub tatsu-lab/alpaca_eval")
    assert hub.win_rate == local.win_rate
