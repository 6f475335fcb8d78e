"""Chat format: render a signature, demos and inputs to messages; parse a completion back to typed fields.

The format is plain ``Label: value`` lines, which small models follow far more reliably than JSON or
bracketed markers. Demos are earlier user/assistant turns, so the model sees the format in use. Where a
backend constrains decoding with a grammar (`cotune.program.grammar`), the completion is forced into
exactly this format; otherwise `parse` is lenient about what models write. A backend that can only
constrain to a JSON schema gets the JSON variant (``style="json"``): the same prompt asking for a JSON
object, and `parse` reads either.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from cotune.errors import ParseError
from cotune.program.signature import Field, Signature

Messages = list[dict[str, str]]
STYLES = ("labels", "json")
# Lines that announce the answer after the reasoning; they fill the last output field when its own
# label is missing or its value does not fit the type.
FINAL_ANSWER_LABELS = ("final answer", "the final answer", "the answer")
_FINAL_ANSWER_PHRASES = re.compile(
    r"(?:final answer|the answer)\s*(?:is|=|:)\s*(.+?)\s*(?:$|\n)|####\s*(.+?)\s*(?:$|\n)|\\boxed\{([^}]*)\}",
    re.IGNORECASE,
)


def render_value(value: Any, field: Field | None = None) -> str:
    """Lists (e.g. retrieved passages) become numbered lines; typed values as their type writes them."""
    if field is not None and field.type.kind != "str":
        return field.type.render(value)
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
        text = render_value(values[f.name], f)
        sep = "\n" if "\n" in text else " "
        parts.append(f"{f.label}:{sep}{text}")
    return "\n".join(parts)


def render_json(fields: Sequence[Field], values: Mapping[str, Any]) -> str:
    """The outputs as one JSON object, in field order (the ``json`` style's assistant turns)."""
    out: dict[str, Any] = {}
    for f in fields:
        if f.name in values:
            v = values[f.name]
            out[f.name] = v.model_dump(mode="json") if hasattr(v, "model_dump") else v
    return json.dumps(out, ensure_ascii=False, default=str)


def placeholder(field: Field) -> str:
    """What the prompt shows in place of a field's value: its description and, if typed, its type."""
    desc = field.desc or field.name.replace("_", " ")
    if field.type.kind == "str":
        return desc
    kind = field.type.describe()
    return kind if not field.desc else f"{desc}; {kind}"


def system_prompt(signature: Signature, instruction: str, style: str = "labels") -> str:
    lines = [instruction.strip(), ""]
    if style == "json":
        lines.append("Reply with a JSON object with exactly these keys, in this order:")
        lines += [f'"{f.name}": <{placeholder(f)}>' for f in signature.outputs]
    else:
        lines.append("Reply in exactly this format:")
        lines += [f"{f.label}: <{placeholder(f)}>" for f in signature.outputs]
    return "\n".join(lines)


def render(
    signature: Signature,
    instruction: str,
    demos: Sequence[Mapping[str, Any]],
    inputs: Mapping[str, Any],
    style: str = "labels",
) -> Messages:
    """Messages for one call: system (instruction + format), one user/assistant pair per demo, the inputs."""
    missing = [n for n in signature.input_names if n not in inputs]
    if missing:
        raise TypeError(f"missing input field(s) {', '.join(missing)} for signature '{signature}'")
    answer = render_json if style == "json" else render_fields
    messages = [{"role": "system", "content": system_prompt(signature, instruction, style)}]
    for demo in demos:
        if not any(f.name in demo for f in signature.outputs if f.required):
            continue  # a demo with no answer teaches nothing
        messages.append({"role": "user", "content": render_fields(signature.inputs, demo)})
        messages.append({"role": "assistant", "content": answer(signature.outputs, demo)})
    messages.append({"role": "user", "content": render_fields(signature.inputs, inputs)})
    return messages


def parse(signature: Signature, text: str) -> dict[str, Any]:
    """Read the output fields from a completion and coerce each to its type.

    Lenient, for models writing freely: labels are matched case-insensitively at line starts, with
    optional markdown emphasis, in any order; a label that repeats keeps its last value that fits the
    type (models restate and correct themselves); text before the first label belongs to the first output
    field when that one is absent (models often skip "Reasoning:"); a "Final answer: …" / "the answer is
    …" / ``#### …`` line fills the last output field when its own label is missing or does not fit. With
    no label at all, a signature with one required output takes the text as that field. A completion
    that is a JSON object is read as one. Text from a line starting with an *input* label on (the model
    inventing the next question) is ignored, and the last field ends at a blank line.

    Raises:
        ParseError: a required output field is missing, or no value of it fits its type; ``.raw`` keeps
            the text, ``.field``/``.value`` name the value that did not fit.
    """
    data = _json_object(text)
    candidates = _json_candidates(signature, data) if data is not None else _label_candidates(signature, text)
    last = signature.outputs[-1]
    if last.name not in candidates or last.type.kind != "str":
        finals = [next(g for g in m.groups() if g is not None) for m in _FINAL_ANSWER_PHRASES.finditer(text)]
        # Before the field's own values: those are tried first (last to first), these only when none fits.
        candidates[last.name] = [f for f in finals if f.strip()] + candidates.get(last.name, [])

    found: dict[str, Any] = {}
    for f in signature.outputs:
        values = [v for v in candidates.get(f.name, []) if not (isinstance(v, str) and not v.strip())]
        error = None
        for value in reversed(values):  # the last value that fits
            try:
                found[f.name] = f.type.coerce(value)
                break
            except ValueError as e:
                error = error or (value, e)
        if f.name in found or not f.required:
            continue
        if error is not None:
            value, e = error
            shown = value if isinstance(value, str) else json.dumps(value, default=str)
            raise ParseError(
                f"output field {f.name!r} has value {_clip(shown)!r}, which is not {f.type.describe()} ({e})",
                raw=text,
                missing=[f.name],
                field=f.name,
                value=shown,
            )
    missing = [f.name for f in signature.outputs if f.required and f.name not in found]
    if missing:
        raise ParseError(f"completion lacks output field(s) {', '.join(missing)}", raw=text, missing=missing)
    return found


def _label_candidates(signature: Signature, text: str) -> dict[str, list[str]]:
    outputs = signature.outputs
    by_label = {f.label.lower(): f.name for f in outputs} | {f.name.lower(): f.name for f in outputs}
    for alias in FINAL_ANSWER_LABELS:
        by_label.setdefault(alias, outputs[-1].name)
    text = _cut_invented_turn(signature, text, by_label)
    alternatives = "|".join(sorted((re.escape(k) for k in by_label), key=len, reverse=True))
    pattern = re.compile(rf"^[ \t>#*_-]*({alternatives})[ \t*_]*:[ \t*_]*", re.IGNORECASE | re.MULTILINE)

    found: dict[str, list[str]] = {}
    matches = list(pattern.finditer(text))
    for i, m in enumerate(matches):
        name = by_label[m.group(1).lower()]
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        value = text[m.end() : end]
        if i + 1 == len(matches):
            value = _end_of_last_field(value)
        found.setdefault(name, []).append(value.strip())

    if matches:
        head = text[: matches[0].start()].strip()
        if head and outputs[0].name not in found:
            found[outputs[0].name] = [head]
    else:
        required = [f for f in outputs if f.required]
        if len(required) == 1 and text.strip():
            found[required[0].name] = [_end_of_last_field(text)]
    return found


def _cut_invented_turn(signature: Signature, text: str, output_labels: Mapping[str, str]) -> str:
    """Drop text from the first line that starts with an input label *after* the last output field's
    label: the model has answered and started to invent the next example."""
    inputs = {f.label.lower() for f in signature.inputs} | {f.name.lower() for f in signature.inputs}
    inputs -= set(output_labels)
    if not inputs:
        return text
    alternatives = "|".join(sorted((re.escape(k) for k in inputs), key=len, reverse=True))
    last = signature.outputs[-1]
    outs = "|".join(re.escape(k) for k in sorted({last.label.lower(), last.name.lower()}, key=len, reverse=True))
    first_output = re.search(rf"^[ \t>#*_-]*({outs})[ \t*_]*:", text, re.IGNORECASE | re.MULTILINE)
    if first_output is None:
        return text
    turn = re.compile(rf"^[ \t>#*_-]*({alternatives})[ \t*_]*:", re.IGNORECASE | re.MULTILINE)
    m = turn.search(text, first_output.end())
    return text[: m.start()] if m else text


def _json_object(text: str) -> dict[str, Any] | None:
    body = re.sub(r"^```(?:json)?\s*|\s*```$", "", text.strip())
    if not body.startswith("{"):
        return None
    try:
        data = json.loads(body)
    except json.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


def _json_candidates(signature: Signature, data: dict[str, Any]) -> dict[str, list[Any]]:
    keys = {str(k).lower().replace(" ", "_"): v for k, v in data.items()}
    return {f.name: [keys[f.name.lower()]] for f in signature.outputs if f.name.lower() in keys}


_OTHER_LABEL = re.compile(r"\n[ \t*_]*[A-Z][A-Za-z ]{0,30}[ \t*_]*:")


def _end_of_last_field(value: str) -> str:
    """The last field ends at a blank line or at a line that starts another ``Label:`` (model chatter)."""
    value = re.split(r"\n\s*\n", value.strip(), maxsplit=1)[0]
    return _OTHER_LABEL.split(value, maxsplit=1)[0].strip()


def _clip(text: str, n: int = 80) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"
