from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `pytest -n N` (make test): N workers share the cores, so each computes on one thread; set before torch
    # is imported (its OpenMP pool reads this once). A test that sets threads itself still does.
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
# Seconds each test file took (setup, call and teardown of its tests), written by `pytest --store-durations`.
DURATIONS = Path(__file__).with_name("durations.json")


def pytest_addoption(parser):
    parser.addoption("--store-durations", action="store_true",
                     help=f"write each test file's seconds to {DURATIONS.name} (orders the files of later runs)")  # fmt: skip


def pytest_collection_modifyitems(config, items):
    """The longest files first (stable: a file's tests keep their order, unknown files go last). `make test`
    hands whole files to its two workers as they free up (`--dist loadfile`), so this makes them end within a
    short file of each other instead of one worker finishing a long file alone."""
    seconds = json.loads(DURATIONS.read_text()) if DURATIONS.is_file() else {}
    items.sort(key=lambda item: -seconds.get(item.nodeid.split("::")[0], 0.0))


_seconds: defaultdict[str, float] = defaultdict(float)


def pytest_runtest_logreport(report):
    _seconds[report.nodeid.split("::")[0]] += report.duration


def pytest_sessionfinish(session):
    if session.config.getoption("store_durations") and not os.environ.get("PYTEST_XDIST_WORKER"):
        ranked = sorted(_seconds.items(), key=lambda kv: -kv[1])
        DURATIONS.write_text(json.dumps({path: round(s, 1) for path, s in ranked}, indent=0) + "\n")


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data sets not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Unit tests never touch the user's request cache; model conversions stay shared (they are slow)."""
    monkeypatch.setenv("COTUNE_REQUEST_CACHE", str(tmp_path_factory.mktemp("cache") / "requests.sqlite"))
