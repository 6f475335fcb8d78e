"""A full disk is not a corrupt cache: the error says the disk is full, names the file, and does not tell
the user to clear a cache that is fine."""

from __future__ import annotations

import pytest

from cotune.errors import CacheError
from cotune.lm.cache import RequestCache


def test_a_full_disk_is_named_as_such_not_as_corruption(tmp_path):
    path = tmp_path / "requests.sqlite"
    cache = RequestCache(path)
    cache.put("kept", {"text": "an answer"})
    # SQLite answers SQLITE_FULL ("database or disk is full") when it cannot grow the file: what it says
    # on a full disk, here from a cap on the file's pages
    pages = cache._connect().execute("PRAGMA page_count").fetchone()[0]
    cache._connect().execute(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(CacheError) as info:
        for i in range(100):
            cache.put(f"k{i}", {"text": "x" * 10_000})
    message = str(info.value)
    assert f"request cache {path}" in message and "no space left" in message
    assert "--no-cache" in message
    assert "cannot be read" not in message and "cache clear" not in message
    assert cache.get("kept") == {"text": "an answer"}  # it was fine, and still is
