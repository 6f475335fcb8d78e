"""`evaluate`: run a program over a dataset in parallel threads, one row per example."""

from __future__ import annotations

import math
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cotune.data.example import Example
from cotune.errors import ConfigError, EvaluationError, InfrastructureError, ParseError, is_infrastructure_error
from cotune.evaluate.metrics import Metric
from cotune.events import EventSink, Progress
from cotune.files import write_json_atomic
from cotune.lm.usage import Usage
from cotune.program.trace import TraceStep, record


@dataclass
class Row:
    """The outcome on one example. ``error_kind`` is "parse" (the model's output did not parse: a
    failed prediction, score 0, raw text kept), "exception" (the program raised), "metric" (the metric
    raised: a bug in it, which stops the evaluation) or "infrastructure" (the LM or machine failed; such
    a row stops the evaluation and is never a result)."""

    index: int
    inputs: dict[str, Any]
    labels: dict[str, Any]
    prediction: dict[str, Any] | None
    score: float
    error: str | None = None
    error_kind: str | None = None
    raw: str | None = None
    usage: dict[str, Any] = field(default_factory=dict)
    trace: list[TraceStep] = field(default_factory=list)

    def to_dict(self, with_trace: bool = True) -> dict[str, Any]:
        d = asdict(self)
        if not with_trace:
            d.pop("trace")
        return d


@dataclass
class EvaluationResult:
    """Mean score over examples (0–1), the rows, and the LM usage they caused."""

    score: float
    rows: list[Row]
    usage: Usage
    usage_by_predictor: dict[str, Usage]
    seconds: float
    metric: str = ""

    @property
    def n(self) -> int:
        return len(self.rows)

    def scores(self) -> list[float]:
        """Per-example scores in the order of the evaluated examples (for paired comparisons)."""
        return [r.score for r in sorted(self.rows, key=lambda r: r.index)]

    @property
    def parse_failures(self) -> int:
        return sum(r.error_kind == "parse" for r in self.rows)

    @property
    def errors(self) -> int:
        return sum(r.error_kind == "exception" for r in self.rows)

    @property
    def format_adherence(self) -> float:
        """Share of predictor calls whose output parsed."""
        steps = [s for r in self.rows for s in r.trace]
        return sum(s.error is None for s in steps) / len(steps) if steps else 1.0

    def summary(self) -> dict[str, Any]:
        return {
            "score": self.score,
            "n": self.n,
            "metric": self.metric,
            "parse_failures": self.parse_failures,
            "errors": self.errors,
            "format_adherence": self.format_adherence,
            "seconds": self.seconds,
            "usage": self.usage.to_dict(),
            "usage_per_call": self.usage.per_call(),
            "usage_by_predictor": {k: v.to_dict() for k, v in self.usage_by_predictor.items()},
        }

    def to_dict(self, with_trace: bool = True) -> dict[str, Any]:
        return self.summary() | {"rows": [r.to_dict(with_trace) for r in self.rows]}

    def save(self, path: str | Path, with_trace: bool = True) -> Path:
        """Write the summary and rows as JSON, atomically (a reader never sees half a file)."""
        return write_json_atomic(Path(path), self.to_dict(with_trace))

    def __repr__(self) -> str:
        return (
            f"EvaluationResult(score={self.score:.3f}, n={self.n}, parse_failures={self.parse_failures}, "
            f"errors={self.errors}, prompt_tokens/call={self.usage.per_call()['prompt_tokens']:.0f})"
        )


def evaluate(
    program: Callable[..., Any],
    dataset: Sequence[Example],
    metric: Metric,
    *,
    num_threads: int = 8,
    max_errors: int | None = 10,
    events: EventSink | None = None,
    description: str = "evaluate",
) -> EvaluationResult:
    """Run ``program(**example.inputs())`` on every example and score it with ``metric``.

    Parse failures are failed predictions (score 0), not errors. Exceptions raised by the program are
    recorded in their rows; after more than ``max_errors`` of them, evaluation stops and raises
    `EvaluationError` whose ``result`` holds the rows finished so far. A metric that raises is a bug in the
    metric, not a miss of the model: the first one stops the evaluation with `EvaluationError` naming the
    example and where the metric raised, whatever ``max_errors`` is. An infrastructure error (server
    down, timeout, 5xx, out of memory: see `is_infrastructure_error`) is no verdict on the program: the
    first one stops the evaluation with `InfrastructureError` whatever ``max_errors`` is. A Ctrl-C stops
    it promptly (queued examples are dropped); the interrupt carries the finished rows as ``.result``.

    Raises:
        ConfigError: an empty dataset, or a metric that returns NaN or a value outside [0, 1].

    Example:
        >>> from cotune.data import Example
        >>> from cotune.lm import FakeLM
        >>> from cotune.program import Predict
        >>> qa = Predict("question -> answer").bind(FakeLM(["Answer: 4", "Answer: 5"]))
        >>> data = [Example(question="2+2?", answer="4").with_inputs("question")] * 2
        >>> res = evaluate(qa, data, lambda ex, pred: float(pred["answer"] == ex["answer"]), num_threads=1)
        >>> res.score
        0.5
    """
    if len(dataset) == 0:
        raise ConfigError(f"cannot evaluate {description!r} on an empty dataset; give it at least one example")
    t0 = time.perf_counter()
    rows: list[Row | None] = [None] * len(dataset)
    errors = 0
    metric_name = getattr(metric, "__name__", type(metric).__name__)

    def partial() -> EvaluationResult:
        return _result([r for r in rows if r is not None], metric_name, time.perf_counter() - t0)

    pool = ThreadPoolExecutor(max(1, num_threads))
    wait_on_exit = True
    with Progress(events, description, total=len(dataset)) as bar:
        try:
            pending = {pool.submit(_run_one, program, metric, metric_name, i, ex): i for i, ex in enumerate(dataset)}
            scored = 0.0
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in sorted(done, key=pending.__getitem__):
                    i = pending.pop(fut)
                    row = rows[i] = fut.result()
                    if row.error_kind == "infrastructure":
                        raise InfrastructureError(
                            f"{description}: example {i} failed for a reason that is not the model's answer, so "
                            f"nothing is scored: {row.error}",
                            result=partial(),
                        ) from row.cause
                    if row.error_kind == "metric":
                        raise EvaluationError(f"{description}: {row.error}", result=partial()) from row.cause
                    scored += row.score
                    errors += row.error_kind == "exception"
                    finished = sum(r is not None for r in rows)
                    bar.advance(score=scored / finished, errors=errors)
                if max_errors is not None and errors > max_errors:
                    first = next(r for r in rows if r is not None and r.error_kind == "exception")
                    raise EvaluationError(
                        f"{errors} examples raised errors (max_errors={max_errors}); first: {first.error}",
                        result=partial(),
                    )
        except KeyboardInterrupt as e:
            wait_on_exit = False  # stop now: examples in flight are abandoned, queued ones never start
            e.result = partial()  # type: ignore[attr-defined]
            raise
        finally:
            pool.shutdown(wait=wait_on_exit, cancel_futures=True)
    return _result(rows, metric_name, time.perf_counter() - t0)  # type: ignore[arg-type]


def _run_one(program: Callable[..., Any], metric: Metric, metric_name: str, index: int, example: Example) -> Row:
    inputs, labels = example.inputs(), example.labels()
    prediction, error, kind, raw, score, cause = None, None, None, None, 0.0, None
    with record(program) as rec:
        try:
            prediction = program(**inputs)
        except ParseError as e:
            error, kind, raw = str(e), "parse", e.raw
        except Exception as e:  # noqa: BLE001 - a failing example must not stop the others
            error, kind = f"{type(e).__name__}: {e}", "infrastructure" if is_infrastructure_error(e) else "exception"
            cause = e
    if prediction is not None:
        try:
            value = metric(example, prediction)
            score = float(value)
        except Exception as e:  # noqa: BLE001 - reported by evaluate, with the example
            error, cause = metric_error(metric_name, index, example, e), e
            kind = "infrastructure" if is_infrastructure_error(e) else "metric"
        else:
            check_score(value, score, metric_name, index)
    pred_dict = (
        dict(prediction)
        if isinstance(prediction, Mapping)
        else (None if prediction is None else {"output": prediction})
    )
    row = Row(
        index, inputs, labels, pred_dict, score, error, kind, raw, Usage.from_steps(rec.steps).to_dict(), rec.steps
    )
    row.cause = cause  # type: ignore[attr-defined]  # chained by evaluate; not part of the saved row
    return row


def metric_error(metric_name: str, index: int, example: Example, error: Exception) -> str:
    """What to tell about a metric that raised: the example, the exception and the line that raised it."""
    # Frame 0 is the call in _run_one, frame 1 the metric's own line; the last, where it actually raised
    # (inside a helper or a library it called).
    frames = traceback.extract_tb(error.__traceback__)[1:]
    shown_frames = frames[:1] + frames[-1:] if len(frames) > 1 else frames
    where = "".join(f" at {_frame(f)}" for f in shown_frames)
    shown = repr(dict(example))
    shown = shown if len(shown) <= 200 else shown[:197] + "..."
    return f"metric {metric_name!r} raised on example {index} {shown}{where}: {type(error).__name__}: {error}"


def _frame(frame: traceback.FrameSummary) -> str:
    code = f" ({frame.line})" if frame.line else ""
    return f"{Path(frame.filename).name}:{frame.lineno} in {frame.name}{code}"


def check_score(value: Any, score: float, metric_name: str, index: int) -> None:
    """A metric's value must be a number in [0, 1]: NaN or 1.7 would silently skew every mean built on it.

    Raises:
        ConfigError: naming the metric, the value and the example.
    """
    if not math.isfinite(score) or not 0.0 <= score <= 1.0:
        raise ConfigError(
            f"metric {metric_name!r} returned {value!r} for example {index}; a metric must return a number in [0, 1]"
        )


def _result(rows: list[Row], metric_name: str, seconds: float) -> EvaluationResult:
    usage, by_predictor = Usage(), {}
    for row in rows:
        for step in row.trace:
            u = Usage.from_steps([step])
            usage = usage + u
            by_predictor[step.predictor] = by_predictor.get(step.predictor, Usage()) + u
    score = sum(r.score for r in rows) / len(rows) if rows else 0.0
    return EvaluationResult(score, rows, usage, by_predictor, seconds, metric_name)
