"""The ladder benchmarks' modules, imported as `python benchmarks/<script>.py` would (their folder on sys.path)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return {name: importlib.import_module(name) for name in ("ladders", "ladder_estimate", "gpo_ladder", "medprompt")}
