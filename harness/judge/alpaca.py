"""AlpacaEval 1 and 2 through the harness's judge client, with AlpacaEval 2's length-controlled win rate.

What comes from the `alpaca_eval` package (pip `alpaca-eval==0.6.6`, a main dependency; read from its
installed files or called, never copied): the annotator prompts, i.e. `alpaca_eval_gpt4` for AlpacaEval 1
(the judge ranks two outputs) and `alpaca_eval_clf_gpt4_turbo` for AlpacaEval 2 (the judge names the
better output by one token, "m" or "M", and the preference is read from the logprobs of that token, as
in `weighted_alpaca_eval_gpt4_turbo`), with their decoding settings; and the length-controlled win rate.
Calls go through `JudgeClient`, so they are cached, retried and costed like every other judgement,
against whatever OpenAI-compatible endpoint the client points at. As in the package, the order of the
two outputs is randomised per instruction (seeded), and identical outputs are a tie without asking.

AlpacaEval 2's length-controlled (LC) win rate is the leaderboard's: the package's own
`get_length_controlled_winrate(..., glm_name="length_controlled_v1")` (a GLM on the length difference
and the instruction difficulty, regularised towards two "gamed" baselines), called on the annotations
(`length_controlled_win_rate`). That function downloads `df_gamed.csv` (and, for `predict_winrate`,
`instruction_difficulty.csv`) from the Hugging Face dataset `tatsu-lab/alpaca_eval`; here each file is
read from the local data dirs first (`benchmarks/alpaca_eval/<file>`, `harness.paths.find_data_file`)
and from the hub second. On the published annotations of 11 leaderboard models it reproduces the
leaderboard's LC within 0.8 points, 0.24 on average (`tests/test_judge_alpaca.py`; 0.19 on average
over all 56 models whose annotations are public); the package's simpler `length_controlled_minimal`
formula, which this module re-implemented before, was 9.8 points off on average on the same 11 models,
up to 27 (6.6 on average over the 56).

When the package cannot fit it (the files are in no data dir and the hub is unreachable, or the
package does not import), `lc_win_rate` is None and `lc_unavailable_reason` says why: no approximation
is computed in its place. The AlpacaEval 2 task then scores the raw win rate and says so.

Without the package installed, the harness's own annotator wording is used and the result says so
(`template_source`): such numbers are not comparable with published AlpacaEval scores.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import math
import re
import threading
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from harness.judge.client import JudgeClient, JudgeError
from harness.paths import data_dirs, find_data_file

Messages = list[dict[str, str]]

ANNOTATORS = {
    1: {"config": "alpaca_eval_gpt4", "file": "alpaca_eval_gpt4/alpaca_eval.txt", "default_model": "gpt-4",
        "decoding": {"temperature": 0.0, "max_tokens": 100}},
    2: {"config": "weighted_alpaca_eval_gpt4_turbo", "file": "alpaca_eval_clf_gpt4_turbo/alpaca_eval_clf.txt",
        "default_model": "gpt-4-1106-preview",
        "decoding": {"temperature": 1.0, "max_tokens": 1, "logprobs": True, "top_logprobs": 5}},
}
REFERENCE_FILES = {1: "benchmarks/alpaca_eval/text_davinci_003_outputs.json",
                   2: "benchmarks/alpaca_eval/gpt4_1106_preview_outputs.json"}

# AlpacaEval 2's length-controlled win rate: the leaderboard's GLM, and the files the package's GLM module
# downloads from the hub (dataset tatsu-lab/alpaca_eval), looked for first under this local data dir.
LC_GLM = "length_controlled_v1"
LC_DATA_DIR = "benchmarks/alpaca_eval"
LC_HUB_FILES = ("df_gamed.csv", "instruction_difficulty.csv")

# Used only when the alpaca_eval package is missing (the harness's own wording, same output formats).
_FALLBACK = {
    1: [("system", "You rank AI models by the quality of their answers."),
        ("user", "Rank two models by which answer most people would prefer.\n\nInstruction:\n"
                 '"""{instruction}"""\n\nmodel_1 answered:\n"""{output_1}"""\n\nmodel_2 answered:\n'
                 '"""{output_2}"""\n\nReply only with a Python list such as '
                 "[{'model': 'model_1', 'rank': 1}, {'model': 'model_2', 'rank': 2}].")],
    2: [("system", "You pick the better of two AI model outputs."),
        ("user", 'Instruction:\n"""{instruction}"""\n\nOutput of model "m":\n"""{output_1}"""\n\n'
                 'Output of model "M":\n"""{output_2}"""\n\nWhich model gave the better output? Answer with '
                 "the identifier only: m or M.")],
}

_FIELD = re.compile(r"\{(instruction|output_1|output_2)\}")
_CHATML = re.compile(r"<\|im_start\|>(\w+)\n(.*?)\n?<\|im_end\|>", re.S)


def _package_dir() -> Path | None:
    spec = importlib.util.find_spec("alpaca_eval")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def parse_chatml(text: str) -> list[tuple[str, str]]:
    """AlpacaEval's prompt files are ChatML-like: <|im_start|>role\\ncontent<|im_end|> blocks."""
    turns = [(role, content.strip("\n")) for role, content in _CHATML.findall(text)]
    if not turns:
        raise ValueError("no <|im_start|>role ... <|im_end|> blocks in the annotator prompt")
    return turns


@dataclass(frozen=True)
class Annotator:
    version: int
    turns: tuple[tuple[str, str], ...]
    source: str  # "alpaca_eval==X (config)" or "harness fallback"
    decoding: dict[str, Any]

    @property
    def tag(self) -> str:
        digest = hashlib.sha256(json.dumps(self.turns).encode()).hexdigest()[:12]
        return f"alpaca_eval{self.version}@{digest}"

    def render(self, instruction: str, output_1: str, output_2: str) -> Messages:
        values = {"instruction": instruction, "output_1": output_1, "output_2": output_2}
        # One pass, so an output that itself contains "{output_2}" is not substituted again.
        return [{"role": role, "content": _FIELD.sub(lambda m: values[m.group(1)], content)}
                for role, content in self.turns]


def load_annotator(version: Literal[1, 2]) -> Annotator:
    if version not in ANNOTATORS:
        raise ValueError(f"AlpacaEval version must be 1 or 2, not {version!r}")
    info = ANNOTATORS[version]
    package = _package_dir()
    if package is not None:
        path = package / "evaluators_configs" / info["file"]
        if path.exists():
            pkg_version = importlib.metadata.version("alpaca_eval")
            return Annotator(version, tuple(parse_chatml(path.read_text())),
                             f"alpaca_eval=={pkg_version} ({info['config']})", dict(info["decoding"]))
    return Annotator(version, tuple(_FALLBACK[version]), "harness fallback (alpaca_eval not installed)",
                     dict(info["decoding"]))


def load_reference(version: Literal[1, 2], limit: int | None = None) -> tuple[list[str], list[str]]:
    """(instructions, reference outputs) of the AlpacaEval set from the local data dir: text-davinci-003
    outputs for AlpacaEval 1, gpt-4-1106-preview outputs for AlpacaEval 2."""
    path = find_data_file(REFERENCE_FILES[version])
    if path is None:
        raise FileNotFoundError(f"{REFERENCE_FILES[version]} not found under the local data dirs "
                                "(HARNESS_DATA_DIR or ../shared/data)")
    rows = json.loads(path.read_text())[:limit]
    return [r["instruction"] for r in rows], [r["output"] for r in rows]


def _swapped(instruction: str, seed: int) -> bool:
    return hashlib.sha256(f"{seed}:{instruction}".encode()).digest()[0] & 1 == 1


def _p_first_v1(reply: str) -> float | None:
    """AlpacaEval 1 reply (a list of {'model', 'rank'}) -> 1.0 if model_1 ranks first, 0.0 if second."""
    match = re.search(r"['\"]model['\"]\s*:\s*['\"]model_1['\"]\s*,\s*['\"]rank['\"]\s*:\s*(\d)", reply)
    if match is None:
        match = re.search(r"['\"]rank['\"]\s*:\s*(\d)\s*,\s*['\"]model['\"]\s*:\s*['\"]model_1['\"]", reply)
    if match is None or match.group(1) not in ("1", "2"):
        return None
    return 1.0 if match.group(1) == "1" else 0.0


def _p_first_v2(text: str, top: dict[str, float]) -> float | None:
    """AlpacaEval 2: P("m") / (P("m") + P("M")) from the first token's logprobs; the reply text when the
    endpoint returned no logprobs."""
    probs = {"m": 0.0, "M": 0.0}
    for token, logprob in top.items():
        key = token.strip()
        if key in probs:
            probs[key] += math.exp(logprob)
    total = probs["m"] + probs["M"]
    if total > 0:
        return probs["m"] / total
    if not top:
        first = text.strip()[:1]
        return {"m": 1.0, "M": 0.0}.get(first)
    return None


@dataclass(frozen=True)
class LengthControlled:
    """AlpacaEval 2's length-controlled win rate as the leaderboard computes it, or why there is none."""

    win_rate: float | None  # percent; None when unavailable
    standard_error: float | None
    unavailable_reason: str | None
    files: dict[str, str] = field(default_factory=dict)  # hub file name -> where it was read from


@dataclass
class AlpacaEvalResult:
    version: int
    win_rate: float  # percent, ties count half (the raw win rate)
    standard_error: float
    n: int
    n_invalid: int
    judge_model: str
    template_source: str
    # AlpacaEval 2 only: the leaderboard's length-controlled win rate (percent) and its standard error;
    # None with `lc_unavailable_reason` when it could not be computed (never an approximation).
    lc_win_rate: float | None = None
    lc_standard_error: float | None = None
    lc_unavailable_reason: str | None = None
    annotations: list[dict[str, Any]] = field(default_factory=list)

    def metrics(self, prefix: str | None = None) -> dict[str, float]:
        prefix = prefix or f"alpaca_eval{self.version}"
        out = {f"{prefix}/win_rate": self.win_rate, f"{prefix}/standard_error": self.standard_error,
               f"{prefix}/n": float(self.n), f"{prefix}/n_invalid": float(self.n_invalid)}
        if self.lc_win_rate is not None:
            out[f"{prefix}/lc_win_rate"] = self.lc_win_rate
        if self.lc_standard_error is not None:
            out[f"{prefix}/lc_standard_error"] = self.lc_standard_error
        return out


class LCFilesUnavailable(RuntimeError):
    """A file the length-controlled GLM needs is in no local data dir and the hub did not provide it."""


# The package's GLM module reads its hub files through a module-level `hf_hub_download`, which is
# pointed at the local data dirs for the duration of one call; the lock keeps concurrent calls from
# restoring each other's resolver.
_GLM_LOCK = threading.Lock()


def _local_first(hub_download: Any, files: dict[str, str]) -> Any:
    def download(repo_id: str, filename: str, **kwargs: Any) -> str:
        local = find_data_file(f"{LC_DATA_DIR}/{filename}")
        if local is not None:
            files[filename] = str(local)
            return str(local)
        try:
            path = hub_download(repo_id=repo_id, filename=filename, **kwargs)
        except Exception as err:  # offline mode, no network, no cached copy: the hub's many error types
            searched = ", ".join(str(d / LC_DATA_DIR) for d in data_dirs())
            raise LCFilesUnavailable(
                f"{filename} is in no local data dir (searched {searched}) and the hub dataset {repo_id} "
                f"did not provide it ({type(err).__name__}: {err})") from err
        files[filename] = f"hub {repo_id} ({path})"
        return str(path)

    return download


def length_controlled_win_rate(annotations: Sequence[Mapping[str, Any]]) -> LengthControlled:
    """AlpacaEval 2's length-controlled win rate of `annotations`, computed by the `alpaca_eval` package's
    `get_length_controlled_winrate` with the leaderboard's GLM (`length_controlled_v1`).

    Each annotation: `index` (the instruction's position in the 805-instruction AlpacaEval set, which
    selects its difficulty), `output_1` (the reference's output), `output_2` (the model's), `preference`
    in [1, 2] (2 = model preferred) or None when the judge's reply was unreadable (left out of the fit,
    as the package does). The package's hub files are read from the local data dirs first."""
    valid = [a for a in annotations if a["preference"] is not None]
    if len(valid) < 2:
        return LengthControlled(None, None, f"needs at least 2 valid annotations, got {len(valid)}")
    deltas = {len(a["output_1"]) - len(a["output_2"]) for a in annotations}
    if len(deltas) < 2:
        return LengthControlled(None, None, "every output differs from its reference by the same length: "
                                            "the GLM's standardised length difference is undefined")
    try:
        import pandas as pd
        import sklearn

        with warnings.catch_warnings():  # setuptools 81 deprecates pkg_resources, which the package imports
            warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
            from alpaca_eval.metrics import glm_winrate
    except ImportError as err:
        return LengthControlled(None, None, f"the alpaca_eval package does not import ({err})")
    frame = pd.DataFrame(
        {"output_1": [a["output_1"] for a in annotations], "output_2": [a["output_2"] for a in annotations],
         "preference": [math.nan if a["preference"] is None else float(a["preference"]) for a in annotations],
         "generator_1": "reference", "generator_2": "model"},
        index=pd.Index([int(a["index"]) for a in annotations]),  # the package reads it via reset_index()
    )
    files: dict[str, str] = {}
    with _GLM_LOCK:
        hub_download = glm_winrate.hf_hub_download
        glm_winrate.hf_hub_download = _local_first(hub_download, files)
        try:
            # config_context: the package switches on sklearn's global metadata routing; restored after.
            with sklearn.config_context(), warnings.catch_warnings():
                # scikit-learn 1.8-1.9 deprecations in the package's LogisticRegressionCV call (pinned <1.10).
                warnings.simplefilter("ignore", FutureWarning)
                out = glm_winrate.get_length_controlled_winrate(
                    frame, glm_name=LC_GLM, save_weights_dir=None, is_add_glm_preference_inplace=False)
        except LCFilesUnavailable as err:
            return LengthControlled(None, None, str(err), files)
        finally:
            glm_winrate.hf_hub_download = hub_download
    return LengthControlled(float(out["length_controlled_winrate"]), float(out["lc_standard_error"]), None, files)


def score_annotations(annotations: list[dict[str, Any]], version: Literal[1, 2], judge_model: str,
                      template_source: str) -> AlpacaEvalResult:
    """Win rate, its standard error and (AlpacaEval 2) the length-controlled win rate of annotations in
    AlpacaEval's convention (see `length_controlled_win_rate`); None preferences are counted invalid."""
    valid = [a for a in annotations if a["preference"] is not None]
    prefs = np.array([a["preference"] - 1 for a in valid], dtype=float)
    if prefs.size:
        wr = float(100 * prefs.mean())
        se = float(100 * prefs.std(ddof=1) / math.sqrt(prefs.size)) if prefs.size > 1 else math.nan
    else:
        wr = se = math.nan
    result = AlpacaEvalResult(version=version, win_rate=wr, standard_error=se, n=len(valid),
                              n_invalid=len(annotations) - len(valid), judge_model=judge_model,
                              template_source=template_source, annotations=annotations)
    if version == 2:
        lc = length_controlled_win_rate(annotations)
        result.lc_win_rate, result.lc_standard_error = lc.win_rate, lc.standard_error
        result.lc_unavailable_reason = lc.unavailable_reason
    return result


def evaluate_alpaca_eval(
    client: JudgeClient,
    instructions: Sequence[str],
    outputs: Sequence[str],
    reference_outputs: Sequence[str],
    version: Literal[1, 2] = 2,
    seed: int = 0,
    on_error: Literal["raise", "skip"] = "raise",
) -> AlpacaEvalResult:
    """Win rate (and, for AlpacaEval 2, the LC win rate) of `outputs` against `reference_outputs` on
    `instructions`, judged by `client` with AlpacaEval's annotator prompt for `version`. Annotations
    follow AlpacaEval's convention: output_1 = reference, output_2 = model, preference in [1, 2]
    (2 = model preferred, 1.5 = tie), None when the judge's reply could not be read (excluded, counted in
    n_invalid). `instructions` are the first n of the AlpacaEval set (`load_reference`): the LC GLM
    reads each one's difficulty by its position."""
    if not len(instructions) == len(outputs) == len(reference_outputs):
        raise ValueError("instructions, outputs and reference_outputs must have the same length")
    annotator = load_annotator(version)
    requests: list[Messages] = []
    plan: list[tuple[int, bool] | None] = []
    for instruction, out, ref in zip(instructions, outputs, reference_outputs):
        if out == ref:
            plan.append(None)
            continue
        swapped = _swapped(instruction, seed)
        first, second = (out, ref) if swapped else (ref, out)
        plan.append((len(requests), swapped))
        requests.append(annotator.render(instruction, first, second))
    results = client.complete_many(requests, template=annotator.tag, **annotator.decoding)
    errors = [r for r in results if isinstance(r, JudgeError)]
    if errors and on_error == "raise":
        raise JudgeError(f"{len(errors)} of {len(results)} AlpacaEval judge calls failed (the others are "
                         f"cached; rerun to retry). First error: {errors[0]}")
    annotations: list[dict[str, Any]] = []
    for k, (instruction, out, ref) in enumerate(zip(instructions, outputs, reference_outputs)):
        row: dict[str, Any] = {"index": k, "instruction": instruction, "output_1": ref, "output_2": out,
                               "annotator": annotator.source, "judge_model": client.model}
        step = plan[k]
        if step is None:
            row.update(preference=1.5, swapped=False, raw=None)
        else:
            slot, swapped = step
            result = results[slot]
            if isinstance(result, JudgeError):
                row.update(preference=None, swapped=swapped, raw=None, error=str(result))
            else:
                if version == 1:
                    p_first = _p_first_v1(result.text)
                else:
                    p_first = _p_first_v2(result.text, result.first_token_logprobs())
                # p_first: P(first-shown output better). Shown first: the model if swapped, else the reference.
                pref = None if p_first is None else (1 + p_first if swapped else 2 - p_first)
                row.update(preference=pref, swapped=swapped, raw=result.text)
        annotations.append(row)
    return score_annotations(annotations, version, client.model, annotator.source)
