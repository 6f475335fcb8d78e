"""How long MedPrompt (and the evaluation of its ensemble) will take, said before it starts.

The program runs are counted from the data and the hyperparameters (`MedPrompt.planned_runs`). The seconds
a run takes are measured, on this machine and model, as it is now: the same defaults take minutes on an idle
machine and an hour on a busy one, so no constant would be right within 2x. Two batches of training
examples are timed, run as many at a time as the optimizer will run them: the program as it is (what the
self-generation runs; with the request cache on, those answers are reused by it), and the program showing
``k`` labeled demos (the length of the ensemble's kNN prompts).

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cotune.data.example import Example
from cotune.evaluate.evaluate import evaluate
from cotune.optimize.bootstrap import with_demos
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
    opt: MedPrompt, trainset: Sequence[Example], evalset: Sequence[Example], *, plain: float, with_demos: float
) -> WorkEstimate:
    """The work of ``opt.compile`` on ``trainset`` and of evaluating its ensemble on ``evalset``, given the
    measured seconds of a run without demos (``plain``: self-generation) and with ``k`` demos (the ensemble)."""

    def phases(m: int) -> tuple[Phase, ...]:
        runs = opt.clone(m=m).planned_runs(trainset, evalset)
        out = (
            Phase("self-generation", runs["self-generation"], plain),
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
    request cache answered every timed run, so nothing was measured (a repeated command is fast anyway)."""
    if len(trainset) < 2:
        return None
    batch = list(trainset[1 : 1 + num_threads])
    # The first run pays one-time costs (kernels, grammar compilation) that no later run pays again.
    evaluate(program, trainset[:1], opt.metric, num_threads=1, max_errors=None)
    plain = seconds_per_run(program, batch, opt.metric, num_threads=num_threads, clock=clock)
    pool = list(trainset[1 + len(batch) :]) or list(trainset)
    shown = with_demos(program, {name: labeled_demos(p, pool, opt.k) for name, p in program.named_predictors()})
    demos = seconds_per_run(shown, batch, opt.metric, num_threads=num_threads, clock=clock)
    if plain is None or demos is None:
        return None
    return plan_medprompt(opt, trainset, evalset, plain=plain, with_demos=demos)


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
    lms = {id(p.lm): p.lm for p in program.predictors() if p.lm is not None}.values()
    before = [(lm.usage.calls, lm.usage.cache_hits) for lm in lms]
    start = clock()
    evaluate(program, examples, metric, num_threads=num_threads, max_errors=None)
    elapsed = clock() - start
    calls = sum(lm.usage.calls - c for lm, (c, _) in zip(lms, before, strict=True))
    hits = sum(lm.usage.cache_hits - h for lm, (_, h) in zip(lms, before, strict=True))
    if not examples or calls <= hits:
        return None
    return elapsed / (calls - hits) * calls / len(examples)


__all__ = ["Phase", "WorkEstimate", "measure_medprompt", "plan_medprompt", "seconds_per_run"]
