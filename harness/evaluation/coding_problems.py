"""HumanEval+ and MBPP+ problems (`coding.py` evaluates them): read from the local EvalPlus files with
every field checked, MBPP+ v0.1.0's JSON inputs turned back into the types its functions take, and the
paper setting's 278-problem MBPP+ subset (see `coding.py`'s docstring)."""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.paths import data_dirs, find_data_file

HUMANEVAL_PLUS_FILE = "benchmarks/humanevalplus/HumanEvalPlus.jsonl.gz"
MBPP_PLUS_FILE = "benchmarks/mbppplus/MbppPlus.jsonl"
REQUIRED_FIELDS = ("task_id", "prompt", "entry_point", "canonical_solution", "base_input", "plus_input", "atol")

# The paper setting's MBPP+ problems: the hub's 378 (MBPP+ v0.2.0 = v0.1.0 without the tasks EvalPlus's
# tools/mbpp/fix_v011.py deletes) without the first 100 (open-instruct eval/mbpp/run_eval.py).
MBPP_V020_REMOVED = frozenset({83, 115, 117, 143, 164, 229, 249, 295, 396, 400, 407, 431, 438, 442, 461, 574,
                               582, 595, 640, 746, 783})
MBPP_HUB_SIZE = 378
MBPP_PAPER_HELD_OUT = 100


@dataclass
class CodeProblem:
    task_id: str
    dataset: str  # "humaneval" | "mbpp" (selects EvalPlus's special oracles)
    prompt: str
    entry_point: str
    canonical_solution: str
    base_input: list[Any]
    plus_input: list[Any]
    atol: float
    test: str | None = None  # HumanEval's check() program, when the row has one
    source_digest: str = ""  # sha256 of the data file it came from: keys the expected-output cache

    @property
    def reference_program(self) -> str:
        # EvalPlus computes expected outputs from prompt + canonical_solution (for MBPP+ the prompt is
        # only a docstring, so this is the canonical code).
        return self.prompt + self.canonical_solution


def problems_file(relative: str, path: str | Path | None) -> Path:
    if path is not None:
        resolved = Path(path)
        if not resolved.exists():
            raise FileNotFoundError(f"coding benchmark file {resolved} does not exist")
        return resolved
    found = find_data_file(relative)
    if found is None:
        raise FileNotFoundError(
            f"{relative} not found in any local data directory ({', '.join(map(str, data_dirs()))}); "
            "put the EvalPlus release file there or set HARNESS_DATA_DIR"
        )
    return found


def _read_rows(path: Path) -> list[dict[str, Any]]:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    opener = gzip.open if path.suffix == ".gz" else open
    rows = []
    with opener(path, "rt", encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({err})") from err
            missing = [f for f in REQUIRED_FIELDS if f not in row]
            if missing:
                raise ValueError(f"{path}:{lineno}: row {row.get('task_id', '?')!r} lacks field(s) {missing}")
            for split in ("base_input", "plus_input"):
                if row[split] == {}:  # Mbpp/793 ships `plus_input: {}`: no tests, as EvalPlus reads it
                    row[split] = []
                if not isinstance(row[split], list):
                    raise ValueError(f"{path}:{lineno}: {row['task_id']!r} field {split!r} must be a list of "
                                     f"argument lists, got {type(row[split]).__name__}")
            row["_digest"] = digest
            rows.append(row)
    if not rows:
        raise ValueError(f"{path}: no problems in file")
    return rows


def _problem(row: dict[str, Any], dataset: str, base_input: list[Any], plus_input: list[Any]) -> CodeProblem:
    return CodeProblem(
        task_id=row["task_id"], dataset=dataset, prompt=row["prompt"], entry_point=row["entry_point"],
        canonical_solution=row["canonical_solution"], base_input=base_input, plus_input=plus_input,
        atol=float(row["atol"] or 0), test=row.get("test"), source_digest=row["_digest"],
    )


def load_humaneval_plus(path: str | Path | None = None) -> list[CodeProblem]:
    """HumanEval+ (EvalPlus release jsonl[.gz]); its JSON inputs need no conversion."""
    rows = _read_rows(problems_file(HUMANEVAL_PLUS_FILE, path))
    return [_problem(r, "humaneval", r["base_input"], r["plus_input"]) for r in rows]


def _tuples(items: list[Any]) -> list[tuple]:
    return [tuple(x) for x in items]


def _deep_tuple(x: Any) -> Any:
    return tuple(_deep_tuple(i) for i in x) if isinstance(x, list) else x


# MBPP+ v0.1.0 stores tuples, sets and complex numbers as JSON lists/strings. Which argument of which
# task gets which type back is data (it follows each task's type contract); the conversions are
# EvalPlus's `mbpp_deserialize_inputs`, written here per input (a list of arguments).
_MBPP_CONVERSIONS: dict[Callable[[list[Any]], Any], tuple[int, ...]] = {
    # every argument list -> tuple
    (lambda a: _tuples(a)): (2, 116, 132, 143, 222, 261, 273, 394, 399, 421, 424, 429, 470, 560, 579, 596,
                             616, 630, 726, 740, 744, 809),
    # every argument is a list of lists -> list of tuples
    (lambda a: [_tuples(x) for x in a]): (63, 64, 70, 94, 120, 237, 272, 299, 400, 409, 417, 438, 473, 614,
                                          780),
    # first argument: list of lists -> list of tuples
    (lambda a: [_tuples(a[0]), a[1]]): (75, 413, 444, 753),
    # second argument -> tuple
    (lambda a: [a[0], tuple(a[1])]): (106, 750),
    # first argument -> tuple
    (lambda a: [tuple(a[0]), a[1]]): (250, 405, 446, 617, 720, 763, 808),
    # every argument: list of lists -> tuple of tuples
    (lambda a: [tuple(_tuples(x)) for x in a]): (259, 401, 445),
    # single argument: its list items -> tuples, itself -> tuple
    (lambda a: [tuple(tuple(i) if isinstance(i, list) else i for i in a[0])]): (278,),
    (lambda a: [tuple(a[0]), a[1], a[2]]): (307,),
    (lambda a: [{k: tuple(v) for k, v in a[0].items()}] + a[1:]): (722,),
    # non-empty lists -> sets; an empty list becomes {} (an empty dict), exactly as EvalPlus does
    (lambda a: [[set(i) if isinstance(i, list) and i else {} for i in a[0]]]): (115,),
    (lambda a: (float(a[0]), complex(a[1]))): (124,),
    (lambda a: [complex(a[0])]): (252,),
    _deep_tuple: (580, 615, 791),
}
_MBPP_CONVERT_BY_TASK = {n: fn for fn, tasks in _MBPP_CONVERSIONS.items() for n in tasks}


def mbpp_restore_inputs(task_id: str, inputs: list[Any]) -> list[Any]:
    """Turn MBPP+ JSON inputs back into the argument types the task's functions take."""
    try:
        number = int(task_id.split("/")[-1])
    except ValueError as err:
        raise ValueError(f"MBPP+ task_id {task_id!r} does not end in a number") from err
    convert = _MBPP_CONVERT_BY_TASK.get(number)
    return [convert(inp) for inp in inputs] if convert else inputs


def load_mbpp_plus(path: str | Path | None = None) -> list[CodeProblem]:
    """MBPP+ pre-release v0.1.0 (no `test` field: tests are base_input/plus_input vs canonical_solution)."""
    rows = _read_rows(problems_file(MBPP_PLUS_FILE, path))
    return [
        _problem(r, "mbpp", mbpp_restore_inputs(r["task_id"], r["base_input"]),
                 mbpp_restore_inputs(r["task_id"], r["plus_input"]))
        for r in rows
    ]


def mbpp_paper_problems(problems: list[CodeProblem]) -> list[CodeProblem]:
    """open-instruct's 278 MBPP+ problems from the local file: the v0.2.0 problems (v0.1.0 without
    MBPP_V020_REMOVED) in task-id order, without the first 100. ValueError when the file does not hold
    the 378 v0.2.0 tasks (another release)."""
    def number(p: CodeProblem) -> int:
        return int(p.task_id.split("/")[-1])

    kept = sorted((p for p in problems if number(p) not in MBPP_V020_REMOVED), key=number)
    if len(kept) != MBPP_HUB_SIZE:
        raise ValueError(f"{MBPP_PLUS_FILE}: {len(kept)} problems once the 21 tasks MBPP+ v0.2.0 removed are left out, "
                         f"expected {MBPP_HUB_SIZE}; open-instruct's 278-problem subset (the hub's 378 without the "
                         "first 100) cannot be built from this file")
    return kept[MBPP_PAPER_HELD_OUT:]


def mbpp_problems(setting: str) -> list[CodeProblem]:
    problems = load_mbpp_plus()
    return mbpp_paper_problems(problems) if setting == "paper" else problems

