"""The experiment config's field rules are declared once, by the fields' annotations (`cotune.params` types),
and checked by `cotune.params.value_problems`, the mechanism that checks an optimizer's hyperparameters.

A field added with a constrained type is checked with no hand-written check, whichever way its value arrives
(Python, YAML or ``--set`` through ``from_dict``, a task's run defaults), and every problem is reported at once."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import pytest

import cotune.tasks
from cotune.errors import ConfigError
from cotune.experiment.config import ExperimentConfig, PromptStep, WeightStep
from cotune.experiment.config_build import build_dataclass
from cotune.params import Positive, schema

# Fields that take any value of their plain type, each with where its value is checked instead.
PLAIN = {
    ExperimentConfig: {
        "task": "a task name: checked when the task loads",
        "model": "a registry name, folder, file or hub id: checked when the model loads",
        "strategies": "parsed by parse_strategy in check()",
        "seeds": "any integers; their count is bounded in check()",
        "data_dir": "a folder, or an hf: dataset",
        "out_dir": "a folder",
        "name": "a folder name",
        "split_seed": "any integer seeds the split",
        "cache": "true or false",
        "ray": "an address: matched against the Ray address forms in check()",
    },
    PromptStep: {
        "optimizer": "a registered prompt optimizer: built once in check()",
        "params": "the optimizer's hyperparameters: checked by its own declared schema",
    },
    WeightStep: {
        "optimizer": "a registered weights optimizer: built once in check()",
        "params": "the optimizer's hyperparameters: checked by its own declared schema",
        "trainer": "a registered trainer: built once in check(), which names the registered ones",
    },
}
STEPS = {"prompt": PromptStep, "weights": WeightStep}  # checked by their own fields' annotations


def _constrained(hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin is Annotated:
        return any(getattr(m, "metadata", None) for m in typing.get_args(hint)[1:])
    if origin in (typing.Union, types.UnionType):
        return any(_constrained(a) for a in typing.get_args(hint) if a is not type(None))
    return origin is Literal


@pytest.mark.parametrize("cls", [ExperimentConfig, PromptStep, WeightStep], ids=lambda c: c.__name__)
def test_every_field_has_a_constrained_type_or_is_a_listed_plain_one(cls):
    hints = typing.get_type_hints(cls, include_extras=True)
    plain = PLAIN[cls]
    for f in dataclasses.fields(cls):
        if cls is ExperimentConfig and f.name in STEPS:
            assert hints[f.name] is STEPS[f.name]
            continue
        assert f.name in schema(cls), f"{cls.__name__}.{f.name} is not seen by value_problems"
        assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help text"
        if f.name in plain:
            assert not _constrained(hints[f.name]), f"{cls.__name__}.{f.name} is constrained: drop it from PLAIN"
        else:
            assert _constrained(hints[f.name]), (
                f"{cls.__name__}.{f.name}: {hints[f.name]} carries no rule; declare one (Positive, Count, "
                "Literal[...]) or list it in PLAIN with where its value is checked"
            )
    assert set(plain) <= {f.name for f in dataclasses.fields(cls)}  # no stale entries


# -- a field declared on a subclass is checked with nothing else written -------------------------------------
@dataclass
class WithKnob(ExperimentConfig):
    knob: Positive = 1
    mode: Literal["a", "b"] = "a"


@dataclass
class PromptWithKnob(PromptStep):
    knob: Positive = 1
    mode: Literal["a", "b"] = "a"


@dataclass(init=False)  # keeps WeightStep's own __init__ (hyperparameters by name)
class WeightsWithKnob(WeightStep):
    knob: Positive = 1


def test_a_new_top_level_field_is_checked_by_its_annotation_alone():
    with pytest.raises(ConfigError) as info:
        WithKnob.from_dict({"knob": 0, "mode": "c", "threads": 0})
    message = str(info.value)
    assert "knob must be >= 1, got 0 (knob must be an integer >= 1)" in message
    assert "mode: unknown mode 'c'; choose one of: a, b" in message
    assert "threads must be >= 1, got 0" in message  # all at once
    assert WithKnob.from_dict({"knob": "3", "mode": "b"}).knob == 3  # "3" as `--set knob=3` may give it
    with pytest.raises(ConfigError, match="knob must be >= 1, got -2"):
        WithKnob(knob=-2).validate()  # built in Python, checked the same way


def test_a_new_step_field_is_checked_by_its_annotation_alone():
    assert PromptWithKnob(knob=0, mode="c").check() == [
        "prompt.knob must be >= 1, got 0 (prompt.knob must be an integer >= 1)",
        "prompt.mode: unknown mode 'c'; choose one of: a, b",
    ]
    step = WeightsWithKnob(num_rollouts=2)
    assert step.params == {"num_rollouts": 2}
    step.knob = 0
    assert step.check() == ["weights.knob must be >= 1, got 0 (weights.knob must be an integer >= 1)"]


# -- the declared fields' rules, in the messages users see --------------------------------------------------
@pytest.mark.parametrize(
    "data, message",
    [
        ({"threads": 0}, "threads must be >= 1, got 0 (threads must be an integer >= 1)"),
        ({"inner_val_ratio": 1}, "inner_val_ratio must be in (0, 1), got 1.0"),
        ({"inner_val_ratio": 0.0}, "inner_val_ratio must be in (0, 1), got 0.0"),
        ({"train_size": 0}, "train_size must be >= 1, got 0 (train_size must be an integer >= 1 or None)"),
        ({"max_tokens": -5}, "max_tokens must be >= 1, got -5"),
        ({"dtype": "int4"}, "dtype: unknown dtype 'int4'; choose one of: auto, bfloat16, float16, float32, int8"),
        ({"dtype": 8}, "dtype must be one of 'auto', 'float32', 'bfloat16', 'float16', 'int8', got 8"),
        ({"prompt": {"gpo_steps": 0}}, "prompt.gpo_steps must be >= 1, got 0"),
        ({"prompt": {"max_bootstrapped_demos": -1}}, "prompt.max_bootstrapped_demos must be >= 0, got -1"),
        ({"weights": {"processes": 0}}, "weights.processes must be >= 1, got 0"),
        ({"threads": "many"}, "threads: expected an integer >= 1, got 'many'"),
        ({"test_size": "x"}, "test_size: expected an integer >= 1 or None, got 'x'"),
        ({"strategies": [1.5]}, "strategies: expected a list of text, got [1.5]"),
    ],
)
def test_a_bad_value_names_the_field_the_value_and_the_rule(data, message):
    with pytest.raises(ConfigError, match="invalid experiment config") as info:
        ExperimentConfig.from_dict(data)
    assert message in str(info.value)


def test_several_bad_fields_are_reported_together_with_their_dotted_names():
    with pytest.raises(ConfigError) as info:
        ExperimentConfig.from_dict(
            {"threads": 0, "dtype": "x", "prompt": {"num_candidates": 0}, "weights": {"processes": 0}}
        )
    lines = str(info.value).splitlines()[1:]
    assert [line.split()[1].rstrip(":") for line in lines] == [
        "threads",
        "dtype",
        "prompt.num_candidates",
        "weights.processes",
    ]


def test_values_from_the_command_line_are_coerced_to_annotated_and_literal_types():
    cfg = ExperimentConfig.from_dict({"threads": "4", "train_size": "10", "dtype": "int8"})
    assert (cfg.threads, cfg.train_size, cfg.dtype) == (4, 10, "int8")

    @dataclass
    class Sizes:
        size: Literal[8, 16] = 8
        mode: Literal["a", "b"] | None = None

    errors: list[str] = []
    built = build_dataclass(Sizes, {"size": "16", "mode": "b"}, "", errors)
    assert (built.size, built.mode, errors) == (16, "b", [])
    assert type(built.size) is int


# -- a task's run defaults are checked as the user's own values ---------------------------------------------
def test_a_bad_task_run_default_is_reported_as_a_bad_value_of_the_user(monkeypatch):
    real = cotune.tasks.task_info
    bad = {"threads": 0, "dtype": "int4", "prompt": {"num_candidates": 0}, "weights": {"processes": 0}}

    def task_info(name):
        info = real(name)
        return type(info)(**{**info.__dict__, "run_defaults": bad})

    with pytest.raises(ConfigError) as given:
        ExperimentConfig.from_dict({"task": "gsm8k", **bad})
    monkeypatch.setattr(cotune.tasks, "task_info", task_info)
    with pytest.raises(ConfigError) as defaulted:
        ExperimentConfig.from_dict({"task": "gsm8k"})
    assert str(defaulted.value) == str(given.value)
    assert "dtype: unknown dtype 'int4'; choose one of:" in str(defaulted.value)
    # the user's values win over the task's
    good = {"threads": 2, "dtype": "int8", "prompt": {"num_candidates": 2}, "weights": {"processes": 1}}
    cfg = ExperimentConfig.from_dict({"task": "gsm8k", **good})
    assert (cfg.threads, cfg.dtype, cfg.prompt.num_candidates) == (2, "int8", 2)
