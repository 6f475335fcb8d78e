"""Demos chosen once per question, where a wrapper runs one question several times in other forms.

`cotune.program.ensemble.ChoiceShuffleEnsemble` asks one question with its options in several orders. MedPrompt
shuffles the choices, not the demos: every order should see the demos the question gets. A kNN selector embeds the
call's inputs, options included, so a shuffled order embeds another text and, with an embedder that reads word order
(MiniLM), often ranks other demos first. Within `DemoPins.replaying`, each selector shows, call for call, the demos
it chose in the run recorded first (`DemoPins.recording`): the original order's. A context variable carries the
pins, so the runs of one question see them (each run enters its block in its own thread) and nothing else does.

Example:
    >>> pins = DemoPins()
    >>> with pins.recording():
    ...     chosen("selector", lambda: [3, 1])
    [3, 1]
    >>> with pins.replaying():
    ...     chosen("selector", lambda: [0, 2])
    [3, 1]
    >>> chosen("selector", lambda: [0, 2])  # no pins outside
    [0, 2]
"""

from __future__ import annotations

import contextvars
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from typing import Any

_active: contextvars.ContextVar[_Run | None] = contextvars.ContextVar("cotune_demo_pins", default=None)


class DemoPins:
    """The demos each selector chose in one recorded run, replayed in the runs after it."""

    def __init__(self) -> None:
        self._chosen: dict[Hashable, list[Any]] = defaultdict(list)

    @contextmanager
    def recording(self) -> Iterator[None]:
        """Selectors called in this block choose as usual; their choices are kept, in call order."""
        with _running(_Run(self._chosen, record=True)):
            yield

    @contextmanager
    def replaying(self) -> Iterator[None]:
        """The n-th call of a selector in this block gets its n-th recorded choice (beyond those: a choice of its own)."""
        with _running(_Run(self._chosen, record=False)):
            yield


class _Run:
    def __init__(self, chosen: dict[Hashable, list[Any]], record: bool):
        self.chosen, self.record = chosen, record
        self.calls: dict[Hashable, int] = defaultdict(int)


@contextmanager
def _running(run: _Run) -> Iterator[None]:
    token = _active.set(run)
    try:
        yield
    finally:
        _active.reset(token)


def chosen(selector: Hashable, choose: Callable[[], Any]) -> Any:
    """What ``selector`` shows at this call: ``choose()``, or under `DemoPins.replaying` the choice it recorded."""
    run = _active.get()
    if run is None:
        return choose()
    n = run.calls[selector]
    run.calls[selector] += 1
    kept = run.chosen[selector]
    if not run.record and n < len(kept):
        return kept[n]
    choice = choose()
    if run.record:
        kept.append(choice)
    return choice


__all__ = ["DemoPins", "chosen"]
