"""Rollouts: a teacher program run over training examples several times, one `Trace` per run on one example.

Bootstrapping (few-shot demos, Π) and trace collection (fine-tuning, Θ) both run a teacher this way:
rollout 0 decodes as the teacher is configured, later rollouts sample. `Rollouts` runs them and remembers
every run, so callers that share it never run an example twice in one rollout; `collect_traces` runs every
example for a number of rollouts, grouped so that each group fills a local engine's batch.

Example:
    >>> from cotune.data import Example
    >>> from cotune.lm import FakeLM
    >>> from cotune.program import Predict
    >>> qa = Predict("question -> answer").bind(FakeLM(lambda m: "Answer: 4"))
    >>> data = [Example(question="2+2?", answer="4").with_inputs("question")]
    >>> runs = Rollouts(qa, lambda ex, p: float(p["answer"] == ex["answer"]), temperature=0.9)
    >>> [(t.rollout_id, t.temperature, t.score) for t in runs.run(list(enumerate(data)), 1)]
    [(1, 0.9, 1.0)]
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from cotune.data.example import Example
from cotune.errors import ConfigError, EvaluationError
from cotune.evaluate.evaluate import EvaluationResult, Row, evaluate
from cotune.evaluate.metrics import Metric, passes
from cotune.events import EventSink, emit
from cotune.program.program import Program
from cotune.program.trace import TraceStep

FORMAT_VERSION = 1
ROLLOUT_FILL = 64  # calls that sampled rollouts are grouped up to (a local engine's batch)
SEED_STRIDE = 1000  # sampled rollout r of a seed runs under rollout id seed * SEED_STRIDE + r

Item = tuple[int, Example]  # (index in the training set, example): the key of a run


@dataclass
class Trace:
    """One run of the teacher on one example: its predictor calls, prediction and score, and provenance.

    Attributes:
        example_index: position of the example in the training set.
        inputs / labels: the example, so the file stands on its own.
        steps: every predictor call, with the exact messages sent and the raw completion.
        rollout_id: 0 for the teacher's own decoding; ``seed * 1000 + rollout`` for a sampled rollout.
        temperature: the sampling temperature of a rollout (None: the teacher's own setting).
        program: the teacher's `Program.fingerprint()` (its prompts); model: its ``lm.spec()``.
        source: "run" (the teacher ran) or "labels" (written from the example's gold labels, see
            `cotune.optimize.traces.labeled_traces`).
    """

    example_index: int
    inputs: dict[str, Any]
    labels: dict[str, Any]
    prediction: dict[str, Any] | None
    score: float
    steps: list[TraceStep]
    rollout_id: int = 0
    temperature: float | None = None
    program: str | None = None
    model: dict[str, Any] | None = None
    seed: int = 0
    error: str | None = None
    source: str = "run"

    @classmethod
    def from_row(cls, row: Row, example_index: int, **provenance: Any) -> Trace:
        """The trace of an evaluated example (`evaluate`'s `Row`); ``provenance``: rollout_id, temperature..."""
        return cls(
            example_index,
            row.inputs,
            row.labels,
            row.prediction,
            row.score,
            list(row.trace),
            error=row.error,
            **provenance,
        )

    def passed(self, threshold: float | None = None) -> bool:
        """Whether the run counts as a success: score >= ``threshold`` (None: full marks, score >= 1)."""
        return self.error is None and passes(self.score, threshold)

    def key(self) -> str:
        """Identity for deduplication: the predictor calls (who, what was sent, what came back)."""
        return json.dumps([(s.predictor, s.messages, s.completion) for s in self.steps], sort_keys=True)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "example_index": self.example_index,
            "inputs": self.inputs,
            "labels": self.labels,
            "prediction": self.prediction,
            "score": self.score,
            "rollout_id": self.rollout_id,
            "temperature": self.temperature,
            "program": self.program,
            "model": self.model,
            "seed": self.seed,
            "error": self.error,
            "source": self.source,
            "steps": [s.to_dict() for s in self.steps],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Trace:
        d = dict(d)
        d.pop("format_version", None)
        d["steps"] = [TraceStep.from_dict(s) for s in d.get("steps", [])]
        return cls(**d)


class Rollouts:
    """Runs a teacher on training examples, one rollout at a time or several at once, remembering every run by (example key, rollout).

    Rollout 0 decodes as the teacher is configured; rollout r > 0 samples at ``temperature`` (with ``min_p``
    when > 0) under rollout id ``seed * 1000 + r``, so a caching LM answers afresh in every rollout, and the
    same again for the same seed. Callers sharing one `Rollouts` (the candidates of a random search) run
    an example once per rollout even when they ask for it at the same time: each runs what it claimed,
    then waits for what others claimed. Thread-safe; the teacher is never mutated.

    Args:
        teacher: a program, or a bare predictor.
        metric: scores each run.
        num_threads: parallel runs (shared by the rollouts that run at the same time).
        max_errors: `evaluate`'s limit on exceptions per rollout; None records them all, but a rollout in
            which every example raised is a broken program and raises `EvaluationError`.
        events: progress events of each rollout's evaluation.
        describe: the description of rollout r's evaluation (progress, errors).
    """

    def __init__(
        self,
        teacher: Program | Any,
        metric: Metric,
        *,
        temperature: float = 0.7,
        min_p: float = 0.0,
        seed: int = 0,
        num_threads: int = 8,
        max_errors: int | None = None,
        events: EventSink | None = None,
        describe: Callable[[int], str] = lambda r: f"teacher rollout {r}",
    ):
        self.teacher, self.metric = teacher, metric
        self.temperature, self.min_p, self.seed = temperature, min_p, seed
        self.num_threads, self.max_errors, self.events, self.describe = num_threads, max_errors, events, describe
        lm = _lm_of(teacher)
        self._provenance = {
            "program": teacher.fingerprint() if isinstance(teacher, Program) else None,
            "model": lm.spec() if lm is not None else None,
            "seed": seed,
        }
        self._runs: dict[tuple[int, int], Future[Trace]] = {}
        self._programs: dict[int, Any] = {0: teacher}
        self._lock = threading.Lock()

    def rollout_id(self, rollout: int) -> int:
        return 0 if rollout == 0 else self.seed * SEED_STRIDE + rollout

    def program(self, rollout: int) -> Any:
        """The teacher as rollout number ``rollout`` runs it (a sampling copy after rollout 0)."""
        with self._lock:
            if rollout not in self._programs:
                rollout_id = self.rollout_id(rollout)
                self._programs[rollout] = sampling_copy(self.teacher, self.temperature, rollout_id, self.min_p)
            return self._programs[rollout]

    def run(self, items: Sequence[Item], rollout: int) -> list[Trace]:
        """The traces of ``items`` in ``rollout``, running (in parallel) those nobody ran yet."""
        return self.run_rollouts(items, [rollout])[0]

    def run_rollouts(self, items: Sequence[Item], rollouts: Sequence[int]) -> list[list[Trace]]:
        """The traces of ``items`` in each of ``rollouts`` (one list per rollout); the rollouts run at the same time."""
        claims: list[tuple[int, list[Item]]] = []
        with self._lock:
            for rollout in rollouts:
                mine = []
                for key, ex in items:
                    if (key, rollout) not in self._runs:
                        self._runs[(key, rollout)] = Future()
                        mine.append((key, ex))
                if mine:
                    claims.append((rollout, mine))
        if claims:
            # Run everything this call claimed before waiting on other callers: no claim waits on another.
            threads = max(1, self.num_threads // len(claims))  # the calls in flight stay at num_threads
            if len(claims) == 1:
                results = [self._run_claim(*claims[0], threads)]
            else:
                with ThreadPoolExecutor(len(claims)) as pool:
                    results = list(pool.map(lambda c: self._run_claim(*c, threads), claims))
            if self.max_errors is None:
                for result in results:
                    errors = [r for r in result.rows if r.error_kind == "exception"]
                    if len(errors) == len(result.rows):
                        # Parse failures are the model's fault; an exception on every example is a bug to show.
                        raise EvaluationError(
                            f"the teacher program raised on all {len(errors)} examples; first: {errors[0].error}"
                        )
        return [[self._runs[(key, rollout)].result() for key, _ in items] for rollout in rollouts]

    def _run_claim(self, rollout: int, mine: list[Item], threads: int) -> EvaluationResult:
        try:
            result = evaluate(
                self.program(rollout),
                [ex for _, ex in mine],
                self.metric,
                num_threads=threads,
                max_errors=self.max_errors,
                events=self.events,
                description=self.describe(rollout),
            )
        except BaseException as e:
            for key, _ in mine:
                self._runs[(key, rollout)].set_exception(e)
            raise
        provenance = self._provenance | {
            "rollout_id": self.rollout_id(rollout),
            "temperature": None if rollout == 0 else self.temperature,
        }
        for (key, _), row in zip(mine, result.rows, strict=True):
            self._runs[(key, rollout)].set_result(Trace.from_row(row, key, **provenance))
        return result


def collect_traces(
    teacher: Program | Any,
    examples: Sequence[Example],
    metric: Metric,
    *,
    num_rollouts: int = 1,
    temperature: float = 0.7,
    num_threads: int = 8,
    seed: int = 0,
    stop_at_first_pass: bool = False,
    threshold: float | None = None,
    min_p: float = 0.0,
    events: EventSink | None = None,
) -> list[Trace]:
    """Run ``teacher`` on every example ``num_rollouts`` times and return every run as a `Trace`.

    Rollout 0 decodes as the teacher is configured (usually greedy); rollouts 1..k-1 are the sampled
    rollouts of `Rollouts` (at ``temperature``, rollout ids ``seed * 1000 + r``, with ``min_p`` when > 0,
    see `cotune.lm.GenerationConfig`), so the request cache returns the same samples for the same seed
    and new ones for another seed. The teacher is never mutated. With ``stop_at_first_pass``, an example
    gets no more rollouts once one of its runs passed (`Trace.passed` with ``threshold``): many samples
    for the hard examples, one for the easy ones.

    Raises:
        ConfigError: ``num_rollouts`` < 1 or a negative temperature.
        EvaluationError: too many examples raised exceptions (a broken program, not a weak one).
    """
    if num_rollouts < 1:
        raise ConfigError(f"num_rollouts must be >= 1, got {num_rollouts}")
    if temperature < 0:
        raise ConfigError(f"rollout temperature must be >= 0, got {temperature}")

    def describe(r: int) -> str:
        return "collect traces" if num_rollouts == 1 else f"collect traces (rollout {r + 1}/{num_rollouts})"

    runs = Rollouts(
        teacher,
        metric,
        temperature=temperature,
        min_p=min_p,
        seed=seed,
        num_threads=num_threads,
        max_errors=10,
        events=events,
        describe=describe,
    )
    traces: list[Trace] = []
    todo: list[Item] = list(enumerate(examples))
    fill = min(len(examples), ROLLOUT_FILL)
    r = 0
    while r < num_rollouts and todo:
        # Rollouts after the first are sampled several at a time when few examples are left, so each group
        # is about as large as the first (a local engine batches them); with stop_at_first_pass the runs
        # after an example's first pass are dropped, so the traces are those of one rollout at a time.
        width = 1 if r == 0 else min(num_rollouts - r, max(1, -(-fill // len(todo))))
        group = list(range(r, r + width))
        passed: dict[int, int] = {}  # example index → the first rollout of this group that passed
        for rollout, rollout_traces in zip(group, runs.run_rollouts(todo, group), strict=True):
            for trace in rollout_traces:
                index = trace.example_index
                if stop_at_first_pass and passed.get(index, rollout) < rollout:
                    continue  # one rollout at a time would not have run this one
                traces.append(trace)
                if trace.passed(threshold):
                    passed.setdefault(index, rollout)
        if stop_at_first_pass:
            todo = [(i, ex) for i, ex in todo if i not in passed]
        r += width
    emit(events, "traces.collected", n=len(traces), passed=sum(t.passed() for t in traces))
    return traces


def sampling_copy(teacher: Any, temperature: float, rollout_id: int, min_p: float = 0.0) -> Any:
    """A copy of the teacher (a program or a bare predictor) whose predictors sample at ``temperature``
    under ``rollout_id``."""
    if isinstance(teacher, Program):
        new = teacher.deepcopy()
        predictors = new.predictors()
    else:
        new = copy.copy(teacher)
        new.config = dict(getattr(teacher, "config", {}))
        predictors = [new]
    for p in predictors:
        p.config = {**p.config, "temperature": temperature, "rollout_id": rollout_id}
        if min_p > 0:
            p.config["min_p"] = min_p
    return new


def _lm_of(program: Any) -> Any:
    if isinstance(program, Program):
        try:
            return program.lm
        except ConfigError:  # predictors on different LMs (one adapter per predictor)
            return program.predictors()[0].lm if program.predictors() else None
    return getattr(program, "lm", None)


__all__ = ["ROLLOUT_FILL", "Rollouts", "Trace", "collect_traces", "sampling_copy"]
