"""Persistent SQLite caches under `results/judge/`: judge completions and policy generations.

Only successful responses are ever written: a failed call leaves no row, so a rerun asks again.
Several threads share one connection behind a lock; several processes share the file (WAL mode).
The API key is never part of a key or a row.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from harness.paths import results_dir


def judge_dir() -> Path:
    path = results_dir() / "judge"
    path.mkdir(parents=True, exist_ok=True)
    return path


def stable_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


class _SqliteStore:
    schema = ""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(str(self.path), timeout=60, check_same_thread=False)
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.executescript(self.schema)
            self._conn.commit()

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class CompletionCache(_SqliteStore):
    """key = hash(endpoint model, template version, messages, decoding parameters) -> response."""

    schema = """
    CREATE TABLE IF NOT EXISTS completions (
        key TEXT PRIMARY KEY, model TEXT NOT NULL, template TEXT NOT NULL, request TEXT NOT NULL,
        response TEXT NOT NULL, prompt_tokens INTEGER, completion_tokens INTEGER, created REAL
    );
    """

    @staticmethod
    def key(model: str, template: str, messages: list[dict[str, str]], decoding: dict[str, Any]) -> str:
        return stable_hash({"model": model, "template": template, "messages": messages, "decoding": decoding})

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._conn.execute("SELECT response FROM completions WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, model: str, template: str, request: dict[str, Any], response: dict[str, Any],
            prompt_tokens: int, completion_tokens: int) -> None:
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO completions VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (key, model, template, json.dumps(request, ensure_ascii=False),
                 json.dumps(response, ensure_ascii=False), prompt_tokens, completion_tokens, time.time()),
            )
            self._conn.commit()

    def __len__(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM completions").fetchone()[0])


class GenerationCache(_SqliteStore):
    """(policy identity, prompt, sampling parameters) -> the policy's answer."""

    schema = """
    CREATE TABLE IF NOT EXISTS generations (
        policy TEXT NOT NULL, prompt_key TEXT NOT NULL, params TEXT NOT NULL, output TEXT NOT NULL,
        created REAL, PRIMARY KEY (policy, prompt_key, params)
    );
    """

    def get_many(self, policy: str, prompt_keys: list[str], params: str) -> dict[str, str]:
        found: dict[str, str] = {}
        with self._lock:
            for start in range(0, len(prompt_keys), 500):
                chunk = prompt_keys[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = self._conn.execute(
                    f"SELECT prompt_key, output FROM generations WHERE policy = ? AND params = ? "
                    f"AND prompt_key IN ({marks})", (policy, params, *chunk),
                ).fetchall()
                found.update(dict(rows))
        return found

    def put_many(self, policy: str, params: str, outputs: dict[str, str]) -> None:
        now = time.time()
        with self._lock:
            self._conn.executemany(
                "INSERT OR REPLACE INTO generations VALUES (?, ?, ?, ?, ?)",
                [(policy, k, params, v, now) for k, v in outputs.items()],
            )
            self._conn.commit()
