"""GPO's optimizer LM given by name (``-P optimizer_lm=NAME``, a YAML config): checked when the optimizer is
built, loaded when `compile` starts, closed when it ends, and kept as the name in saved parameters."""

from __future__ import annotations

import json

import pytest

import cotune as ct
from cotune.errors import ConfigError, UnknownChoiceError
from cotune.lm import FakeLM, registry
from cotune.lm.cache import RequestCache
from cotune.optimize.gpo import GPO
from cotune.optimize.registry import build_optimizer

BETTER = "Answer with the number only."


def metric(example, prediction) -> float:
    return float(prediction["answer"] == example["answer"])


class QA(ct.Program):
    def __init__(self):
        self.answer = ct.Predict("question -> answer", instruction="Answer.")

    def forward(self, question):
        return self.answer(question=question)


DATA = [ct.Example(question=str(n), answer=str(n)).with_inputs("question") for n in range(4)]


def task_lm(cache=None, name="task-model") -> FakeLM:
    """Right only under BETTER; as an optimizer it proposes nothing useful (so the tests see which LM wrote)."""

    def respond(messages):
        if "New Instruction:" in messages[0]["content"]:
            return "New Instruction: Answer."
        right = BETTER in messages[0]["content"]
        return f"Answer: {messages[-1]['content'].split(': ')[1] if right else 'no'}"

    return FakeLM(respond, name=name, cache=cache)


class ClosingLM(FakeLM):
    closed = False

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def fake_registry(monkeypatch, tmp_path):
    """A registered model "fake-optimizer" whose `load` is a FakeLM that proposes BETTER; loads are recorded."""
    monkeypatch.setenv("COTUNE_CACHE_DIR", str(tmp_path / "cache"))
    source = registry.ModelSource(
        name="fake-optimizer",
        description="",
        parameters="1B",
        modules=("cotune",),
        install="pip install fake",
        gguf=lambda dirs, scratch: scratch,
        source="test",
    )
    monkeypatch.setitem(registry.MODELS, "fake-optimizer", source)
    loads = []

    def load(name, **kwargs):
        lm = ClosingLM(lambda messages: f"New Instruction: {BETTER}", name=name)
        loads.append((name, kwargs, lm))
        return lm

    monkeypatch.setattr(registry, "load", load)
    return loads


def gpo(**kwargs) -> GPO:
    defaults = dict(num_steps=1, candidates_per_step=1, retrieval="none", num_threads=1, edit_budget="none")
    return build_optimizer("gpo", metric, **(defaults | kwargs))


def test_a_named_optimizer_lm_writes_the_instructions_and_is_closed_after(fake_registry, tmp_path):
    cache = RequestCache(tmp_path / "requests.sqlite")
    opt = gpo(optimizer_lm="fake-optimizer")
    assert fake_registry == []  # nothing loads when the optimizer is built
    best = opt.compile(QA().bind(task_lm(cache)), trainset=DATA, valset=DATA)
    assert best.answer.instruction == BETTER and opt.best_score_ == 1.0
    [(name, kwargs, lm)] = fake_registry
    assert name == "fake-optimizer" and lm.closed
    assert kwargs["cache"] is cache  # the task LM's request cache (none under --no-cache)
    assert opt.get_params()["optimizer_lm"] == "fake-optimizer"  # the name stays: saved parameters are JSON
    json.dumps({k: v for k, v in opt.get_params().items() if k != "metric"})


def test_without_an_optimizer_lm_the_task_lm_writes(fake_registry):
    opt = gpo()
    best = opt.compile(QA().bind(task_lm()), trainset=DATA, valset=DATA)
    assert fake_registry == [] and best.answer.instruction == "Answer."


def test_naming_the_task_model_reuses_it_instead_of_loading_it_twice(fake_registry):
    lm = task_lm(name="fake-optimizer")
    lm.backend = "hf"  # stands in for a local model: the same weights must not load again
    gpo(optimizer_lm="Fake-Optimizer").compile(QA().bind(lm), trainset=DATA, valset=DATA)
    assert fake_registry == []
    assert any("New Instruction:" in messages[0]["content"] for messages, _ in lm.calls)


def test_an_lm_object_is_used_as_given(fake_registry):
    writer = FakeLM(lambda messages: f"New Instruction: {BETTER}")
    best = gpo(optimizer_lm=writer).compile(QA().bind(task_lm()), trainset=DATA, valset=DATA)
    assert best.answer.instruction == BETTER and fake_registry == [] and writer.calls


def test_a_bad_optimizer_lm_name_fails_when_the_optimizer_is_built(fake_registry, monkeypatch):
    with pytest.raises(UnknownChoiceError, match="unknown model 'qwen-1.5b'; choose one of: .*qwen2.5-coder-1.5b"):
        gpo(optimizer_lm="qwen-1.5b")
    monkeypatch.setattr(registry.ModelSource, "package_dirs", lambda self: None)
    with pytest.raises(ConfigError, match="'fake-optimizer' needs packages .* pip install fake"):
        gpo(optimizer_lm="fake-optimizer")
    with pytest.raises(ConfigError, match="optimizer_lm must be a LM or text or None, got 3"):
        gpo(optimizer_lm=3)
    assert fake_registry == []
