"""A run directory made before `LoRAConfig` and `TrainingConfig` were split resumes: its saved config (training
keys under ``lora``) reads as the same run as today's YAML, and the runner trains the adapter as it said.

The fixture is a Table 1 HotPotQA run's config.json as that code saved it (its data and run folders replaced by
stand-ins; the tests set their own)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import warnings
from pathlib import Path

import pytest

from cotune.experiment.config import ExperimentConfig
from cotune.experiment.rundir import RunDir
from cotune.experiment.runner import Runner, default_optimizer_factory
from cotune.lm import FakeLM
from cotune.optimize.finetune import BootstrapFinetune
from cotune.training import LoRAConfig, TrainingConfig, TrainResult, data_hash

from .fakes import FakeTask

ROOT = Path(__file__).resolve().parents[2]
OLD = json.loads((Path(__file__).parent / "fixtures" / "run-config-before-lora-split.json").read_text())
MOVED = ("epochs", "batch_size", "learning_rate")


def old_config(tmp_path: Path) -> dict:
    return OLD | {"data_dir": str(tmp_path / "hotpotqa"), "out_dir": str(tmp_path)}


def test_the_old_saved_config_is_the_run_the_new_yaml_describes(tmp_path):
    assert OLD["weights"]["lora"] == {"r": 32, "alpha": 64, "dropout": 0.0, "epochs": 3, "batch_size": 4,
                                      "learning_rate": 0.0002}  # fmt: skip
    with pytest.warns(FutureWarning) as caught:
        old = ExperimentConfig.from_dict(old_config(tmp_path))
    assert [str(w.message) for w in caught] == [f"lora.{k} is a training setting: write training.{k}" for k in MOVED]
    new_yaml = ExperimentConfig.from_yaml(ROOT / "benchmarks" / "configs" / "hotpotqa.yaml").to_dict()
    new = ExperimentConfig.from_dict(new_yaml | {"data_dir": str(tmp_path / "hotpotqa"), "out_dir": str(tmp_path)})

    assert old.weights.params["lora"] == new.weights.params["lora"] == {"r": 32, "alpha": 64, "dropout": 0.0}
    assert old.weights.params["training"] == new.weights.params["training"]
    assert new.weights.params["training"] == {"epochs": 3, "batch_size": 4, "learning_rate": 2e-4}
    # The old config also spells out the optimizer's defaults (it was saved when they were the step's fields)
    spelled = {k: v for k, v in old.weights.params.items() if k not in new.weights.params}
    assert spelled == {"metric_threshold": None, "rollout_min_p": 0.0, "init": "base", "fill_with_labels": False}
    defaults = BootstrapFinetune(lambda example, prediction: 0.0).get_params()
    assert all(defaults[k] == v for k, v in spelled.items())
    assert {k: v for k, v in old.to_dict().items() if k != "weights"} == {
        k: v for k, v in new.to_dict().items() if k != "weights"
    }
    # ...so both build the same optimizers, and a saved config loads again without another warning
    metric = FakeTask().metric
    for kind in ("p", "w"):
        built = [repr(default_optimizer_factory(c, metric)(kind, 0, tmp_path / "node")) for c in (old, new)]
        assert built[0] == built[1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ExperimentConfig.from_dict(old.to_dict()) == old


def test_an_old_run_directory_resumes_and_trains_with_its_saved_settings(tmp_path, monkeypatch):
    """No "config changed" check stands in the way: a resume reads the run's own config.json (`Runner.resume`, and
    benchmarks/table1.py the same way), so an old one only has to load and mean what it meant."""
    trained = []

    def fake_train_lora(examples, *, base_model_path, output_dir, lora, training, base_model, init_adapter, events):
        trained.append((lora, training))
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        return TrainResult(str(output_dir), [1.0], 1.0, 0.1, 1, len(examples), 10, 0, "cpu", data_hash(examples))

    monkeypatch.setattr("cotune.training.trainer.train_lora", fake_train_lora)
    folder = tmp_path / "table1-hotpotqa"
    folder.mkdir()
    saved = old_config(tmp_path) | {"strategies": ["zero-shot", "w"], "threads": 2}
    (folder / RunDir.CONFIG).write_text(json.dumps(saved))
    lm = FakeLM(lambda messages, adapter=None: "Answer: " + messages[-1]["content"].split(": ", 1)[1])  # all right
    lm.model_path = "/models/fake"  # local weights, as a local model has; the fake trainer never reads them
    with pytest.warns(FutureWarning) as caught:
        _, run = Runner.resume(folder, lm=lm, task=FakeTask())
    # once each, when the config is read (not again for every node that builds the optimizer)
    assert [str(w.message) for w in caught] == [f"lora.{k} is a training setting: write training.{k}" for k in MOVED]

    assert {n["strategy"] for n in run.results()["nodes"]} == {"zero-shot", "w"}
    assert trained == [(LoRAConfig(r=32, alpha=64, dropout=0.0), TrainingConfig(epochs=3, batch_size=4,
                                                                                 learning_rate=2e-4, seed=0))]  # fmt: skip
    assert json.loads((folder / RunDir.CONFIG).read_text()) == saved  # the run's record is left as it was


def test_table1_resumes_an_old_run_directory_given_the_new_yaml(tmp_path, monkeypatch):
    """``benchmarks/table1.py --config benchmarks/configs/hotpotqa.yaml --run-dir <old run>``: the run's saved
    config is what resumes (the YAML starts new runs only), and it loads."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # table1.py imports its sibling bench.py
    spec = importlib.util.spec_from_file_location("table1_under_test", ROOT / "benchmarks" / "table1.py")
    table1 = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(table1)
    folder = tmp_path / "table1-hotpotqa"
    folder.mkdir()
    (folder / RunDir.CONFIG).write_text(json.dumps(old_config(tmp_path)))
    new_yaml = ExperimentConfig.from_yaml(ROOT / "benchmarks" / "configs" / "hotpotqa.yaml").to_dict()
    args = argparse.Namespace(run_dir=str(folder), keep_cache=True)
    with pytest.warns(FutureWarning):
        runner, run, resumed = table1.open_run(args, new_yaml | {"data_dir": str(tmp_path / "hotpotqa")})
    assert resumed and run.path == folder
    assert runner.config.weights.params["lora"] == {"r": 32, "alpha": 64, "dropout": 0.0}
    assert runner.config.weights.params["training"] == {"epochs": 3, "batch_size": 4, "learning_rate": 2e-4}
