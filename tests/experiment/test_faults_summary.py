"""benchmarks/faults.py's verdict: every kill, outage and damaged-file check is in its summary, and its exit
code is 0 only when all of them passed."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


GOOD_KILLS = {
    "kills": 1,
    "survived": 1,
    "phases_hit": {"training": 1},
    "phases_missing": [],
    "nodes_lost": 0,
    "nodes_redone": 0,
    "tables_equal": True,
    "reference_table": {},
    "reference_run": "ref",
}


@pytest.fixture
def faults(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    module = importlib.import_module("faults")
    good_outage = {"step_failed_not_scored": True, "resumed_to_true_score": True}
    monkeypatch.setattr(module, "kill_nine", lambda *a, **k: dict(GOOD_KILLS))
    monkeypatch.setattr(module, "outage", lambda work, kind, seconds: dict(good_outage))
    monkeypatch.setattr(module, "damaged", lambda *a: {"corrupt_node_resume": {"passed": True}})
    return module


def verdict(faults, tmp_path) -> tuple[int, dict]:
    code = faults.main(["--quick", "--kills", "1", "--outages", "503,timeout", "--work-dir", str(tmp_path)])
    return code, json.loads((tmp_path / "faults-result.json").read_text())


def test_all_checks_passed(faults, tmp_path):
    code, result = verdict(faults, tmp_path)
    assert code == 0 and result["passed"]
    assert set(result["checks"]) >= {
        "every_kill_survived",
        "no_node_lost",
        "no_node_redone",
        "final_tables_equal_reference",
        "outage_503_step_failed_not_scored",
        "outage_timeout_resumed_to_true_score",
        "damaged_corrupt_node_resume",
    }


@pytest.mark.parametrize(
    "broken",
    [
        ("damaged", lambda *a: {"corrupt_node_resume": {"passed": False}}),
        (
            "outage",
            lambda work, kind, seconds: {"step_failed_not_scored": kind != "timeout", "resumed_to_true_score": True},
        ),
        ("kill_nine", lambda *a, **k: GOOD_KILLS | {"survived": 0}),
    ],
    ids=["damaged file", "outage", "kill"],
)
def test_any_failed_check_fails_the_run(faults, tmp_path, monkeypatch, broken):
    monkeypatch.setattr(faults, *broken)
    code, result = verdict(faults, tmp_path)
    assert code == 1 and not result["passed"]
    assert [name for name, ok in result["checks"].items() if not ok]


def test_an_unknown_outage_kind_is_refused_naming_the_kinds(faults, capsys):
    with pytest.raises(SystemExit):
        faults.main(["--outages", "503,404"])
    assert "unknown kind(s) 404; valid: refused, 500, 503, timeout" in capsys.readouterr().err
