"""AlpacaEval 1 and 2 through the harness's judge client, with the length-controlled win rate.

What comes from the `alpaca_eval` package (pip `alpaca-eval==0.6.6`, read from its installed files, not
copied): the annotator prompts, i.e. `alpaca_eval_gpt4` for AlpacaEval 1 (the judge ranks two outputs)
and `alpaca_eval_clf_gpt4_turbo` for AlpacaEval 2 (the judge names the better output by one token,
"m" or "M", and the preference is read from the logprobs of that token, as in
`weighted_alpaca_eval_gpt4_turbo`), with their decoding settings. Calls go through `JudgeClient`, so
they are cached, retried and costed like every other judgement, against whatever OpenAI-compatible
endpoint the client points at. As in the package, the order of the two outputs is randomised per
instruction (seeded), and identical outputs are a tie without asking.

Why not the package's own pipeline: its length-controlled win rate downloads `df_gamed.csv` and
`instruction_difficulty.csv` from the Hugging Face hub at run time, which the project's machines cannot
reach. So the GLM is re-implemented here (`length_controlled_win_rate`):

    P(model output preferred) = sigmoid(theta + beta_len * tanh(delta_len / sd(delta_len))
                                         [+ beta_diff * instruction_difficulty])

fitted by maximum likelihood on the soft preferences (in [0, 1]) with a weak L2 penalty (1/C, C=100);
the LC win rate is the mean predicted preference with delta_len set to 0. Differences from the package,
all because of the unreachable hub files: (1) no regularisation towards the "gamed" baseline models
(the package's `length_controlled_v1` adds them with weight 0.2); (2) `instruction_difficulty` is used
only when given (e.g. from a local `benchmarks/alpaca_eval/instruction_difficulty.csv`), otherwise the
model is the package's `length_controlled_minimal` formula; (3) an L2 penalty at fixed C instead of
the package's cross-validated L1. `tests/test_judge_alpaca.py` checks parity with the package's own
design-matrix and logistic-regression code on saved annotations.

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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from harness.judge.client import JudgeClient, JudgeError
from harness.paths import find_data_file

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


def load_instruction_difficulty(n: int) -> np.ndarray | None:
    """Per-instruction difficulty (AlpacaEval's `instruction_difficulty.csv`, index,value) if a copy is
    present locally; None otherwise (the hub file cannot be fetched here)."""
    path = find_data_file("benchmarks/alpaca_eval/instruction_difficulty.csv")
    if path is None:
        return None
    values: dict[int, float] = {}
    for line in path.read_text().splitlines()[1:]:
        parts = line.split(",")
        if len(parts) >= 2 and parts[0].strip().isdigit():
            values[int(parts[0])] = float(parts[-1])
    if not all(i in values for i in range(n)):
        return None
    return np.array([values[i] for i in range(n)])


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


@dataclass
class AlpacaEvalResult:
    version: int
    win_rate: float  # percent, ties count half
    standard_error: float
    lc_win_rate: float | None  # percent, length-controlled
    n: int
    n_invalid: int
    judge_model: str
    template_source: str
    lc_method: str
    annotations: list[dict[str, Any]] = field(default_factory=list)

    def metrics(self, prefix: str | None = None) -> dict[str, float]:
        prefix = prefix or f"alpaca_eval{self.version}"
        out = {f"{prefix}/win_rate": self.win_rate, f"{prefix}/standard_error": self.standard_error,
               f"{prefix}/n": float(self.n), f"{prefix}/n_invalid": float(self.n_invalid)}
        if self.lc_win_rate is not None:
            out[f"{prefix}/lc_win_rate"] = self.lc_win_rate
        return out


def length_controlled_win_rate(preferences: Sequence[float], model_lengths: Sequence[int],
                               reference_lengths: Sequence[int],
                               instruction_difficulty: Sequence[float] | None = None,
                               C: float = 100.0) -> float:
    """Length-controlled win rate in percent (see the module docstring for the GLM).

    preferences: P(model output preferred) per example, in [0, 1] (0.5 = tie)."""
    y = np.asarray(preferences, dtype=float)
    if y.size == 0:
        return math.nan
    if np.any((y < 0) | (y > 1)):
        raise ValueError("preferences must lie in [0, 1]")
    delta = np.asarray(reference_lengths, dtype=float) - np.asarray(model_lengths, dtype=float)
    sd = delta.std(ddof=1) if delta.size > 1 else 0.0
    x_len = np.tanh(delta / sd) if sd > 0 else np.zeros_like(delta)
    columns = [np.ones_like(y), x_len]
    if instruction_difficulty is not None:
        columns.append(np.asarray(instruction_difficulty, dtype=float))
    X = np.stack(columns, axis=1)
    w = np.zeros(X.shape[1])
    lam = 1.0 / C
    for _ in range(200):  # Newton's method; the penalised soft-label log-likelihood is strictly concave
        p = 1 / (1 + np.exp(-(X @ w)))
        grad = X.T @ (y - p) - lam * w
        hess = -(X.T * (p * (1 - p))) @ X - lam * np.eye(X.shape[1])
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.max(np.abs(step)) < 1e-10:
            break
    X0 = X.copy()
    X0[:, 1] = 0.0  # counterfactual: no length difference
    return float(100 * np.mean(1 / (1 + np.exp(-(X0 @ w)))))


def evaluate_alpaca_eval(
    client: JudgeClient,
    instructions: Sequence[str],
    outputs: Sequence[str],
    reference_outputs: Sequence[str],
    version: Literal[1, 2] = 2,
    seed: int = 0,
    instruction_difficulty: Sequence[float] | None = None,
    on_error: Literal["raise", "skip"] = "raise",
) -> AlpacaEvalResult:
    """Win rate (and LC win rate) of `outputs` against `reference_outputs` on `instructions`, judged by
    `client` with AlpacaEval's annotator prompt for `version`. Annotations follow AlpacaEval's
    convention: output_1 = reference, output_2 = model, preference in [1, 2] (2 = model preferred,
    1.5 = tie), None when the judge's reply could not be read (excluded, counted in n_invalid)."""
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
    valid = [a for a in annotations if a["preference"] is not None]
    prefs = np.array([a["preference"] - 1 for a in valid], dtype=float)
    if prefs.size:
        wr = float(100 * prefs.mean())
        se = float(100 * prefs.std(ddof=1) / math.sqrt(prefs.size)) if prefs.size > 1 else math.nan
    else:
        wr = se = math.nan
    difficulty = None
    if instruction_difficulty is not None:
        difficulty = [instruction_difficulty[a["index"]] for a in valid]
    lc = length_controlled_win_rate(prefs, [len(a["output_2"]) for a in valid],
                                    [len(a["output_1"]) for a in valid], difficulty) if prefs.size > 2 else None
    method = ("GLM tanh(std_delta_len) + instruction_difficulty, no gamed-baseline regularisation"
              if difficulty is not None else "GLM tanh(std_delta_len) (length_controlled_minimal)")
    return AlpacaEvalResult(
        version=version, win_rate=wr, standard_error=se, lc_win_rate=lc, n=len(valid),
        n_invalid=len(annotations) - len(valid), judge_model=client.model,
        template_source=annotator.source, lc_method=method, annotations=annotations,
    )
