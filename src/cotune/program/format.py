"""Chat format: render a signature, demos and inputs to messages; parse a completion back to fields.

The format is plain ``Label: value`` lines, which small models follow far more reliably than JSON or
bracketed markers. Demos are earlier user/assistant turns, so the model sees the format in use.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from cotune.errors import ParseError
from cotune.program.signature import Field, Signature

Messages = list[dict[str, str]]


def render_value(value: Any) -> str:
    """Lists (e.g. retrieved passages) become numbered lines; everything else is ``str()``."""
    if isinstance(value, (list, tuple)):
        if not value:
            return "N/A"
        return "\n".join(f"[{i}] {render_value(v)}" for i, v in enumerate(value, 1))
    return str(value).strip()


def render_fields(fields: Sequence[Field], values: Mapping[str, Any]) -> str:
    parts = []
    for f in fields:
        if f.name not in values:
            continue
        text = render_value(values[f.name])
        sep = "\n" if "\n" in text else " "
        parts.append(f"{f.label}:{sep}{text}")
    return "\n".join(parts)


def system_prompt(signature: Signature, instruction: str) -> str:
    lines = [instruction.strip(), "", "Reply in exactly this format:"]
    for f in signature.outputs:
        lines.append(f"{f.label}: <{f.desc or f.name.replace('_', ' ')}>")
    return "\n".join(lines)


def render(
    signature: Signature,
    instruction: str,
    demos: Sequence[Mapping[str, Any]],
    inputs: Mapping[str, Any],
) -> Messages:
    """Messages for one call: system (instruction + format), one user/assistant pair per demo, the inputs."""
    missing = [n for n in signature.input_names if n not in inputs]
    if missing:
        raise TypeError(f"missing input field(s) {', '.join(missing)} for signature '{signature}'")
    messages = [{"role": "system", "content": system_prompt(signature, instruction)}]
    for demo in demos:
        if not any(f.name in demo for f in signature.outputs if f.required):
            continue  # a demo with no answer teaches nothing
        messages.append({"role": "user", "content": render_fields(signature.inputs, demo)})
        messages.append({"role": "assistant", "content": render_fields(signature.outputs, demo)})
    messages.append({"role": "user", "content": render_fields(signature.inputs, inputs)})
    return messages


def parse(signature: Signature, text: str) -> dict[str, str]:
    """Read ``Label: value`` fields from a completion.

    Labels are matched case-insensitively at line starts, with optional markdown emphasis. Text before
    the first label belongs to the first output field when that one is absent (models often skip
    "Reasoning:"). With no label at all, a signature with one required output takes the text as that
    field. The last field ends at a blank line or another ``Label:`` line, so trailing chatter is dropped.

    Raises:
        ParseError: a required output field is missing; ``.raw`` keeps the text.
    """
    outputs = signature.outputs
    by_label = {f.label.lower(): f.name for f in outputs} | {f.name.lower(): f.name for f in outputs}
    alternatives = "|".join(sorted((re.escape(k) for k in by_label), key=len, reverse=True))
    pattern = re.compile(rf"^[ \t>#*_-]*({alternatives})[ \t*_]*:[ \t*_]*", re.IGNORECASE | re.MULTILINE)

    found: dict[str, str] = {}
    matches = list(pattern.finditer(text))
    for i, m in enumerate(matches):
        name = by_label[m.group(1).lower()]
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        value = text[m.end() : end]
        if i + 1 == len(matches):
            value = _end_of_last_field(value)
        if name not in found:  # the first occurrence wins; later repeats are usually the model rambling
            found[name] = value.strip()

    if matches:
        head = text[: matches[0].start()].strip()
        if head and outputs[0].name not in found:
            found[outputs[0].name] = head
    else:
        required = [f for f in outputs if f.required]
        if len(required) == 1 and text.strip():
            found[required[0].name] = _end_of_last_field(text)

    missing = [f.name for f in outputs if f.required and not found.get(f.name)]
    if missing:
        raise ParseError(
            f"completion lacks output field(s) {', '.join(missing)}", raw=text, missing=missing
        )
    return {f.name: found[f.name] for f in outputs if f.name in found}


_OTHER_LABEL = re.compile(r"\n[ \t*_]*[A-Z][A-Za-z ]{0,30}[ \t*_]*:")


def _end_of_last_field(value: str) -> str:
    """The last field ends at a blank line or at a line that starts another ``Label:`` (model chatter)."""
    value = re.split(r"\n\s*\n", value.strip(), maxsplit=1)[0]
    return _OTHER_LABEL.split(value, maxsplit=1)[0].strip()
