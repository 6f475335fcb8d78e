"""Metrics: functions ``(example, prediction) -> float`` in [0, 1], and the text normalizers they use."""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

Metric = Callable[[Mapping[str, Any], Mapping[str, Any]], float]


def passes(score: float, threshold: float | None = None) -> bool:
    """Whether a run counts as a success: ``score >= threshold``; None means full marks (``score >= 1``).

    The one meaning of ``metric_threshold`` everywhere: bootstrapped demos, fine-tuning traces, kNN pools.
    A half-right run teaches half-wrong outputs, so by default only fully right runs are kept; pass a
    lower threshold for graded metrics (token F1...).
    """
    return score >= (1.0 if threshold is None else threshold)


def normalize_text(text: str) -> str:
    """SQuAD normalization: lower case, no punctuation, no articles, single spaces."""
    text = str(text).lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_text(prediction) == normalize_text(gold))


def token_f1(prediction: str, gold: str) -> float:
    pred, ref = normalize_text(prediction).split(), normalize_text(gold).split()
    if not pred or not ref:
        return float(pred == ref)
    common = Counter(pred) & Counter(ref)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(pred), overlap / len(ref)
    return 2 * precision * recall / (precision + recall)


_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def parse_number(text: str) -> float | None:
    """The last number in ``text`` ("$1,234.50" → 1234.5), or None."""
    found = _NUMBER.findall(str(text).replace("$", ""))
    if not found:
        return None
    try:
        return float(found[-1].replace(",", "").rstrip("."))
    except ValueError:
        return None


def numeric_match(prediction: str, gold: str, tol: float = 1e-6) -> float:
    p, g = parse_number(prediction), parse_number(gold)
    return float(p is not None and g is not None and abs(p - g) <= tol * max(1.0, abs(g)))


def field_metric(field: str, compare: Callable[[str, str], float], name: str | None = None) -> Metric:
    """A metric comparing ``prediction[field]`` with ``example[field]`` using ``compare``."""

    def metric(example: Mapping[str, Any], prediction: Mapping[str, Any]) -> float:
        if prediction is None or field not in prediction:
            return 0.0
        return float(compare(str(prediction[field]), str(example[field])))

    metric.__name__ = name or f"{compare.__name__}_{field}"
    return metric
