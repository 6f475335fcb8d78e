"""Traces: every predictor call made while a program runs, recorded per call, thread-safe.

Recording uses a context variable, so each thread (each evaluated example) has its own trace and there
is no global switch to forget to reset.

Example:
    >>> from cotune.lm.fake import FakeLM
    >>> from cotune.program import Predict
    >>> qa = Predict("question -> answer").bind(FakeLM(lambda messages: "Answer: 4"))
    >>> with record() as trace:
    ...     _ = qa(question="2+2?")
    >>> [(s.predictor, s.outputs) for s in trace.steps]
    [('self', {'answer': '4'})]
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

from cotune.errors import DataError

T = TypeVar("T")

_active: contextvars.ContextVar[Recorder | None] = contextvars.ContextVar("cotune_trace", default=None)


@dataclass
class TraceStep:
    """One predictor call: what went in, what came out, and what it cost.

    ``zero_shot`` holds the messages the predictor renders for the same inputs without its demos, when
    they differ from ``messages`` (None: the call showed no demos); see `without_demos`.
    """

    predictor: str
    inputs: dict[str, Any]
    outputs: dict[str, Any] | None
    messages: list[dict[str, str]]
    completion: str
    usage: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    zero_shot: list[dict[str, str]] | None = None

    def __post_init__(self) -> None:
        if self.zero_shot == self.messages:  # e.g. demos without answers, which are not shown
            self.zero_shot = None
        self._zero_shot_recorded = True  # False: read from a file written before calls recorded it

    def without_demos(self) -> list[dict[str, str]]:
        """The messages of this call had the predictor shown no demos.

        Raises:
            DataError: the step was read from traces written before calls recorded their prompt without demos.
        """
        if not self._zero_shot_recorded:
            raise DataError(
                f"a call of predictor {self.predictor!r} comes from traces written by an older cotune, which did not "
                "record its prompt without demos; keep the demos (the same prompts when the calls showed none) "
                "or collect the traces again"
            )
        return self.messages if self.zero_shot is None else self.zero_shot

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if not self._zero_shot_recorded:  # written again (a run reusing a traces file), it stays unknown
            del d["zero_shot"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TraceStep:
        step = cls(**d)
        step._zero_shot_recorded = "zero_shot" in d
        return step


class Recorder:
    """Collects `TraceStep`s. ``names`` maps predictor ids to their names in the program being run."""

    def __init__(self, names: dict[int, str] | None = None):
        self.names = names or {}
        self.steps: list[TraceStep] = []
        self._lock = threading.Lock()

    def name_of(self, predictor: object) -> str:
        return self.names.get(id(predictor), "self")

    def add(self, step: TraceStep) -> None:
        with self._lock:
            self.steps.append(step)


@contextmanager
def record(program: Any = None) -> Iterator[Recorder]:
    """Record the predictor calls made in this context (this thread) into a new `Recorder`."""
    names = {}
    if program is not None and hasattr(program, "named_predictors"):
        names = {id(p): n for n, p in program.named_predictors()}
    rec = Recorder(names)
    token = _active.set(rec)
    try:
        yield rec
    finally:
        _active.reset(token)


def current() -> Recorder | None:
    """The recorder of the innermost `record` block in this context, if any."""
    return _active.get()


def run_together(calls: Sequence[Callable[[], T]]) -> list[T]:
    """Run ``calls`` at once, each in a thread of its own, and return their results in order.

    A local engine batches requests that arrive together, and computes the tokens that their prompts share
    (an instruction, demos, a question) once; calls made one after another cannot share them. Each call runs
    in a copy of this context, recording into a recorder of its own; their steps then join this context's
    recorder in the calls' order, not the order they finished, so a trace is the same on every run.

    Raises:
        the first exception a call raised (in the calls' order), after every call has ended.
    """
    if len(calls) <= 1:
        return [call() for call in calls]
    parent = current()
    recorders = [Recorder(parent.names) if parent is not None else None for _ in calls]

    def run(call: Callable[[], T], recorder: Recorder | None) -> T:
        _active.set(recorder)  # in the thread's own copy of the context
        return call()

    contexts = [contextvars.copy_context() for _ in calls]
    with ThreadPoolExecutor(len(calls)) as pool:
        futures = [pool.submit(c.run, run, call, r) for c, call, r in zip(contexts, calls, recorders, strict=True)]
        errors = [f.exception() for f in futures]
    if parent is not None:
        for recorder in recorders:
            for step in recorder.steps:  # type: ignore[union-attr]
                parent.add(step)
    failed = next((e for e in errors if e is not None), None)
    if failed is not None:
        raise failed
    return [f.result() for f in futures]
