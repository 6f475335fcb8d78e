"""The typed node record reads node.json as run directories hold it, and names its two times apart."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from cotune.errors import ConfigError
from cotune.experiment.config import ExperimentConfig
from cotune.experiment.node_record import NodeRecord
from cotune.experiment.runner import Runner
from cotune.optimize.strategy import StepKind

from .fakes import FakeTask, factory, fake_lm

EVAL = {"score": 0.5, "n": 2, "usage": {"calls": 2, "cache_hits": 0}, "seconds": 1.0}
# node.json of a p-w node as runs have written it: optimize_seconds is this step's, cumulative_* the path's
P_W = {
    "seed": 1, "strategy": "p-w", "steps": ["p", "w"], "kind": "w", "parent": "p", "dev": EVAL, "test": EVAL,
    "optimize_seconds": 30.0, "train_seconds": 20.0, "cumulative_optimize_seconds": 42.0,
    "cumulative_train_seconds": 20.0, "adapter": "seed-1/p-w/adapter", "program": "seed-1/p-w/program.json",
    "handoff": None, "info": {"n_passed_": 3},
}  # fmt: skip


def test_a_node_json_as_runs_write_it_reads_with_its_times_named_apart_and_writes_back_unchanged():
    record = NodeRecord.from_json(P_W)
    assert record.steps == (StepKind.PROMPT, StepKind.WEIGHTS) and record.kind is StepKind.WEIGHTS
    assert (record.step_seconds, record.cumulative_seconds) == (30.0, 42.0)
    assert (record.step_train_seconds, record.cumulative_train_seconds) == (20.0, 20.0)
    assert json.dumps(record.to_json()) == json.dumps(P_W)  # same keys, same order, same values


def test_zero_shot_keeps_its_empty_kind_and_unknown_keys_survive():
    zero = {**P_W, "strategy": "zero-shot", "steps": [], "kind": "", "parent": None, "later_field": [1]}
    assert NodeRecord.from_json(zero).to_json() == zero


def test_an_older_record_without_steps_or_handoff_still_reads():
    old = {k: v for k, v in P_W.items() if k not in ("steps", "handoff")}
    record = NodeRecord.from_json(old)
    assert record.steps == ("p", "w") and record.handoff is None and record.to_json()["steps"] == ["p", "w"]


@pytest.mark.parametrize(
    ("broken", "message"),
    [({"test": None}, "lacks test"), ({"cumulative_optimize_seconds": "soon"}, "malformed"), ({"steps": ["x"]}, "'x'")],
)
def test_a_broken_record_is_a_config_error_naming_the_problem(broken, message):
    data = {k: v for k, v in (P_W | broken).items() if v is not None}  # None: the key is missing
    with pytest.raises(ConfigError, match=message):
        NodeRecord.from_json(data)


def test_a_run_writes_node_json_in_the_same_format_and_resumes_from_it(tmp_path):
    cfg = ExperimentConfig(task="fake", strategies=["p-w-p"], out_dir=str(tmp_path), name="run", threads=2)
    log = Counter()
    run = Runner(cfg, lm=fake_lm(), task=FakeTask(), optimizer_factory=factory(log)).start()
    for strategy in ("zero-shot", "p", "p-w", "p-w-p"):
        data = json.loads((run.node_dir(0, strategy) / "node.json").read_text())
        assert list(data) == list(P_W), strategy
        assert data["kind"] == ("" if strategy == "zero-shot" else strategy[-1])
    nodes = {n["strategy"]: NodeRecord.from_json(n) for n in run.results()["nodes"]}
    path = sum(nodes[s].step_seconds for s in ("zero-shot", "p", "p-w", "p-w-p"))
    assert nodes["p-w-p"].cumulative_seconds == pytest.approx(path)
    assert run.results()["table"][0]["optimize_seconds"] == pytest.approx(path)  # the table: the whole path

    Runner.resume(run.path, lm=fake_lm(), task=FakeTask(), optimizer_factory=factory(log))
    assert log == Counter({"p": 2, "w": 1})  # nothing redone
