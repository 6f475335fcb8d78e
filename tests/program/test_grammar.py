"""Grammars of signatures: what a constrained completion may be, checked with the real grammar engine."""

from __future__ import annotations

import json
from typing import Literal

import pytest

from cotune.lm.cache import RequestCache
from cotune.lm.fake import FakeLM
from cotune.program import ChainOfThought, Predict
from cotune.program.grammar import constraint, json_schema
from cotune.program.signature import InputField, OutputField, Signature, ensure_signature

xgr = pytest.importorskip("xgrammar")


def accepts(sig: Signature, text: str, **kw) -> bool:
    """Whether the grammar of ``sig`` accepts exactly ``text`` (a byte-level matcher, no tokenizer)."""
    c = constraint(sig, **kw)
    parts = [xgr.Grammar.from_ebnf(t) if k == "ebnf" else xgr.Grammar.from_json_schema(t) for k, t in c.grammar]
    grammar = parts[0] if len(parts) == 1 else xgr.Grammar.concat(*parts)
    compiled = xgr.GrammarCompiler(xgr.TokenizerInfo([])).compile_grammar(grammar)
    matcher = xgr.GrammarMatcher(compiled, terminate_without_stop_token=True)
    return matcher.accept_string(text) and matcher.is_completed()


class Classify(Signature):
    """Name the species."""

    petal_length: float = InputField()
    species: Literal["setosa", "versicolor", "virginica"] = OutputField()


COT = ChainOfThought("question -> answer: float").signature


@pytest.mark.parametrize(
    "sig, good, bad",
    [
        (ensure_signature(Classify), ["Species: setosa"], ["Species: rose", "Species: setosa\n", "species: setosa"]),
        (
            COT,
            ["Reasoning: 2 + 2 = 4\nAnswer: 4", "Reasoning: a\n\nb\nAns c\nAnswer: -1.5", "Reasoning: \nAnswer: 0"],
            ["Reasoning: x\nAnswer: four", "Answer: 4", "Reasoning: x\nAnswer: 4 apples", "Reasoning: x\nAnswer: 4\n"],
        ),
        (
            Signature.parse("q -> ok: bool, n: int, xs: list[int], tags: list[str], note"),
            # a last text field ends at its line's end: the newline is allowed, then nothing more
            [
                'Ok: true\nN: -3\nXs: [1, 2]\nTags: ["a b", "c"]\nNote: fine',
                "Ok: false\nN: 0\nXs: []\nTags: []\nNote: a\n",
            ],
            [
                "Ok: yes\nN: 1\nXs: []\nTags: []\nNote: x",
                "Ok: true\nN: 1.5\nXs: []\nTags: []\nNote: x",
                "Ok: true\nN: 1\nXs: []\nTags: []\nNote:  x",
                "Ok: true\nN: 1\nXs: []\nTags: []\nNote: x\ny",
            ],
        ),
        (
            Signature.parse("q -> data: json, answer: Literal['a', 'b']"),
            ['Data: {"k": 1}\nAnswer: a'],
            ["Data: not json\nAnswer: a"],
        ),
    ],
)
def test_grammar_accepts_the_format_and_nothing_else(sig, good, bad):
    for text in good:
        assert accepts(sig, text), text
    for text in bad:
        assert not accepts(sig, text), text


def test_reasoning_budget_targets_the_next_label():
    c = constraint(COT, budget_tokens=50)
    assert (c.budget_tokens, c.budget_exit) == (50, "\nAnswer:") and c.reserve_tokens > 0
    assert constraint(Signature.parse("q -> a"), budget_tokens=50).budget_tokens is None  # nothing to end


def test_json_schema_of_outputs():
    schema = json_schema(COT, budget_tokens=10)
    assert schema["required"] == ["reasoning", "answer"] and schema["additionalProperties"] is False
    assert schema["properties"]["answer"] == {"type": "number"} and schema["properties"]["reasoning"]["maxLength"] == 40


def test_predict_sends_the_constraint_and_the_cache_keys_it():
    lm = FakeLM(lambda m: "Reasoning: r\nAnswer: 4", structured_output="grammar", cache=RequestCache(":memory:"))
    cot = ChainOfThought("question -> answer: float").bind(lm)
    assert cot(question="2+2?").answer == 4.0
    sent = lm.calls[-1][1].constraint
    assert sent == cot.constraint() and sent.budget_tokens == cot.reasoning_budget
    free = ChainOfThought("question -> answer: float", constrained=False).bind(lm)
    free(question="2+2?")
    assert lm.calls[-1][1].constraint is None and len(lm.calls) == 2  # a different cache key: sent again
    lm.constrained = False  # the LM's setting, when the predictor has none
    cot2 = ChainOfThought("question -> answer: float").bind(lm)
    assert cot2.constraint() is None


def test_json_style_for_servers_with_json_schema_outputs():
    lm = FakeLM(lambda m: '{"reasoning": "r", "answer": 4}', structured_output="json_schema")
    cot = ChainOfThought("question -> answer: float").bind(lm)
    assert cot(question="2+2?").answer == 4.0
    system = lm.calls[-1][0][0]["content"]
    assert "JSON object" in system and '"answer": <a number>' in system
    assert json.loads(lm.calls[-1][1].constraint.json_schema)["required"] == ["reasoning", "answer"]


def test_unconstrained_backends_get_no_constraint():
    lm = FakeLM(["Answer: 4"])
    qa = Predict("question -> answer: int").bind(lm)
    assert qa(question="?").answer == 4 and lm.calls[-1][1].constraint is None
