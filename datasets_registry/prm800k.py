"""PRM800K (Lightman et al. 2023), phase 2 (App. B). Two builds, because the paper's text and the
authors' script disagree:

* `prm800k` (default): the authors' script (EasyLM `convert_preference_data.py`, branch
  `prm800k_train_phase2.jsonl`): label rows are grouped by problem; chosen = the problem's
  ground-truth solution (`question.ground_truth_solution`), rejected = a random model generation whose
  labeler stopped at an error (`label.finish_reason == "found_error"`); problems without such a
  generation are dropped. This is what the released split `prm800k_pairs_phase2` of
  allenai/tulu-2.5-preference-data holds, and that split has 6,949 rows, Table 1's count: this build
  is the one that reproduces Table 1 (the count itself cannot be checked offline: phase2_train.jsonl is
  not in ../shared/data). `create_preference_data.sh` also builds phase-1 pairs and concatenates them
  into `prm800k_pairs.jsonl`, but the released (and Table 1) split is phase 2 only.
* `prm800k-paper-text`: App. B's text: 'prompts where the model generations achieved the correct answer
  once and failed to find the right answer once ... randomly choose one correct and one incorrect
  generation as chosen and rejected'. A generation is correct when its final answer matches the ground
  truth (a conservative normalised comparison: spacing, `$`, `\\!`, `\\text{}`, `\\dfrac`, thousands
  separators, numeric equality; OpenAI's sympy-based grader is stricter in rare cases). Problems the
  labeler flagged `bad_problem` are dropped. Its size at full scale is not known.

Raw units: dropped label rows plus one unit per problem (rows of one problem are grouped first).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

from datasets_registry.core import preference_row, row_rng
from datasets_registry.raw_files import require_fields, where
from datasets_registry.raw_sources import source_spec
from datasets_registry.spec import AUTHORS_SCRIPT, DataFormatError, DropRow, register


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


def curate_paper_text(group: dict[str, Any]) -> dict[str, Any]:
    if not group["correct"] or not group["incorrect"]:
        raise DropRow("no_correct_and_incorrect")
    pick = row_rng("prm800k", group["problem"])
    chosen = group["correct"][pick % len(group["correct"])]
    rejected = group["incorrect"][(pick >> 20) % len(group["incorrect"])]
    return preference_row("prm800k-paper-text", [{"role": "user", "content": group["problem"]}], chosen, rejected)


def group_ground_truth_vs_error(rows: Iterable[dict[str, Any]]) -> Iterator[Any]:
    """The authors' units: {"problem", "ground_truth": solution, "errors": [generations]} per problem."""
    problems: dict[str, dict[str, Any]] = {}
    for raw in rows:
        require_fields(raw, ["question", "label"], where(raw))
        question, label = raw["question"], raw["label"]
        if not isinstance(question, dict) or not isinstance(label, dict):
            raise DataFormatError(f"{where(raw)}: fields 'question' and 'label' should be objects")
        problem = question.get("problem")
        if not isinstance(problem, str) or not problem.strip():
            yield DropRow("missing_problem")
            continue
        # The script takes the ground truth of the problem's first label row.
        entry = problems.setdefault(problem, {"ground_truth": question.get("ground_truth_solution"), "errors": {}})
        if label.get("finish_reason") != "found_error":
            continue
        steps = question.get("pre_generated_steps")
        if not steps or not isinstance(steps, list):
            yield DropRow("missing_generation")
            continue
        entry["errors"].setdefault("\n".join(str(step) for step in steps), None)  # one generation, many labelers
    for problem in sorted(problems):
        yield {"problem": problem, "ground_truth": problems[problem]["ground_truth"],
               "errors": sorted(problems[problem]["errors"])}


def curate_authors(group: dict[str, Any]) -> dict[str, Any]:
    if not group["errors"]:
        raise DropRow("no_found_error_generation")
    if not isinstance(group["ground_truth"], str):
        raise DropRow("missing_ground_truth_solution")
    rejected = group["errors"][row_rng("prm800k", group["problem"]) % len(group["errors"])]
    return preference_row("prm800k", [{"role": "user", "content": group["problem"]}], group["ground_truth"],
                          rejected)


PRM800K_SOURCE: dict[str, Any] = dict(
    kind="preference",
    source_type="human",
    hub_id="tasksource/PRM800K",
    split="train",
    revision="547b19506677a59037ee888838834b65e9b1ddd4",
    hub_files=("phase2_train.jsonl",),
    license="MIT",
    local_files=("openai/prm800k/prm800k/data/phase2_train.jsonl", "openai/prm800k/data/phase2_train.jsonl",
                 "tasksource/PRM800K/phase2_train.jsonl", "prm800k/phase2_train.jsonl"),
    how_to_get="git clone https://github.com/openai/prm800k (with git-lfs) into <data dir>/openai/, "
               "or download phase2_train.jsonl from the hub repo tasksource/PRM800K into <data dir>/tasksource/PRM800K/",
)

register(source_spec(
    name="prm800k",
    group="table1",
    description="PRM800K phase 2 (authors' script): the ground-truth solution vs a model generation with a "
                "labelled error, one pair per problem.",
    curate=curate_authors,
    group_raw=group_ground_truth_vs_error,
    paper_size=6_949,
    expected_size=6_949,
    rule="group phase-2 label rows by problem; chosen = ground_truth_solution, rejected = a random distinct "
         "generation labelled finish_reason == found_error; problems without one dropped",
    rule_source=f"{AUTHORS_SCRIPT} (prm800k_train_phase2.jsonl); "
                "released split prm800k_pairs_phase2 (6,949 rows = Table 1)",
    deviation="App. B describes a correct vs an incorrect generation instead (see prm800k-paper-text); the "
              "authors' script is followed because it is what the released 6,949-row split holds",
    released_as="tulu25-prm800k_pairs_phase2",
    **PRM800K_SOURCE,
))

register(source_spec(
    name="prm800k-paper-text",
    group="variant",
    description="PRM800K phase 2 as App. B's text says: a correct vs an incorrect model generation of the "
                "same problem (final answers compared with the ground truth).",
    curate=curate_paper_text,
    group_raw=group_by_problem,
    rule="group phase-2 label rows by problem; generations whose final answer matches the ground truth are "
         "correct, others incorrect; problems with both: one random correct (chosen) vs one random incorrect "
         "(rejected); bad_problem rows dropped",
    rule_source="App. B (PRM800k paragraph)",
    deviation="not the authors' build; its full-scale size is unknown (the released 6,949 rows come from the "
              "ground-truth-vs-found_error script, `prm800k`)",
    **PRM800K_SOURCE,
))
