"""`Example`: one data point whose fields are split into inputs and labels."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any


class Example(Mapping[str, Any]):
    """An immutable mapping of field names to values, with a declared set of input fields.

    Fields not named as inputs are labels. Attribute access works for convenience.

    Example:
        >>> ex = Example(question="2+2?", answer="4").with_inputs("question")
        >>> ex.question, dict(ex.inputs()), dict(ex.labels())
        ('2+2?', {'question': '2+2?'}, {'answer': '4'})
    """

    __slots__ = ("_data", "_input_keys")

    def __init__(self, data: Mapping[str, Any] | None = None, /, **fields: Any):
        merged = dict(data or {})
        merged.update(fields)
        object.__setattr__(self, "_data", merged)
        object.__setattr__(self, "_input_keys", None)

    # Mapping protocol
    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __getattr__(self, key: str) -> Any:
        try:
            return self._data[key]
        except KeyError:
            raise AttributeError(f"example has no field {key!r}; fields: {', '.join(self._data)}") from None

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError("Example is immutable; use .copy(**changes)")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Example):
            return NotImplemented
        return self._data == other._data and self._input_keys == other._input_keys

    def __hash__(self) -> int:
        return hash(tuple(sorted((k, repr(v)) for k, v in self._data.items())))

    def __repr__(self) -> str:
        inputs = f", inputs={sorted(self._input_keys)}" if self._input_keys is not None else ""
        return f"Example({self._data!r}{inputs})"

    def __reduce__(self):
        return (_rebuild, (self._data, self._input_keys))

    @property
    def input_keys(self) -> frozenset[str] | None:
        return self._input_keys

    def with_inputs(self, *keys: str) -> Example:
        """Return a copy whose input fields are ``keys`` (all must exist)."""
        missing = [k for k in keys if k not in self._data]
        if missing:
            raise KeyError(f"input fields {missing} not in example fields {list(self._data)}")
        return _rebuild(self._data, frozenset(keys))

    def inputs(self) -> dict[str, Any]:
        if self._input_keys is None:
            raise ValueError("call .with_inputs(...) first to say which fields are inputs")
        return {k: v for k, v in self._data.items() if k in self._input_keys}

    def labels(self) -> dict[str, Any]:
        keys = self._input_keys or frozenset()
        return {k: v for k, v in self._data.items() if k not in keys}

    def copy(self, **changes: Any) -> Example:
        return _rebuild({**self._data, **changes}, self._input_keys)

    def without(self, *keys: str) -> Example:
        kept = {k: v for k, v in self._data.items() if k not in keys}
        inputs = None if self._input_keys is None else self._input_keys - set(keys)
        return _rebuild(kept, inputs)

    def to_dict(self) -> dict[str, Any]:
        return dict(self._data)


def _rebuild(data: Mapping[str, Any], input_keys: Iterable[str] | None) -> Example:
    ex = Example(data)
    object.__setattr__(ex, "_input_keys", None if input_keys is None else frozenset(input_keys))
    return ex
