"""Options and their letters: ``(A) x``, and which option an answer names (letter, ``(B)``, or the option's text).

Multiple-choice tasks format their options with these, and `cotune.program.ensemble.ChoiceShuffleEnsemble`
maps each shuffled run's answer back to the original option with `answer_index`.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from typing import Any

from cotune.errors import ConfigError

LETTERS = string.ascii_uppercase


def option_letter(index: int) -> str:
    """``0`` → ``"A"``. Raises ConfigError past 26 options."""
    if not 0 <= index < len(LETTERS):
        raise ConfigError(f"option index {index} is out of range: at most {len(LETTERS)} options (A-Z)")
    return LETTERS[index]


def format_options(options: Sequence[Any]) -> str:
    """The options as lettered lines: ``["x", "y"]`` → ``"(A) x\\n(B) y"``."""
    return "\n".join(f"({option_letter(i)}) {str(o).strip()}" for i, o in enumerate(options))


_PAREN_LETTER = re.compile(r"\(([A-Z])\)")
_LEADING_LETTER = re.compile(r"^\(?([A-Za-z])\)?\s*$|^\(?([A-Za-z])\)|^([A-Z])[.:](?:\s|$)")
# The keyword is case-insensitive, the letter is not: "the answer is a bit..." names no option.
_NAMED_LETTER = re.compile(r"\b(?i:option|choice|answer(?:\s+is)?)\s*:?\s*\(?([A-Z])\b\)?")
_DECORATION = " \t\n*_`'\"."


def _norm(text: str) -> str:
    return " ".join(str(text).lower().strip(_DECORATION).split())


def answer_index(text: Any, options: Sequence[Any] | None = None) -> int | None:
    """The index of the option ``text`` names, or None when it names none (or several).

    Read in this order: the whole text is an option's text; one distinct ``(X)`` in the text; a letter at
    the start (``"B"``, ``"b"``, ``"B)"``, ``"B. ..."``, ``"(B) ..."``); ``"option B"`` / ``"answer is B"``;
    exactly one option's text inside the answer. With ``options``, letters beyond the last option are
    refused.

    >>> [answer_index(t, ["12/25/1937", "01/04/1938"]) for t in ["(B)", "b", "A) x", "The answer is (A).",
    ...                                                          "01/04/1938", "(A) or (B)", "C"]]
    [1, 1, 0, 0, 1, None, None]
    """
    if text is None:
        return None
    raw = str(text).strip().strip("*_` ")
    if not raw:
        return None
    n = len(options) if options is not None else len(LETTERS)

    def ok(letter: str | None) -> int | None:
        if letter is None:
            return None
        index = LETTERS.index(letter.upper())
        return index if index < n else None

    if options is not None:
        whole = _norm(raw)
        exact = [i for i, o in enumerate(options) if _norm(o) == whole]
        if len(exact) == 1:
            return exact[0]
    letters = set(_PAREN_LETTER.findall(raw))
    if len(letters) == 1:
        return ok(letters.pop())
    if len(letters) > 1:
        return None  # "(A) or (B)": no single choice
    lead = _LEADING_LETTER.match(raw)
    if lead:
        return ok(next(g for g in lead.groups() if g))
    named = {m.upper() for m in _NAMED_LETTER.findall(raw)}
    if len(named) == 1:
        return ok(named.pop())
    if options is not None:
        inside = [
            i
            for i, o in enumerate(options)
            if _norm(o) and re.search(rf"(?<!\w){re.escape(_norm(o))}(?!\w)", _norm(raw))
        ]
        if len(inside) == 1:
            return inside[0]
    return None


def answer_letter(text: Any, options: Sequence[Any] | None = None) -> str | None:
    """Like `answer_index`, as a letter: ``"(b)"`` → ``"B"``."""
    index = answer_index(text, options)
    return None if index is None else LETTERS[index]


__all__ = ["LETTERS", "answer_index", "answer_letter", "format_options", "option_letter"]
