"""Finding 12 (issue 12): damaged or odd files get one clear line naming the file, never a traceback."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading

import pytest

from cotune.errors import CacheError, DataError
from cotune.lm.cache import RequestCache


def cotune(*args, env=None):
    import os

    return subprocess.run(
        [sys.executable, "-c", "from cotune.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def one_clear_line(result, *parts):
    assert result.returncode != 0, result.stdout
    text = " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr, result.stderr
    for part in parts:
        assert part in text, text


def test_a_corrupt_cache_is_named_and_can_be_cleared(tmp_path):
    bad = tmp_path / "requests.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(CacheError, match=f"request cache {bad} cannot be read"):
        RequestCache(bad)
    env = {"COTUNE_REQUEST_CACHE": str(bad)}
    one_clear_line(cotune("cache", "verify", env=env), str(bad), "cotune cache clear")
    one_clear_line(cotune("eval", "--limit", "1", env=env), str(bad), "cannot be read")
    cleared = cotune("cache", "clear", env=env)
    assert cleared.returncode == 0 and not bad.exists()
    shown = cotune("cache", "show", env=env)
    assert shown.returncode == 0 and "none yet" in shown.stdout


def test_a_locked_cache_says_so(tmp_path, monkeypatch):
    import cotune.lm.cache as cache_module

    monkeypatch.setattr(cache_module, "LOCK_TIMEOUT_S", 0.1)
    cache = RequestCache(tmp_path / "c.sqlite")
    holder = sqlite3.connect(tmp_path / "c.sqlite", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        errors = []
        # a fresh thread gets a fresh connection, which waits for the lock
        t = threading.Thread(target=lambda: errors.append(_try(lambda: cache.put("k", {"text": "x"}))))
        t.start()
        t.join()
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert isinstance(errors[0], CacheError) and "locked by another process" in str(errors[0])


def _try(fn):
    try:
        fn()
    except Exception as e:  # noqa: BLE001
        return e
    return None


def test_non_utf8_yaml_config(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_bytes("task: iris\nname: caf\u00e9\n".encode("latin-1"))
    one_clear_line(cotune("run", "--config", str(path)), str(path), "not UTF-8")


def test_non_utf8_jsonl_names_the_line(tmp_path):
    from cotune.data.loaders import load_jsonl

    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"q": "a"}\n{"q": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"d.jsonl:2: not UTF-8"):
        load_jsonl(path)


def test_a_csv_with_a_byte_order_mark(tmp_path):
    from cotune.data.loaders import load_csv

    path = tmp_path / "d.csv"
    path.write_bytes("\ufeffquestion,answer\n2+2?,4\n".encode())
    (ex,) = load_csv(path, inputs=["question"], required=["question", "answer"])
    assert ex["question"] == "2+2?"


def test_a_corrupt_run_config_on_resume(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text('{"task": "iris", "seeds": [0')
    one_clear_line(cotune("run", "--resume", str(run)), f"{run / 'config.json'} is corrupt")
