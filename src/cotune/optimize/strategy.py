"""Strategies: sequences of prompt (p) and weight (w) steps, parsed from strings in one place."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from cotune.errors import ConfigError

STEP_LETTERS = {"p": "prompt", "w": "weights"}
ZERO_SHOT = "zero-shot"
_ZERO_NAMES = {"zero-shot", "zeroshot", "zero_shot", "none", "base", ""}


def parse_strategy(text: str | Sequence[str]) -> tuple[str, ...]:
    """``"p-w-p"``, ``"p,w,p"``, ``"p→w→p"``, ``["prompt", "weights"]`` → ``("p", "w", "p")``; ``"zero-shot"`` → ``()``.

    Example:
        >>> parse_strategy("p-w-p"), parse_strategy("zero-shot"), parse_strategy(["prompt", "weights"])
        (('p', 'w', 'p'), (), ('p', 'w'))
    """
    if isinstance(text, str):
        if text.strip().lower() in _ZERO_NAMES:
            return ()
        parts = [t for t in re.split(r"\s*(?:->|→|>|,|-|\s)\s*", text.strip().lower()) if t]
    else:
        parts = [str(t).strip().lower() for t in text]
    steps = []
    for part in parts:
        letter = part if part in STEP_LETTERS else {v: k for k, v in STEP_LETTERS.items()}.get(part)
        if letter is None:
            raise ConfigError(
                f"unknown step {part!r} in strategy {text!r}; valid steps: "
                + ", ".join(f"{k} ({v})" for k, v in STEP_LETTERS.items())
                + f", or '{ZERO_SHOT}' for no step"
            )
        steps.append(letter)
    return tuple(steps)


def strategy_name(steps: Sequence[str]) -> str:
    """``("p", "w", "p")`` → ``"p-w-p"``; ``()`` → ``"zero-shot"``."""
    return "-".join(steps) if steps else ZERO_SHOT


def parse_strategies(text: str | Iterable[str]) -> list[tuple[str, ...]]:
    """A comma-separated list of dash-joined strategies: ``"zero-shot,p,w,p-w"``; duplicates dropped."""
    items = [t for t in (text.split(",") if isinstance(text, str) else text)]
    out: list[tuple[str, ...]] = []
    for item in items:
        steps = parse_strategy(item)
        if steps not in out:
            out.append(steps)
    if not out:
        raise ConfigError("no strategy given; e.g. --strategies zero-shot,p,w,p-w-p")
    return out


def node_prefixes(strategies: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
    """Every prefix of every strategy, each once, parents before children.

    Example:
        >>> [strategy_name(p) for p in node_prefixes([(), ("p",), ("p", "w", "p"), ("w", "p")])]
        ['zero-shot', 'p', 'w', 'p-w', 'w-p', 'p-w-p']
    """
    seen: list[tuple[str, ...]] = [()]
    for s in strategies:
        for i in range(1, len(s) + 1):
            if s[:i] not in seen:
                seen.append(s[:i])
    return sorted(seen, key=len)  # stable: keeps first-appearance order within a length
