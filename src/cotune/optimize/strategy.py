"""Strategies: sequences of prompt (Π) and weight (Θ) steps, parsed from strings in one place, and the
tree their shared prefixes form, which `BetterTogether.run_tree` and the experiment grids both walk."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from enum import StrEnum

from cotune.errors import ConfigError

ZERO_SHOT = "zero-shot"
_ZERO_NAMES = {"zero-shot", "zeroshot", "zero_shot", "none", "base", ""}


class StepKind(StrEnum):
    """A step's kind; its value is the letter strategies are written with ("p-w-p"). A `StrEnum`, so a kind
    is written to JSON, events and strategy names as its letter."""

    PROMPT = "p"
    WEIGHTS = "w"

    @property
    def word(self) -> str:
        """The long name a config may use instead of the letter: "prompt" or "weights"."""
        return _WORDS[self]

    @classmethod
    def parse(cls, text: str, strategy: object = None) -> StepKind:
        """``"p"``, ``"prompt"``, ``"W"``, ``"weights"`` or a `StepKind` → the kind; else a `ConfigError`
        naming the bad step (and ``strategy``, the text it came from) and the valid ones."""
        key = str(text).strip().lower()
        for kind in cls:
            if key in (kind.value, kind.word):
                return kind
        where = f" in strategy {strategy!r}" if strategy is not None else ""
        valid = ", ".join(f"{k.value} ({k.word})" for k in cls)
        raise ConfigError(f"unknown step {text!r}{where}; valid steps: {valid}, or '{ZERO_SHOT}' for no step")


_WORDS = {StepKind.PROMPT: "prompt", StepKind.WEIGHTS: "weights"}
Steps = tuple[StepKind, ...]


def parse_strategy(text: str | Sequence[str]) -> Steps:
    """``"p-w-p"``, ``"p,w,p"``, ``"p→w→p"``, ``["prompt", "weights"]`` → ``(PROMPT, WEIGHTS, PROMPT)``;
    ``"zero-shot"`` → ``()``.

    Example:
        >>> [strategy_name(parse_strategy(s)) for s in ("p-w-p", "zero-shot", ["prompt", "weights"])]
        ['p-w-p', 'zero-shot', 'p-w']
    """
    if isinstance(text, str):
        if text.strip().lower() in _ZERO_NAMES:
            return ()
        parts = [t for t in re.split(r"\s*(?:->|→|>|,|-|\s)\s*", text.strip()) if t]
    else:
        parts = [str(t) for t in text]
    return tuple(StepKind.parse(part, text) for part in parts)


def strategy_name(steps: Sequence[str]) -> str:
    """``(PROMPT, WEIGHTS, PROMPT)`` → ``"p-w-p"``; ``()`` → ``"zero-shot"``."""
    return "-".join(steps) if steps else ZERO_SHOT


def last_kind(steps: Sequence[StepKind]) -> StepKind | None:
    """The kind of a node's own step; None for zero-shot (the starting program)."""
    return steps[-1] if steps else None


def parse_strategies(text: str | Iterable[str]) -> list[Steps]:
    """A comma-separated list of dash-joined strategies: ``"zero-shot,p,w,p-w"``; duplicates dropped."""
    items = [t for t in (text.split(",") if isinstance(text, str) else text)]
    out: list[Steps] = []
    for item in items:
        steps = parse_strategy(item)
        if steps not in out:
            out.append(steps)
    if not out:
        raise ConfigError("no strategy given; e.g. --strategies zero-shot,p,w,p-w-p")
    return out


def node_prefixes(strategies: Iterable[Sequence[StepKind]]) -> list[Steps]:
    """Every prefix of every strategy, each once, parents before children.

    Example:
        >>> [strategy_name(p) for p in node_prefixes(parse_strategies("zero-shot,p,p-w-p,w-p"))]
        ['zero-shot', 'p', 'w', 'p-w', 'w-p', 'p-w-p']
    """
    seen: list[Steps] = [()]
    for s in strategies:
        s = tuple(s)
        for i in range(1, len(s) + 1):
            if s[:i] not in seen:
                seen.append(s[:i])
    return sorted(seen, key=len)  # stable: keeps first-appearance order within a length


class StrategyTree:
    """The nodes of one seed's strategies: every prefix once (zero-shot is the root), parents before
    children. A node runs from its parent's program; when a node fails its descendants have nothing to
    build on and are skipped (`descendants`).

    Example:
        >>> tree = StrategyTree(parse_strategies("p-w-p,w"))
        >>> [strategy_name(n) for n in tree.children(())], [strategy_name(n) for n in tree.descendants(("p",))]
        (['p', 'w'], ['p-w', 'p-w-p'])
    """

    def __init__(self, strategies: Iterable[Sequence[StepKind]]):
        self.nodes: list[Steps] = node_prefixes(strategies)
        self._position = {steps: i for i, steps in enumerate(self.nodes)}

    def __iter__(self) -> Iterator[Steps]:
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    def position(self, steps: Sequence[StepKind]) -> int:
        """Where the node comes in the tree's order (a sort key)."""
        return self._position[tuple(steps)]

    def children(self, steps: Sequence[StepKind]) -> list[Steps]:
        """The nodes one step after ``steps``, in tree order."""
        steps = tuple(steps)
        return [n for n in self.nodes if n and n[:-1] == steps]

    def descendants(self, steps: Sequence[StepKind]) -> list[Steps]:
        """Every node that builds on ``steps`` (not ``steps`` itself), in tree order."""
        steps = tuple(steps)
        return [n for n in self.nodes if len(n) > len(steps) and n[: len(steps)] == steps]
