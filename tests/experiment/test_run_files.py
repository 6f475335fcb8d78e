"""Findings 7, 8 and 9 (issue 12): paths relative to the run directory, one process per run directory,
every file a run depends on written atomically."""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from pathlib import Path

import pytest

from cotune.errors import RunInUseError
from cotune.experiment.config import ExperimentConfig
from cotune.experiment.rundir import RunDir
from cotune.experiment.runner import Runner
from cotune.lm import FakeLM

from .fakes import FakeTask, factory


def adapter_lm():
    """Right on even questions after a prompt step, and on all of them only when the adapter folder exists
    where the program says it is (a path that no longer resolves makes a wrong score, not a crash)."""

    def respond(messages, adapter=None):
        q = messages[-1]["content"].split(": ", 1)[1]
        tuned = adapter is not None and (Path(adapter) / "adapter_model.safetensors").is_file()
        prompted = "[p]" in messages[0]["content"]
        return f"Answer: {q}" if tuned or (prompted and int(q) % 2 == 0) else "Answer: ?"

    return FakeLM(respond)


def config(out_dir, **kw):
    kw.setdefault("strategies", ["w", "w-p"])
    return ExperimentConfig(task="fake", out_dir=str(out_dir), name="run", threads=2, **kw)


def interrupt_at_start_of(name):
    def sink(e):
        if e.name == "node.start" and e.fields["strategy"] == name:
            raise KeyboardInterrupt

    return sink


def test_a_moved_run_resumes_from_another_directory(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    reference = Runner(
        config(tmp_path / "ref"), lm=adapter_lm(), task=FakeTask(), optimizer_factory=factory(Counter())
    ).start()
    truth = {n["strategy"]: n["test"]["score"] for n in reference.nodes()}
    assert truth["w-p"] == 1.0

    first = Runner(
        config("runs"),
        lm=adapter_lm(),
        task=FakeTask(),
        optimizer_factory=factory(Counter()),
        events=interrupt_at_start_of("w-p"),
    )
    with pytest.raises(KeyboardInterrupt):
        first.start()
    saved = json.loads((tmp_path / "a/runs/run/seed-0/w/program.json").read_text())
    assert saved["lm"]["adapter"] == "adapter"  # relative to the program file
    assert json.loads((tmp_path / "a/runs/run/seed-0/w/node.json").read_text())["adapter"] == "seed-0/w/adapter"

    shutil.move(tmp_path / "a/runs/run", tmp_path / "moved")
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "b")
    _, run = Runner.resume(tmp_path / "moved", lm=adapter_lm(), task=FakeTask(), optimizer_factory=factory(Counter()))
    assert {n["strategy"]: n["test"]["score"] for n in run.nodes()} == truth
    best = json.loads((tmp_path / "moved/best-program.json").read_text())
    assert (tmp_path / "moved" / best["lm"]["adapter"] / "adapter_model.safetensors").is_file()


def test_a_second_process_gets_a_clear_error_naming_the_holder(tmp_path):
    run = Runner(config(tmp_path), lm=adapter_lm(), task=FakeTask(), optimizer_factory=factory(Counter())).start()
    with RunDir(run.path).lock():  # another holder (a RunDir of its own, as another process would have)
        with pytest.raises(RunInUseError, match=f"in use by process {os.getpid()}"):
            Runner.resume(run.path, lm=adapter_lm(), task=FakeTask(), optimizer_factory=factory(Counter()))
    Runner.resume(run.path, lm=adapter_lm(), task=FakeTask(), optimizer_factory=factory(Counter()))  # released


def test_create_claims_the_name_atomically(tmp_path, monkeypatch):
    # the check-then-mkdir race: another process creates the folder between the check and the mkdir
    RunDir.create(tmp_path, "run", {})
    monkeypatch.setattr(Path, "exists", lambda self: False)
    second = RunDir.create(tmp_path, "run", {})
    assert second.path.name == "run-2"


_write_text = Path.write_text
WATCHED = ("best-program.json", "eval-test.json", "report.md", "report.html")


def _torn_write_text(self, data, *args, **kwargs):
    """A write cut short (disk full, kill -9) of the files this test watches."""
    if self.name not in WATCHED:
        return _write_text(self, data, *args, **kwargs)
    with open(self, "w") as f:
        f.write(data[: len(data) // 2])
    raise OSError("disk full")


def test_run_files_are_written_atomically(tmp_path, monkeypatch):
    from cotune.report.build import write_report

    run = Runner(config(tmp_path), lm=adapter_lm(), task=FakeTask(), optimizer_factory=factory(Counter())).start()
    write_report([run.path])
    files = ["best-program.json", "seed-0/w/eval-test.json", "report.md", "report.html"]
    before = {f: (run.path / f).read_text() for f in files}
    for f in files:
        (run.path / f).write_text(before[f] + " ")  # so a rewrite is a change

    monkeypatch.setattr(Path, "write_text", _torn_write_text)
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        Runner._save_best(run, run.results())
    with pytest.raises(OSError):
        write_report([run.path])
    from cotune.evaluate.evaluate import EvaluationResult
    from cotune.lm.usage import Usage

    with pytest.raises(OSError):
        EvaluationResult(0.0, [], Usage(), {}, 0.0).save(run.path / "seed-0/w/eval-test.json")
    for f in files:
        assert (run.path / f).read_text() == before[f] + " ", f  # the old file, whole
    assert not [p for p in run.path.rglob("*.tmp")]
