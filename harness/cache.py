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

Small results published whole in one go (the evaluation's task store) use a private temp folder instead
(`new_temp_dir` + `publish_temp`), swept when its writer died (`sweep_stale_temps`).
"""

from __future__ import annotations

import ast
import errno
import fcntl
import hashlib
import json
import os
import shutil
import socket
import sys
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
    attempt: str  # unique per claim: a new attempt's curve is logged afresh (a new live run)
    claimed_at: float
    # The lock record of the writer that left this folder (dead or failed), None for a fresh folder.
    previous: dict[str, Any] | None = None
    _fd: int | None = field(default=None, repr=False)
    started_at: float = 0.0  # when the stage's work began: the claim, unless a resumed writer says earlier

    def __post_init__(self) -> None:
        self.started_at = self.started_at or self.claimed_at

    @property
    def record(self) -> dict[str, Any]:
        return {"host": socket.gethostname(), "pid": os.getpid(), "attempt": self.attempt,
                "claimed_at": self.claimed_at, "started_at": self.started_at}

    def set_started_at(self, started_at: float) -> None:
        """Say the stage started earlier (a writer resuming a dead one's work keeps its start): the lock
        record, the live MLflow run's start and the published record's `started_at` follow."""
        self.started_at = started_at
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, json.dumps(self.record).encode(), 0)

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
    claim.set_started_at(claim.started_at)  # writes the record
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


def new_temp_dir(kind: str, key: str) -> Path:
    """A private temp folder for a small result published whole in one go (`publish_temp`), such as the
    evaluation's task store entries: no working folder or lock, a killed writer's folder is swept."""
    # Host and pid in the name let a later run tell a dead writer's leftovers from a live one's.
    tmp = stage_cache_dir() / ".tmp" / f"{kind}__{key}__{socket.gethostname()}__{os.getpid()}__{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    return tmp


def publish_temp(tmp: Path, kind: str, key: str, record: dict[str, Any]) -> Path:
    """Write the completion record into `tmp`, then rename it into place; when another writer published
    the same key first (same key => same content), keep theirs."""
    record = {**record, "kind": kind, "key": key, "published_at": time.time()}
    (tmp / RECORD).write_text(json.dumps(record, indent=2, default=str))
    target = stage_dir(kind, key)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(tmp, target)
    except OSError:
        if not is_complete(kind, key):
            raise
        shutil.rmtree(tmp, ignore_errors=True)
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
    """Remove the temp folders (`new_temp_dir`) of killed writers of this host (their pid is gone)."""
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


_FILE_HASHES: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks (data files can be large).

    Remembered per (path, size, mtime) for the life of the process: planning a grid fingerprints the
    same raw and benchmark files once per cell, and a rewritten file gets a new mtime."""
    stat = path.stat()
    ident = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if ident not in _FILE_HASHES:
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        _FILE_HASHES[ident] = digest.hexdigest()
    return _FILE_HASHES[ident]


def model_fingerprint(model_path: str) -> str:
    """Identity of a model folder's content (config + weight file sizes and names), for cache keys."""
    folder = Path(model_path)
    parts = [str(folder.resolve())]
    if folder.is_dir():
        config = folder / "config.json"
        if config.exists():
            parts.append(config.read_text())
        parts += sorted(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in folder.glob("*.safetensors"))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def code_fingerprint(module: str, packages: tuple[str, ...], exclude: tuple[str, ...] = ()) -> str:
    """Hash of a module's source and of every module of `packages` it imports, transitively, minus
    `exclude`: what a cached result computed by `module` depends on in code (a dataset loader and the
    registry helpers it calls; a task and the scoring code it calls, including imports made inside
    functions). Read from the files, nothing is imported; `from pkg import name` follows `name` to the
    module that defines it when `pkg/__init__.py` only re-exports it."""
    seen: dict[str, str] = {}
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen or name in exclude:
            continue
        seen[name], imports = _module_info(name)
        todo.extend(dep for dep in imports if any(dep == p or dep.startswith(p + ".") for p in packages))
    digest = hashlib.sha256()
    for name in sorted(seen):
        digest.update(f"{name}\n{seen[name]}\n".encode())
    return digest.hexdigest()[:16]


def _module_file(name: str) -> Path | None:
    """The source file of module `name` (imported or not), or None (not a module, or no file)."""
    loaded = sys.modules.get(name)
    if loaded is not None:
        file = getattr(loaded, "__file__", None)
        return Path(file) if file and file.endswith(".py") else None
    top = sys.modules.get(name.split(".")[0])
    if top is None or not getattr(top, "__file__", None):
        return None
    folder = Path(top.__file__).parent.joinpath(*name.split(".")[1:])
    for candidate in (folder.with_suffix(".py"), folder / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


_MODULES: dict[tuple[str, str, int, int], tuple[str, list[str]]] = {}


def _module_info(name: str) -> tuple[str, list[str]]:
    """(source, imported modules) of module `name`; parsed once per file version."""
    path = _module_file(name)
    if path is None:
        return name, []
    stat = path.stat()
    ident = (name, str(path), stat.st_size, stat.st_mtime_ns)
    if ident not in _MODULES:
        source = path.read_text(encoding="utf-8")
        _MODULES[ident] = source, _imports(name, source)
    return _MODULES[ident]


def _imports(name: str, source: str) -> list[str]:
    """Modules `source` (module `name`) imports anywhere in its body, re-exports resolved."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    is_package = _module_file(name) is not None and _module_file(name).name == "__init__.py"  # type: ignore[union-attr]
    package = name if is_package else name.rpartition(".")[0]
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                found.append(_defining_module(base, alias.name))
    return found


def _defining_module(package: str, attribute: str) -> str:
    """`from package import attribute`: the submodule `attribute`, or the module `package`'s __init__
    re-exports it from, or `package` itself."""
    if _module_file(f"{package}.{attribute}") is not None:
        return f"{package}.{attribute}"
    init = _module_file(package)
    if init is not None and init.name == "__init__.py":
        try:
            tree = ast.parse(init.read_text(encoding="utf-8"))
        except SyntaxError:
            return package
        for node in tree.body:
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                if any((alias.asname or alias.name) == attribute for alias in node.names):
                    return node.module
    return package
