"""The lenient parser on free text: cases taken from real failures of the embedded models."""

from __future__ import annotations

import pytest

from cotune.errors import ParseError
from cotune.program import ChainOfThought
from cotune.program.format import parse
from cotune.tasks import gsm8k, iris

GSM8K = ChainOfThought(gsm8k.signature()).signature
IRIS = ChainOfThought(iris.signature()).signature


@pytest.mark.parametrize(
    "text, answer",
    [
        # Qwen2.5-Coder-0.5B wrote the label first, reasoning after it, and the number at the end.
        ("Answer: Let's break down the problem step by step.\n1. 48 / 2 = 24\n2. 48 + 24 = 72\nAnswer: 72", 72.0),
        ("Answer: Let's break down the problem step by step.\nShe sold 48 + 24 = 72 clips.\n\nThe answer is 72.", 72.0),
        ("Reasoning: 48 + 24 = 72\n**Answer:** $72", 72.0),
        ("Reasoning: 6 * 3 = 18\nFinal Answer: 18", 18.0),
        ("She earns 6 * 3 = 18 dollars.\n#### 18", 18.0),
        ("Reasoning: so we get \\boxed{1,250}", 1250.0),
        ('{"reasoning": "2 + 2", "answer": 4}', 4.0),
        ("Answer: 12\nReasoning: 3 * 4", 12.0),  # fields out of order
    ],
)
def test_gsm8k_answers(text, answer):
    assert parse(GSM8K, text)["answer"] == answer


@pytest.mark.parametrize(
    "text, species",
    [
        ("Reasoning: small petals.\nSpecies: **Setosa**", "setosa"),
        ("The petal is setosa, which is a type of flower that has no color.\nSpecies: Iris setosa.", "setosa"),
        # a restated answer: the last label that fits wins
        ("Species: versicolor\nReasoning: wait, the petals are long.\nSpecies: virginica", "virginica"),
        # the model answers, then invents the next flower: the invented answer is ignored
        ("Species: versicolor\n\nPetal Length: 1.4\nPetal Width: 0.2\nSpecies: setosa", "versicolor"),
        # the last label does not fit, an earlier one does
        ("Species: virginica\nSpecies: I am not sure", "virginica"),
    ],
)
def test_iris_answers(text, species):
    assert parse(IRIS, text)["species"] == species


@pytest.mark.parametrize(
    "signature, text, missing",
    [
        (GSM8K, "Reasoning: I do not know.", "answer"),
        (IRIS, "Reasoning: The petal and sepal measurements of an iris flower are 6.6 and 7.6.", "species"),
    ],
)
def test_missing_fields_stay_parse_errors(signature, text, missing):
    with pytest.raises(ParseError) as info:
        parse(signature, text)
    assert info.value.missing == [missing] and info.value.raw == text


def test_two_species_named_is_not_an_answer():
    with pytest.raises(ParseError, match="setosa or virginica.*not one of: setosa, versicolor, virginica"):
        parse(IRIS, "Species: setosa or virginica")
