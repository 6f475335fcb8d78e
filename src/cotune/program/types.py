"""Field types: what a signature field holds, how text becomes that value, and how the value is written.

A `FieldType` is one of ``str`` (the default), ``int``, ``float``, ``bool``, a fixed set of choices
(``Literal["a", "b"]``), a list of one of those (``list[int]``), or a JSON structure (a pydantic model
or a JSON schema). It comes from a Python annotation (`from_annotation`) or from the string form used in
signature strings (`parse`), coerces text to a value (`coerce`), and describes itself to a model
(`describe`), to a grammar (`cotune.program.grammar`) and to a server (`json_schema`).

Example:
    >>> t = FieldType.parse("Literal['setosa', 'versicolor', 'virginica']")
    >>> t.coerce(" **Versicolor**. "), t.describe()
    ('versicolor', 'one of: setosa, versicolor, virginica')
    >>> FieldType.parse("float").coerce(" 42 ")
    42.0
"""

from __future__ import annotations

import enum
import importlib
import json
import math
import re
import typing
from dataclasses import dataclass, field
from typing import Any

KINDS = ("str", "int", "float", "bool", "choice", "list", "json")
PRIMITIVES = {"str": str, "int": int, "float": float, "bool": bool}
_TRUE, _FALSE = ("true", "yes", "1"), ("false", "no", "0")
_NUMBER = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?|[-+]?\.\d+")


class TypeSpecError(ValueError):
    """A type cotune cannot express or parse (re-raised as `ConfigError` naming the field)."""


@dataclass(frozen=True)
class FieldType:
    """The type of one field. Build it with `parse`, `from_annotation` or the constants `STR` etc.

    Attributes:
        kind: one of `KINDS`.
        choices: the allowed values of a "choice" field, in order.
        item: the element type of a "list" field.
        schema: the JSON schema (as canonical JSON text, so the type stays hashable) of a "json" field.
        model: "module:Class" of a pydantic model a "json" field is validated with, if any.
    """

    kind: str = "str"
    choices: tuple[str, ...] = ()
    item: FieldType | None = None
    schema: str | None = None
    model: str | None = None
    model_class: Any = field(default=None, compare=False, hash=False, repr=False)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise TypeSpecError(f"unknown field type kind {self.kind!r}; choose one of: {', '.join(KINDS)}")
        if self.kind == "choice":
            if not self.choices:
                raise TypeSpecError("a choice type needs at least one choice")
            lowered = [c.lower() for c in self.choices]
            dupes = sorted({c for c in lowered if lowered.count(c) > 1})
            if dupes:
                raise TypeSpecError(f"choices repeat (case-insensitively): {', '.join(dupes)}")
            if any(not c.strip() or "\n" in c for c in self.choices):
                raise TypeSpecError(f"choices must be non-empty single-line text, got {list(self.choices)}")
        if self.kind == "list" and (self.item is None or self.item.kind in ("list", "json")):
            raise TypeSpecError("a list holds str, int, float, bool or choices (nest structures in a JSON type)")

    # -- construction ---------------------------------------------------------------------------------
    @classmethod
    def parse(cls, text: str) -> FieldType:
        """The string form: ``str``, ``int``, ``float``, ``bool``, ``list[int]``, ``json``,
        ``Literal['a', 'b']`` (quotes optional), ``enum[a, b]``.

        Raises:
            TypeSpecError: a type this parser does not know (the message lists the valid forms).
        """
        s = text.strip()
        if s in PRIMITIVES:
            return cls(s)
        if s in ("json", "dict"):
            return cls("json", schema=_canonical({"type": "object"}))
        m = re.fullmatch(r"(Literal|enum|choice)\[(.*)\]", s, re.DOTALL)
        if m:
            return cls("choice", tuple(_split_choices(m.group(2))))
        m = re.fullmatch(r"list\[(.*)\]", s, re.DOTALL)
        if m:
            return cls("list", item=cls.parse(m.group(1)))
        raise TypeSpecError(f"unknown type {s!r}; use str, int, float, bool, list[<type>], json or Literal['a', 'b']")

    @classmethod
    def from_annotation(cls, annotation: Any) -> FieldType:
        """A Python annotation: ``str``, ``int``, ``float``, ``bool``, ``Literal[...]``, an `enum.Enum`,
        ``list[...]``, ``dict``, a pydantic model, or a `FieldType` / its string form.

        Raises:
            TypeSpecError: an annotation with no JSON-schema-able meaning here (e.g. ``set[int]``).
        """
        if isinstance(annotation, FieldType):
            return annotation
        if isinstance(annotation, str):
            return cls.parse(annotation)
        if annotation in PRIMITIVES.values():
            return cls(annotation.__name__)
        origin, args = typing.get_origin(annotation), typing.get_args(annotation)
        if origin is typing.Literal:
            return cls("choice", tuple(str(a) for a in args))
        if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
            return cls("choice", tuple(str(m.value) for m in annotation))
        if origin is list and len(args) == 1:
            return cls("list", item=cls.from_annotation(args[0]))
        if annotation is dict or origin is dict:
            return cls("json", schema=_canonical({"type": "object"}))
        if hasattr(annotation, "model_json_schema"):  # a pydantic model
            schema = annotation.model_json_schema()
            name = f"{annotation.__module__}:{annotation.__qualname__}"
            return cls("json", schema=_canonical(schema), model=name, model_class=annotation)
        raise TypeSpecError(
            f"cannot use {getattr(annotation, '__name__', annotation)!r} as a field type; use str, int, float, "
            "bool, Literal[...], an Enum, list[...], dict or a pydantic model"
        )

    # -- text ↔ value ---------------------------------------------------------------------------------
    def coerce(self, value: Any) -> Any:
        """``value`` (model text, or an already-typed value from JSON) as this type.

        Raises:
            ValueError: the value does not fit; the message says what was expected.
        """
        if self.kind == "str":
            return value.strip() if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        if self.kind in ("int", "float"):
            return self._number(value)
        if self.kind == "bool":
            if isinstance(value, bool):
                return value
            word = _bare(str(value)).lower()
            if word in _TRUE or word in _FALSE:
                return word in _TRUE
            raise ValueError("expected true or false")
        if self.kind == "choice":
            return self._choice(value)
        if self.kind == "list":
            return [self.item.coerce(v) for v in _as_list(value)]  # type: ignore[union-attr]
        return self._json(value)

    def _number(self, value: Any) -> int | float:
        if isinstance(value, bool):
            raise ValueError("expected a number, got a boolean")
        if isinstance(value, (int, float)):
            number = float(value)
        else:
            text = _bare(str(value)).replace("$", "")
            found = _NUMBER.findall(text)
            if len(found) != 1:
                raise ValueError("expected a number" if not found else "expected one number, found several")
            number = float(found[0].replace(",", ""))
        if not math.isfinite(number):
            raise ValueError("expected a finite number")
        if self.kind == "int":
            if number != int(number):
                raise ValueError("expected an integer")
            return int(number)
        return number

    def _choice(self, value: Any) -> str:
        text = _bare(str(value)).lower()
        for c in self.choices:
            if text == c.lower():
                return c
        # Lenient: exactly one of the choices named as a whole word ("Iris setosa", "The answer is (B)").
        named = [c for c in self.choices if re.search(rf"(?<!\w){re.escape(c.lower())}(?!\w)", text)]
        if len(named) == 1:
            return named[0]
        raise ValueError(f"expected one of: {', '.join(self.choices)}")

    def _json(self, value: Any) -> Any:
        if isinstance(value, str):
            text = re.sub(r"^```(?:json)?\s*|\s*```$", "", value.strip())
            try:
                value = json.loads(text)
            except json.JSONDecodeError as e:
                raise ValueError(f"expected JSON ({e.msg})") from None
        model = self.model_class or _import(self.model)
        if model is not None:
            name = model.__name__
            try:
                return model.model_validate(value)
            except Exception as e:  # pydantic.ValidationError, without importing pydantic here
                raise ValueError(f"does not fit {name}: {str(e).splitlines()[0]}") from None
        expected = json.loads(self.schema or "{}").get("type")
        if expected == "object" and not isinstance(value, dict):
            raise ValueError("expected a JSON object")
        return value

    def render(self, value: Any) -> str:
        """How a value of this type is written in a prompt or a demo (the inverse of `coerce`)."""
        if self.kind == "bool" and isinstance(value, bool):
            return "true" if value else "false"
        if self.kind == "float" and isinstance(value, float) and value.is_integer():
            return str(int(value))
        if self.kind in ("list", "json"):
            if hasattr(value, "model_dump"):
                value = value.model_dump(mode="json")
            if isinstance(value, (list, dict)):
                return json.dumps(value, ensure_ascii=False)
        return str(value)

    # -- descriptions ---------------------------------------------------------------------------------
    def describe(self) -> str:
        """What the value must look like, in words for the prompt."""
        if self.kind == "choice":
            return "one of: " + ", ".join(self.choices)
        if self.kind == "list":
            return f"a JSON list of {_plural(self.item)}"  # type: ignore[arg-type]
        if self.kind == "json":
            return "a JSON object" if self.model is None else f"a JSON object ({self.model.split(':')[1]})"
        return {"str": "text", "int": "an integer", "float": "a number", "bool": "true or false"}[self.kind]

    def json_schema(self) -> dict[str, Any]:
        """A JSON schema of the value (for servers' structured outputs)."""
        if self.kind == "str":
            return {"type": "string"}
        if self.kind in ("int", "float"):
            return {"type": "integer" if self.kind == "int" else "number"}
        if self.kind == "bool":
            return {"type": "boolean"}
        if self.kind == "choice":
            return {"type": "string", "enum": list(self.choices)}
        if self.kind == "list":
            return {"type": "array", "items": self.item.json_schema()}  # type: ignore[union-attr]
        return json.loads(self.schema or '{"type": "object"}')

    @property
    def spec(self) -> str:
        """The string form (`parse` reads it back, except for JSON types with a schema)."""
        if self.kind == "choice":
            return "Literal[" + ", ".join(repr(c) for c in self.choices) + "]"
        if self.kind == "list":
            return f"list[{self.item.spec}]"  # type: ignore[union-attr]
        return self.kind

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind}
        if self.choices:
            d["choices"] = list(self.choices)
        if self.item is not None:
            d["item"] = self.item.to_dict()
        if self.schema is not None:
            d["schema"] = json.loads(self.schema)
        if self.model is not None:
            d["model"] = self.model
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any] | str | None) -> FieldType:
        if d is None:
            return STR
        if isinstance(d, str):
            return cls.parse(d)
        return cls(
            d["kind"],
            tuple(d.get("choices", ())),
            cls.from_dict(d["item"]) if d.get("item") else None,
            _canonical(d["schema"]) if d.get("schema") is not None else None,
            d.get("model"),
        )

    def __str__(self) -> str:
        return self.spec


STR = FieldType("str")


def _import(path: str | None) -> Any:
    """The class at "module:Qualified.Name", or None (no path, or a class defined inside a function)."""
    if path is None or "<locals>" in path:
        return None
    module, name = path.split(":")
    try:
        obj: Any = importlib.import_module(module)
        for part in name.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError):
        return None
    return obj


def _canonical(schema: dict[str, Any]) -> str:
    return json.dumps(schema, sort_keys=True, separators=(",", ":"))


def _bare(text: str) -> str:
    """Text without surrounding markdown emphasis, quotes, brackets and final punctuation."""
    return text.strip().strip("*_`\"' ").strip("()[]").rstrip(".!,;:").strip()


def _split_choices(inner: str) -> list[str]:
    parts = re.findall(r"""'((?:[^'\\]|\\.)*)'|"((?:[^"\\]|\\.)*)"|([^,'"]+)""", inner)
    out = [(a or b or c).strip() for a, b, c in parts]
    return [p for p in out if p]


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, (list, tuple)):
        return list(value)
    text = str(value).strip()
    if text.startswith("["):
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError:
            parsed = None
        if isinstance(parsed, list):
            return parsed
    # Lenient: numbered lines ("[1] a") or comma-separated text.
    lines = [re.sub(r"^\s*(\[\d+\]|\d+[.)]|[-*])\s*", "", line) for line in text.splitlines() if line.strip()]
    if len(lines) > 1:
        return lines
    return [p.strip() for p in text.strip("[]").split(",") if p.strip()]


def _plural(t: FieldType) -> str:
    if t.kind == "choice":
        return "values from: " + ", ".join(t.choices)
    return {"str": "strings", "int": "integers", "float": "numbers", "bool": "booleans"}[t.kind]


__all__ = ["KINDS", "STR", "FieldType", "TypeSpecError"]
