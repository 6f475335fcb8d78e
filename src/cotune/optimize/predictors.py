"""The predictors a weight step trains: by name, copied, and the outputs whose values are classes."""

from __future__ import annotations

import copy
from typing import Any

from cotune.errors import ConfigError
from cotune.program.predict import Predict
from cotune.program.program import Program


def class_fields(predictors: Any) -> list[str]:
    """Output fields with a fixed set of choices: the classes whose coverage is worth reporting."""
    return sorted({f.name for p in predictors for f in p.signature.outputs if f.type.kind in ("choice", "bool")})


def named_predictors(student: Program | Predict) -> dict[str, Predict]:
    """A program's predictors by name; a bare `Predict` is ``"self"``."""
    if isinstance(student, Predict):
        return {"self": student}
    named = dict(student.named_predictors())
    if not named:
        raise ConfigError(f"{type(student).__name__} has no predictors to fine-tune")
    return named


def copy_predict(p: Predict) -> Predict:
    """A copy of a bare `Predict` whose demos and config can change without touching the original."""
    new = copy.copy(p)
    new.demos, new.config = list(p.demos), dict(p.config)
    return new
