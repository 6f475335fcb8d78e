"""One exception hierarchy for cotune.

    CotuneError
    ├── ConfigError (also ValueError)       a bad argument or config value
    │   └── UnknownChoiceError              a name that is not one of the valid choices
    ├── DataError                           a malformed dataset file or row (names file and line)
    ├── ParseError                          a completion that does not contain the output fields
    ├── LMError                             a model backend failed
    │   └── LMConnectionError               a server is down or kept answering 5xx after retries
    │       └── LMTimeoutError              a generation ran past its read timeout
    ├── TrainingError                       fine-tuning could not run (no traces, OOM, bad config)
    ├── EvaluationError                     too many examples raised errors; partial rows are kept
    │   └── InfrastructureError             the LM or the machine failed (not the model's answer)
    ├── RunInUseError                       another process holds the run directory
    └── CacheError                          the request cache is corrupt or locked

Infrastructure errors (`is_infrastructure_error`) are never scores: an evaluation that meets one stops and
raises `InfrastructureError`, so the step fails (and a resumed run redoes it) instead of keeping a 0.
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
    """A completion that lacks an output field, or whose value does not fit the field's type. Keeps the raw text."""

    def __init__(
        self, message: str, *, raw: str, missing: Iterable[str] = (), field: str | None = None, value: str | None = None
    ):
        self.raw, self.missing = raw, list(missing)
        self.field, self.value = field, value  # a field whose value did not fit its type, and that value
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


class LMTimeoutError(LMConnectionError):
    """A request was sent but its answer did not come within the read timeout (the server may still be
    computing it)."""


class InfrastructureError(EvaluationError):
    """Evaluation stopped because the LM or the machine failed (connection, timeout, 5xx, out of memory).

    Unlike a parse failure this says nothing about the program, so it is never scored; ``result`` holds
    the rows finished before it, and the cause is chained.
    """


class RunInUseError(CotuneError):
    """Another process holds the run directory's lock. ``holder`` describes it (pid, host, command)."""

    def __init__(self, message: str, *, holder: str = ""):
        self.holder = holder
        super().__init__(message)


class CacheError(CotuneError):
    """The request cache cannot be used: a corrupt file, or one another process keeps locked."""


# Exception class names (matched along the MRO, so no heavy import is needed) of failures that are the
# machine's, not the model's: torch.OutOfMemoryError (CUDA/MPS) and friends.
_INFRA_NAMES = frozenset({"OutOfMemoryError", "TransportError", "TimeoutException"})


def is_infrastructure_error(error: BaseException) -> bool:
    """Whether ``error`` is the infrastructure's fault (server down, timeout, 5xx, out of memory) rather than
    the program's or the model's: such an error must fail the step, never become a score.

    Example:
        >>> is_infrastructure_error(LMConnectionError("down")), is_infrastructure_error(ValueError("bug"))
        (True, False)
    """
    if isinstance(error, (LMError, MemoryError, ConnectionError, TimeoutError, CacheError)):
        return True
    return any(cls.__name__ in _INFRA_NAMES for cls in type(error).__mro__)


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
    "LMTimeoutError",
    "InfrastructureError",
    "RunInUseError",
    "CacheError",
    "is_infrastructure_error",
]
