import json
import threading

import pytest

import cotune as ct
from cotune.errors import ConfigError, ParseError
from cotune.lm import FakeLM


class TwoStep(ct.Program):
    def __init__(self):
        self.hops = [ct.ChainOfThought("question -> search_query") for _ in range(2)]
        self.answer = ct.Predict("context, question -> answer")

    def forward(self, question):
        context = []
        for hop in self.hops:
            context.append(hop(question=question).search_query)
        return self.answer(context=context, question=question)


def echo_lm():
    def respond(messages):
        system = messages[0]["content"]
        if "Search Query" in system:
            return "Reasoning: look it up\nSearch Query: " + messages[-1]["content"].split(": ", 1)[1]
        return "Answer: done"

    return FakeLM(respond)


def test_named_predictors_walks_lists_in_order():
    names = [n for n, _ in TwoStep().named_predictors()]
    assert names == ["hops[0]", "hops[1]", "answer"]


def test_unbound_predictor_error_says_how_to_fix():
    with pytest.raises(ConfigError, match="bind"):
        TwoStep()(question="q")


def test_trace_records_every_call_with_names_messages_and_completion():
    program = TwoStep().bind(echo_lm())
    with ct.record(program) as rec:
        pred = program(question="where?")
    assert pred.answer == "done"
    assert [s.predictor for s in rec.steps] == ["hops[0]", "hops[1]", "answer"]
    first = rec.steps[0]
    assert first.inputs == {"question": "where?"}
    assert first.outputs == {"reasoning": "look it up", "search_query": "where?"}
    assert first.messages == program.hops[0].messages(question="where?")
    assert first.completion.startswith("Reasoning:")
    assert first.usage["prompt_tokens"] > 0


def test_traces_are_per_thread():
    program = TwoStep().bind(echo_lm())
    results = {}

    def run(q):
        with ct.record(program) as rec:
            program(question=q)
        results[q] = [s.inputs["question"] for s in rec.steps]

    threads = [threading.Thread(target=run, args=(f"q{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {f"q{i}": [f"q{i}"] * 3 for i in range(8)}


def test_parse_failure_is_recorded_then_raised():
    program = ct.Predict("question -> answer, confidence").bind(FakeLM(["no idea"]))
    with ct.record(program) as rec, pytest.raises(ParseError):
        program(question="?")
    assert rec.steps[0].outputs is None
    assert rec.steps[0].completion == "no idea"
    assert "confidence" in rec.steps[0].error


def test_deepcopy_is_independent_but_shares_lm():
    lm = echo_lm()
    program = TwoStep().bind(lm)
    program.answer.demos = [ct.Example(question="a", context=[], answer="b")]
    copy = program.deepcopy()
    copy.answer.demos.append(ct.Example(question="c", context=[], answer="d"))
    copy.hops[0].instruction = "changed"
    assert len(program.answer.demos) == 1
    assert program.hops[0].instruction != "changed"
    assert copy.answer.lm is lm


def test_reset_copy_drops_demos_and_instructions():
    program = TwoStep()
    program.answer.demos = [ct.Example(question="a", context=[], answer="b")]
    program.answer.instruction = "custom"
    fresh = program.reset_copy()
    assert fresh.answer.demos == [] and fresh.answer.instruction == fresh.answer.signature.instructions


def test_save_load_round_trip(tmp_path):
    program = TwoStep().bind(echo_lm())
    program.hops[1].instruction = "Write a second query."
    program.answer.demos = [ct.Example(question="a", context=["x"], answer="b")]
    path = program.save(tmp_path / "p.json", task="demo")
    state = json.loads(path.read_text())
    assert state["metadata"] == {"task": "demo"}
    assert state["lm"] == {"backend": "fake", "model": "fake", "adapter": None}

    restored = TwoStep().load(path, bind_saved_lm=False)
    assert restored.dump_state()["predictors"] == program.dump_state()["predictors"]
    assert restored.answer.demos[0].answer == "b"


def test_load_refuses_a_program_of_another_shape(tmp_path):
    path = ct.Predict("question -> answer").bind(echo_lm())
    other = tmp_path / "p.json"
    ct.Program.save(_Wrap(path), other)
    with pytest.raises(ConfigError, match="do not match"):
        TwoStep().load(other, bind_saved_lm=False)


def test_load_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="no saved program"):
        TwoStep().load(tmp_path / "nope.json")


def test_fake_lm_cannot_be_restored_from_a_saved_program(tmp_path):
    path = TwoStep().bind(echo_lm()).save(tmp_path / "p.json")
    with pytest.raises(ConfigError, match="[Ff]ake"):
        TwoStep().load(path)


class _Wrap(ct.Program):
    def __init__(self, p):
        self.p = p


def test_the_saved_class_path_picks_the_wrapper_but_never_imports_unknown_modules():
    import sys

    from cotune.program.ensemble import ChoiceShuffleEnsemble
    from cotune.program.program import program_for_state
    from cotune.tasks.multiple_choice import MultipleChoiceQA

    state = ChoiceShuffleEnsemble(MultipleChoiceQA(), m=2).dump_state()
    assert state["program"] == "cotune.program.ensemble.ChoiceShuffleEnsemble"
    rebuilt = program_for_state(MultipleChoiceQA(), state)
    assert isinstance(rebuilt, ChoiceShuffleEnsemble) and rebuilt.m == 2
    old = dict(state, program="cotune.optimize.ensemble.ChoiceShuffleEnsemble")  # files saved before the move
    assert isinstance(program_for_state(MultipleChoiceQA(), old), ChoiceShuffleEnsemble)
    plain = MultipleChoiceQA()
    assert program_for_state(plain, dict(state, program="not_a_cotune_module_xyz.Evil")) is plain
    assert "not_a_cotune_module_xyz" not in sys.modules
