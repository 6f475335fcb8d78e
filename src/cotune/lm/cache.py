"""A persistent request cache in SQLite, shared by threads (and processes) that use the same file.

The key covers everything that determines a completion: model, adapter, messages, sampling parameters
and the rollout id. Greedy requests with the same key are answered from disk; a new rollout id asks the
model again (for sampling several rollouts of the same prompt).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from cotune.errors import CacheError
from cotune.lm.completion import Completion, Messages

LOCK_TIMEOUT_S = 30.0


def default_cache_path() -> Path:
    """The request cache file: ``$COTUNE_REQUEST_CACHE``, else ``<cache dir>/requests.sqlite``."""
    return Path(os.environ.get("COTUNE_REQUEST_CACHE") or default_cache_dir() / "requests.sqlite")


def default_cache_dir() -> Path:
    """``$COTUNE_CACHE_DIR``, else ``$XDG_CACHE_HOME/cotune``, else ``~/.cache/cotune``."""
    if os.environ.get("COTUNE_CACHE_DIR"):
        return Path(os.environ["COTUNE_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cotune"


def request_key(**parts: Any) -> str:
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def open_cache(cache: RequestCache | bool | None) -> RequestCache | None:
    """What a ``cache=`` argument means: a `RequestCache` as given, True for the default file, False or
    None for no cache."""
    # Not `cache or None`: an empty cache has len() == 0 and would be dropped.
    return RequestCache() if cache is True else (None if cache is False else cache)


def through_cache(
    cache: RequestCache,
    batch: Sequence[Messages],
    key: Callable[[Messages], str | None],
    send: Callable[[list[Messages]], list[Completion]],
) -> list[Completion]:
    """Answer ``batch`` in order: from ``cache`` where ``key(messages)`` is stored (``cached=True``, 0 s),
    the rest with one call of ``send``, whose completions are stored under their keys. A None key (the
    LM cannot tell now what would answer, e.g. a server that cannot be asked which model it runs) is
    neither looked up nor stored."""
    keys = [key(m) for m in batch]
    results: list[Completion | None] = [None] * len(batch)
    todo = []
    for i, k in enumerate(keys):
        hit = cache.get(k) if k is not None else None
        if hit is not None:
            results[i] = Completion(**{**hit, "seconds": 0.0, "cached": True})
        else:
            todo.append(i)
    if todo:
        for i, c in zip(todo, send([batch[i] for i in todo]), strict=True):
            results[i] = c
            if keys[i] is not None:
                cache.put(keys[i], {k: v for k, v in dataclasses.asdict(c).items() if k != "cached"})
    return results  # type: ignore[return-value]


def _disk_full(error: sqlite3.Error) -> bool:
    """SQLite's SQLITE_FULL: the disk (or the file's page cap) is full; nothing is wrong with the file."""
    return getattr(error, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "disk is full" in str(error)


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
            path = default_cache_path()
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._errors():
            self._connect().execute(
                "CREATE TABLE IF NOT EXISTS requests (key TEXT PRIMARY KEY, value TEXT, created REAL)"
            )

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """SQLite's errors as `CacheError`s that say which file and what to do."""
        try:
            yield
        except sqlite3.OperationalError as e:
            if _disk_full(e):
                raise CacheError(
                    f"request cache {self.path}: no space left on device ({e}); the cache is fine: free some "
                    "space, point $COTUNE_REQUEST_CACHE at another disk, or run with --no-cache"
                ) from None
            if "locked" in str(e) or "busy" in str(e):
                raise CacheError(
                    f"request cache {self.path} stayed locked by another process for {LOCK_TIMEOUT_S:g} s; "
                    "wait for it, run with --no-cache, or point $COTUNE_REQUEST_CACHE at another file"
                ) from None
            raise self._corrupt(e) from None
        except sqlite3.DatabaseError as e:
            raise self._corrupt(e) from None

    def _corrupt(self, error: Exception) -> CacheError:
        return CacheError(
            f"request cache {self.path} cannot be read ({type(error).__name__}: {error}); it is a cache, so "
            "`cotune cache clear` (or deleting the file) loses nothing but speed; --no-cache runs without it"
        )

    def _connect(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=LOCK_TIMEOUT_S, isolation_level=None)
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
            except sqlite3.Error:
                db.close()
                raise
            self._local.db = db
        return db

    def get(self, key: str) -> dict[str, Any] | None:
        with self._errors():
            row = self._connect().execute("SELECT value FROM requests WHERE key = ?", (key,)).fetchone()
        if not row:
            return None
        try:
            value = json.loads(row[0])
        except ValueError:
            return None  # a damaged entry is a miss: the request runs again and overwrites it
        return value if isinstance(value, dict) else None

    def put(self, key: str, value: dict[str, Any]) -> None:
        with self._errors():
            self._connect().execute(
                "INSERT OR REPLACE INTO requests (key, value, created) VALUES (?, ?, ?)",
                (key, json.dumps(value, ensure_ascii=False), time.time()),
            )

    def __len__(self) -> int:
        with self._errors():
            return self._connect().execute("SELECT COUNT(*) FROM requests").fetchone()[0]

    def clear(self) -> None:
        with self._errors():
            self._connect().execute("DELETE FROM requests")

    def verify(self) -> list[str]:
        """SQLite's integrity check: [] when the file is sound, else its complaints."""
        with self._errors():
            rows = self._connect().execute("PRAGMA integrity_check").fetchall()
        problems = [r[0] for r in rows if r[0] != "ok"]
        return problems

    def close(self) -> None:
        """Close this thread's connection."""
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    @staticmethod
    def remove(path: str | Path) -> list[Path]:
        """Delete a cache file and its WAL/SHM companions, even when it is too damaged to open; returns what
        was deleted."""
        path = Path(path)
        removed = []
        for f in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            if f.exists():
                f.unlink()
                removed.append(f)
        return removed

    def __repr__(self) -> str:
        return f"RequestCache({str(self.path)!r})"
