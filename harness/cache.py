"""Content-addressed stage store with atomic publication.

A stage's key is the hash of (kind, version, resolved config, the keys of its input stages). Its
outputs are written to a private temp folder and published with one `os.rename` after the
completion record `stage.json` is written inside it, so a folder under `stages/<kind>/<key>` exists
if and only if the stage finished. A `kill -9` at any moment leaves either nothing or a complete
stage; stale temp folders are swept on the next run.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import shutil
import socket
import time
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

from harness.paths import stage_cache_dir

RECORD = "stage.json"


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


def new_temp_dir(kind: str, key: str) -> Path:
    # Host and pid in the name let a later run tell a dead writer's leftovers from a live one's.
    tmp = stage_cache_dir() / ".tmp" / f"{kind}__{key}__{socket.gethostname()}__{os.getpid()}__{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    return tmp


def publish(tmp: Path, kind: str, key: str, record: dict[str, Any]) -> Path:
    """Write the completion record into `tmp`, then rename it into place (atomic on one filesystem)."""
    record = {**record, "kind": kind, "key": key, "published_at": time.time()}
    (tmp / RECORD).write_text(json.dumps(record, indent=2, default=str))
    target = stage_dir(kind, key)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(tmp, target)
    except OSError:
        # Another worker published the same stage first (same key => same content); keep theirs.
        if not is_complete(kind, key):
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def sweep_stale_temps() -> int:
    """Remove temp folders left by killed processes of this host (their pid is gone)."""
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


def code_fingerprint(module: ModuleType, package: str, exclude: tuple[str, ...] = ()) -> str:
    """Hash of a module's source and of every module of `package` it reaches through its globals
    (functions, classes and modules it imported from there), minus `exclude`.

    What a cached result computed by `module` depends on in code: a dataset loader and the registry
    helpers it calls, a task and the evaluation helpers it calls. Imports done inside functions are
    not followed (such code is covered by the owner's declared version)."""
    seen: dict[str, ModuleType] = {}
    todo = [module]
    while todo:
        mod = todo.pop()
        if mod.__name__ in seen or mod.__name__ in exclude:
            continue
        seen[mod.__name__] = mod
        for value in vars(mod).values():
            owner = value if isinstance(value, ModuleType) else inspect.getmodule(value)
            if owner is not None and owner.__name__.startswith(package + ".") and owner.__name__ not in seen:
                todo.append(owner)
    digest = hashlib.sha256()
    for name in sorted(seen):
        digest.update(f"{name}\n".encode())
        digest.update(_module_source(seen[name]).encode())
    return digest.hexdigest()[:16]


def _module_source(module: ModuleType) -> str:
    try:
        return inspect.getsource(module)
    except (OSError, TypeError):  # no source file (e.g. built in a test from a string): its name only
        return module.__name__

