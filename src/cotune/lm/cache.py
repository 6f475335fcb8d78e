"""A persistent request cache in SQLite, shared by threads (and processes) that use the same file.

The key covers everything that determines a completion: model, adapter, messages, sampling parameters
and the rollout id. Greedy requests with the same key are answered from disk; a new rollout id asks the
model again (for sampling several rollouts of the same prompt).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any


def default_cache_dir() -> Path:
    """``$COTUNE_CACHE_DIR``, else ``$XDG_CACHE_HOME/cotune``, else ``~/.cache/cotune``."""
    if os.environ.get("COTUNE_CACHE_DIR"):
        return Path(os.environ["COTUNE_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cotune"


def request_key(**parts: Any) -> str:
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class RequestCache:
    """``get(key)`` / ``put(key, value)`` over one SQLite file; values are JSON objects.

    The default file is ``$COTUNE_REQUEST_CACHE``, else ``<cache dir>/requests.sqlite``.

    Example:
        >>> import tempfile, pathlib
        >>> cache = RequestCache(pathlib.Path(tempfile.mkdtemp()) / "c.sqlite")
        >>> cache.put("k", {"text": "hi"}); cache.get("k")
        {'text': 'hi'}
    """

    def __init__(self, path: str | Path | None = None):
        if path is None:
            path = os.environ.get("COTUNE_REQUEST_CACHE") or default_cache_dir() / "requests.sqlite"
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._connect() as db:
            db.execute("CREATE TABLE IF NOT EXISTS requests (key TEXT PRIMARY KEY, value TEXT, created REAL)")

    def _connect(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
        return db

    def get(self, key: str) -> dict[str, Any] | None:
        row = self._connect().execute("SELECT value FROM requests WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, value: dict[str, Any]) -> None:
        self._connect().execute(
            "INSERT OR REPLACE INTO requests (key, value, created) VALUES (?, ?, ?)",
            (key, json.dumps(value, ensure_ascii=False), time.time()),
        )

    def __len__(self) -> int:
        return self._connect().execute("SELECT COUNT(*) FROM requests").fetchone()[0]

    def clear(self) -> None:
        self._connect().execute("DELETE FROM requests")

    def __repr__(self) -> str:
        return f"RequestCache({str(self.path)!r})"
