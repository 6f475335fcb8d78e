"""`Signature`: the named input and output fields of one LM call, plus its instruction."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

from cotune.errors import ConfigError

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Field:
    """One field. ``desc`` is shown to the model; optional outputs may be absent from a completion."""

    name: str
    desc: str = ""
    required: bool = True

    def __post_init__(self):
        if not _NAME.match(self.name):
            raise ConfigError(f"field name {self.name!r} is not a valid identifier")

    @property
    def label(self) -> str:
        """How the field is written in prompts: ``search_query`` → ``Search Query``."""
        return " ".join(w.capitalize() for w in self.name.split("_") if w)


@dataclass(frozen=True)
class Signature:
    """Inputs → outputs with an instruction.

    Example:
        >>> sig = Signature.parse("context, question -> answer", "Answer briefly.")
        >>> [f.name for f in sig.inputs], [f.name for f in sig.outputs], str(sig)
        (['context', 'question'], ['answer'], 'context, question -> answer')
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
        """Parse ``"a, b -> c"``; ``descs`` gives a description per field name."""
        if spec.count("->") != 1:
            raise ConfigError(f"signature {spec!r} must look like 'input1, input2 -> output'")
        left, right = spec.split("->")
        ins = tuple(Field(n, descs.get(n, "")) for n in _names(left))
        outs = tuple(Field(n, descs.get(n, "")) for n in _names(right))
        unknown = set(descs) - {f.name for f in ins + outs}
        if unknown:
            raise ConfigError(f"descriptions for unknown field(s): {', '.join(sorted(unknown))}")
        if instructions is None:
            instructions = _default_instructions(ins, outs)
        return cls(ins, outs, instructions)

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
        return f"{', '.join(self.input_names)} -> {', '.join(self.output_names)}"

    def to_dict(self) -> dict[str, Any]:
        def fields(fs):
            return [{"name": f.name, "desc": f.desc, "required": f.required} for f in fs]

        return {"inputs": fields(self.inputs), "outputs": fields(self.outputs), "instructions": self.instructions}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Signature:
        return cls(
            tuple(Field(**f) for f in d["inputs"]),
            tuple(Field(**f) for f in d["outputs"]),
            d.get("instructions", ""),
        )


def ensure_signature(sig: str | Signature, instructions: str | None = None) -> Signature:
    if isinstance(sig, Signature):
        return sig if instructions is None else sig.with_instructions(instructions)
    if isinstance(sig, str):
        return Signature.parse(sig, instructions)
    raise ConfigError(f"expected a signature string like 'question -> answer', got {type(sig).__name__}")


def _names(side: str) -> list[str]:
    names = [n.strip() for n in side.split(",") if n.strip()]
    for n in names:
        if not _NAME.match(n):
            raise ConfigError(f"field name {n!r} is not a valid identifier")
    return names


def _default_instructions(ins: tuple[Field, ...], outs: tuple[Field, ...]) -> str:
    def join(fs):
        return ", ".join(f"`{f.name}`" for f in fs)

    given = f"Given the fields {join(ins)}, produce" if ins else "Produce"
    return f"{given} the fields {join(outs)}."
