"""Outages (benchmarks/fault_outage.py): a server that, mid-run, refuses connections, answers 500 or 503, or
never answers fails the step it hits (an infrastructure failure, never a score), and a resume once the
server is back gives the score a healthy server gives. cotune's own server over a scripted Iris answerer."""

from __future__ import annotations

import importlib
import logging
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture
def fault_outage(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return importlib.import_module("fault_outage")


@pytest.mark.parametrize("kind", ["refused", "500", "503", "timeout"])
def test_an_outage_fails_the_step_and_the_resume_scores_it_truly(fault_outage, tmp_path, kind):
    result = fault_outage.outage(tmp_path, kind, seconds=3.0)
    assert logging.getLogger("cotune.server").level == logging.NOTSET  # as it was: later tests read the log
    assert result["outage_started"]
    (failure,) = result["failures_during_outage"]
    assert failure["strategy"] == "p" and failure["kind"] == "infrastructure", failure
    assert {"refused": "Connection refused", "500": "HTTP 500", "503": "HTTP 503", "timeout": "read timeout"}[kind] in (
        failure["error"]
    )
    assert result["scores_kept_during_outage"] == {"zero-shot": result["true_scores"]["zero-shot"]}
    assert result["step_failed_not_scored"]
    assert result["scores_after_resume"] == result["true_scores"] and result["resumed_to_true_score"]


def test_an_unknown_outage_kind_is_named(fault_outage):
    with pytest.raises(ValueError, match="'404'.*refused, 500, 503, timeout"):
        fault_outage.FaultyProxy("http://127.0.0.1:9", "404", 1.0)
