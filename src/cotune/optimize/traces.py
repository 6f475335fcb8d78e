"""Trace collection: run a teacher program over training examples and keep the runs that pass the metric.

Traces are an artifact: `save_traces` writes every run (passed or not, with its score) as JSONL, and
`load_traces` reads it back, so a later run can fine-tune on them (``--traces FILE``) without running
the teacher again, or with another threshold.

Example:
    >>> from cotune.data import Example
    >>> from cotune.lm import FakeLM
    >>> from cotune.program import Predict
    >>> qa = Predict("question -> answer").bind(FakeLM(lambda m: "Answer: 4"))
    >>> data = [Example(question="2+2?", answer="4").with_inputs("question"),
    ...         Example(question="2+3?", answer="5").with_inputs("question")]
    >>> traces = collect_traces(qa, data, lambda ex, p: float(p["answer"] == ex["answer"]), num_threads=1)
    >>> [t.score for t in traces], [t.score for t in passing(traces)]
    ([1.0, 0.0], [1.0])
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cotune.data.example import Example
from cotune.errors import ConfigError, DataError
from cotune.evaluate.evaluate import evaluate
from cotune.evaluate.metrics import Metric, passes
from cotune.events import EventSink, emit
from cotune.program.program import Program
from cotune.program.trace import TraceStep

FORMAT_VERSION = 1


@dataclass
class Trace:
    """One run of the teacher on one example: its predictor calls, prediction and score, and provenance.

    Attributes:
        example_index: position of the example in the training set.
        inputs / labels: the example, so the file stands on its own.
        steps: every predictor call, with the exact messages sent and the raw completion.
        rollout_id: 0 for the teacher's own decoding; 1.. for sampled rollouts.
        temperature: the sampling temperature of a rollout (None: the teacher's own setting).
        program: the teacher's `Program.fingerprint()` (its prompts); model: its ``lm.spec()``.
        source: "run" (the teacher ran) or "labels" (written from the example's gold labels, see
            `labeled_traces`).
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


ROUND_FILL = 64  # calls per round that sampled rollouts are grouped up to (a local engine's batch)


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

    Rollout 0 decodes as the teacher is configured (usually greedy); rollouts 1..k-1 sample at
    ``temperature`` with distinct rollout ids (``seed * 1000 + r``), so the request cache returns the
    same samples for the same seed and new ones for another seed (with ``min_p`` when > 0, see
    `cotune.lm.GenerationConfig`). The teacher is never mutated. With
    ``stop_at_first_pass``, an example gets no more rollouts once one of its runs passed (`Trace.passed`
    with ``threshold``): many samples for the hard examples, one for the easy ones.

    Raises:
        ConfigError: ``num_rollouts`` < 1 or a negative temperature.
        EvaluationError: too many examples raised exceptions (a broken program, not a weak one).
    """
    if num_rollouts < 1:
        raise ConfigError(f"num_rollouts must be >= 1, got {num_rollouts}")
    if temperature < 0:
        raise ConfigError(f"rollout temperature must be >= 0, got {temperature}")
    fingerprint = teacher.fingerprint() if isinstance(teacher, Program) else None
    lm = _lm_of(teacher)
    model = lm.spec() if lm is not None and hasattr(lm, "spec") else None
    traces: list[Trace] = []
    todo = list(range(len(examples)))
    fill = min(len(examples), ROUND_FILL)
    r = 0
    while r < num_rollouts and todo:
        # Rollouts after the first are sampled several at a time when few examples are left, so each round
        # is about as large as the first (a local engine batches them); with stop_at_first_pass the runs
        # after an example's first pass are dropped, so the traces are those of one rollout at a time.
        width = 1 if r == 0 else min(num_rollouts - r, max(1, -(-fill // len(todo))))
        ids = list(range(r, r + width))
        subset = [examples[i] for i in todo]
        results = _run_rollouts(teacher, subset, metric, ids, temperature, seed, min_p, num_threads, num_rollouts,
                                events)  # fmt: skip
        passed: dict[int, int] = {}  # example index → the first rollout of this round that passed
        for rollout, result in zip(ids, results, strict=True):
            for row_index, index in enumerate(todo):
                if stop_at_first_pass and passed.get(index, rollout) < rollout:
                    continue  # one rollout at a time would not have run this one
                row = result.rows[row_index]
                temp = None if rollout == 0 else temperature
                trace = Trace(index, row.inputs, row.labels, row.prediction, row.score, list(row.trace),
                              rollout_id=0 if rollout == 0 else seed * 1000 + rollout, temperature=temp,
                              program=fingerprint, model=model, seed=seed, error=row.error)  # fmt: skip
                traces.append(trace)
                if trace.passed(threshold):
                    passed.setdefault(index, rollout)
        if stop_at_first_pass:
            todo = [i for i in todo if i not in passed]
        r += width
    emit(events, "traces.collected", n=len(traces), passed=sum(t.passed() for t in traces))
    return traces


def labeled_traces(program: Program | Any, examples: Sequence[Example], *, skip: Iterable[int] = ()) -> list[Trace]:
    """Traces written from gold labels instead of runs: one per example whose index is not in ``skip``.

    A predictor call can be written this way when every input the predictor takes is an input of the
    example and every required output is one of its labels: the prompt is exactly what the predictor
    would send (its instruction and demos), the completion is the labels in the predictor's output
    format, with optional outputs (a chain of thought's reasoning) left out. In a multi-step program the
    later predictors take intermediate values (retrieved passages, earlier answers) and are left out.
    Returns [] when no predictor qualifies.

    Example:
        >>> from cotune.data import Example
        >>> from cotune.program import ChainOfThought
        >>> cot = ChainOfThought("question -> answer")
        >>> data = [Example(question="2+2?", answer="4").with_inputs("question")]
        >>> [(t.source, t.steps[0].completion) for t in labeled_traces(cot, data)]
        [('labels', 'Answer: 4')]
    """
    from cotune.program import format as fmt
    from cotune.program.predict import Predict

    named = {"self": program} if isinstance(program, Predict) else dict(program.named_predictors())
    skipped = set(skip)
    fingerprint = program.fingerprint() if isinstance(program, Program) else None
    out = []
    for i, ex in enumerate(examples):
        if i in skipped:
            continue
        inputs, labels = ex.inputs(), ex.labels()
        steps = []
        for name, p in named.items():
            sig = p.signature
            if not set(sig.input_names) <= set(inputs) or any(f.required and f.name not in labels for f in sig.outputs):
                continue
            kept = {k: inputs[k] for k in sig.input_names}
            outputs = {f.name: labels[f.name] for f in sig.outputs if f.name in labels}
            completion = fmt.render_fields(sig.outputs, outputs)
            steps.append(TraceStep(name, kept, outputs, p.messages(**kept), completion))
        if steps:
            out.append(Trace(i, dict(inputs), dict(labels), dict(labels), 1.0, steps, rollout_id=-1,
                             program=fingerprint, source="labels"))
    return out


def passing(traces: Iterable[Trace], threshold: float | None = None) -> list[Trace]:
    """The traces that pass ``threshold`` (see `Trace.passed`), duplicates removed, in order."""
    seen: set[str] = set()
    out = []
    for t in traces:
        if not t.passed(threshold):
            continue
        key = t.key()
        if key not in seen:
            seen.add(key)
            out.append(t)
    return out


def coverage(traces: Iterable[Trace], examples: Sequence[Example], fields: Iterable[str] = ()) -> dict[str, Any]:
    """Which training examples the kept ``traces`` cover: overall, and per class of each label in ``fields``
    (e.g. the species of Iris) — what a Θ step can learn is what its kept traces cover.

    Returns:
        ``{"examples": {"covered": n, "total": N}, "by_class": {field: {class: {"covered": n, "total": N}}}}``

    Example:
        >>> from cotune.data import Example
        >>> data = [Example(q="a", y="x"), Example(q="b", y="y"), Example(q="c", y="y")]
        >>> kept = [Trace(1, {"q": "b"}, {"y": "y"}, {"y": "y"}, 1.0, [])]
        >>> coverage(kept, data, ["y"])["by_class"]["y"]
        {'x': {'covered': 0, 'total': 1}, 'y': {'covered': 1, 'total': 2}}
    """
    covered = {t.example_index for t in traces}
    out: dict[str, Any] = {"examples": {"covered": len(covered & set(range(len(examples)))), "total": len(examples)}}
    by_class: dict[str, dict[str, dict[str, int]]] = {}
    for name in fields:
        counts: dict[str, dict[str, int]] = {}
        for i, ex in enumerate(examples):
            if name not in ex:
                continue
            cell = counts.setdefault(str(ex[name]), {"covered": 0, "total": 0})
            cell["total"] += 1
            cell["covered"] += i in covered
        if counts:
            by_class[name] = dict(sorted(counts.items()))
    out["by_class"] = by_class
    return out


def count_by_predictor(traces: Iterable[Trace], names: Iterable[str] = ()) -> dict[str, int]:
    """Successful calls per predictor name; every name in ``names`` appears, with 0 when it has none."""
    counts = dict.fromkeys(names, 0)
    for t in traces:
        for s in t.steps:
            if s.error is None:
                counts[s.predictor] = counts.get(s.predictor, 0) + 1
    return counts


def save_traces(path: str | Path, traces: Iterable[Trace]) -> Path:
    """Write one trace per line (JSON), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for t in traces:
            f.write(json.dumps(t.to_dict(), ensure_ascii=False, default=str) + "\n")
    tmp.replace(path)
    return path


def load_traces(path: str | Path) -> list[Trace]:
    """Read traces written by `save_traces`.

    Raises:
        DataError: the file is missing, or a line is not a trace (names the file and line).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("no traces file here", path=path)
    traces = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
                version = d.get("format_version", FORMAT_VERSION)
                if version != FORMAT_VERSION:
                    raise DataError(f"traces format_version {version}; this cotune reads {FORMAT_VERSION}",
                                    path=path, line=lineno)
                traces.append(Trace.from_dict(d))
            except DataError:
                raise
            except (json.JSONDecodeError, TypeError, KeyError, AttributeError) as e:
                raise DataError(f"not a trace ({type(e).__name__}: {e})", path=path, line=lineno) from None
    return traces


def _lm_of(program: Any) -> Any:
    if isinstance(program, Program):
        try:
            return program.lm
        except ConfigError:  # predictors on different LMs (one adapter per predictor)
            return program.predictors()[0].lm if program.predictors() else None
    return getattr(program, "lm", None)


def _run_rollouts(teacher, subset, metric, ids, temperature, seed, min_p, num_threads, num_rollouts, events) -> list:
    """Evaluate the teacher on ``subset`` once per rollout id in ``ids``, all at the same time (one result each)."""
    from concurrent.futures import ThreadPoolExecutor

    def one(rollout: int) -> Any:
        runner = teacher if rollout == 0 else _sampling_copy(teacher, temperature, seed * 1000 + rollout, min_p)
        if num_rollouts == 1:
            desc = "collect traces"
        else:
            desc = f"collect traces (rollout {rollout + 1}/{num_rollouts})"
        threads = max(1, num_threads // len(ids))  # the round's calls in flight stay at num_threads
        return evaluate(runner, subset, metric, num_threads=threads, events=events, description=desc)

    if len(ids) == 1:
        return [one(ids[0])]
    with ThreadPoolExecutor(len(ids)) as pool:
        return list(pool.map(one, ids))


def _sampling_copy(teacher: Any, temperature: float, rollout_id: int, min_p: float = 0.0) -> Any:
    """A copy of the teacher whose predictors sample at ``temperature`` under ``rollout_id``."""
    if isinstance(teacher, Program):
        copy = teacher.deepcopy()
        predictors = copy.predictors()
    else:  # a bare predictor
        import copy as _copy

        copy = _copy.copy(teacher)
        copy.config = dict(getattr(teacher, "config", {}))
        predictors = [copy]
    for p in predictors:
        p.config = {**p.config, "temperature": temperature, "rollout_id": rollout_id}
        if min_p > 0:
            p.config["min_p"] = min_p
    return copy


__all__ = [
    "Trace",
    "collect_traces",
    "count_by_predictor",
    "coverage",
    "labeled_traces",
    "load_traces",
    "passing",
    "save_traces",
]
