"""Traces as an artifact: the runs of a teacher over training examples, filtered, written and read back.

`collect_traces` runs the teacher (see `cotune.optimize.rollouts`, where `Trace` lives); `save_traces`
writes every run (passed or not, with its score) as JSONL, and `load_traces` reads it back, so a later
run can fine-tune on them (``--traces FILE``) without running the teacher again, or with another
threshold.

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
from pathlib import Path
from typing import Any

from cotune.data.example import Example
from cotune.errors import DataError
from cotune.optimize.rollouts import FORMAT_VERSION, Trace, collect_traces
from cotune.program.program import Program
from cotune.program.trace import TraceStep


def labeled_traces(program: Program | Any, examples: Sequence[Example], *, skip: Iterable[int] = ()) -> list[Trace]:
    """Traces written from gold labels instead of runs: one per example whose index is not in ``skip``.

    A predictor call can be written this way when every input the predictor takes is an input of the
    example and every required output is one of its labels: the prompt is exactly what the predictor
    would send (its instruction and demos; without them too, see `TraceStep.zero_shot`), the completion
    is the labels as the predictor's format adapter writes them (`Predict.completion`), with optional
    outputs (a chain of thought's reasoning) left out. In a multi-step program the
    later predictors take intermediate values (retrieved passages, earlier answers) and are left out.
    Returns [] when no predictor qualifies.

    Raises:
        ConfigError: a qualifying predictor's adapter cannot write a completion (`Predict.completion`).

    Example:
        >>> from cotune.data import Example
        >>> from cotune.program import ChainOfThought
        >>> cot = ChainOfThought("question -> answer")
        >>> data = [Example(question="2+2?", answer="4").with_inputs("question")]
        >>> [(t.source, t.steps[0].completion) for t in labeled_traces(cot, data)]
        [('labels', 'Answer: 4')]
    """
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
            messages, zero_shot = p.messages(**kept), p.zero_shot_messages(**kept)
            steps.append(TraceStep(name, kept, outputs, messages, p.completion(outputs), zero_shot=zero_shot))
        if steps:
            out.append(
                Trace(
                    i,
                    dict(inputs),
                    dict(labels),
                    dict(labels),
                    1.0,
                    steps,
                    rollout_id=-1,
                    program=fingerprint,
                    source="labels",
                )
            )
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


def balance_classes(traces: Sequence[Trace], fields: Sequence[str]) -> tuple[list[int], dict[str, Any]]:
    """How many times to train on each of ``traces`` so each class of their predictions is about as frequent
    as the most common one.

    A trace's class is the values of ``fields`` in its prediction (e.g. Iris's species); a class seen ``n`` times
    gets ``round(top / n)`` repeats, ``top`` the most common class's count. A trace without those fields is its
    own class ``"-"``, trained on once. Returns the repeats, one per trace, and
    ``{"fields": [...], "counts": {class: n}, "repeats": {class: k}}``.

    Example:
        >>> t = lambda i, y: Trace(i, {"q": str(i)}, {"y": y}, {"y": y}, 1.0, [])
        >>> repeats, report = balance_classes([t(0, "a"), t(1, "a"), t(2, "a"), t(3, "b")], ["y"])
        >>> repeats, report["repeats"]
        ([1, 1, 1, 3], {'a': 1, 'b': 3})
    """
    names = list(fields)

    def label(t: Trace) -> str:
        values = [str(t.prediction[f]) for f in names if t.prediction and f in t.prediction]
        return " / ".join(values) if values else "-"

    labels = [label(t) for t in traces]
    counts: dict[str, int] = {}
    for c in labels:
        counts[c] = counts.get(c, 0) + 1
    top = max((n for c, n in counts.items() if c != "-"), default=1)
    repeats = {c: 1 if c == "-" else max(1, round(top / n)) for c, n in counts.items()}
    report = {"fields": names, "counts": dict(sorted(counts.items())), "repeats": dict(sorted(repeats.items()))}
    return [repeats[c] for c in labels], report


def count_by_predictor(traces: Iterable[Trace], names: Iterable[str] = ()) -> dict[str, int]:
    """Successful calls per predictor name; every name in ``names`` appears, with 0 when it has none."""
    counts = dict.fromkeys(names, 0)
    for t in traces:
        for s in t.steps:
            if s.error is None:
                counts[s.predictor] = counts.get(s.predictor, 0) + 1
    return counts


def failure_detail(traces: list[Trace], threshold: float | None) -> str:
    """Why no trace passed, for an error message: the best score against the threshold, and the parse failures."""
    if not traces:
        return " (no traces: the trainset or traces file is empty)"
    parse = sum(1 for t in traces if t.prediction is None and t.error)
    best = max(t.score for t in traces)
    need = 1.0 if threshold is None else threshold
    return f" (best score {best:g}, threshold {need:g}; {parse} runs failed to produce a prediction)"


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
                    raise DataError(
                        f"traces format_version {version}; this cotune reads {FORMAT_VERSION}", path=path, line=lineno
                    )
                traces.append(Trace.from_dict(d))
            except DataError:
                raise
            except (json.JSONDecodeError, TypeError, KeyError, AttributeError) as e:
                raise DataError(f"not a trace ({type(e).__name__}: {e})", path=path, line=lineno) from None
    return traces


__all__ = [
    "Trace",
    "balance_classes",
    "collect_traces",
    "count_by_predictor",
    "coverage",
    "labeled_traces",
    "load_traces",
    "passing",
    "save_traces",
]
