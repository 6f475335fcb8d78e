"""Small programs for examples and quick experiments: what the docstrings of the optimizers run on FakeLM.

Example:
    >>> from cotune.lm import FakeLM
    >>> QA().bind(FakeLM(lambda m: "Answer: 4"))(question="2+2?").answer
    '4'
    >>> QA(cot=True).bind(FakeLM(lambda m: "Reasoning: two and two.\\nAnswer: 4"))(question="2+2?").reasoning
    'two and two.'
"""

from __future__ import annotations

from typing import Any

from cotune.program.chain_of_thought import ChainOfThought
from cotune.program.predict import Predict
from cotune.program.program import Program


class QA(Program):
    """One predictor, ``answer``: ``question -> answer`` (with ``cot=True`` a `ChainOfThought` that reasons first)."""

    def __init__(self, cot: bool = False):
        self.answer = (ChainOfThought if cot else Predict)("question -> answer")

    def forward(self, question: str) -> Any:
        return self.answer(question=question)
