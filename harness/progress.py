"""A running stage's progress, for the terminal and `harness status`: `progress.json` in its working folder.

The stage's process writes it (`report`, throttled to one write a second, atomically replaced); readers
(`read`) may be other processes. Fields: `done`/`total` in `unit`s ("step" for trainers, "update" for PPO),
`phase` (what it is doing), `updated_at`, and the token counters of `harness.usage` at that time.
`report` does nothing outside a stage (`harness eval`, a test calling a trainer directly).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

PROGRESS_FILE = "progress.json"
_MIN_INTERVAL_S = 1.0

_lock = threading.Lock()
_folder: Path | None = None
_state: dict[str, Any] = {}
_last_write = 0.0


@contextmanager
def stage_folder(folder: Path) -> Iterator[None]:
    """Within the block, `report` writes into `folder` (the running stage's working folder)."""
    global _folder, _state, _last_write
    with _lock:
        _folder, _state, _last_write = folder, {}, 0.0
    try:
        yield
    finally:
        with _lock:
            _folder = None


def report(done: int | None = None, total: int | None = None, unit: str | None = None,
           phase: str | None = None, force: bool = False) -> None:
    """Update the stage's progress (fields left None keep their value)."""
    global _last_write
    from harness import usage

    with _lock:
        if _folder is None:
            return
        for name, value in (("done", done), ("total", total), ("unit", unit), ("phase", phase)):
            if value is not None:
                _state[name] = value
        now = time.time()
        if not force and now - _last_write < _MIN_INTERVAL_S:
            return
        _last_write = now
        body = {**_state, "updated_at": now, **usage.counts()}
        tmp = _folder / f".{PROGRESS_FILE}.{os.getpid()}"
        try:
            tmp.write_text(json.dumps(body))
            os.replace(tmp, _folder / PROGRESS_FILE)
        except OSError:
            pass  # the folder was published or removed meanwhile: nothing left to report into


def read(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / PROGRESS_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return {}
