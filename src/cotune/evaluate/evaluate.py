"""`evaluate`: run a program over a dataset in parallel threads, one row per example."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cotune.data.example import Example
from cotune.errors import EvaluationError, ParseError
from cotune.evaluate.metrics import Metric
from cotune.events import EventSink, Progress
from cotune.lm.usage import Usage
from cotune.program.trace import TraceStep, record


@dataclass
class Row:
    """The outcome on one example. ``error_kind`` is "parse" (the model's output did not parse: a
    failed prediction, score 0, raw text kept) or "exception" (the program or metric raised)."""

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
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(with_trace), indent=2, ensure_ascii=False, default=str))
        return path

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

    Parse failures are failed predictions (score 0), not errors. Exceptions raised by the program or the
    metric are recorded in their rows; after more than ``max_errors`` of them, evaluation stops and raises
    `EvaluationError` whose ``result`` holds the rows finished so far.

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
    t0 = time.perf_counter()
    rows: list[Row | None] = [None] * len(dataset)
    errors = 0
    metric_name = getattr(metric, "__name__", type(metric).__name__)
    with Progress(events, description, total=len(dataset)) as bar, ThreadPoolExecutor(max(1, num_threads)) as pool:
        pending = {pool.submit(_run_one, program, metric, i, ex): i for i, ex in enumerate(dataset)}
        scored = 0.0
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                i = pending.pop(fut)
                row = fut.result()
                rows[i] = row
                scored += row.score
                errors += row.error_kind == "exception"
                finished = sum(r is not None for r in rows)
                bar.advance(score=scored / finished, errors=errors)
            if max_errors is not None and errors > max_errors:
                for fut in pending:
                    fut.cancel()
                partial = _result([r for r in rows if r is not None], metric_name, time.perf_counter() - t0)
                first = next(r for r in rows if r is not None and r.error_kind == "exception")
                raise EvaluationError(
                    f"{errors} examples raised errors (max_errors={max_errors}); first: {first.error}",
                    result=partial,
                )
    return _result(rows, metric_name, time.perf_counter() - t0)  # type: ignore[arg-type]


def _run_one(program: Callable[..., Any], metric: Metric, index: int, example: Example) -> Row:
    inputs, labels = example.inputs(), example.labels()
    prediction, error, kind, raw, score = None, None, None, None, 0.0
    with record(program) as rec:
        try:
            prediction = program(**inputs)
        except ParseError as e:
            error, kind, raw = str(e), "parse", e.raw
        except Exception as e:  # noqa: BLE001 - a failing example must not stop the others
            error, kind = f"{type(e).__name__}: {e}", "exception"
    if prediction is not None:
        try:
            score = float(metric(example, prediction))
        except Exception as e:  # noqa: BLE001
            error, kind = f"metric raised {type(e).__name__}: {e}", "exception"
    pred_dict = dict(prediction) if isinstance(prediction, Mapping) else (None if prediction is None else {"output": prediction})
    return Row(index, inputs, labels, pred_dict, score, error, kind, raw, Usage.from_steps(rec.steps).to_dict(), rec.steps)


def _result(rows: list[Row], metric_name: str, seconds: float) -> EvaluationResult:
    usage, by_predictor = Usage(), {}
    for row in rows:
        for step in row.trace:
            u = Usage.from_steps([step])
            usage = usage + u
            by_predictor[step.predictor] = by_predictor.get(step.predictor, Usage()) + u
    score = sum(r.score for r in rows) / len(rows) if rows else 0.0
    return EvaluationResult(score, rows, usage, by_predictor, seconds, metric_name)
