"""PRM800K (Lightman et al. 2023), phase 2 (App. B).

Phase-2 rows are labels of pre-generated model solutions to MATH problems. A generation is correct
when its final answer matches the ground truth. For every problem with at least one correct and one
incorrect generation, one random correct generation is chosen and one random incorrect one rejected.

Answer matching is a conservative normalised comparison (spacing, `$`, `\\!`, `\\text{}`, `\\dfrac`,
thousands separators, numeric equality); OpenAI's sympy-based grader is stricter in rare cases.
Raw units: dropped label rows plus one unit per problem (rows of one problem are grouped first).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

from datasets_registry.core import (
    DataFormatError,
    DropRow,
    preference_row,
    register,
    require_fields,
    row_rng,
    source_spec,
    where,
)


def normalise_answer(answer: str) -> str:
    text = answer.strip()
    text = re.sub(r"\\text\{([^}]*)\}", r"\1", text)
    for old, new in (("\\!", ""), ("$", ""), ("\\left", ""), ("\\right", ""), ("\\dfrac", "\\frac"),
                     ("\\tfrac", "\\frac"), ("^\\circ", ""), ("^{\\circ}", ""), ("\\%", ""), ("%", "")):
        text = text.replace(old, new)
    text = re.sub(r"\s+", "", text).rstrip(".")
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", text):
        text = text.replace(",", "")
    return text


def answers_match(answer: str, truth: str) -> bool:
    a, b = normalise_answer(answer), normalise_answer(truth)
    if a == b:
        return True
    try:
        return abs(float(a) - float(b)) < 1e-9
    except ValueError:
        return False


def group_by_problem(rows: Iterable[dict[str, Any]]) -> Iterator[Any]:
    """One unit per problem: {"problem", "correct": [solutions], "incorrect": [solutions]}."""
    problems: dict[str, dict[str, dict[str, None]]] = {}
    for raw in rows:
        require_fields(raw, ["question", "label"], where(raw))
        question = raw["question"]
        if not isinstance(question, dict):
            raise DataFormatError(f"{where(raw)}: field 'question' should be an object")
        if (raw.get("label") or {}).get("finish_reason") == "bad_problem":
            yield DropRow("bad_problem")  # the labeler reported the problem as broken
            continue
        problem, steps = question.get("problem"), question.get("pre_generated_steps")
        answer, truth = question.get("pre_generated_answer"), question.get("ground_truth_answer")
        if not isinstance(problem, str) or not problem.strip() or not steps or not isinstance(steps, list):
            yield DropRow("missing_generation")
            continue
        if not isinstance(answer, str) or not isinstance(truth, str):
            yield DropRow("missing_answer")
            continue
        solution = "\n".join(str(step) for step in steps)
        bucket = "correct" if answers_match(answer, truth) else "incorrect"
        entry = problems.setdefault(problem, {"correct": {}, "incorrect": {}})
        entry[bucket].setdefault(solution, None)  # the same generation is labelled by several people
    for problem in sorted(problems):
        yield {"problem": problem, "correct": sorted(problems[problem]["correct"]),
               "incorrect": sorted(problems[problem]["incorrect"])}


def curate(group: dict[str, Any]) -> dict[str, Any]:
    if not group["correct"] or not group["incorrect"]:
        raise DropRow("no_correct_and_incorrect")
    pick = row_rng("prm800k", group["problem"])
    chosen = group["correct"][pick % len(group["correct"])]
    rejected = group["incorrect"][(pick >> 20) % len(group["incorrect"])]
    return preference_row("prm800k", [{"role": "user", "content": group["problem"]}], chosen, rejected)


register(source_spec(
    name="prm800k",
    kind="preference",
    source_type="human",
    group="table1",
    description="PRM800K phase 2: a correct vs an incorrect model solution of the same MATH problem.",
    curate=curate,
    group_raw=group_by_problem,
    hub_id="tasksource/PRM800K",
    split="train",
    revision="547b19506677a59037ee888838834b65e9b1ddd4",
    hub_files=("phase2_train.jsonl",),
    license="MIT",
    paper_size=6_949,
    local_files=("openai/prm800k/prm800k/data/phase2_train.jsonl", "openai/prm800k/data/phase2_train.jsonl",
                 "tasksource/PRM800K/phase2_train.jsonl", "prm800k/phase2_train.jsonl"),
    how_to_get="git clone https://github.com/openai/prm800k (with git-lfs) into <data dir>/openai/, "
               "or download phase2_train.jsonl from the hub repo tasksource/PRM800K into <data dir>/tasksource/PRM800K/",
))
