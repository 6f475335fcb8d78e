"""The optimizer contract, scikit-learn style.

``__init__`` stores hyperparameters (keyword arguments, same names, nothing else happens);
``compile(program, *, trainset, valset)`` takes data and returns a NEW program, never mutating its input;
what the search learned lands in trailing-underscore attributes (``trials_``, ``best_score_``).

Hyperparameters are declared once, by the annotations of ``__init__`` (see `cotune.params`), and
checked here before every ``compile``: a subclass writes no checks of its own beyond relations between
parameters (`Optimizer.check_relations`).
"""

from __future__ import annotations

import functools
import inspect
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from cotune.data.example import Example
from cotune.errors import ConfigError
from cotune.events import EventSink
from cotune.params import check_hyperparameters
from cotune.program.program import Program

Examples = Sequence[Example]  # a trainset or valset
Events = EventSink | None  # where progress and step events go


class Optimizer(ABC):
    """Base class of every optimizer.

    ``selects_on_valset`` says whether ``compile`` chooses among candidates by validation score (prompt
    optimizers do; fine-tuning does not). Composite optimizers use it to hand each step the right data.
    """

    selects_on_valset: bool = True
    # Learned by `compile` where it differs from the returned program: the program a following weight step
    # should learn from (see `BootstrapFewShotWithRandomSearch`); None: the returned program itself.
    handoff_program_: Program | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        compile_ = cls.__dict__.get("compile")
        if compile_ is None or getattr(compile_, "__isabstractmethod__", False) or hasattr(compile_, "_checked"):
            return

        @functools.wraps(compile_)
        def compile(self: Optimizer, *args: Any, **kw: Any) -> Any:
            self.check_params()
            return compile_(self, *args, **kw)

        compile._checked = True  # type: ignore[attr-defined]
        cls.compile = compile  # type: ignore[method-assign]

    def check_params(self) -> None:
        """Validate the hyperparameters against their declaration, then `check_relations`.

        Raises:
            ConfigError: a bad value, named with the valid range or choices.
        """
        self._check_declared()
        self.check_relations()

    def _check_declared(self) -> None:
        """This optimizer's declared hyperparameters, then those of the optimizers it holds (relations are
        checked by each one's own ``compile``)."""
        check_hyperparameters(self)
        for value in self.get_params().values():
            if isinstance(value, Optimizer):
                value._check_declared()

    @classmethod
    def upgrade_params(cls, params: dict[str, Any]) -> dict[str, Any]:
        """``params`` (hyperparameters read from a mapping: YAML, ``-P``, a run directory's saved config) as this
        optimizer spells them today; one whose hyperparameters moved overrides this to move them, with a
        `FutureWarning` (see `cotune.optimize.registry.upgrade_params`)."""
        return params

    def check_relations(self) -> None:
        """Constraints between hyperparameters that no single annotation states (override where needed)."""
        return None

    def check_program(self, program: Program) -> None:
        """Raise `cotune.errors.ConfigError` when these hyperparameters cannot work on ``program`` (bound or not);
        a run checks each step's optimizer against its task's program before the first model call."""
        return None

    @abstractmethod
    def compile(
        self, program: Program, *, trainset: Examples, valset: Examples | None = None, events: Events = None
    ) -> Program:
        """Return an optimized copy of ``program``."""

    def get_params(self) -> dict[str, Any]:
        """The hyperparameters given to ``__init__`` (read back from attributes of the same names)."""
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {n: getattr(self, n) for n in names if hasattr(self, n)}

    def clone(self, **overrides: Any) -> Optimizer:
        """A new optimizer with the same hyperparameters, some replaced (unknown names are refused)."""
        params = self.get_params()
        unknown = set(overrides) - set(params)
        if unknown:
            raise ConfigError(
                f"{type(self).__name__} has no hyperparameter(s) {', '.join(sorted(unknown))}; "
                f"choose from: {', '.join(params)}"
            )
        return type(self)(**(params | overrides))

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"


def require_valset(valset: Sequence[Example] | None, who: str) -> Sequence[Example]:
    """Optimizers that select among candidates need a validation set; never fall back to the trainset silently."""
    if not valset:
        raise ConfigError(f"{who} selects among candidates and needs a non-empty valset (got {valset!r})")
    return valset
