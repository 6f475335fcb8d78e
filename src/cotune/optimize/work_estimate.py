"""How long MedPrompt (and the evaluation of its ensemble) will take, said before it starts.

The program runs are counted from the data and the hyperparameters (`MedPrompt.planned_runs`). The seconds
a run takes are measured, on this machine and model, as it is now: the same defaults take minutes on an idle
machine and an hour on a busy one, so no constant would be right within 2x. Batches of training examples are
timed, run as many at a time as the optimizer will run them: the program as it is (what the self-generation
runs; with the request cache on, it reuses those answers), and the program showing each question its own
``k`` demos with their reasoning, as the ensemble's kNN prompts do (see `measure_medprompt`): on a 2-core CPU
such a run took 4x a plain one (SmolLM2-135M, BBH date understanding: 2.0 s and 0.6 s a run, 8 at a time).
On a machine shared with other work the speed changes from batch to batch, and so does the estimate's error.

Example:
    >>> from cotune.optimize.medprompt import MedPrompt
    >>> from cotune.tasks.multiple_choice import mc_example
    >>> questions = [mc_example("q", list("abcdef"), "a")] * 150
    >>> work = plan_medprompt(MedPrompt(lambda ex, p: 1.0), questions[:50], questions, plain=2.0, with_demos=3.0)
    >>> round(work.seconds / 60), [(s, round(t / 60)) for s, t in work.shorter]
    (39, [('-P m=3', 24), ('-P m=1', 9)])
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cotune.data.example import Example
from cotune.evaluate.evaluate import Row, evaluate
from cotune.evaluate.metrics import passes
from cotune.optimize.labeled import labeled_demos
from cotune.optimize.medprompt import MedPrompt
from cotune.program.program import Program

SHORTER_M = (3, 1)  # ensemble sizes offered as shorter runs; m=1 is kNN few-shot CoT without the ensemble


@dataclass(frozen=True)
class Phase:
    """One kind of work: ``runs`` program runs of ``seconds_per_run`` each."""

    name: str
    runs: int
    seconds_per_run: float

    @property
    def seconds(self) -> float:
        return self.runs * self.seconds_per_run


@dataclass(frozen=True)
class WorkEstimate:
    """The phases of the work, and settings that shorten it with the seconds each would take."""

    phases: tuple[Phase, ...]
    shorter: tuple[tuple[str, float], ...] = ()

    @property
    def seconds(self) -> float:
        return sum(p.seconds for p in self.phases)


def plan_medprompt(
    opt: MedPrompt,
    trainset: Sequence[Example],
    evalset: Sequence[Example],
    *,
    plain: float,
    with_demos: float,
    cached: int = 0,
) -> WorkEstimate:
    """The work of ``opt.compile`` on ``trainset`` and of evaluating its ensemble on ``evalset``, given the
    measured seconds of a run without demos (``plain``: self-generation) and with ``k`` demos (the ensemble);
    ``cached``: self-generation runs the request cache already holds (the timed ones)."""

    def phases(m: int) -> tuple[Phase, ...]:
        runs = opt.clone(m=m).planned_runs(trainset, evalset)
        out = (
            Phase("self-generation", max(0, runs["self-generation"] - cached), plain),
            Phase("ensemble", runs["ensemble"], with_demos),
        )
        return tuple(p for p in out if p.runs)

    shorter = tuple((f"-P m={m}", WorkEstimate(phases(m)).seconds) for m in SHORTER_M if m < opt.m)
    return WorkEstimate(phases(opt.m), shorter)


def measure_medprompt(
    opt: MedPrompt,
    program: Program,
    trainset: Sequence[Example],
    evalset: Sequence[Example],
    *,
    num_threads: int,
    clock: Callable[[], float] = time.monotonic,
) -> WorkEstimate | None:
    """`plan_medprompt` with the seconds per run measured on ``program`` (bound to its LM); None when the
    request cache answered every timed run, so nothing was measured (a repeated command is fast anyway).

    Three batches of ``num_threads`` training examples run: one untimed (the first batch pays one-time costs:
    kernels for new shapes, grammar compilation), one timed as the self-generation runs them (with the
    request cache on, the self-generation reuses both), and the timed examples again, each shown its own
    ``k`` demos as the ensemble's kNN does (demos shared by a batch would be computed once for all its rows,
    and time too little): passing runs of the first two batches with their reasoning, and labeled examples.
    The last costs one batch more than `compile` would run.
    """
    n = min(num_threads, len(trainset))
    warm, timed = (trainset[:n], trainset[n : 2 * n]) if len(trainset) >= 2 * n else ([], trainset[:n])
    rows = list(evaluate(program, warm, opt.metric, num_threads=num_threads, max_errors=None).rows) if warm else []
    plain, timed_rows = _timed(program, timed, opt.metric, num_threads, clock)
    shown = program.deepcopy()
    for name, predictor in shown.named_predictors():
        pool = _pool(predictor, name, rows + timed_rows, trainset, opt, size=opt.k + n)
        predictor.demos, predictor.demo_selector = pool, _Rotating(pool, opt.k) if pool else None
    with_k, _ = _timed(shown, timed, opt.metric, num_threads, clock)
    if plain is None or with_k is None:
        return None
    caches = all(p.lm is None or p.lm.cache is not None for p in program.predictors())
    cached = len(warm) + len(timed) if caches else 0
    return plan_medprompt(opt, trainset, evalset, plain=plain, with_demos=with_k, cached=cached)


def _pool(predictor: Any, name: str, rows: Sequence[Row], trainset: Sequence[Example], opt: MedPrompt, size: int):
    """Up to ``size`` demos for predictor ``name``: its calls in passing runs (with their reasoning), then
    labeled training examples."""
    threshold = opt.bootstrap.metric_threshold if opt.bootstrap is not None else None
    pool = [
        Example({**step.inputs, **step.outputs})
        for row in rows
        if row.error is None and passes(row.score, threshold)
        for step in row.trace
        if step.predictor == name and step.outputs is not None
    ][:size]
    return pool + labeled_demos(predictor, trainset, size - len(pool))


class _Rotating:
    """A demo selector giving each input its own ``k`` consecutive demos of the pool, the start chosen by the
    input: different inputs see different demos, as with kNN, without an embedder."""

    def __init__(self, pool: Sequence[Example], k: int):
        self.pool, self.k = list(pool), min(k, len(pool))

    def __call__(self, inputs: Mapping[str, Any]) -> list[Example]:
        start = zlib.crc32(repr(sorted(inputs.items())).encode())
        return [self.pool[(start + i) % len(self.pool)] for i in range(self.k)]


def seconds_per_run(
    program: Program,
    examples: Sequence[Example],
    metric: Callable[..., float],
    *,
    num_threads: int,
    clock: Callable[[], float] = time.monotonic,
) -> float | None:
    """Wall seconds per example of ``program`` on ``examples`` run ``num_threads`` at a time, as if no call
    were a cache hit (the time is shared among the calls sent); None when every call was one."""
    return _timed(program, examples, metric, num_threads, clock)[0]


def _timed(program, examples, metric, num_threads, clock) -> tuple[float | None, list[Row]]:
    lms = {id(p.lm): p.lm for p in program.predictors() if p.lm is not None}.values()
    before = [(lm.usage.calls, lm.usage.cache_hits) for lm in lms]
    start = clock()
    rows = list(evaluate(program, examples, metric, num_threads=num_threads, max_errors=None).rows)
    elapsed = clock() - start
    calls = sum(lm.usage.calls - c for lm, (c, _) in zip(lms, before, strict=True))
    hits = sum(lm.usage.cache_hits - h for lm, (_, h) in zip(lms, before, strict=True))
    if not examples or calls <= hits:
        return None, rows
    return elapsed / (calls - hits) * calls / len(examples), rows


__all__ = ["Phase", "WorkEstimate", "measure_medprompt", "plan_medprompt", "seconds_per_run"]
