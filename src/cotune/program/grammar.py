"""Constraints for decoding: the grammar of a signature's completion, for backends that can enforce one.

`constraint(signature)` describes what a completion must look like, in two forms:
- ``grammar``: the ``Label: value`` format of `cotune.program.format`, as EBNF (with JSON-schema segments
  for JSON-typed fields): the labels in order, free text where a field is ``str`` (several lines allowed
  before the last field, as reasoning needs), a number where it is a number, one of the choices where it
  is a choice, and nothing after the last field. Local models decode under it (`cotune.lm.engine.hf`).
- ``json_schema``: the outputs as one JSON object, for servers whose structured outputs take a schema.

A reasoning budget caps the free text of the first field: once a row has generated ``budget_tokens``
tokens without reaching ``budget_exit`` (the next field's label), the backend writes that label itself,
so every run ends with an answer.

Example:
    >>> from cotune.program.signature import Signature
    >>> c = constraint(Signature.parse("question -> answer: Literal['yes', 'no']"))
    >>> print(c.grammar[0][1])
    root ::= "Answer: " f0
    f0 ::= ("yes" | "no")
"""

from __future__ import annotations

import functools
import json

from cotune.lm.constraint import Constraint
from cotune.program.signature import Field, Signature
from cotune.program.types import FieldType

# Widths that keep numbers finite (a small model can otherwise repeat digits until max_tokens).
INT_DIGITS, FRACTION_DIGITS = 15, 6


@functools.lru_cache(maxsize=256)  # built once per signature and budget, not on every call
def constraint(signature: Signature, *, budget_tokens: int | None = None) -> Constraint:
    """The `Constraint` of ``signature``'s completion; ``budget_tokens`` caps the first field when it is
    free text followed by other fields (a chain of thought's reasoning)."""
    outputs = signature.outputs
    exit_text = None
    if budget_tokens is not None and len(outputs) > 1 and outputs[0].type.kind == "str":
        exit_text = "\n" + outputs[1].label + ":"
    else:
        budget_tokens = None
    return Constraint(
        grammar=_segments(outputs),
        json_schema=json.dumps(json_schema(signature, budget_tokens), sort_keys=False),
        budget_tokens=budget_tokens,
        budget_exit=exit_text,
        reserve_tokens=sum(_token_estimate(f) for f in outputs[1:]) if exit_text else 0,
    )


def json_schema(signature: Signature, budget_tokens: int | None = None) -> dict:
    """The outputs as one JSON object: every field required, in order, nothing else."""
    props = {}
    for i, f in enumerate(signature.outputs):
        props[f.name] = f.type.json_schema()
        if i == 0 and budget_tokens and f.type.kind == "str" and len(signature.outputs) > 1:
            props[f.name]["maxLength"] = budget_tokens * 4  # ~4 characters a token
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


def _segments(outputs: tuple[Field, ...]) -> tuple[tuple[str, str], ...]:
    """EBNF for the labels and values; a JSON-typed field's value becomes a JSON-schema segment."""
    segments: list[tuple[str, str]] = []
    seq: list[str] = []
    rules: list[str] = []
    for i, f in enumerate(outputs):
        nxt = outputs[i + 1] if i + 1 < len(outputs) else None
        seq.append(_string(("\n" if i else "") + f.label + ": "))
        if f.type.kind == "json":
            segments.append(("ebnf", _ebnf(seq, rules)))
            segments.append(("json_schema", json.dumps(f.type.json_schema(), sort_keys=True)))
            seq, rules = [], []
            continue
        name = f"f{i}"
        seq.append(name)
        rules += _value_rules(name, f.type, nxt.label + ":" if nxt else None)
    if seq:
        segments.append(("ebnf", _ebnf(seq, rules)))
    return tuple(segments)


def _ebnf(seq: list[str], rules: list[str]) -> str:
    return "\n".join([f"root ::= {' '.join(seq)}", *rules])


def _value_rules(name: str, t: FieldType, next_label: str | None) -> list[str]:
    if t.kind == "str":
        if next_label is None:  # the last field: one line, not starting with a space; its newline ends it
            return [f'{name} ::= [^\\n ] [^\\n]* "\\n"?']
        # Several lines; a line that starts with the next field's label ends this field.
        return [f'{name} ::= [^\\n]* ("\\n" {name}_line)*', f"{name}_line ::= {_not_prefix(next_label)}"]
    return [f"{name} ::= {_scalar(t)}"]


def _scalar(t: FieldType, quoted: bool = False) -> str:
    if t.kind == "int":
        return f'"-"? [0-9]{{1,{INT_DIGITS}}}'
    if t.kind == "float":
        return f'"-"? [0-9]{{1,{INT_DIGITS}}} ("." [0-9]{{1,{FRACTION_DIGITS}}})?'
    if t.kind == "bool":
        return '("true" | "false")'
    if t.kind == "choice":
        return "(" + " | ".join(_string(json.dumps(c) if quoted else c) for c in t.choices) + ")"
    if t.kind == "str":  # inside a JSON list
        return '"\\"" ([^"\\\\\\n] | "\\\\" ["\\\\/bfnrt])* "\\""'
    assert t.kind == "list" and t.item is not None
    item = _scalar(t.item, quoted=True)
    return f'"[" ({item} (", " {item})*)? "]"'


def _not_prefix(label: str) -> str:
    """A line that does not start with ``label``: empty, or it leaves the label at some character."""
    out = None
    for ch in reversed(label):
        leave = f'"" | [^{_class_char(ch)}\\n] [^\\n]*'
        out = leave if out is None else f"{leave} | {_string(ch)} ({out})"
    return f"({out})" if out else '""'


def _string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _class_char(ch: str) -> str:
    return "\\" + ch if ch in "]\\^-[" else ch


def _token_estimate(f: Field) -> int:
    """Tokens a field's label and value may need after a forced exit (generous: better than a cut)."""
    label = len(f.label) // 3 + 3
    t = f.type
    if t.kind == "choice":
        return label + max(len(c) for c in t.choices) // 2 + 4
    if t.kind in ("int", "float", "bool"):
        return label + 12
    if t.kind == "str":
        return label + 48
    return label + 128


__all__ = ["constraint", "json_schema"]
