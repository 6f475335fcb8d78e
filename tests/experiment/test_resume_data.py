"""A run resumes from any directory on the data it started with: ``data_dir`` is saved as an absolute
path, and a fingerprint of the task's splits is recorded, so a changed data file stops the resume with a
clear error instead of mixing scores from two datasets."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest

from cotune.data import Dataset, Example
from cotune.errors import ConfigError
from cotune.experiment.config import ExperimentConfig
from cotune.experiment.rundir import RunDir
from cotune.experiment.runner import Runner
from cotune.tasks import load_task

from .fakes import FakeTask, factory, fake_lm


def _gsm8k(folder: Path, n_train: int = 40) -> None:
    folder.mkdir(parents=True)
    for name, rows in (("train", range(n_train)), ("test", range(100, 110))):
        lines = [json.dumps({"question": f"What is {i} + 1?", "answer": f"#### {i + 1}"}) for i in rows]
        (folder / f"{name}.jsonl").write_text("\n".join(lines) + "\n")


def test_data_dir_is_saved_absolute_and_found_from_another_directory(tmp_path, monkeypatch):
    _gsm8k(tmp_path / "project" / "data" / "gsm8k")
    monkeypatch.chdir(tmp_path / "project")
    cfg = ExperimentConfig.from_dict({"task": "gsm8k", "data_dir": "data/gsm8k", "out_dir": "runs",
                                      "train_size": 10, "dev_size": 20, "test_size": 5})  # fmt: skip
    run = RunDir.create(cfg.out_dir, "r", cfg.to_dict())
    assert run.config()["data_dir"] == str(tmp_path / "project" / "data" / "gsm8k")

    monkeypatch.chdir(tmp_path)  # resume from elsewhere
    saved = ExperimentConfig.from_dict(RunDir.open(Path("project/runs/r")).config())
    task = load_task("gsm8k", data_dir=saved.data_dir, seed=saved.split_seed, train=10, dev=20, test=5)
    assert len(task.train) == 10


def test_a_hub_name_or_no_data_dir_is_kept_as_given():
    assert ExperimentConfig(data_dir="hf:openai/gsm8k").data_dir == "hf:openai/gsm8k"
    assert ExperimentConfig().data_dir is None
    assert ExperimentConfig(data_dir="~/data").data_dir == os.path.join(os.path.expanduser("~"), "data")


def config(tmp_path):
    return ExperimentConfig(task="fake", strategies=["zero-shot", "p"], out_dir=str(tmp_path), name="run", threads=2)


def changed_test_split():
    task = FakeTask()
    rows = [Example(question=ex["question"], answer="changed").with_inputs("question") for ex in task.test]
    task.test = Dataset(rows)
    return task


def test_a_changed_data_file_stops_the_resume(tmp_path):
    log = Counter()
    run = Runner(config(tmp_path), lm=fake_lm(), task=FakeTask(), optimizer_factory=factory(log)).start()
    before = log.copy()
    changed = r"data of task 'fake' changed since this run started: test: 6 examples then, 6 now, other contents"
    with pytest.raises(ConfigError, match=changed + r".*start a new run"):
        Runner.resume(run.path, lm=fake_lm(), task=changed_test_split(), optimizer_factory=factory(log))
    assert log == before  # nothing ran on the changed data
    # the same data resumes as before
    Runner.resume(run.path, lm=fake_lm(), task=FakeTask(), optimizer_factory=factory(log))


def test_a_run_from_before_the_fingerprint_records_it_on_resume(tmp_path):
    log = Counter()
    run = Runner(config(tmp_path), lm=fake_lm(), task=FakeTask(), optimizer_factory=factory(log)).start()
    record = run.path / "data.json"
    assert set(json.loads(record.read_text())["splits"]) == {"train", "dev", "test"}
    record.unlink()  # as a run started by an earlier version
    Runner.resume(run.path, lm=fake_lm(), task=FakeTask(), optimizer_factory=factory(log))
    assert record.is_file()
