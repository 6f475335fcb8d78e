"""Usage accounting: calls, tokens, seconds and cache hits."""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class Usage:
    """Totals over some calls. ``seconds`` is time spent waiting for the model (0 for cache hits);
    ``unconstrained`` counts calls sent without their output constraint (a server that refused it)."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    cache_hits: int = 0
    unconstrained: int = 0

    def add_call(
        self, prompt_tokens: int, completion_tokens: int, seconds: float, cached: bool, unconstrained: bool = False
    ) -> None:
        self.calls += 1
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens
        self.seconds += seconds
        self.cache_hits += int(cached)
        self.unconstrained += int(unconstrained)

    def __add__(self, other: Usage) -> Usage:
        return Usage(**{k: getattr(self, k) + getattr(other, k) for k in asdict(self)})

    def per_call(self) -> dict[str, float]:
        n = max(self.calls, 1)
        return {
            "prompt_tokens": self.prompt_tokens / n,
            "completion_tokens": self.completion_tokens / n,
            "seconds": self.seconds / n,
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_steps(cls, steps: list[Any]) -> Usage:
        """Sum the ``usage`` of trace steps (objects or dicts)."""
        u = cls()
        for s in steps:
            d = s["usage"] if isinstance(s, dict) else s.usage
            u.add_call(
                d.get("prompt_tokens", 0), d.get("completion_tokens", 0), d.get("seconds", 0.0), d.get("cached", False)
            )
        return u


class UsageMeter:
    """Thread-safe running `Usage` total, kept by every LM."""

    def __init__(self) -> None:
        self._usage = Usage()
        self._lock = threading.Lock()

    def add(
        self, prompt_tokens: int, completion_tokens: int, seconds: float, cached: bool, unconstrained: bool = False
    ) -> None:
        with self._lock:
            self._usage.add_call(prompt_tokens, completion_tokens, seconds, cached, unconstrained)

    def snapshot(self) -> Usage:
        with self._lock:
            return Usage(**self._usage.to_dict())
