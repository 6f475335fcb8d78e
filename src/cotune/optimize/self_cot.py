"""Self-generated chain of thought (MedPrompt): the model writes reasoning for training examples, and
only the runs whose answer passes the metric become demos.

This is what bootstrapping does, made explicit and reusable: `self_generated_demos` runs
`BootstrapFewShot` over the WHOLE trainset (every passing trace kept, no labeled fill-up) and returns
each predictor's demos with their reasoning, plus which training example each came from. `KNNFewShot`
uses them as its demo pool; the MedPrompt ladder benchmark draws random few-shot demos from them.

Example:
    >>> from cotune.data import Example
    >>> from cotune.lm import FakeLM
    >>> from cotune.program.examples import QA
    >>> lm = FakeLM(lambda m: "Reasoning: two and two.\\nAnswer: 4")  # right only for 2+2
    >>> data = [Example(question=q, answer=a).with_inputs("question") for q, a in [("1+2?", "3"), ("2+2?", "4")]]
    >>> gen = self_generated_demos(QA(cot=True).bind(lm), data, lambda ex, p: float(p["answer"] == ex["answer"]))
    >>> [(d["question"], d["reasoning"]) for d in gen.demos["answer"]], gen.sources["answer"], gen.n_passed
    ([('2+2?', 'two and two.')], [1], 1)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cotune.data.example import Example
from cotune.errors import ConfigError
from cotune.evaluate.metrics import Metric
from cotune.events import EventSink
from cotune.optimize.bootstrap import BootstrapFewShot
from cotune.program.program import Program


@dataclass
class SelfGenerated:
    """Demos from the program's own passing runs.

    Attributes:
        demos: predictor name → demos (inputs + outputs, reasoning included), in trainset order.
        sources: predictor name → the trainset index each demo came from (aligned with ``demos``).
        n_passed: training examples whose run passed the metric.
        n_run: training examples run.
        traces: the passing traces (see `BootstrapFewShot.traces_`).
    """

    demos: dict[str, list[Example]]
    sources: dict[str, list[int]]
    n_passed: int
    n_run: int
    traces: list[dict[str, Any]] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {name: len(ds) for name, ds in self.demos.items()}


def self_generated_demos(
    program: Program,
    trainset: Sequence[Example],
    metric: Metric | None = None,
    *,
    bootstrap: BootstrapFewShot | None = None,
    max_demos: int | None = None,
    events: EventSink | None = None,
) -> SelfGenerated:
    """Run ``program`` over ``trainset`` and keep, per predictor, the calls of runs that pass the metric.

    Args:
        program: the program (a chain-of-thought one, for rationales); it is not changed. Its own demos,
            if any, are shown while it generates.
        metric: decides which runs pass. Give this or ``bootstrap``.
        bootstrap: a configured `BootstrapFewShot` (metric, threshold, teacher, rounds, threads) to run
            instead; its demo limits are overridden: every passing run is kept and no labeled demo added.
        max_demos: stop after this many passing runs (default: run the whole trainset).

    Raises:
        ConfigError: both or neither of ``metric`` and ``bootstrap``; an empty trainset.
    """
    if (metric is None) == (bootstrap is None):
        raise ConfigError("self_generated_demos needs exactly one of metric= or bootstrap=")
    if not trainset:
        raise ConfigError("self_generated_demos needs a non-empty trainset")
    base = bootstrap if bootstrap is not None else BootstrapFewShot(metric)
    limit = len(trainset) if max_demos is None else max_demos
    runner = base.clone(max_bootstrapped_demos=limit, max_labeled_demos=0)
    runner.compile(program, trainset=trainset, events=events)

    # Bootstrap keeps traces in trainset order and each passing trace adds one demo per call of a
    # predictor, so walking the traces the same way tells where each demo came from.
    sources: dict[str, list[int]] = {name: [] for name in runner.demos_}
    for trace in runner.traces_:
        for step in trace["steps"]:
            if step.outputs is not None and step.predictor in sources and len(sources[step.predictor]) < limit:
                sources[step.predictor].append(trace["example"])
    demos = {name: [Example(d) for d in ds] for name, ds in runner.demos_.items()}
    for name in demos:
        if len(sources[name]) != len(demos[name]):  # a bootstrap that changed how it builds demos
            sources[name] = [-1] * len(demos[name])
    return SelfGenerated(demos, sources, runner.n_passed_, runner.n_run_, list(runner.traces_))


__all__ = ["SelfGenerated", "self_generated_demos"]
