"""`ChoiceShuffleEnsemble` (MedPrompt): ask a multiple-choice question several times with the options in
different orders, map each answer back to the original option, and vote.

A model's preference for a position ("always (A)") votes for a different original option in each order
and so cancels out, while an answer that depends on the content survives every shuffle. Each run is a
separate LM request — permuted options change the prompt, so a request cache stays correct — and shows
up as its own predictor call in the trace, so usage accounting shows the m-fold cost.

Rules (documented so results can be read correctly):

- Permutations are deterministic in (``seed``, the options); the first is the original order; the rest
  are distinct random orders. With fewer distinct orders than ``m`` (2 options have 2) each runs once.
- Only the options move: demos chosen per question (kNN) are those of the original order in every run
  (`cotune.program.demo_pins`), as in MedPrompt, so the votes differ by the options' order alone.
- The original order runs first; the other orders then go out at once (`cotune.program.trace.run_together`),
  so a local engine batches them and computes their shared prompt once. The trace lists the runs in order.
- An answer that names no option (or a run whose output does not parse) casts no vote.
- The winner has the most votes; a tie goes to the option voted for first (the original order's answer
  when it is among the tied).
- ``agreement`` = the winner's votes / runs (runs without a vote count as dissent).

Example:
    >>> from cotune.lm import FakeLM
    >>> from cotune.tasks.multiple_choice import MultipleChoiceQA
    >>> always_a = FakeLM(lambda messages: "Answer: (A)")  # pure position bias
    >>> ensemble = ChoiceShuffleEnsemble(MultipleChoiceQA(cot=False), m=3).bind(always_a)
    >>> pred = ensemble(question="Pick one.", options=["red", "green", "blue"])
    >>> len(pred.votes), len(set(pred.votes)) > 1, pred.agreement < 1
    (3, True, True)
"""

from __future__ import annotations

import functools
import itertools
import math
import random
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

from cotune.errors import ConfigError, ParseError
from cotune.program.choices import LETTERS, answer_index
from cotune.program.demo_pins import DemoPins
from cotune.program.prediction import Prediction
from cotune.program.program import Program, program_for_state
from cotune.program.trace import run_together

# Up to this many options all orders are listed and shuffled; beyond, random orders are drawn.
_ENUMERATE_UP_TO = 7


def _check_m(m: Any) -> None:
    if isinstance(m, bool) or not isinstance(m, int) or m < 1:
        raise ConfigError(f"m must be an integer >= 1, got {m!r}")


def choice_permutations(n: int, m: int, seed: int | str) -> list[tuple[int, ...]]:
    """``min(m, n!)`` distinct orders of ``n`` options, the identity first, the rest seeded random.

    Each order lists original indices: ``(2, 0, 1)`` shows original option 2 as (A).

    >>> choice_permutations(3, 4, seed=0)[0], len(set(choice_permutations(3, 10, seed=0)))
    ((0, 1, 2), 6)
    """
    rng = random.Random(seed)
    identity = tuple(range(n))
    want = min(m, math.factorial(n))
    if n <= _ENUMERATE_UP_TO:
        rest = [p for p in itertools.permutations(range(n)) if p != identity]
        rng.shuffle(rest)
        return [identity, *rest[: want - 1]]
    orders, seen = [identity], {identity}
    while len(orders) < want:
        order = tuple(rng.sample(range(n), n))
        if order not in seen:
            seen.add(order)
            orders.append(order)
    return orders


class ChoiceShuffleEnsemble(Program):
    """Wraps a multiple-choice program: ``m`` runs with shuffled options, answers mapped back, majority vote.

    Args:
        program: the inner program; it takes the options as the list input ``options_field`` and returns
            a prediction whose ``answer_field`` names an option (a letter like "(B)", or its text).
        m: runs per question (at most the number of distinct orders).
        options_field: the input holding the options list.
        answer_field: the prediction field holding the chosen option.
        seed: seeds the permutations.

    The prediction has ``answer_field`` (the winner's letter in the ORIGINAL order), ``agreement`` and
    ``votes`` (per run, the original letter it voted for, or None).

    Raises:
        ConfigError: ``m`` < 1, or an input without the options list.
    """

    def __init__(
        self,
        program: Program,
        *,
        m: int = 5,
        options_field: str = "options",
        answer_field: str = "answer",
        seed: int = 0,
    ):
        _check_m(m)
        self.program = program
        self.m = m
        self.options_field = options_field
        self.answer_field = answer_field
        self.seed = seed

    def permutations(self, options: Sequence[Any]) -> list[tuple[int, ...]]:
        # Seeded by the options too, so questions do not all get the same orders.
        return choice_permutations(len(options), self.m, f"{self.seed}\x1f" + "\x1f".join(map(str, options)))

    def forward(self, **inputs: Any) -> Prediction:
        options = inputs.get(self.options_field)
        if not isinstance(options, (list, tuple)) or not options:
            raise ConfigError(
                f"ChoiceShuffleEnsemble needs the options as a list in input {self.options_field!r}; "
                f"got inputs: {', '.join(inputs)}"
            )
        if len(options) > len(LETTERS):
            raise ConfigError(f"at most {len(LETTERS)} options can be lettered, got {len(options)}")
        runs = self._runs(inputs, options)
        votes = [vote for vote, _ in runs]
        errors = [error for _, error in runs if error is not None]
        if len(errors) == len(runs):
            raise errors[0]  # every run failed to parse: a parse failure of the ensemble, raw text kept
        cast = [v for v in votes if v is not None]
        winner = _winner(cast)
        return Prediction(
            {
                self.answer_field: "" if winner is None else LETTERS[winner],
                "agreement": 0.0 if winner is None else cast.count(winner) / len(votes),
                "votes": [None if v is None else LETTERS[v] for v in votes],
            }
        )

    def _runs(self, inputs: dict[str, Any], options: Sequence[Any]) -> list[tuple[int | None, ParseError | None]]:
        """Every order's run (`_vote`), in the orders' order.

        The original order runs first, and its demos are pinned (`DemoPins`); the other orders then run at once, so
        a local engine batches them and computes the prompt they share (instruction, demos, question) once.
        """
        orders = self.permutations(options)
        pins = DemoPins()
        first = self._vote(inputs, options, orders[0], pins.recording)
        return [
            first,
            *run_together([functools.partial(self._vote, inputs, options, o, pins.replaying) for o in orders[1:]]),
        ]

    def _vote(
        self,
        inputs: dict[str, Any],
        options: Sequence[Any],
        order: tuple[int, ...],
        pinning: Callable[[], AbstractContextManager[None]],
    ) -> tuple[int | None, ParseError | None]:
        """One run with the options in ``order``: the original index it voted for (None: no vote), and its
        parse failure, if any."""
        shown = [options[i] for i in order]
        try:
            with pinning():
                prediction = self.program(**{**inputs, self.options_field: shown})
        except ParseError as e:
            return None, e
        said = prediction.get(self.answer_field) if hasattr(prediction, "get") else None
        index = answer_index(said, shown)
        return (None if index is None else order[index]), None

    # -- state: the ensemble's settings travel with the inner program's prompts ----------------------
    def dump_state(self) -> dict[str, Any]:
        return super().dump_state() | {"ensemble": self.settings()}

    def load_state(self, state: dict[str, Any]) -> ChoiceShuffleEnsemble:
        super().load_state(state)
        saved = state.get("ensemble") or {}
        _check_m(saved.get("m", self.m))
        for key in ("m", "options_field", "answer_field", "seed"):
            if key in saved:
                setattr(self, key, saved[key])
        return self

    @classmethod
    def wrap_state(cls, inner: Program, state: dict[str, Any]) -> ChoiceShuffleEnsemble:
        """The ensemble a saved state came from, around ``inner`` (see `cotune.program.program.program_for_state`)."""
        return cls(inner, **(state.get("ensemble") or {}))

    def settings(self) -> dict[str, Any]:
        return {"m": self.m, "options_field": self.options_field, "answer_field": self.answer_field, "seed": self.seed}

    def __repr__(self) -> str:
        return f"ChoiceShuffleEnsemble({self.program!r}, m={self.m})"


def _winner(cast: list[int]) -> int | None:
    """Most votes; ties go to the option voted for first."""
    if not cast:
        return None
    counts = {v: cast.count(v) for v in cast}
    best = max(counts.values())
    return next(v for v in cast if counts[v] == best)


__all__ = ["ChoiceShuffleEnsemble", "choice_permutations", "program_for_state"]
