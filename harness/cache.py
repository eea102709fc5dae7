"""Content-addressed stage store with atomic publication, and the private working folders of running stages.

A stage's key is the hash of (kind, version, resolved config, the keys of its input stages). While it runs,
its writer works in the stage's working folder, `stages/.work/<kind>/<key>/` (`work_dir`), a path that
depends on the stage alone, so a later run finds what a killed writer left there. The folder is claimed
with a lock, `stages/.work/<kind>/<key>.lock` beside it: the writer holds an exclusive `flock` on it for as
long as it works (the kernel drops the lock when the process dies, `kill -9` included) and writes its
name into it (host, pid, attempt id, start time), so two processes never write one stage and anyone can
tell a live writer's folder from a dead one's (`work_state`). Publication writes the completion record
`stage.json` into the folder and renames it to `stages/<kind>/<key>` with one `os.rename`, so a folder
there exists if and only if the stage finished; `kill -9` at any moment leaves either a working folder
(reclaimed by the next writer: `WorkClaim.previous` says whose it was) or a complete stage.

What a working folder holds while its stage runs (the executor writes it, the driver and `harness status`
read it): the stage's outputs as they appear, `history.jsonl` (step metrics, appended as training goes),
`progress.json` (`harness.progress`), and `failure.json` once the stage failed (`record_failure`).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import shutil
import socket
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.paths import stage_cache_dir

RECORD = "stage.json"
FAILURE_FILE = "failure.json"
WORK_ROOT = ".work"
_LOCK_SUFFIX = ".lock"


def stage_key(kind: str, version: int, config: dict[str, Any], input_keys: dict[str, str]) -> str:
    blob = json.dumps({"kind": kind, "version": version, "config": config, "inputs": input_keys},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def stage_dir(kind: str, key: str) -> Path:
    return stage_cache_dir() / kind / key


def is_complete(kind: str, key: str) -> bool:
    return (stage_dir(kind, key) / RECORD).exists()


def read_record(kind: str, key: str) -> dict[str, Any]:
    return json.loads((stage_dir(kind, key) / RECORD).read_text())


def record_times(record: dict[str, Any]) -> tuple[float, float]:
    """(start, end) of a published stage's work, in epoch seconds. Records written before the start was
    recorded give it as publication time minus the stage's seconds."""
    end = float(record.get("ended_at") or record.get("published_at") or 0.0)
    start = float(record.get("started_at") or end - float(record.get("seconds") or 0.0))
    return start, end


# -- working folders ---------------------------------------------------------------------------------

def work_dir(kind: str, key: str) -> Path:
    """The working folder of a running stage (the one place that says where it is)."""
    return stage_cache_dir() / WORK_ROOT / kind / key


def _lock_path(kind: str, key: str) -> Path:
    return stage_cache_dir() / WORK_ROOT / kind / f"{key}{_LOCK_SUFFIX}"


@dataclass
class WorkClaim:
    """A writer's exclusive hold on a stage's working folder (release it, or die, to give it up)."""

    kind: str
    key: str
    path: Path
    attempt: str  # unique per claim: a new attempt means the stage's outputs (and curves) start again
    started_at: float
    # The lock record of the writer that left this folder (dead or failed), None for a fresh folder.
    previous: dict[str, Any] | None = None
    _fd: int | None = field(default=None, repr=False)

    @property
    def record(self) -> dict[str, Any]:
        return {"host": socket.gethostname(), "pid": os.getpid(), "attempt": self.attempt,
                "claimed_at": self.started_at, "started_at": self.started_at}

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError as exc:
        if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            raise RuntimeError(f"the stage store's filesystem does not support file locks ({exc}); working "
                               "folders need them (on a cluster: NFSv4, or Lustre mounted with -o flock)") from exc
        raise


def _read_lock_record(path: Path) -> dict[str, Any] | None:
    try:
        text = path.read_text()
        return json.loads(text) if text.strip() else None
    except (OSError, json.JSONDecodeError):
        return None  # absent, or being written right now


def claim_work_dir(kind: str, key: str) -> WorkClaim | None:
    """Claim the stage's working folder, or None while another live writer holds it (or once the stage
    is published: check `is_complete` first).

    The folder is created if needed; one left by a dead or failed writer is handed over as it is, with
    that writer's record in `previous` (the caller decides what of it to keep: `reset_work_dir` clears it).
    """
    lock = _lock_path(kind, key)
    lock.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        if not _try_flock(fd):
            os.close(fd)
            return None
        if is_complete(kind, key):  # published by the writer that just let go: nothing to claim
            lock.unlink(missing_ok=True)
            os.close(fd)
            return None
        # A publisher unlinks the lock file after publishing: if the file we locked is no longer the one at
        # `lock`, another writer may be creating a fresh one; lock that one instead.
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    previous = _read_lock_record(lock)
    folder = work_dir(kind, key)
    if previous is not None and not folder.exists():
        previous = None  # its writer published (or nothing was ever written): nothing is left to reclaim
    claim = WorkClaim(kind, key, folder, uuid.uuid4().hex[:12], time.time(), previous, fd)
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(claim.record).encode(), 0)
    folder.mkdir(parents=True, exist_ok=True)
    return claim


def reset_work_dir(claim: WorkClaim) -> None:
    """Start the stage over in its working folder: everything a previous writer left there is removed."""
    for entry in claim.path.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def record_failure(kind: str, key: str, message: str, details: str = "", attempt: str | None = None) -> None:
    """Say in the stage's working folder that it failed, and why (`harness status` shows it); kept until a
    later writer claims the folder again. `attempt` names the failed attempt (None: unknown)."""
    folder = work_dir(kind, key)
    if not folder.is_dir():
        return
    body = {"error": message, "details": details, "attempt": attempt, "at": time.time(),
            "host": socket.gethostname(), "pid": os.getpid()}
    tmp = folder / f".{FAILURE_FILE}.{os.getpid()}"
    tmp.write_text(json.dumps(body, indent=2))
    os.replace(tmp, folder / FAILURE_FILE)


@dataclass
class WorkState:
    """What a stage's working folder says right now (read by anyone, writer or not)."""

    kind: str
    key: str
    path: Path
    writer: dict[str, Any] | None  # the lock record: host, pid, attempt, started_at
    running: bool  # a live writer holds the lock
    failure: dict[str, Any] | None  # failure.json, when the last writer failed

    @property
    def attempt(self) -> str | None:
        return (self.writer or {}).get("attempt")


def work_state(kind: str, key: str) -> WorkState | None:
    """The stage's working folder as it is now, or None when there is none (never started, or published).

    Whether a writer is alive is asked of the lock itself (a non-blocking flock attempt that is released
    at once), so a writer killed with `kill -9` shows as not running."""
    lock = _lock_path(kind, key)
    folder = work_dir(kind, key)
    if not lock.exists() or not folder.exists():
        return None
    try:
        fd = os.open(lock, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        running = not _try_flock(fd)
    finally:
        os.close(fd)  # also releases the probe's lock, if it got one
    failure = None
    if not running and (folder / FAILURE_FILE).exists():
        try:
            failure = json.loads((folder / FAILURE_FILE).read_text())
        except (OSError, json.JSONDecodeError):
            failure = None
    return WorkState(kind, key, folder, _read_lock_record(lock), running, failure)


def publish(claim: WorkClaim, record: dict[str, Any]) -> Path:
    """Write the completion record into the claimed working folder, then rename it into the store
    (atomic on one filesystem) and drop the lock file."""
    ended = time.time()
    record = {**record, "kind": claim.kind, "key": claim.key, "attempt": claim.attempt,
              "started_at": claim.started_at, "ended_at": ended, "published_at": ended,
              "writer": {"host": socket.gethostname(), "pid": os.getpid()}}
    (claim.path / RECORD).write_text(json.dumps(record, indent=2, default=str))
    (claim.path / FAILURE_FILE).unlink(missing_ok=True)
    target = stage_dir(claim.kind, claim.key)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(claim.path, target)
    except OSError:
        # Published meanwhile by a writer that did not honour the lock (same key => same content): keep theirs.
        if not is_complete(claim.kind, claim.key):
            raise
        shutil.rmtree(claim.path, ignore_errors=True)
    # While still holding the lock: a writer that locks the unlinked file next finds the stage published.
    _lock_path(claim.kind, claim.key).unlink(missing_ok=True)
    return target


def running_work() -> list[WorkState]:
    """Every working folder in the store (running, failed or left by a dead writer)."""
    root = stage_cache_dir() / WORK_ROOT
    states = []
    if root.is_dir():
        for kind_dir in sorted(p for p in root.iterdir() if p.is_dir()):
            for folder in sorted(p for p in kind_dir.iterdir() if p.is_dir()):
                state = work_state(kind_dir.name, folder.name)
                if state is not None:
                    states.append(state)
    return states


def sweep_stale_temps() -> int:
    """Remove the `stages/.tmp` folders of earlier harness versions' killed writers (this host, pid gone)."""
    root = stage_cache_dir() / ".tmp"
    if not root.exists():
        return 0
    removed = 0
    for tmp in root.iterdir():
        parts = tmp.name.split("__")
        if len(parts) != 5 or parts[2] != socket.gethostname():
            continue  # another host's writer: only it can tell whether it is alive
        pid = int(parts[3])
        if pid != os.getpid() and not _pid_alive(pid):
            shutil.rmtree(tmp, ignore_errors=True)
            removed += 1
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks (data files can be large)."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
