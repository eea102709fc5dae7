"""Processes that clean up after themselves: stage workers die with the driver, and the servers the
harness starts (`harness ui`'s MLflow server) stop with it.

- `die_with_parent(pid)`, in a worker process: the kernel kills it when the process that started it dies
  (Linux `prctl(PR_SET_PDEATHSIG, SIGKILL)`), and a watchdog thread does the same elsewhere (it notices
  within `WATCHDOG_INTERVAL_S`). A worker killed mid-stage leaves its working folder to the next run
  (`harness.cache`); a stage it already published stays published.
- `run_supervised(cmd)`: run a server in its own process group until it exits or this process is stopped
  (SIGINT, SIGTERM, SIGHUP: the whole group is terminated, then killed after `STOP_GRACE_S`); if this
  process is killed outright (`kill -9`), the kernel sends the server's leader SIGTERM, which MLflow
  forwards to its web server.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

PR_SET_PDEATHSIG = 1
WATCHDOG_INTERVAL_S = 1.0
STOP_GRACE_S = 10.0


def _set_parent_death_signal(sig: int) -> bool:
    """Ask the kernel to send `sig` to this process when its parent dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except OSError:
        return False


def die_with_parent(parent_pid: int) -> None:
    """Make this (worker) process die when `parent_pid`, the process that started it, dies."""
    _set_parent_death_signal(signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(WATCHDOG_INTERVAL_S)
            if os.getppid() != parent_pid:  # re-parented: the driver is gone
                os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="harness-parent-watchdog", daemon=True).start()


def stage_worker_init(parent_pid: int) -> None:
    """Initializer of the local backend's pool workers: die with the driver, library noise as it asked."""
    die_with_parent(parent_pid)
    from harness.console import apply_quiet_from_env

    apply_quiet_from_env()


def _server_preexec() -> None:
    _set_parent_death_signal(signal.SIGTERM)


def run_supervised(cmd: Sequence[str], env: dict[str, str] | None = None) -> int:
    """Run `cmd` (a server) in its own process group until it exits; stopping this process stops it."""
    proc = subprocess.Popen(list(cmd), env=env, start_new_session=True, preexec_fn=_server_preexec)

    def stop(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        return proc.wait()
    except SystemExit as exc:
        return int(exc.code or 1)
    finally:
        stop_group(proc)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def stop_group(proc: subprocess.Popen) -> None:
    """Terminate a process started with `start_new_session=True` and everything in its group."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + STOP_GRACE_S
    while time.monotonic() < deadline:
        if proc.poll() is not None and not _group_alive(proc.pid):
            return
        time.sleep(0.1)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
