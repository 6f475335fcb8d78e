"""Format adapters: `Predict` renders, constrains and parses through its adapter; the default one is the
text format of `cotune.program.format` and is not saved."""

from __future__ import annotations

import pytest

import cotune as ct
from cotune.errors import ConfigError
from cotune.lm import FakeLM
from cotune.lm.constraint import Constraint
from cotune.program import format as fmt
from cotune.program.adapter import TextAdapter
from cotune.program.grammar import constraint
from cotune.program.signature import Signature
from cotune.program.trace import record

DEMOS = [{"question": "1 + 1?", "answer": "2"}]


class Recording:
    """A format of its own: one user message, ``<answer>`` tags, a fixed constraint; records its calls."""

    RULE = Constraint(grammar=(("ebnf", 'root ::= "<" [a-z]+ ">"'),), json_schema='{"type": "object"}')

    def __init__(self):
        self.calls: list[tuple] = []

    def messages(self, signature, instruction, demos, inputs, *, structured_output=None):
        self.calls.append(("messages", instruction, len(demos), structured_output))
        return [{"role": "user", "content": f"{instruction} | {inputs['question']}"}]

    def constraint(self, signature, *, budget_tokens=None):
        self.calls.append(("constraint", budget_tokens))
        return self.RULE

    def parse(self, signature, text):
        self.calls.append(("parse", text))
        return {"answer": text.removeprefix("<answer>").removesuffix("</answer>")}


@pytest.mark.parametrize("structured_output", [None, "grammar", "json_schema"])
def test_a_custom_adapter_renders_constrains_and_parses(structured_output):
    adapter = Recording()
    lm = FakeLM(["<answer>four</answer>"], structured_output=structured_output)
    qa = ct.Predict("question -> answer", instruction="Answer.", demos=DEMOS, adapter=adapter).bind(lm)
    assert qa(question="2 + 2?").answer == "four"
    ((messages, config),) = lm.calls
    assert messages == [{"role": "user", "content": "Answer. | 2 + 2?"}]
    assert config.constraint == (Recording.RULE if structured_output else None)
    steps = [("messages", "Answer.", 1, structured_output)]
    steps += [("constraint", None)] if structured_output else []
    assert adapter.calls == [*steps, ("parse", "<answer>four</answer>")]


def test_chain_of_thought_passes_the_adapter_and_its_budget():
    adapter = Recording()
    cot = ct.ChainOfThought("question -> answer", adapter=adapter).bind(
        FakeLM(["<answer>x</answer>"], structured_output="grammar")
    )
    assert cot.adapter is adapter and cot(question="?").answer == "x"
    assert ("constraint", cot.reasoning_budget) in adapter.calls


@pytest.mark.parametrize("structured_output, style", [(None, "labels"), ("grammar", "labels"), ("json_schema", "json")])
def test_the_default_adapter_is_the_text_format(structured_output, style):
    qa = ct.Predict("question -> answer: int", demos=DEMOS).bind(
        FakeLM(["Answer: 4"], structured_output=structured_output)
    )
    assert isinstance(qa.adapter, TextAdapter)
    signature = Signature.parse("question -> answer: int")
    assert qa.messages(question="2 + 2?") == fmt.render(
        signature, qa.instruction, qa.demos, {"question": "2 + 2?"}, style
    )
    assert qa.constraint() == (constraint(signature) if structured_output else None)
    assert qa(question="2 + 2?").answer == 4


class QA(ct.Program):
    def __init__(self, adapter=None):
        self.qa = ct.Predict("question -> answer", adapter=adapter)

    def forward(self, question):
        return self.qa(question=question)


def test_the_adapter_is_not_saved_and_survives_load_and_copy(tmp_path):
    plain, custom = QA(), QA(adapter=Recording())
    assert plain.dump_state() == custom.dump_state()
    saved = set(plain.dump_state()["predictors"]["qa"])
    assert saved == {"signature", "instruction", "demos", "config", "constrained", "reasoning_budget"}
    path = plain.bind(FakeLM(["Answer: a"])).save(tmp_path / "p.json")
    restored = QA(adapter=Recording()).load(path, lm=FakeLM(["<answer>b</answer>"]))
    assert isinstance(restored.qa.adapter, Recording) and restored(question="?").answer == "b"
    assert isinstance(custom.deepcopy().qa.adapter, Recording)


def test_a_traced_call_records_its_prompt_without_demos_as_its_adapter_renders_it():
    qa = ct.Predict("question -> answer", instruction="Answer.", demos=DEMOS).bind(FakeLM(["Answer: 4"] * 2))
    with record() as rec:
        qa(question="2 + 2?")
        qa.demos = []
        qa(question="2 + 2?")
    signature = Signature.parse("question -> answer")
    with_demos, without = rec.steps
    assert with_demos.messages == fmt.render(signature, "Answer.", DEMOS, {"question": "2 + 2?"})
    assert with_demos.zero_shot == fmt.render(signature, "Answer.", [], {"question": "2 + 2?"}) == without.messages
    assert without.zero_shot is None and without.without_demos() == with_demos.without_demos()
    assert qa.zero_shot_messages(question="2 + 2?") == without.messages


def test_the_text_adapter_writes_a_completion_as_its_demos_answer():
    signature = Signature.parse("question -> answer: int").prepend_output("reasoning", "think", required=False)
    adapter = TextAdapter()
    assert adapter.completion(signature, {"answer": 4}) == "Answer: 4"
    assert adapter.completion(signature, {"reasoning": "a\nb", "answer": 4}) == "Reasoning:\na\nb\nAnswer: 4"
    assert adapter.completion(signature, {"answer": 4}, structured_output="json_schema") == '{"answer": 4}'
    assert adapter.parse(signature, adapter.completion(signature, {"answer": 4})) == {"answer": 4}


def test_a_predictor_whose_adapter_has_no_completion_names_the_method():
    qa = ct.Predict("question -> answer", adapter=Recording())
    with pytest.raises(ConfigError, match=r"Recording cannot write labels as a completion: give it a completion\("):
        qa.completion({"answer": "4"})
