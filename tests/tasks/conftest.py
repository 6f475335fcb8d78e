"""Fixtures for task tests: the shared data folders (skipped when absent) and tiny data folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def _shared_folder(name: str) -> Path:
    path = (DATA / name).resolve()
    if not path.is_dir():
        pytest.skip(f"shared data set {name!r} not found at {path}")
    return path


def _write_jsonl(path: Path, rows: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.fixture
def shared_folder():
    """``shared_folder("gsm8k")``: the shared data set's folder; skips the test when it is absent."""
    return _shared_folder


@pytest.fixture
def write_jsonl():
    """``write_jsonl(path, rows)``: rows are dicts (dumped) or raw strings (written as is, one a line)."""
    return _write_jsonl


@pytest.fixture(autouse=True)
def _no_data_dir_env(monkeypatch):
    """A developer's $COTUNE_DATA_DIR must not change what the tests see."""
    monkeypatch.delenv("COTUNE_DATA_DIR", raising=False)
