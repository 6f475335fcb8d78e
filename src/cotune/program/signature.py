"""`Signature`: the named, typed input and output fields of one LM call, plus its instruction.

Signatures come from a string (``"question -> answer: float"``, choices as ``species: Literal['a', 'b']``)
or from a class, as DSPy users know it:

    >>> from typing import Literal
    >>> class Classify(Signature):
    ...     '''Identify the species.'''
    ...     petal_length: float = InputField(desc="in cm")
    ...     species: Literal["setosa", "versicolor", "virginica"] = OutputField()
    >>> sig = ensure_signature(Classify)
    >>> str(sig), sig.instructions, sig.outputs[0].type.kind
    ("petal_length: float -> species: Literal['setosa', 'versicolor', 'virginica']", 'Identify the species.', 'choice')
"""

from __future__ import annotations

import inspect
import re
import sys
import typing
from dataclasses import dataclass, replace
from typing import Any

from cotune.errors import ConfigError
from cotune.program.types import STR, FieldType, TypeSpecError

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Field:
    """One field. ``desc`` is shown to the model; optional outputs may be absent from a completion.

    ``type`` is a `FieldType`, its string form (``"float"``) or a Python annotation (``float``,
    ``Literal[...]``); the default is text.

    Raises:
        ConfigError: a bad name, or a type cotune cannot express (names the field and the type).
    """

    name: str
    desc: str = ""
    required: bool = True
    type: FieldType = STR

    def __post_init__(self):
        if not _NAME.match(self.name):
            raise ConfigError(f"field name {self.name!r} is not a valid identifier")
        if not isinstance(self.type, FieldType):
            try:
                object.__setattr__(self, "type", FieldType.from_annotation(self.type))
            except TypeSpecError as e:
                raise ConfigError(f"field {self.name!r}: {e}") from None

    @property
    def label(self) -> str:
        """How the field is written in prompts: ``search_query`` → ``Search Query``."""
        return " ".join(w.capitalize() for w in self.name.split("_") if w)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "desc": self.desc, "required": self.required}
        if self.type != STR:
            d["type"] = self.type.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Field:
        try:
            kind = FieldType.from_dict(d.get("type"))
        except (TypeSpecError, KeyError) as e:
            raise ConfigError(f"field {d.get('name')!r}: bad saved type {d.get('type')!r} ({e})") from None
        return cls(d["name"], d.get("desc", ""), d.get("required", True), kind)


@dataclass(frozen=True)
class _FieldMarker:
    io: str
    desc: str = ""
    required: bool = True


def InputField(desc: str = "") -> Any:  # noqa: N802 (reads like a type in class bodies, as in DSPy)
    """Marks an input in a class-based signature: ``question: str = InputField(desc="...")``."""
    return _FieldMarker("input", desc)


def OutputField(desc: str = "", required: bool = True) -> Any:  # noqa: N802
    """Marks an output in a class-based signature: ``answer: float = OutputField()``."""
    return _FieldMarker("output", desc, required)


@dataclass(frozen=True)
class Signature:
    """Inputs → outputs with an instruction.

    Example:
        >>> sig = Signature.parse("context, question -> answer", "Answer briefly.")
        >>> [f.name for f in sig.inputs], [f.name for f in sig.outputs], str(sig)
        (['context', 'question'], ['answer'], 'context, question -> answer')
        >>> str(Signature.parse("question -> answer: float, confident: bool"))
        'question -> answer: float, confident: bool'
    """

    inputs: tuple[Field, ...]
    outputs: tuple[Field, ...]
    instructions: str = ""

    def __post_init__(self):
        names = [f.name for f in self.inputs + self.outputs]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"signature repeats field(s): {', '.join(dupes)}")
        if not self.outputs:
            raise ConfigError("a signature needs at least one output field")

    @classmethod
    def parse(cls, spec: str, instructions: str | None = None, **descs: str) -> Signature:
        """Parse ``"a, b: int -> c: Literal['x', 'y']"``; ``descs`` gives a description per field name."""
        if spec.count("->") != 1:
            raise ConfigError(f"signature {spec!r} must look like 'input1, input2 -> output'")
        left, right = spec.split("->")
        ins = tuple(Field(n, descs.get(n, ""), type=t) for n, t in _fields(left))
        outs = tuple(Field(n, descs.get(n, ""), type=t) for n, t in _fields(right))
        unknown = set(descs) - {f.name for f in ins + outs}
        if unknown:
            raise ConfigError(f"descriptions for unknown field(s): {', '.join(sorted(unknown))}")
        if instructions is None:
            instructions = _default_instructions(ins, outs)
        return cls(ins, outs, instructions)

    @classmethod
    def from_class(cls, klass: type) -> Signature:
        """A class whose annotated attributes are `InputField()` / `OutputField()`; its docstring is the
        instruction (see the module example).

        Raises:
            ConfigError: an annotated attribute without a field marker, or an inexpressible type.
        """
        ins, outs = [], []
        for base in reversed(klass.__mro__):
            if base in (object, Signature):
                continue
            for name, annotation in _annotations(base).items():
                marker = base.__dict__.get(name)
                if not isinstance(marker, _FieldMarker):
                    raise ConfigError(
                        f"{klass.__name__}.{name} needs a value of InputField() or OutputField() to say which it is"
                    )
                field = Field(name, marker.desc, marker.required, annotation)
                (ins if marker.io == "input" else outs).append(field)
        doc = inspect.cleandoc(klass.__doc__) if klass.__doc__ and klass.__doc__ != Signature.__doc__ else None
        ins_t, outs_t = tuple(ins), tuple(outs)
        return cls(ins_t, outs_t, doc or _default_instructions(ins_t, outs_t))

    @property
    def input_names(self) -> list[str]:
        return [f.name for f in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [f.name for f in self.outputs]

    def with_instructions(self, instructions: str) -> Signature:
        return replace(self, instructions=instructions)

    def prepend_output(self, name: str, desc: str = "", required: bool = True) -> Signature:
        return replace(self, outputs=(Field(name, desc, required), *self.outputs))

    def __str__(self) -> str:
        def side(fs):
            return ", ".join(f.name if f.type == STR else f"{f.name}: {f.type.spec}" for f in fs)

        return f"{side(self.inputs)} -> {side(self.outputs)}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "inputs": [f.to_dict() for f in self.inputs],
            "outputs": [f.to_dict() for f in self.outputs],
            "instructions": self.instructions,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Signature:
        return cls(
            tuple(Field.from_dict(f) for f in d["inputs"]),
            tuple(Field.from_dict(f) for f in d["outputs"]),
            d.get("instructions", ""),
        )


def ensure_signature(sig: str | Signature | type, instructions: str | None = None) -> Signature:
    if isinstance(sig, type):
        sig = Signature.from_class(sig)
    if isinstance(sig, Signature):
        return sig if instructions is None else sig.with_instructions(instructions)
    if isinstance(sig, str):
        return Signature.parse(sig, instructions)
    raise ConfigError(f"expected a signature string like 'question -> answer', got {type(sig).__name__}")


def _annotations(klass: type) -> dict[str, Any]:
    """A class's own annotations, evaluated where possible; an annotation that does not evaluate (a name
    from a scope that is gone) stays a string, which `FieldType.parse` reads (``"Literal['a', 'b']"``)."""
    try:
        return inspect.get_annotations(klass, eval_str=True)
    except NameError:
        raw = inspect.get_annotations(klass)
        scope = {**vars(typing), **vars(sys.modules.get(klass.__module__, typing))}
        out = {}
        for name, annotation in raw.items():
            try:
                out[name] = eval(annotation, scope) if isinstance(annotation, str) else annotation  # noqa: S307
            except NameError:
                out[name] = annotation
        return out


def _fields(side: str) -> list[tuple[str, FieldType]]:
    """``"a, b: list[int], c: Literal['x, y', 'z']"`` → names and types (commas inside brackets or quotes
    do not split)."""
    out = []
    for part in _split_top_level(side):
        name, _, kind = part.partition(":")
        name = name.strip()
        if not _NAME.match(name):
            raise ConfigError(f"field name {name!r} is not a valid identifier")
        try:
            out.append((name, FieldType.parse(kind) if kind.strip() else STR))
        except TypeSpecError as e:
            raise ConfigError(f"field {name!r}: {e}") from None
    return out


def _split_top_level(text: str) -> list[str]:
    parts, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote and text[i - 1] != "\\" else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def _default_instructions(ins: tuple[Field, ...], outs: tuple[Field, ...]) -> str:
    def join(fs):
        return ", ".join(f"`{f.name}`" for f in fs)

    given = f"Given the fields {join(ins)}, produce" if ins else "Produce"
    return f"{given} the fields {join(outs)}."
