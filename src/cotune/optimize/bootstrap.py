"""`BootstrapFewShot`: demos from the program's own successful traces.

A teacher (the student itself by default) runs over training examples; traces whose prediction passes
the metric become demos — each predictor gets the inputs and outputs (reasoning included) of its own
calls, so every step of a multi-predictor program learns, not only the last. Labeled examples fill up
the remaining slots where the data has a predictor's fields.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cotune.data.example import Example
from cotune.errors import ConfigError
from cotune.evaluate.metrics import Metric, passes
from cotune.events import EventSink, Progress, emit
from cotune.optimize.base import Events, Examples, Optimizer
from cotune.optimize.labeled import labeled_demos
from cotune.optimize.rollouts import SEED_STRIDE, Item, Rollouts, Trace
from cotune.params import Count, Fraction, NonNegative, Positive
from cotune.program.program import Program


def build_teacher(
    student: Program, teacher: Program | None, trainset: Sequence[Example], labeled_k: int, seed: int
) -> Program:
    """The program that generates traces: a copy of ``teacher`` or of the student.

    With ``labeled_k > 0`` each teacher predictor shows up to ``labeled_k`` labeled demos, minus the one
    for the example being run (a demo holding the very answer would make every trace pass trivially).

    Raises:
        ConfigError: the teacher's predictors do not match the student's by name.
    """
    student_named = dict(student.named_predictors())
    new = teacher.deepcopy() if teacher is not None else student.deepcopy()
    named = dict(new.named_predictors())
    if list(named) != list(student_named):
        raise ConfigError(
            f"teacher predictors {list(named)} do not match the student's {list(student_named)}; "
            "a teacher must have the same structure"
        )
    for name, p in named.items():
        if p.lm is None:  # an unbound teacher runs on the student's model
            p.lm = student_named[name].lm
    if labeled_k > 0:
        pool = list(trainset)
        random.Random(seed).shuffle(pool)
        for p in named.values():
            p.demos = labeled_demos(p, pool, labeled_k)
            p.demo_selector = _excluding_own_example(p.demos)
    return new


def _excluding_own_example(demos: list[Example]) -> Callable[[Mapping[str, Any]], list[Example]]:
    def select(inputs: Mapping[str, Any]) -> list[Example]:
        def same(demo: Example) -> bool:
            shared = [k for k in inputs if k in demo]
            return bool(shared) and all(demo[k] == inputs[k] for k in shared)

        return [d for d in demos if not same(d)]

    return select


@dataclass
class Bootstrapped:
    """What one bootstrap produced: demos per predictor and where they came from."""

    demos: dict[str, list[Example]]
    counts: dict[str, dict[str, int]]
    traces: list[Trace] = field(default_factory=list)  # the passing traces used, in ``items`` order
    n_passed: int = 0
    n_run: int = 0


def trace_record(trace: Trace) -> dict[str, Any]:
    """A bootstrap trace as `BootstrapFewShot.traces_` keeps it (and run records save it)."""
    rollout = trace.rollout_id % SEED_STRIDE  # bootstrap samples with seed 0: the id is the rollout's number
    return {"example": trace.example_index, "rollout": rollout, "score": trace.score, "steps": trace.steps}


def collect_demos(
    runs: Rollouts,
    student: Program,
    items: Sequence[Item],
    *,
    threshold: float | None,
    max_bootstrapped_demos: int,
    max_labeled_demos: int,
    num_rollouts: int,
    seed: int,
    events: EventSink | None = None,
) -> Bootstrapped:
    """Bootstrap demos for every predictor of ``student`` from teacher runs over ``items``, in order.

    Examples run in chunks of ``runs.num_threads`` (parallel within a chunk) until enough traces passed;
    within a chunk, failures are re-run for up to ``num_rollouts - 1`` more rollouts. Traces are taken in
    ``items`` order, so the result does not depend on thread timing.
    """
    names = [n for n, _ in student.named_predictors()]
    passed: list[Trace] = []
    passing_keys: set[int] = set()
    n_run = 0
    chunk = max(1, runs.num_threads)
    with Progress(events, "bootstrap", total=len(items)) as bar:
        start = 0
        while max_bootstrapped_demos > 0 and len(passed) < max_bootstrapped_demos and start < len(items):
            todo, start = list(items[start : start + chunk]), start + chunk
            position = {key: i for i, (key, _) in enumerate(todo)}
            found: list[Trace] = []
            for rollout in range(num_rollouts):
                traces = runs.run(todo, rollout)
                n_run += len(todo) if rollout == 0 else 0
                failed = []
                for (key, ex), trace in zip(todo, traces, strict=True):
                    if passes(trace.score, threshold):
                        found.append(trace)
                        passing_keys.add(key)
                    else:
                        failed.append((key, ex))
                if rollout == 0:
                    bar.advance(len(todo), passed=len(passed) + len(found))
                if not failed or len(passed) + len(found) >= max_bootstrapped_demos:
                    break
                todo = failed
            passed += sorted(found, key=lambda t: position[t.example_index])
    passed = passed[:max_bootstrapped_demos]

    demos: dict[str, list[Example]] = {n: [] for n in names}
    for trace in passed:
        for step in trace.steps:
            if step.outputs is None or step.predictor not in demos:
                continue
            if len(demos[step.predictor]) < max_bootstrapped_demos:
                demos[step.predictor].append(Example({**step.inputs, **step.outputs}))
    counts = {n: {"bootstrapped": len(demos[n]), "labeled": 0} for n in names}

    used = {t.example_index for t in passed}
    rest = [ex for key, ex in items if key not in used]
    random.Random(seed).shuffle(rest)
    for name, predictor in student.named_predictors():
        extra = labeled_demos(predictor, rest, max(0, max_labeled_demos - len(demos[name])))
        demos[name] += extra
        counts[name]["labeled"] = len(extra)

    emit(events, "bootstrap.done", passed=len(passed), run=n_run, demos={n: counts[n] for n in names})
    return Bootstrapped(demos, counts, passed, len(passing_keys), n_run)


class BootstrapFewShot(Optimizer):
    """Few-shot demos bootstrapped from the program's own passing traces, topped up with labeled examples.

    Args:
        metric: ``(example, prediction) -> float``; a trace passes when its score passes the threshold.
        metric_threshold: the least passing score; None means full marks (score >= 1), as everywhere
            in cotune (see `cotune.evaluate.metrics.passes`).
        teacher: a program with the student's structure that generates traces (default: a copy of the
            student, instructions and demos included).
        teacher_labeled_demos: give the teacher this many labeled demos per predictor (never the example
            being run); 0 keeps the teacher's own demos.
        max_bootstrapped_demos: the most bootstrapped demos per predictor (= passing traces used).
        max_labeled_demos: the most demos per predictor in total; labeled examples fill what bootstrapping
            left (so 16 with 4 bootstrapped adds up to 12 labeled).
        num_rollouts: teacher runs per example (the word `BootstrapFinetune` uses too): the first is greedy,
            the later ones re-run only the examples that have not passed yet, sampling at ``rollout_temperature``.
        rollout_temperature: sampling temperature of the rollouts after the first.
        num_threads: parallel teacher runs (a local model batches concurrent calls).
        seed: order of the labeled fill-up (and of the teacher's labeled demos).

    Learned attributes: ``demos_`` (predictor name → demo dicts), ``demo_counts_`` (name → bootstrapped /
    labeled counts), ``traces_`` (the passing traces used, as `trace_record` dicts), ``n_passed_`` (passing
    examples among those run), ``n_run_`` (examples run).

    Example:
        >>> from cotune.lm import FakeLM
        >>> from cotune.program.examples import QA
        >>> train = [Example(question=f"{i}+{i}?", answer=str(2 * i)).with_inputs("question") for i in range(4)]
        >>> lm = FakeLM(lambda m: "Answer: 4")  # right for 2+2 only
        >>> opt = BootstrapFewShot(lambda ex, p: ex["answer"] == p["answer"], max_labeled_demos=2)
        >>> compiled = opt.compile(QA().bind(lm), trainset=train)
        >>> [(d["question"], d["answer"]) for d in compiled.answer.demos], opt.n_passed_
        ([('2+2?', '4'), ('0+0?', '0')], 1)
    """

    selects_on_valset = False  # nothing is chosen by validation score: it gets the whole trainset

    def __init__(
        self,
        metric: Metric,
        *,
        metric_threshold: Fraction | None = None,
        teacher: Program | None = None,
        teacher_labeled_demos: Count = 0,
        max_bootstrapped_demos: Count = 4,
        max_labeled_demos: Count = 16,
        num_rollouts: Positive = 1,
        rollout_temperature: NonNegative = 0.7,
        num_threads: Positive = 8,
        seed: int = 0,
    ):
        self.metric = metric
        self.metric_threshold = metric_threshold
        self.teacher = teacher
        self.teacher_labeled_demos = teacher_labeled_demos
        self.max_bootstrapped_demos = max_bootstrapped_demos
        self.max_labeled_demos = max_labeled_demos
        self.num_rollouts = num_rollouts
        self.rollout_temperature = rollout_temperature
        self.num_threads = num_threads
        self.seed = seed

    def compile(
        self, program: Program, *, trainset: Examples, valset: Examples | None = None, events: Events = None
    ) -> Program:
        """Return a copy of ``program`` with bootstrapped (+ labeled) demos; ``program`` is unchanged.

        Raises:
            ConfigError: a bad hyperparameter, an empty trainset or a teacher of another structure.
        """
        if not trainset:
            raise ConfigError("BootstrapFewShot needs a non-empty trainset")
        result = collect_demos(
            self.teacher_rollouts(program, trainset, self.seed),
            program,
            list(enumerate(trainset)),
            threshold=self.metric_threshold,
            max_bootstrapped_demos=self.max_bootstrapped_demos,
            max_labeled_demos=self.max_labeled_demos,
            num_rollouts=self.num_rollouts,
            seed=self.seed,
            events=events,
        )
        self.demos_ = {n: [d.to_dict() for d in ds] for n, ds in result.demos.items()}
        self.demo_counts_ = result.counts
        self.traces_ = [trace_record(t) for t in result.traces]
        self.n_passed_ = result.n_passed
        self.n_run_ = result.n_run
        return with_demos(program, result.demos)

    def teacher_rollouts(self, student: Program, trainset: Sequence[Example], seed: int) -> Rollouts:
        """The teacher's runs that bootstraps of ``student`` share (``seed`` orders the teacher's labeled demos)."""
        teacher = build_teacher(student, self.teacher, trainset, self.teacher_labeled_demos, seed)
        return Rollouts(teacher, self.metric, temperature=self.rollout_temperature, num_threads=self.num_threads)


def with_demos(program: Program, demos: Mapping[str, list[Example]]) -> Program:
    """A copy of ``program`` whose predictors' demos are replaced by ``demos`` (by predictor name).

    A per-input demo selector (kNN) is dropped: it would choose among the old demos, not these.
    """
    new = program.deepcopy()
    for name, predictor in new.named_predictors():
        predictor.demos = list(demos.get(name, []))
        predictor.demo_selector = None
    return new
