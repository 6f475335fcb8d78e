"""A tiny task and optimizers on FakeLM, for runner tests."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import cotune as ct
from cotune.data import Dataset, Example
from cotune.errors import UnknownChoiceError
from cotune.lm import FakeLM
from cotune.optimize import Optimizer


class Echo(ct.Program):
    def __init__(self):
        self.answer = ct.Predict("question -> answer")

    def forward(self, question):
        return self.answer(question=question)


def exact(example, prediction):
    return float(prediction["answer"] == example["answer"])


@dataclass
class FakeTask:
    name: str = "fake"
    train: Dataset = field(default_factory=lambda: _data(0, 10))
    dev: Dataset = field(default_factory=lambda: _data(10, 14))
    test: Dataset = field(default_factory=lambda: _data(14, 20))

    def program(self):
        return Echo()

    def metric(self, example, prediction):
        return exact(example, prediction)

    def split(self, name):
        if name not in ("train", "dev", "test"):
            raise UnknownChoiceError("split", name, ["train", "dev", "test"])
        return getattr(self, name)


def _data(a, b):
    return Dataset([Example(question=str(i), answer=str(i)).with_inputs("question") for i in range(a, b)])


def fake_lm():
    """Right only when the instruction was prompt-optimized or an adapter is loaded; more so with both."""

    def respond(messages, adapter=None):
        q = messages[-1]["content"].split(": ", 1)[1]
        good = ("[p]" in messages[0]["content"]) + (adapter is not None)
        return f"Answer: {q}" if good and int(q) % (3 - good) == 0 else "Answer: ?"

    return FakeLM(respond)


class CountingPrompt(Optimizer):
    def __init__(self, log: Counter | None = None, fail_on: int | None = None):
        self.log = log
        self.fail_on = fail_on

    def compile(self, program, *, trainset, valset=None, events=None):
        assert valset, "prompt steps get a valset"
        self.log["p"] += 1
        if self.fail_on is not None and self.log["p"] == self.fail_on:
            raise KeyboardInterrupt("killed inside a prompt step")
        new = program.deepcopy()
        new.answer.instruction += " [p]"
        self.trials_ = [{"score": 1.0}]
        return new


class CountingWeights(Optimizer):
    selects_on_valset = False

    def __init__(self, log: Counter | None = None, output_dir: str | None = None):
        self.log = log
        self.output_dir = output_dir

    def compile(self, program, *, trainset, valset=None, events=None):
        assert valset is None and len(trainset) == 10, "weight steps get the whole trainset"
        self.log["w"] += 1
        Path(self.output_dir).mkdir(parents=True, exist_ok=True)
        (Path(self.output_dir) / "adapter_model.safetensors").write_text("weights")
        self.train_result_ = {"seconds": 1.5, "final_loss": 0.1}
        return program.deepcopy().bind(program.lm.with_adapter(self.output_dir))


def factory(log: Counter, fail_on_prompt: int | None = None):
    def make(kind, seed, node):
        if kind == "p":
            return CountingPrompt(log, fail_on_prompt)
        return CountingWeights(log, str(node / "adapter"))

    return make
