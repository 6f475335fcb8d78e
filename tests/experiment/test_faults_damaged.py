"""A damaged node.json (benchmarks/faults.py's damaged-file check, on FakeLM): the resumed run sets it aside
(node.json.corrupt), says so in its events, redoes that step alone and ends with the same table."""

from __future__ import annotations

import shutil
from collections import Counter

from cotune.experiment.config import ExperimentConfig
from cotune.experiment.rundir import RunDir
from cotune.experiment.runner import Runner

from .fakes import FakeTask, factory, fake_lm


def scores(run: RunDir) -> dict[str, tuple[float, float]]:
    return {n["strategy"]: (n["dev"]["score"], n["test"]["score"]) for n in run.nodes()}


def test_a_corrupt_node_is_set_aside_and_its_step_redone(tmp_path):
    cfg = ExperimentConfig(task="fake", strategies=["p-w"], out_dir=str(tmp_path), name="run", threads=2)
    run = Runner(cfg, lm=fake_lm(), task=FakeTask(), optimizer_factory=factory(Counter())).start()
    table = scores(run)
    damaged = tmp_path / "damaged"
    shutil.copytree(run.path, damaged)
    node = damaged / "seed-0" / "p" / "node.json"
    node.write_text('{"seed": 0, "strat')

    log = Counter()
    _, resumed = Runner.resume(damaged, lm=fake_lm(), task=FakeTask(), optimizer_factory=factory(log))
    assert log == Counter({"p": 1})  # the damaged step only: p-w's own node.json was intact
    assert (damaged / "seed-0" / "p" / "node.json.corrupt").read_text() == '{"seed": 0, "strat'
    (corrupt,) = [e for e in resumed.events() if e["event"] == "node.corrupt"]
    assert corrupt["strategy"] == "p" and str(node) in corrupt["error"]
    assert scores(resumed) == table
