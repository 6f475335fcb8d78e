"""What a request is and what answers it: a chat as ``Messages`` and a `Completion`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

Messages = list[dict[str, str]]


@dataclass
class Completion:
    """One generated reply and what it cost."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    cached: bool = False
    finish_reason: str = "stop"
    unconstrained: bool = False  # asked for with a constraint the backend could not apply (sent free)


def truncate_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Cut ``text`` at the first stop string; returns (text, whether it was cut)."""
    cut = min((i for s in stop if (i := text.find(s)) >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


__all__ = ["Completion", "Messages", "truncate_at_stop"]
