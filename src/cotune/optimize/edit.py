"""Word-level edit distance and the edit-budget schedules of GPO (the "learning rate" of prompt updates).

GPO limits how far one update may move an instruction: "change at most N words". N follows a schedule
over the optimization steps; the paper's choice is a cosine decay from 50 words down to 10.

Example:
    >>> word_edit_distance("Classify the flower.", "Classify the iris flower.")
    1
    >>> [edit_budget("cosine", t, 5) for t in range(5)]
    [50, 44, 30, 16, 10]
"""

from __future__ import annotations

import math
import re

from cotune.errors import ConfigError, UnknownChoiceError

BUDGET_KINDS = ("cosine", "fixed", "none")


def words(text: str) -> list[str]:
    """Whitespace-separated words; punctuation stays attached ("flower." is one word)."""
    return str(text).split()


def word_edit_distance(a: str, b: str) -> int:
    """Levenshtein distance between the word sequences of ``a`` and ``b``: the fewest word insertions,
    deletions and substitutions turning one into the other. Case- and punctuation-sensitive: changing
    "flower" to "Flower." is one edit."""
    x, y = words(a), words(b)
    if len(x) < len(y):
        x, y = y, x
    previous = list(range(len(y) + 1))
    for i, wx in enumerate(x, 1):
        current = [i]
        for j, wy in enumerate(y, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (wx != wy)))
        previous = current
    return previous[-1]


def cosine_budget(step: int, num_steps: int, start: int = 50, end: int = 10) -> int:
    """``end + (start - end) * (1 + cos(pi * step / (num_steps - 1))) / 2``, rounded: ``start`` at the first
    step, ``end`` at the last, never increasing in between. With one step it is ``start``."""
    if num_steps <= 1:
        return int(start)
    frac = min(max(step, 0), num_steps - 1) / (num_steps - 1)
    return int(round(end + 0.5 * (start - end) * (1 + math.cos(math.pi * frac))))


def edit_budget(kind: str, step: int, num_steps: int, start: int = 50, end: int = 10) -> int | None:
    """The most words step ``step`` (0-based, of ``num_steps``) may change; None means unlimited.

    Args:
        kind: "cosine" (decay from ``start`` to ``end``), "fixed" (``start`` at every step) or "none".

    Raises:
        UnknownChoiceError: ``kind`` is not one of the above.
        ConfigError: ``start`` or ``end`` is below 1, or ``end`` > ``start``.
    """
    if kind not in BUDGET_KINDS:
        raise UnknownChoiceError("edit budget", kind, BUDGET_KINDS)
    if kind == "none":
        return None
    if start < 1 or end < 1 or end > start:
        raise ConfigError(f"edit budget needs 1 <= budget_end <= budget_start, got start={start}, end={end}")
    return int(start) if kind == "fixed" else cosine_budget(step, num_steps, start, end)


def normalize_instruction(text: str) -> str:
    """A key for deduplication: lower case, single spaces, no surrounding quotes or final punctuation."""
    text = " ".join(str(text).lower().split())
    return re.sub(r"[\s\"'`.!]+$", "", re.sub(r"^[\s\"'`]+", "", text))


__all__ = ["BUDGET_KINDS", "cosine_budget", "edit_budget", "normalize_instruction", "word_edit_distance", "words"]
