"""The meta-prompts of GPO: how the optimizer LM is asked for a new instruction, and how its answer is read.

The optimizer LM is called through a cotune `Predict` with `PROPOSER_SIGNATURE`, so its requests go
through the same rendering, parsing, cache and usage accounting as any program call.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from cotune.errors import UnknownChoiceError
from cotune.program.predict import Predict
from cotune.program.signature import Signature

# The current instruction comes last, right before the reply: small models continue what they read last,
# and it is the text to change.
PROPOSER_SIGNATURE = (
    "task_examples, past_instructions, current_score, edit_budget, current_instruction -> new_instruction"
)

_CONTEXT = (
    "You improve the instruction that tells a language model how to solve a task. You see examples of the "
    "task with their correct outputs, earlier instructions with their scores (accuracy on held-out examples, "
    "from 0 to 1, higher is better), and the current instruction with its score."
)
_RULES = (
    "Respect the edit budget: count the words of the current instruction you add, remove or replace. "
    "The instruction must describe how to solve the task in general; do not copy the examples or their answers. "
    "Reply with the instruction only."
)
META_INSTRUCTIONS = {
    # Generation-based update (GPO's choice): write a new instruction, guided by the retrieved ones.
    "generation": f"{_CONTEXT}\n\nWrite a new instruction that will score higher than all of them: keep what the "
    f"high-scoring instructions have in common and avoid what the low-scoring ones do. {_RULES}",
    # Edit-based update (ablation): modify the current instruction in place.
    "edit": f"{_CONTEXT}\n\nEdit the current instruction so that it scores higher: add, remove or replace a few "
    f"words and keep the rest exactly as it is. {_RULES}",
}

MAX_VALUE_CHARS = 300  # long inputs (retrieved passages) would crowd out the instructions in the meta-prompt


def proposer(update: str, lm: Any, *, temperature: float, rollout_id: int, max_tokens: int = 256) -> Predict:
    """The `Predict` that asks ``lm`` for a new instruction (one per request: configs differ by rollout id)."""
    if update not in META_INSTRUCTIONS:
        raise UnknownChoiceError("update", update, META_INSTRUCTIONS)
    signature = Signature.parse(PROPOSER_SIGNATURE, META_INSTRUCTIONS[update], new_instruction="the new instruction")
    config = {"temperature": temperature, "rollout_id": rollout_id, "max_tokens": max_tokens}
    return Predict(signature, config=config).bind(lm)


def _label(name: str) -> str:
    return " ".join(w.capitalize() for w in name.split("_") if w)


def _short(value: Any) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 3] + "..."


def format_examples(examples: Sequence[Mapping[str, Any]]) -> str:
    """Task examples, one line each: the inputs, then the gold outputs after "->".

    One line per example (rather than ``Label: value`` lines) keeps the meta-prompt short and keeps small
    optimizer models from continuing the examples instead of writing an instruction.
    """
    if not examples:
        return "none"
    lines = []
    for i, ex in enumerate(examples, 1):
        inputs = ex.inputs() if hasattr(ex, "inputs") else dict(ex)
        labels = ex.labels() if hasattr(ex, "labels") else {}
        given = "; ".join(f"{_label(k)}: {_short(v)}" for k, v in inputs.items())
        gold = "; ".join(f"{_label(k)}: {_short(v)}" for k, v in labels.items())
        lines.append(f"{i}. {given} -> {gold}")
    return "\n".join(lines)


def format_past(past: Sequence[tuple[str, float]]) -> str:
    """Past instructions with their scores, one per line (callers order them worst to best)."""
    if not past:
        return "none yet"
    return "\n".join(f"Score {score:.2f}: {' '.join(text.split())}" for text, score in past)


def format_budget(budget: int | None, last_distance: int | None = None) -> str:
    """The edit-budget sentence, with a reminder after an attempt that changed too many words."""
    if budget is None:
        return "No limit: you may rewrite the instruction freely."
    text = f"Change at most {budget} words of the current instruction."
    if last_distance is not None:
        text += (
            f" Your previous attempt changed {last_distance} words, which is too many: keep more of the "
            "current instruction's words unchanged."
        )
    return text


_FENCE = re.compile(r"^```[a-z]*\s*|\s*```$")
_LEAD_LABEL = re.compile(
    r"^(?:new |edited |improved |revised |current |updated )?(?:instruction|prompt)\s*:\s*", re.IGNORECASE
)
_QUOTES = "\"'`“”‘’"


def clean_instruction(text: str) -> str:
    """The instruction inside a completion: no code fences, no leading "Instruction:" label, no wrapping
    quotes or angle brackets (the reply format shows ``<the new instruction>``, and an optimizer LM may copy
    them: Qwen2.5-Coder-1.5B did on BBH), no quote left open at either end, whitespace collapsed to single
    spaces. Empty when nothing is left."""
    text = _FENCE.sub("", str(text).strip())
    text = _LEAD_LABEL.sub("", text.strip())
    text = " ".join(text.split())
    wrapped = len(text) >= 2 and (
        (text[0] in _QUOTES and text[-1] in _QUOTES) or (text[0] == "<" and text[-1] == ">" and text.count("<") == 1)
    )
    if wrapped:
        text = text[1:-1].strip()
    if text and ((text[0] in _QUOTES and text.count(text[0]) == 1) or (text[0] == "<" and ">" not in text)):
        text = text[1:].strip()  # opened, never closed
    if text and text[-1] in _QUOTES and text.count(text[-1]) == 1:
        text = text[:-1].strip()
    return text
