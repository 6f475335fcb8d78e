from __future__ import annotations

import os
from pathlib import Path

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `pytest -n N` (make test): N workers share the cores, so each computes on one thread; set before torch
    # is imported (its OpenMP pool reads this once). A test that sets threads itself still does.
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data sets not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Unit tests never touch the user's request cache; model conversions stay shared (they are slow)."""
    monkeypatch.setenv("COTUNE_REQUEST_CACHE", str(tmp_path_factory.mktemp("cache") / "requests.sqlite"))
