"""`ChainOfThought`: a `Predict` whose signature gains a reasoning field before the outputs."""

from __future__ import annotations

from typing import Any

from cotune.program.predict import Predict
from cotune.program.signature import Signature, ensure_signature

REASONING_DESC = "think step by step"
# Tokens of reasoning before a constrained run is made to answer. Sized from measured chains of thought:
# see benchmarks/format_adherence.py (reasoning tokens per call, free vs constrained).
REASONING_BUDGET = 160


class ChainOfThought(Predict):
    """Ask for ``reasoning`` first, then the outputs. The reasoning is optional when parsing, so a model
    that skips it still yields its answer; demos without reasoning (labeled ones) stay usable. Under
    constrained decoding the reasoning is capped at ``reasoning_budget`` tokens, then the answer follows.

    Example:
        >>> from cotune.lm.fake import FakeLM
        >>> cot = ChainOfThought("question -> answer").bind(FakeLM(["Reasoning: 2 and 2.\\nAnswer: 4"]))
        >>> pred = cot(question="2+2?")
        >>> pred.reasoning, pred.answer
        ('2 and 2.', '4')
    """

    def __init__(
        self,
        signature: str | Signature,
        *,
        reasoning_desc: str = REASONING_DESC,
        reasoning_budget: int | None = REASONING_BUDGET,
        **kwargs: Any,
    ):
        base = ensure_signature(signature)
        super().__init__(
            base.prepend_output("reasoning", reasoning_desc, required=False),
            reasoning_budget=reasoning_budget,
            **kwargs,
        )
