"""One exception hierarchy for cotune.

    CotuneError
    ├── ConfigError (also ValueError)       a bad argument or config value
    │   └── UnknownChoiceError              a name that is not one of the valid choices
    ├── DataError                           a malformed dataset file or row (names file and line)
    ├── ParseError                          a completion that does not contain the output fields
    ├── LMError                             a model backend failed
    │   └── LMConnectionError               a server is down or kept answering 5xx after retries
    ├── TrainingError                       fine-tuning could not run (no traces, OOM, bad config)
    └── EvaluationError                     too many examples raised errors; partial rows are kept
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class CotuneError(Exception):
    """Base class of every error cotune raises on purpose."""


class ConfigError(CotuneError, ValueError):
    """A bad argument or configuration value."""


class UnknownChoiceError(ConfigError):
    """A name that is not one of the valid choices, e.g. an unknown task or model."""

    def __init__(self, kind: str, value: object, choices: Iterable[str]):
        self.kind, self.value, self.choices = kind, value, sorted(choices)
        super().__init__(f"unknown {kind} {value!r}; choose one of: {', '.join(self.choices)}")


class DataError(CotuneError):
    """A malformed dataset file or row."""

    def __init__(self, message: str, *, path: object = None, line: int | None = None):
        self.path, self.line = path, line
        where = f"{path}:{line}: " if path is not None and line is not None else (f"{path}: " if path else "")
        super().__init__(f"{where}{message}")


class ParseError(CotuneError):
    """A completion that does not contain the expected output fields. Keeps the raw text."""

    def __init__(self, message: str, *, raw: str, missing: Iterable[str] = ()):
        self.raw, self.missing = raw, list(missing)
        super().__init__(message)


class LMError(CotuneError):
    """A language-model backend failed."""


class LMConnectionError(LMError):
    """A model server could not be reached, or kept failing after retries."""


class TrainingError(CotuneError):
    """Fine-tuning could not run."""


class EvaluationError(CotuneError):
    """Evaluation stopped because too many examples raised errors. `result` holds the rows so far."""

    def __init__(self, message: str, *, result: Any = None):
        self.result = result
        super().__init__(message)


__all__ = [
    "CotuneError",
    "ConfigError",
    "UnknownChoiceError",
    "DataError",
    "ParseError",
    "LMError",
    "LMConnectionError",
    "TrainingError",
    "EvaluationError",
]
