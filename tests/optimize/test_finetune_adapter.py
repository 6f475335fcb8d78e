"""Θ trains on what the format adapter renders, nothing else: a predictor with a JSON adapter of its own
(demos inside the system message, answers as JSON objects) is fine-tuned from runs and from labels, with
and without demos, and every training example is exactly a prompt its program sends at inference and a
completion in the adapter's format. The training function is replaced by a recorder (as in
test_finetune.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fake_tasks import truth

import cotune as ct
from cotune.errors import ConfigError, ParseError
from cotune.lm import FakeLM
from cotune.optimize.finetune import BootstrapFinetune
from cotune.optimize.traces import labeled_traces
from cotune.training import TrainResult, data_hash

DEMO = ct.Example(number="8", reasoning="8 ends in 8.", label="even")


class JSONAdapter:
    """Inputs and outputs as JSON objects; the demos go into the system message, not into turns of their own."""

    def messages(self, signature, instruction, demos, inputs, *, structured_output=None):
        shown = [
            {"inputs": {n: d[n] for n in signature.input_names}, "outputs": {n: d[n] for n in signature.output_names}}
            for d in demos
        ]
        system = {"instruction": instruction, "reply_with_keys": signature.output_names, "examples": shown}
        user = {n: inputs[n] for n in signature.input_names}
        return [{"role": "system", "content": json.dumps(system)}, {"role": "user", "content": json.dumps(user)}]

    def constraint(self, signature, *, budget_tokens=None):
        return None

    def parse(self, signature, text):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ParseError(f"not JSON: {e}", raw=text) from None
        missing = [f.name for f in signature.outputs if f.required and f.name not in data]
        if missing:
            raise ParseError(f"no {missing}", raw=text, missing=missing)
        return {f.name: f.type.coerce(data[f.name]) for f in signature.outputs if f.name in data}

    def completion(self, signature, outputs, *, structured_output=None):
        return json.dumps({f.name: outputs[f.name] for f in signature.outputs if f.name in outputs})


class Classify(ct.Program):
    def __init__(self, adapter):
        self.classify = ct.ChainOfThought("number -> label", adapter=adapter)

    def forward(self, number):
        return self.classify(number=number)


def json_lm():
    """Right for numbers ending in 0-4, wrong for the others; answers in the JSON adapter's format."""

    def respond(messages):
        number = json.loads(messages[-1]["content"])["number"]
        label = truth(number) if number[-1] in "01234" else {"even": "odd", "odd": "even"}[truth(number)]
        return json.dumps({"reasoning": f"{number} ends in {number[-1]}.", "label": label})

    lm = FakeLM(respond)
    lm.model_path = "/models/json"  # what an HF model exposes; the fake trainer never reads it
    return lm


def metric(example, prediction):
    return float(prediction.get("label") == example["label"])


@pytest.fixture
def trained(monkeypatch):
    calls = []

    def fake_train_lora(examples, *, output_dir, **_):
        calls.append(list(examples))
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        return TrainResult(str(output_dir), [1.0], 1.0, 0.1, 1, len(examples), 10, 0, "cpu", data_hash(examples))

    monkeypatch.setattr("cotune.training.trainer.train_lora", fake_train_lora)
    return calls


@pytest.mark.parametrize("keep_demos", [True, False])
def test_training_text_is_what_the_json_adapter_sends_and_answers(trained, tmp_path, keep_demos):
    lm = json_lm()
    program = Classify(JSONAdapter()).bind(lm)
    program.classify.demos = [DEMO]
    numbers = [str(n) for n in range(100, 110)]
    trainset = [ct.Example(number=n, label=truth(n)).with_inputs("number") for n in numbers]
    tuner = BootstrapFinetune(metric, fill_with_labels=True, keep_demos=keep_demos, output_dir=tmp_path)
    tuned = tuner.compile(program, trainset=trainset)
    assert (tuner.n_passed_, tuner.n_labeled_) == (5, 5)

    # what the teacher's LM was sent, per number: the demo is in the system message
    sent = {json.loads(m[-1]["content"])["number"]: m for m, _ in lm.calls}
    # what the tuned program sends at inference: the same prompts, or no demos when they are stripped
    lm.calls.clear()
    for n in numbers:
        tuned(number=n)
    at_inference = {json.loads(m[-1]["content"])["number"]: m for m, _ in lm.calls}
    shown = [{"inputs": {"number": "8"}, "outputs": {"reasoning": "8 ends in 8.", "label": "even"}}]
    assert all(json.loads(m[0]["content"])["examples"] == (shown if keep_demos else []) for m in at_inference.values())

    (examples,) = trained
    assert len(examples) == 10
    by_number = {json.loads(e.chat[-1]["content"])["number"]: e for e in examples}
    assert sorted(by_number) == numbers
    for n, ex in by_number.items():
        assert ex.chat == at_inference[n]
        if keep_demos:
            assert ex.chat == sent[n]
        if n[-1] in "01234":  # a passing run: the LM's own answer, reasoning and all
            assert ex.completion == json.dumps({"reasoning": f"{n} ends in {n[-1]}.", "label": truth(n)})
        else:  # filled from the gold label, in the adapter's format (no reasoning: the label has none)
            assert ex.completion == json.dumps({"label": truth(n)})
        assert JSONAdapter().parse(tuned.classify.signature, ex.completion)["label"] == truth(n)


class RunsOnly:
    """A third-party adapter that never learned to write a completion."""

    messages, constraint, parse = JSONAdapter.messages, JSONAdapter.constraint, JSONAdapter.parse


def test_an_adapter_without_completion_is_told_what_to_implement_when_labels_are_needed(trained, tmp_path):
    program = Classify(RunsOnly()).bind(json_lm())
    trainset = [ct.Example(number=n, label=truth(n)).with_inputs("number") for n in ("100", "105")]
    with pytest.raises(ConfigError, match=r"RunsOnly cannot write labels.*completion\(signature, outputs"):
        BootstrapFinetune(metric, fill_with_labels=True, output_dir=tmp_path / "a").compile(program, trainset=trainset)
    with pytest.raises(ConfigError, match="RunsOnly"):
        labeled_traces(program, trainset)
    assert not trained
    # the runs alone need no completion from the adapter
    BootstrapFinetune(metric, output_dir=tmp_path / "b").compile(program, trainset=trainset)
    assert [json.loads(e.completion)["label"] for e in trained[0]] == ["even"]
