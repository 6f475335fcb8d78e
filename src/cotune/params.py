"""Hyperparameters declared once: the ``__init__`` signature of an optimizer is its schema.

Each parameter's annotation carries its type and constraints (``Positive``, ``Count``, ``Fraction``,
``Literal[...]``...); `check_hyperparameters` validates an optimizer's stored values against it with
pydantic (strict: ``1.5`` is not an integer, ``True`` is not a number) before ``compile`` runs, and names
the bad value and the valid range or choices. Parameters that are themselves optimizers are checked in turn.

Example:
    >>> class Demo:
    ...     def __init__(self, k: Positive = 3, mode: Literal["a", "b"] = "a"):
    ...         self.k, self.mode = k, mode
    >>> check_hyperparameters(Demo(k=0))
    Traceback (most recent call last):
    ...
    cotune.errors.ConfigError: Demo: k must be >= 1, got 0 (k must be an integer >= 1)
    >>> describe(Demo)["mode"]
    "one of 'a', 'b'"
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
import types
import typing
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

import annotated_types
from pydantic import Field, InstanceOf, TypeAdapter, ValidationError

from cotune.errors import ConfigError, UnknownChoiceError

Count = Annotated[int, Field(ge=0)]  # an integer >= 0
Positive = Annotated[int, Field(ge=1)]  # an integer >= 1
NonNegative = Annotated[float, Field(ge=0)]  # a number >= 0
Fraction = Annotated[float, Field(ge=0, le=1)]  # a number in [0, 1]
OpenFraction = Annotated[float, Field(ge=0, lt=1)]  # a number in [0, 1)

_SCALARS = {int: "an integer", float: "a number", bool: "true or false", str: "text"}


@cache
def schema(cls: type) -> dict[str, tuple[TypeAdapter, str]]:
    """Parameter name → (strict validator, the rule in words) from ``cls.__init__``'s annotations."""
    hints = annotations(cls)
    if dataclasses.is_dataclass(cls):  # its fields, also where it writes its own ``__init__``
        names = [f.name for f in dataclasses.fields(cls)]
    else:
        names = list(inspect.signature(cls.__init__).parameters)
    out: dict[str, tuple[TypeAdapter, str]] = {}
    for name in names:
        if name == "self" or name not in hints:
            continue
        out[name] = (TypeAdapter(_checkable(hints[name])), rule(hints[name]))
    return out


@cache
def annotations(cls: type) -> dict[str, Any]:
    """``cls.__init__``'s parameter annotations (a dataclass's: its fields'), resolved; one that does not
    resolve (a name imported for type checking only) is left out, and so goes unchecked."""
    if dataclasses.is_dataclass(cls):
        owner: Any = cls
        sources = [(vars(k).get("__annotations__", {}), vars(sys.modules[k.__module__])) for k in cls.__mro__[::-1]]
    else:
        owner = cls.__init__
        sources = [(getattr(owner, "__annotations__", {}), getattr(owner, "__globals__", {}))]
    try:
        return typing.get_type_hints(owner, include_extras=True)
    except Exception:  # resolve them one by one, keeping those that can be
        out = {}
        for declared, namespace in sources:
            for name, annotation in declared.items():
                try:
                    out[name] = typing.get_type_hints(_Holder(annotation), namespace, include_extras=True)["x"]
                except Exception:
                    continue
        return out


class _Holder:
    """An object whose one annotation ``x`` is the given one, for `typing.get_type_hints`."""

    def __init__(self, annotation: Any) -> None:
        self.__annotations__ = {"x": annotation}


def describe(cls: type) -> dict[str, str]:
    """Each declared hyperparameter of ``cls`` and its rule in words (for help texts and errors)."""
    return {name: words for name, (_, words) in schema(cls).items()}


def value_problems(obj: Any, prefix: str = "") -> list[str]:
    """Each declared parameter of ``type(obj)`` whose value on ``obj`` breaks its rule, in words:
    ``"k must be >= 1, got 0 (k must be an integer >= 1)"``, or for a parameter with choices
    ``"mode: unknown mode 'c'; choose one of: a, b"``; names are written after ``prefix`` (``"weights."``). A
    parameter that ``obj`` does not hold as an attribute is skipped. A dataclass declares its parameters by its
    fields' annotations (also one that writes its own ``__init__``), an optimizer by its ``__init__``'s."""
    return [message for _, message, _ in _broken(obj, prefix)]


def check_hyperparameters(optimizer: Any) -> None:
    """Validate ``optimizer``'s hyperparameters against its declared schema (those of optimizers it holds
    are checked by `cotune.optimize.base.Optimizer.check_params`, which calls this on each).

    Raises:
        UnknownChoiceError: a value outside a parameter's choices (the choices are listed).
        ConfigError: every other bad value, all at once: ``name must be <what failed>, got <value>``.
    """
    problems = []
    for _, message, unknown in _broken(optimizer, ""):
        if unknown is not None:
            raise unknown
        problems.append(message)
    if problems:
        raise ConfigError(f"{type(optimizer).__name__}: " + "; ".join(problems))


def _broken(obj: Any, prefix: str) -> list[tuple[str, str, UnknownChoiceError | None]]:
    cls = type(obj)
    out = []
    for name, (adapter, words) in schema(cls).items():
        if not hasattr(obj, name):
            continue
        value = getattr(obj, name)
        try:
            adapter.validate_python(value, strict=True)
        except ValidationError as e:
            label = f"{prefix}{name}"
            choices = _choices(annotations(cls)[name])
            if choices and isinstance(value, str):
                unknown = UnknownChoiceError(name, value, choices)
                out.append((name, f"{label}: {unknown}", unknown))
                continue
            short = _short(e, words)
            why = f" ({label} must be {words})" if short != words else ""
            out.append((name, f"{label} must be {short}, got {value!r}{why}", None))
    return out


# -- annotations → validators and words --------------------------------------------------------------
def _checkable(hint: Any) -> Any:
    """The annotation as pydantic should check it: scalars and literals as they are, classes by isinstance."""
    origin = typing.get_origin(hint)
    if origin is Annotated:
        base, *meta = typing.get_args(hint)
        return Annotated[(_checkable(base), *meta)]
    if origin in (typing.Union, types.UnionType):
        return typing.Union[tuple(_checkable(a) for a in typing.get_args(hint))]  # noqa: UP007
    if hint is Any:
        return Any
    if hint in _SCALARS or hint is type(None) or origin is Literal:
        return hint
    if origin in (list, tuple):  # each item checked by its own annotation
        item = _checkable(typing.get_args(hint)[0])
        return list[item] if origin is list else tuple[item, ...]
    if origin is Callable or hint is Callable:
        return Callable
    if isinstance(hint, type) and not getattr(hint, "_is_protocol", False):
        return InstanceOf[hint] if hint is not Path else Path | str
    return Any  # protocols, Any and the like: duck-typed, checked where used


def rule(hint: Any) -> str:
    """The annotation in words, e.g. "an integer >= 1", "a number in [0, 1] or None", "one of 'a', 'b'"."""
    origin = typing.get_origin(hint)
    if origin is Annotated:
        base, *meta = typing.get_args(hint)
        words = f"{rule(base)}{_bounds(meta)}"
        least = [
            c.min_length for m in meta for c in getattr(m, "metadata", [m]) if isinstance(c, annotated_types.MinLen)
        ]
        if least == [1]:
            return f"a non-empty {words[2:]}" if words.startswith("a ") else f"non-empty {words}"
        return words + (f" of length >= {least[0]}" if least else "")
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        words = [rule(a) for a in args if a is not type(None)]
        return " or ".join(words) + (" or None" if type(None) in args else "")
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if origin in (list, tuple):
        return f"a list of {rule(typing.get_args(hint)[0])}"
    if hint is Any:
        return "any value"
    if hint in _SCALARS:
        return _SCALARS[hint]
    if origin is Callable or hint is Callable:
        return "a function"
    if isinstance(hint, type):
        return "a path" if hint is Path else f"a {hint.__name__}"
    return "any value"


def _bounds(meta: list[Any]) -> str:
    low = high = None
    for m in meta:
        for c in getattr(m, "metadata", [m]):
            if isinstance(c, annotated_types.Ge | annotated_types.Gt):
                low = ("[", c.ge) if isinstance(c, annotated_types.Ge) else ("(", c.gt)
            if isinstance(c, annotated_types.Le | annotated_types.Lt):
                high = ("]", c.le) if isinstance(c, annotated_types.Le) else (")", c.lt)
    if low and high:
        return f" in {low[0]}{low[1]:g}, {high[1]:g}{high[0]}"
    if low:
        return f" {'>=' if low[0] == '[' else '>'} {low[1]:g}"
    if high:
        return f" {'<=' if high[0] == ']' else '<'} {high[1]:g}"
    return ""


def _choices(hint: Any) -> list[str]:
    if typing.get_origin(hint) is Literal:
        return [str(a) for a in typing.get_args(hint)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return [c for a in typing.get_args(hint) for c in _choices(a)]
    return []


_LIMITS = {"greater_than_equal": (">=", "ge"), "greater_than": (">", "gt"), "less_than_equal": ("<=", "le"),
           "less_than": ("<", "lt")}  # fmt: skip


def _short(error: ValidationError, words: str) -> str:
    """What failed, in words: the broken bound (">= 1", "in [0, 1]"), else the expected type."""
    for detail in error.errors():
        if detail["type"] in _LIMITS:
            interval = words.split(" in ", 1)
            if len(interval) == 2 and interval[1][:1] in "[(":
                return "in " + interval[1].split(" or ")[0]
            op, key = _LIMITS[detail["type"]]
            return f"{op} {detail['ctx'][key]:g}"
    return words
