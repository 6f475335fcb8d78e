"""Typed dataclasses from nested mappings (YAML, ``--set``): each field's value coerced to its annotation, every
error collected with its dotted path, so an invalid config reports all its problems at once.

Only the type is coerced here (``"4"`` to 4, ``1`` to 1.0, ``"a,b"`` to a list); the constraints an annotation
carries (``Positive``, ``Literal[...]``) are checked by the dataclass itself, with `cotune.params.value_problems`."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Annotated, Any, Literal

from cotune.params import rule


def build_dataclass(cls: type, data: Any, prefix: str, errors: list[str]) -> Any:
    if not isinstance(data, dict):
        errors.append(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {type(data).__name__}")
        return None
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls, include_extras=True)
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            errors.append(f"{prefix}{key}: unknown field; valid fields: {', '.join(fields)}")
            continue
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            built = build_dataclass(hint, value, f"{prefix}{key}.", errors)
            if built is not None:
                kwargs[key] = built
            continue
        coerced, ok = _coerce(value, hint)
        if not ok and not _has_choices(hint):
            errors.append(f"{prefix}{key}: expected {_words(hint)}, got {value!r}")
            continue
        kwargs[key] = coerced  # a value outside a field's choices is named, with them, by the schema check
    try:
        return cls(**kwargs)
    except TypeError as e:
        errors.append(f"{prefix or 'config'}: {e}")
        return None


def _coerce(value: Any, hint: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(hint)
    if origin is Annotated:
        return _coerce(value, typing.get_args(hint)[0])
    if origin is Literal:  # a choice as its own type: "8" from the command line is the choice 8
        for choice in typing.get_args(hint):
            c, ok = _coerce(value, type(choice))
            if ok and type(c) is type(choice) and c == choice:
                return c, True
        return value, False
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            v, ok = _coerce(value, arg)
            if ok:
                return v, True
        return value, False
    if hint is type(None):
        return value, value is None
    if origin is list:
        (item,) = typing.get_args(hint)
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            value = value.split(",") if isinstance(value, str) else [value]
        if not isinstance(value, list):
            return value, False
        out = []
        for v in value:
            c, ok = _coerce(v.strip() if isinstance(v, str) else v, item)
            if not ok:
                return value, False
            out.append(c)
        return out, True
    if origin is dict:
        return value, isinstance(value, dict)
    if hint is bool:
        return value, isinstance(value, bool)
    if hint is int:
        if isinstance(value, bool):
            return value, False
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value), True
        return value, isinstance(value, int)
    if hint is float:
        return (
            (float(value), True) if isinstance(value, (int, float)) and not isinstance(value, bool) else (value, False)
        )
    if hint is str:
        return value, isinstance(value, str)
    return value, True


def _words(hint: Any) -> str:
    """What a field takes, in words: its rule ("an integer >= 1 or None"), and lists and mappings by shape."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        words = [_words(a) for a in args if a is not type(None)]
        return " or ".join(words) + (" or None" if type(None) in args else "")
    if origin is list:
        return f"a list of {_words(typing.get_args(hint)[0])}"
    if origin is dict:
        return "a mapping"
    return rule(hint)


def _has_choices(hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin is Annotated:
        return _has_choices(typing.get_args(hint)[0])
    if origin in (typing.Union, types.UnionType):
        return any(_has_choices(a) for a in typing.get_args(hint))
    return origin is Literal
