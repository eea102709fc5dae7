"""Content-addressed stage store with atomic publication.

A stage's key is the hash of (kind, version, resolved config, the keys of its input stages). Its
outputs are written to a private temp folder and published with one `os.rename` after the
completion record `stage.json` is written inside it, so a folder under `stages/<kind>/<key>` exists
if and only if the stage finished. A `kill -9` at any moment leaves either nothing or a complete
stage; stale temp folders are swept on the next run.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import shutil
import socket
import sys
import time
import uuid
from pathlib import Path
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
