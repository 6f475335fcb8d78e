"""A Θ hyperparameter is declared once, in the optimizer's ``__init__``, and from there reaches the Python API,
a YAML config, the command line (``--set``, ``-P``) and a task's run defaults, checked the same way in each.

The test adds a parameter ``knob`` that cotune has never heard of to a `BootstrapFinetune` subclass registered
as ``finetune``: nothing else is declared anywhere."""

from __future__ import annotations

import inspect
import io
import typing
from pathlib import Path

import pytest
from rich.console import Console

import cotune.cli.commands as commands
import cotune.cli.optimize_cmds as optimize_cmds
import cotune.tasks
from cotune.errors import ConfigError
from cotune.experiment.config import ExperimentConfig
from cotune.experiment.runner import default_optimizer_factory
from cotune.lm import FakeLM
from cotune.optimize import registry
from cotune.optimize.finetune import BootstrapFinetune
from cotune.params import Positive


class Built(Exception):
    """Raised by `WithKnob.compile`: the optimizer was built and checked; what it holds is on the exception."""

    def __init__(self, optimizer):
        super().__init__("built")
        self.optimizer = optimizer


class WithKnob(BootstrapFinetune):
    def __init__(self, metric, *, knob: Positive = 1, **kwargs):
        super().__init__(metric, **kwargs)
        self.knob = knob

    def compile(self, program, *, trainset, valset=None, events=None):
        raise Built(self)


# The one declaration: `knob` beside BootstrapFinetune's own parameters, as a new parameter would be written there.
_base = inspect.signature(BootstrapFinetune.__init__)
_knob = inspect.Parameter("knob", inspect.Parameter.KEYWORD_ONLY, default=1, annotation=Positive)
WithKnob.__init__.__signature__ = _base.replace(parameters=[*_base.parameters.values(), _knob])
WithKnob.__init__.__annotations__ = typing.get_type_hints(BootstrapFinetune.__init__, include_extras=True) | {
    "knob": Positive
}


@pytest.fixture(autouse=True)
def knob_registered(monkeypatch):
    monkeypatch.setitem(registry.OPTIMIZERS, "finetune", registry.Entry(__name__, "WithKnob", "weights", "test"))


@pytest.fixture(autouse=True)
def loaded(monkeypatch):
    """The models `cotune finetune` loads (a FakeLM each)."""
    models = []
    monkeypatch.setattr(optimize_cmds, "load_model", lambda *a, **k: models.append(a) or FakeLM(["Species: setosa"]))
    return models


def metric(example, prediction):
    return 1.0


def test_python_api():
    assert registry.build_optimizer("finetune", metric, knob=3).knob == 3
    assert registry.build_optimizer("finetune", metric).knob == 1
    with pytest.raises(ConfigError, match="knob must be >= 1, got 0"):
        registry.build_optimizer("finetune", metric, knob=0)


def test_yaml_beside_the_optimizer_or_under_params(tmp_path):
    for weights in ("{knob: 3}", "{params: {knob: 3}}"):
        path = tmp_path / "exp.yaml"
        path.write_text(f"task: gsm8k\nweights: {weights}\n")
        cfg = ExperimentConfig.from_yaml(path)
        assert default_optimizer_factory(cfg, metric)("w", 0, tmp_path / "node").knob == 3
        assert ExperimentConfig.from_dict(cfg.to_dict()) == cfg  # saved and resumed as it was
    path.write_text("task: gsm8k\nweights: {knob: 0}\n")
    with pytest.raises(ConfigError, match="weights: .*knob must be >= 1, got 0"):
        ExperimentConfig.from_yaml(path)


def test_cotune_run_set_wins_over_the_yaml(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("task: gsm8k\nweights: {params: {knob: 3}}\n")
    cfg = commands.experiment_config(path, {"weights.knob": 5})
    assert cfg.weights.params["knob"] == 5
    with pytest.raises(ConfigError, match="knob must be >= 1, got 0"):
        commands.experiment_config(path, {"weights.knob": 0})


def test_task_run_defaults_are_checked_and_lose_to_the_user(tmp_path, monkeypatch):
    real = cotune.tasks.task_info

    def task_info(name):
        info = real(name)
        return type(info)(**{**info.__dict__, "run_defaults": {"weights": {"knob": 7}}})

    monkeypatch.setattr(cotune.tasks, "task_info", task_info)
    assert ExperimentConfig.from_dict({"task": "gsm8k"}).weights.params["knob"] == 7
    assert ExperimentConfig.from_dict({"task": "gsm8k", "weights": {"knob": 2}}).weights.params["knob"] == 2
    assert _finetune(tmp_path, {}).knob == 7  # cotune finetune takes the task's default too
    assert _finetune(tmp_path, {"knob": 4}).knob == 4  # and -P wins over it

    def bad(name):
        info = real(name)
        return type(info)(**{**info.__dict__, "run_defaults": {"weights": {"knob": -1}}})

    monkeypatch.setattr(cotune.tasks, "task_info", bad)
    with pytest.raises(ConfigError, match="knob must be >= 1, got -1"):
        ExperimentConfig.from_dict({"task": "gsm8k"})


def test_cotune_finetune_param_is_checked_before_the_model_loads(tmp_path, loaded):
    assert _finetune(tmp_path, {"knob": 9}).knob == 9
    assert len(loaded) == 1
    with pytest.raises(ConfigError, match="knob must be >= 1, got 0"):
        _finetune(tmp_path, {"knob": 0})
    assert len(loaded) == 1  # the bad value stopped it before a model loaded


def _finetune(tmp_path: Path, params: dict) -> WithKnob:
    """`cotune finetune -P ...` up to the optimizer's compile; the built optimizer."""
    console = Console(file=io.StringIO())
    with pytest.raises(Built) as built:
        optimize_cmds.run_finetune(
            task="iris",
            model="fake",
            out_dir=tmp_path / "ft",
            lora={},
            traces=None,
            threshold=None,
            data_dir=None,
            threads=1,
            seed=0,
            cache=False,
            evaluate_on=None,
            console=console,
            out=console,
            params=params,
            force=True,
        )
    return built.value.optimizer


def test_a_weight_step_built_in_python_takes_hyperparameters_by_name():
    from cotune.experiment.config import WeightStep

    assert WeightStep(knob=3).params == {"knob": 3}
    assert WeightStep(knob=3, params={"knob": 4}).params == {"knob": 4}  # params wins, as in YAML
    assert WeightStep(**{"lora.r": 8}, params={"lora": {"epochs": 2}}).params == {"lora": {"r": 8, "epochs": 2}}
    step = WeightStep(knob=2)
    assert ExperimentConfig.from_dict({"task": "gsm8k", "weights": {"knob": 2}}).weights == step
