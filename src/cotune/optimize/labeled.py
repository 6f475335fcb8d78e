"""`LabeledFewShot`: demos straight from labeled training examples, plus the helpers that pick them."""

from __future__ import annotations

import random
from collections.abc import Sequence

from cotune.data.example import Example
from cotune.optimize.base import Events, Examples, Optimizer
from cotune.params import Count
from cotune.program.predict import Predict
from cotune.program.program import Program


def fits(predictor: Predict, example: Example) -> bool:
    """Whether ``example`` can serve as a labeled demo for ``predictor``.

    It must hold every required output of the signature (a demo without the answer teaches nothing) and
    at least one input. Inputs may be partly missing: the answer step of a multi-hop program gets
    question → answer demos without the retrieved context, as in DSPy. Intermediate steps (e.g. search
    queries) have no labels in the data, so they get no labeled demos.
    """
    sig = predictor.signature
    has_outputs = all(example.get(f.name) is not None for f in sig.outputs if f.required)
    has_an_input = any(example.get(name) is not None for name in sig.input_names)
    return has_outputs and has_an_input


def as_demo(predictor: Predict, example: Example) -> Example:
    """Keep only the signature's fields, so other labels never leak into the prompt."""
    names = predictor.signature.input_names + predictor.signature.output_names
    return Example({k: example[k] for k in names if example.get(k) is not None})


def labeled_demos(predictor: Predict, examples: Sequence[Example], k: int) -> list[Example]:
    """The first ``k`` examples (in the given order) that fit ``predictor``, as demos."""
    out: list[Example] = []
    for ex in examples:
        if len(out) >= k:
            break
        if fits(predictor, ex):
            out.append(as_demo(predictor, ex))
    return out


class LabeledFewShot(Optimizer):
    """Give every predictor up to ``k`` labeled training examples as demos (no LM calls).

    Args:
        k: the most demos per predictor.
        sample: draw the examples at random (seeded); False takes them in trainset order.
        seed: the sampling seed.

    Example:
        >>> from cotune.program.examples import QA
        >>> train = [Example(question=f"{i}+{i}?", answer=str(2 * i)).with_inputs("question") for i in range(5)]
        >>> compiled = LabeledFewShot(k=2, sample=False).compile(QA(), trainset=train)
        >>> [d["answer"] for d in compiled.answer.demos]
        ['0', '2']
    """

    selects_on_valset = False  # nothing is chosen by validation score: it gets the whole trainset

    def __init__(self, k: Count = 16, *, sample: bool = True, seed: int = 0):
        self.k = k
        self.sample = sample
        self.seed = seed

    def compile(
        self, program: Program, *, trainset: Examples, valset: Examples | None = None, events: Events = None
    ) -> Program:
        """Return a copy of ``program`` whose predictors hold labeled demos (``demos_`` records them)."""
        pool = list(trainset)
        if self.sample:
            random.Random(self.seed).shuffle(pool)
        new = program.deepcopy()
        self.demos_: dict[str, list[dict]] = {}
        for name, predictor in new.named_predictors():
            predictor.demos = labeled_demos(predictor, pool, self.k)
            predictor.demo_selector = None  # a kNN selector would choose among the old demos
            self.demos_[name] = [d.to_dict() for d in predictor.demos]
        return new
