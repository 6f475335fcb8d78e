"""Structured events: how library code reports progress without printing.

Long-running functions take an optional ``events`` sink (any callable taking an `Event`). The CLI passes
one that draws progress bars; an experiment passes one that appends to its event log; tests pass a list's
``append``. Nothing is global: no sink, no output (events still go to the ``cotune`` logger at DEBUG).

Example:
    >>> seen = []
    >>> with Progress(seen.append, "evaluate", total=2) as bar:
    ...     bar.advance(score=1.0)
    ...     bar.advance(score=0.5)
    >>> [e.name for e in seen]
    ['progress.start', 'progress.advance', 'progress.advance', 'progress.end']
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger("cotune")

_ids = itertools.count(1)


@dataclass(frozen=True)
class Event:
    """One thing that happened: ``name`` says what ("progress.advance", "step.done", ...)."""

    name: str
    fields: dict[str, Any] = field(default_factory=dict)
    time: float = field(default_factory=time.time)


EventSink = Callable[[Event], None]


def emit(sink: EventSink | None, name: str, **fields: Any) -> None:
    """Send an event to ``sink`` (if any) and to the ``cotune`` logger."""
    logger.debug("%s %s", name, fields)
    if sink is not None:
        sink(Event(name, fields))


class Progress:
    """A progress bar expressed as events: ``progress.start`` / ``progress.advance`` / ``progress.end``.

    Thread-safe: worker threads may call `advance` concurrently.
    """

    def __init__(self, sink: EventSink | None, description: str, total: int | None = None):
        self.sink, self.description, self.total = sink, description, total
        self.id = next(_ids)
        self.done = 0
        self._lock = threading.Lock()

    def __enter__(self) -> Progress:
        emit(self.sink, "progress.start", id=self.id, description=self.description, total=self.total)
        return self

    def advance(self, n: int = 1, **postfix: Any) -> None:
        with self._lock:
            self.done += n
            done = self.done
        emit(self.sink, "progress.advance", id=self.id, done=done, total=self.total, advance=n, **postfix)

    def __exit__(self, *exc: object) -> None:
        emit(self.sink, "progress.end", id=self.id, done=self.done, total=self.total)
