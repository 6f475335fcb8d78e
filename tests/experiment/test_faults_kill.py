"""kill -9 (benchmarks/fault_kill.py): a run killed in any phase resumes to the uninterrupted run's table,
losing and redoing no finished node; the harness records where each kill landed and counts a trial as
survived only when its resume completes. The runs here are `fake_run.py` (FakeLM); benchmarks/faults.py
does the same with the real model."""

from __future__ import annotations

import importlib
import os
import random
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
FAKE_RUN = Path(__file__).with_name("fake_run.py")


@pytest.fixture
def fault_kill(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return importlib.import_module("fault_kill")


def fake_launch(run: Path, resume: bool) -> list[str]:
    return [sys.executable, str(FAKE_RUN), str(run)]


def ev(t, name, **fields):
    return {"time": t, "event": name, **fields}


def test_the_timeline_names_each_phase_a_run_went_through(fault_kill):
    events = [
        ev(10, "run.start", nodes=3),
        ev(10.1, "progress.start", description="experiment"),
        ev(11, "step.start", kind=""),
        ev(11, "progress.start", description="seed 0 zero-shot dev"),
        ev(12, "node.done", seed=0, strategy="zero-shot"),
        ev(12, "step.start", kind="p"),
        ev(12.5, "progress.start", description="bootstrap"),
        ev(13, "progress.start", description="score p"),
        ev(14, "node.done", seed=0, strategy="p"),
        ev(14, "step.start", kind="w"),
        ev(14.1, "progress.start", description="collect traces (rollout 1/2)"),
        ev(15, "traces.collected", n=6),
        ev(15.5, "progress.start", description="finetune"),
        ev(17, "finetune.done"),
        ev(17.2, "progress.start", description="seed 0 p-w test"),
        ev(18, "node.done", seed=0, strategy="p-w"),
        ev(18, "step.done"),
        ev(18.1, "run.done"),
    ]
    segments = fault_kill.timeline(events, started=5, ended=20)
    assert [s["phase"] for s in segments] == [
        "model load",
        "evaluation",
        "prompt search",
        "evaluation",
        "rollouts",
        "training",
        "evaluation",
        "report",
    ]
    assert segments[0] == {"phase": "model load", "start": 0.0, "end": 6.0}  # from the launch, before any event
    # once the process's first output is seen, what came before it is the interpreter's start-up
    with_output = fault_kill.timeline(events, started=5, ended=20, spoke=1.5)
    assert [s["phase"] for s in with_output[:3]] == ["start-up", "model load", "evaluation"]
    assert with_output[1] == {"phase": "model load", "start": 1.5, "end": 6.0}
    assert segments[-1] == {"phase": "report", "start": 13.0, "end": 15.0}  # after the last node, to the exit
    # a resumed run restores its finished nodes, then goes on where it was killed
    resumed = [ev(30, "run.start", nodes=2), ev(30.5, "node.skipped"), ev(31, "step.start", kind="w")]
    assert [s["phase"] for s in fault_kill.timeline(resumed, 29, 32)] == ["model load", "rollouts"]


def test_targets_pick_a_segment_of_each_phase_and_skip_phases_never_seen(fault_kill):
    segments = [
        {"phase": "model load", "start": 0, "end": 2},
        {"phase": "evaluation", "start": 2, "end": 3},
        {"phase": "report", "start": 3, "end": 3.5},
    ]
    picked = fault_kill.targets(segments, ["report", "training", "model load"], random.Random(0))
    assert [(t["phase"], t["occurrence"], t["length_s"]) for t in picked] == [("report", 0, 0.5), ("model load", 0, 2)]
    assert all(0.1 <= t["at"] <= 0.9 for t in picked)


def test_a_kill_moment_follows_the_trials_pace(fault_kill):
    # the reference entered training 100 s in, and trained 40 s; the kill aims at half of it
    target = {"phase": "training", "occurrence": 0, "start_s": 100.0, "length_s": 40.0, "at": 0.5}
    assert fault_kill.kill_moment(target, 100.0) == 120.0  # the same pace: 20 s into training
    assert fault_kill.kill_moment(target, 25.0) == 30.0  # four times faster: 5 s in, not 20 (after training)
    assert fault_kill.kill_moment(target | {"start_s": 0.0}, 3.0) == 23.0  # a phase at launch: unscaled


def test_kills_in_every_phase_lose_and_redo_nothing(fault_kill, tmp_path):
    phases = ("model load", "rollouts", "report")
    result = fault_kill.kill_nine(fake_launch, tmp_path, dict(os.environ), 3, seed=1, timeout_s=60, phases=phases)
    assert result["kills"] == 3, result["trials"]
    assert result["survived"] == 3 and result["tables_equal"], result["trials"]
    assert result["nodes_lost"] == 0 and result["nodes_redone"] == 0
    # On a loaded machine a run may end before its kill moment: that try is kept as missed (no phase, exit code
    # recorded) and the target tried again, at most three tries in all.
    landed = [t for t in result["trials"] if t["killed"]]
    missed = [t for t in result["trials"] if not t["killed"]]
    assert len(landed) == 3 and result["missed"] == len(missed) <= 6
    assert all("exit_code" in t and "phase" not in t for t in missed)
    for trial in landed:
        assert trial["phase"] in fault_kill.PHASES and trial["resume_completed"]
        assert trial["last_event"] is None or "event" in trial["last_event"]
    # each try its own run, every one completed (a missed one by itself, a killed one by its resume)
    assert len(list(tmp_path.glob("trial-*/run/results.json"))) == len(result["trials"])
    # the kills are aimed: most land in the phase they were aimed at (a loaded machine may shift one)
    on_target = sum(t["phase"] == t["target"] for t in landed)
    assert on_target >= 2, [(t["target"], t["phase"]) for t in landed]


def test_a_trial_survives_only_when_its_resume_completes(fault_kill, tmp_path):
    env = {**os.environ, "FAKE_RUN_FAIL_RESUME": "1"}
    ref = fault_kill.reference(fake_launch, tmp_path / "ref" / "run", dict(os.environ), 60)
    (target,) = fault_kill.targets(ref["timeline"], ["prompt search"], random.Random(0))
    trial = fault_kill.kill_trial(fake_launch, tmp_path / "t" / "run", env, target, ref, 60)
    assert trial["killed"] and trial["phase"] == "prompt search"
    assert trial["resume_exit_code"] == 3 and not trial["resume_completed"] and not trial["survived"]


def test_a_resume_with_another_table_does_not_survive(fault_kill, tmp_path):
    ref = fault_kill.reference(fake_launch, tmp_path / "ref" / "run", dict(os.environ), 60)
    other = {name: [score[0], 1 - score[1]] for name, score in ref["table"].items()}
    judged = fault_kill.judge(tmp_path / "ref" / "run", 0, other)
    assert judged["resume_completed"] and not judged["table_equal"] and not judged["survived"]
    assert fault_kill.judge(tmp_path / "ref" / "run", 0, ref["table"])["survived"]
