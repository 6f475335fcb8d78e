import pytest

from cotune.errors import ConfigError, ParseError
from cotune.program.format import parse, render
from cotune.program.signature import Signature


def cot(spec: str) -> Signature:
    return Signature.parse(spec).prepend_output("reasoning", "think", required=False)


def test_parse_signature_fields_and_default_instruction():
    sig = Signature.parse("context, question -> answer")
    assert sig.input_names == ["context", "question"]
    assert sig.output_names == ["answer"]
    assert "`context`" in sig.instructions and "`answer`" in sig.instructions


@pytest.mark.parametrize(
    "spec, message",
    [
        ("question answer", "must look like"),
        ("a -> ", "at least one output"),
        ("a, a -> b", "repeats"),
        ("a b -> c", "not a valid identifier"),
    ],
)
def test_bad_signatures_are_refused(spec, message):
    with pytest.raises(ConfigError, match=message):
        Signature.parse(spec)


def test_signature_dict_round_trip():
    sig = cot("question -> answer").with_instructions("Be brief.")
    assert Signature.from_dict(sig.to_dict()) == sig


def test_render_puts_instruction_demos_and_inputs_in_order():
    sig = cot("question -> answer")
    demos = [{"question": "1+1?", "reasoning": "one and one", "answer": "2"}, {"question": "no answer here"}]
    msgs = render(sig, "Solve it.", demos, {"question": "2+2?"})
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]  # answerless demo dropped
    assert msgs[0]["content"].startswith("Solve it.")
    assert "Answer: <answer>" in msgs[0]["content"]
    assert msgs[1]["content"] == "Question: 1+1?"
    assert msgs[2]["content"] == "Reasoning: one and one\nAnswer: 2"
    assert msgs[3]["content"] == "Question: 2+2?"


def test_render_lists_as_numbered_passages():
    msgs = render(Signature.parse("context, question -> answer"), "x", [], {"context": ["a", "b"], "question": "q"})
    assert msgs[-1]["content"] == "Context:\n[1] a\n[2] b\nQuestion: q"


def test_render_missing_input_names_it():
    with pytest.raises(TypeError, match="question"):
        render(Signature.parse("question -> answer"), "x", [], {})


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Reasoning: because\nAnswer: 4", {"reasoning": "because", "answer": "4"}),
        ("answer: 4", {"answer": "4"}),
        ("**Answer:** 4", {"answer": "4"}),
        ("Some thinking first.\nAnswer: 4", {"reasoning": "Some thinking first.", "answer": "4"}),
        ("4", {"answer": "4"}),  # no labels at all: the one required output takes the text
        ("Answer: 4\n\nI hope this helps!", {"answer": "4"}),
        ("Answer: 4\nExplanation: it is", {"answer": "4"}),
        # a repeated label keeps its last complete value (models restate and correct themselves)
        ("Reasoning: a\nAnswer: 4\nAnswer: 5", {"reasoning": "a", "answer": "5"}),
    ],
)
def test_parse_cases(text, expected):
    assert parse(cot("question -> answer"), text) == expected


def test_parse_failure_keeps_raw_text():
    sig = Signature.parse("question -> answer, confidence")
    with pytest.raises(ParseError) as info:
        parse(sig, "I am not sure at all")
    assert info.value.raw == "I am not sure at all"
    assert info.value.missing == ["answer", "confidence"]


def test_parse_multi_output_multiline_field():
    sig = Signature.parse("q -> code, explanation")
    out = parse(sig, "Code:\nx = 1\ny = 2\nExplanation: sets x")
    assert out == {"code": "x = 1\ny = 2", "explanation": "sets x"}
