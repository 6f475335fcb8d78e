"""Typed dataclasses from nested mappings (YAML, ``--set``): each field's value coerced to its annotation, every
error collected with its dotted path, so an invalid config reports all its problems at once."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any


def build_dataclass(cls: type, data: Any, prefix: str, errors: list[str]) -> Any:
    if not isinstance(data, dict):
        errors.append(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {type(data).__name__}")
        return None
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
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
        if not ok:
            errors.append(f"{prefix}{key}: expected {_type_name(hint)}, got {value!r}")
            continue
        kwargs[key] = coerced
    try:
        return cls(**kwargs)
    except TypeError as e:
        errors.append(f"{prefix or 'config'}: {e}")
        return None


def _coerce(value: Any, hint: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(hint)
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


def _type_name(hint: Any) -> str:
    return str(hint).replace("typing.", "")
