"""Evaluation: metrics and the parallel `evaluate` loop."""

from cotune.evaluate.evaluate import EvaluationResult, Row, evaluate
from cotune.evaluate.metrics import (
    Metric,
    exact_match,
    field_metric,
    normalize_text,
    numeric_match,
    parse_number,
    token_f1,
)

__all__ = [
    "EvaluationResult",
    "Metric",
    "Row",
    "evaluate",
    "exact_match",
    "field_metric",
    "normalize_text",
    "numeric_match",
    "parse_number",
    "token_f1",
]
