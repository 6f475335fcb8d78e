"""BetterTogether (Soylu, Potts & Khattab, EMNLP 2024): alternate prompt and weight optimization.

Π → Θ → Π: bootstrap demos (raising the share of correct traces), fine-tune on the program's own successful
traces, then bootstrap demos again with the fine-tuned model so the prompts fit the new weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import Field

from cotune.data.example import Example
from cotune.errors import ConfigError
from cotune.evaluate.evaluate import evaluate
from cotune.evaluate.metrics import Metric
from cotune.events import EventSink, emit
from cotune.optimize.base import Events, Examples, Optimizer, require_valset
from cotune.optimize.params import Positive
from cotune.optimize.strategy import STEP_LETTERS, parse_strategy, strategy_name
from cotune.program.program import Program


@dataclass
class StepResult:
    """One finished step: which, its program and its score on the selection valset."""

    index: int
    kind: str  # "p" or "w"
    strategy: str  # the prefix up to and including this step, e.g. "p-w"
    program: Program = field(compare=False)
    val_score: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)


def split_for_step(
    optimizer: Optimizer, trainset: Sequence[Example], inner_val_ratio: float
) -> tuple[Sequence[Example], Sequence[Example] | None]:
    """Prompt optimizers select candidates on a validation set, so they get the trainset cut in two
    (the paper's Iris setting: 15 train / 35 val of 50); fine-tuning gets the whole trainset."""
    if not optimizer.selects_on_valset:
        return trainset, None
    n_val = round(len(trainset) * inner_val_ratio)
    if n_val < 1 or n_val >= len(trainset):
        raise ConfigError(f"inner_val_ratio={inner_val_ratio} leaves no train or val examples out of {len(trainset)}")
    return trainset[: len(trainset) - n_val], trainset[len(trainset) - n_val :]


class BetterTogether(Optimizer):
    """Run prompt and weight optimizers in sequence, scoring every step on a held-out valset.

    Args:
        metric: scores each step's program on ``valset`` (which the inner optimizers never select on).
        prompt: the Π optimizer (e.g. `BootstrapFewShotWithRandomSearch`).
        weights: the Θ optimizer (e.g. `BootstrapFinetune`).
        strategy: steps as a string ("p,w,p", "p-w-p") or sequence ("prompt", "weights", "prompt").
        return_best: return the best-scoring step's program instead of the last one (ties go to the earlier
            step, as they go to the earlier candidate in every cotune optimizer: fewer steps, same score).
        inner_val_ratio: share of the trainset that prompt steps use as their own valset.
        num_threads: threads for scoring steps.

    Example:
        >>> from cotune.lm import FakeLM
        >>> from cotune.program import Predict
        >>> class Noop(Optimizer):
        ...     def __init__(self, tag="x"):
        ...         self.tag = tag
        ...     def compile(self, program, *, trainset, valset=None, events=None):
        ...         return program.deepcopy()
        >>> class P(Program):
        ...     def __init__(self):
        ...         self.qa = Predict("q -> a")
        ...     def forward(self, q):
        ...         return self.qa(q=q)
        >>> data = [Example(q=str(i), a="ok").with_inputs("q") for i in range(10)]
        >>> bt = BetterTogether(lambda e, p: float(p["a"] == "ok"), prompt=Noop(), weights=Noop(), strategy="p,w,p")
        >>> _ = bt.compile(P().bind(FakeLM(["A: ok"])), trainset=data, valset=data)
        >>> [(s.strategy, s.val_score) for s in bt.steps_]
        [('zero-shot', 1.0), ('p', 1.0), ('p-w', 1.0), ('p-w-p', 1.0)]
    """

    def __init__(
        self,
        metric: Metric,
        *,
        prompt: Optimizer | None = None,
        weights: Optimizer | None = None,
        strategy: str | Sequence[str] = "p,w,p",
        return_best: bool = False,
        inner_val_ratio: Annotated[float, Field(gt=0, lt=1)] = 0.7,
        num_threads: Positive = 8,
    ):
        self.metric = metric
        self.prompt = prompt
        self.weights = weights
        self.strategy = strategy
        self.return_best = return_best
        self.inner_val_ratio = inner_val_ratio
        self.num_threads = num_threads

    def _optimizer_for(self, kind: str) -> Optimizer:
        opt = self.prompt if kind == "p" else self.weights
        if opt is None:
            raise ConfigError(f"strategy {self.strategy!r} has a {STEP_LETTERS[kind]} step but no `{STEP_LETTERS[kind]}=` optimizer was given")
        return opt

    def compile(
        self, program: Program, *, trainset: Examples, valset: Examples | None = None, events: Events = None
    ) -> Program:
        steps = parse_strategy(self.strategy)
        valset = require_valset(valset, "BetterTogether")
        for kind in steps:
            self._optimizer_for(kind)  # fail before any work

        current = program.deepcopy()
        score = self._score(current, valset, "zero-shot", events)
        self.steps_: list[StepResult] = [StepResult(0, "", "zero-shot", current, score)]
        for i, kind in enumerate(steps, 1):
            name = strategy_name(steps[:i])
            emit(events, "step.start", strategy=name, kind=kind, index=i)
            optimizer = self._optimizer_for(kind)
            train, val = split_for_step(optimizer, trainset, self.inner_val_ratio)
            current = optimizer.compile(current, trainset=train, valset=val, events=events)
            score = self._score(current, valset, name, events)
            self.steps_.append(StepResult(i, kind, name, current, score))
            emit(events, "step.done", strategy=name, kind=kind, index=i, val_score=score)

        self.best_index_ = max(range(len(self.steps_)), key=lambda i: (self.steps_[i].val_score, -i))
        self.best_score_ = self.steps_[self.best_index_].val_score
        chosen = self.steps_[self.best_index_] if self.return_best else self.steps_[-1]
        return chosen.program

    def _score(self, program: Program, valset: Sequence[Example], name: str, events: EventSink | None) -> float:
        return evaluate(program, valset, self.metric, num_threads=self.num_threads, events=events,
                        description=f"score {name}").score
