"""BetterTogether (Soylu, Potts & Khattab, EMNLP 2024): alternate prompt and weight optimization.

Π → Θ → Π: bootstrap demos (raising the share of correct traces), fine-tune on the program's own successful
traces, then bootstrap demos again with the fine-tuned model so the prompts fit the new weights.

`BetterTogether.run_tree` runs several strategies as a tree whose shared prefixes run once (Π once for Π,
Π→Θ and Π→Θ→Π), each step with a fresh optimizer, its learned attributes kept in `StepResult.info`. A driver
plugs in through `StepHooks`: the experiment runner restores finished steps, names each step's optimizer
(its Θ writes into the step's folder), evaluates and saves each finished step, and lets a failed step end
its branch only — so every `cotune run` goes through this class.

A prompt step that keeps its starting program (the best candidate did not beat it beyond the valset's noise)
hands that candidate to a following weight step (`StepResult.handoff`): Θ keeps only the runs that pass the
metric, so the candidate's demos can only widen what its samples get right.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field

from cotune.data.example import Example
from cotune.errors import ConfigError
from cotune.evaluate.compare import paired_gain
from cotune.evaluate.evaluate import EvaluationResult, evaluate
from cotune.evaluate.metrics import Metric
from cotune.events import EventSink, emit
from cotune.optimize.base import Events, Examples, Optimizer, require_valset
from cotune.optimize.strategy import StepKind, Steps, StrategyTree, last_kind, parse_strategy, strategy_name
from cotune.params import NonNegative, Positive
from cotune.program.program import Program


@dataclass
class StepResult:
    """One finished step: which, its program, its score on the selection valset (None: not scored), what
    its optimizer learned (JSON-ready ``name_`` attributes) and how long it took."""

    index: int
    kind: StepKind | None  # None for the starting program
    strategy: str  # the prefix up to and including this step, e.g. "p-w"
    program: Program = field(compare=False)
    val_score: float | None = 0.0
    info: dict[str, Any] = field(default_factory=dict, compare=False)  # timings inside: a record, not identity
    seconds: float = field(default=0.0, compare=False)
    steps: Steps = ()
    restored: bool = False  # finished earlier (`StepHooks.restore`), not recomputed
    val_scores: list[float] | None = field(default=None, compare=False, repr=False)  # per example, for paired tests
    # What a following weight step builds on instead of ``program`` (the optimizer's ``handoff_program_``)
    handoff: Program | None = field(default=None, compare=False, repr=False)

    def base_for(self, kind: StepKind) -> Program:
        """The program a child step of ``kind`` starts from: a weight step takes the hand-off, if any."""
        return self.handoff if kind is StepKind.WEIGHTS and self.handoff is not None else self.program


class StepHooks:
    """What a driver of `BetterTogether.run_tree` plugs in; these defaults change nothing."""

    def restore(self, steps: Steps) -> Program | None:
        """The program of a step finished earlier (it is not recomputed), or None to run it."""
        return None

    def restore_handoff(self, steps: Steps) -> Program | None:
        """A restored step's hand-off to a following weight step (`StepResult.handoff`), if it had one."""
        return None

    def start(self, steps: Steps) -> None:
        """A step is about to run."""

    def optimizer(self, kind: StepKind, steps: Steps) -> Optimizer | None:
        """The optimizer for this step; None: a clone of `BetterTogether`'s ``prompt`` / ``weights``."""
        return None

    def finished(self, step: StepResult) -> None:
        """A step ran (its children have not); an exception here counts as the step's failure."""

    def failed(self, steps: Steps, error: Exception | None) -> bool:
        """A step failed (``error``) or was skipped because its parent failed (None). True: go on without
        its branch; False: re-raise."""
        return False


def split_for_step(
    optimizer: Optimizer, trainset: Sequence[Example], inner_val_ratio: float
) -> tuple[Sequence[Example], Sequence[Example] | None]:
    """Prompt optimizers select candidates on a validation set, so they get the trainset cut in two
    (the paper's Iris setting: 15 train / 35 val of 50); fine-tuning gets the whole trainset."""
    if not optimizer.selects_on_valset:
        return trainset, None
    n_val = round(len(trainset) * inner_val_ratio)
    if n_val < 1 or n_val >= len(trainset):
        raise ConfigError(f"inner_val_ratio={inner_val_ratio} leaves no train or val examples out of {len(trainset)}")
    return trainset[: len(trainset) - n_val], trainset[len(trainset) - n_val :]


class BetterTogether(Optimizer):
    """Run prompt and weight optimizers in sequence, scoring every step on a held-out valset.

    Args:
        metric: scores each step's program on ``valset`` (which the inner optimizers never select on).
        prompt: the Π optimizer (e.g. `BootstrapFewShotWithRandomSearch`).
        weights: the Θ optimizer (e.g. `BootstrapFinetune`).
        strategy: steps as a string ("p,w,p", "p-w-p") or sequence ("prompt", "weights", "prompt").
        return_best: return the best-scoring step's program instead of the last one (ties go to the earlier
            step, as they go to the earlier candidate in every cotune optimizer: fewer steps, same score).
            A step beats the starting program only by more than ``min_gain_se`` standard errors of the
            paired per-example differences on ``valset`` (`cotune.evaluate.compare.paired_gain`, as random
            search decides); otherwise the starting program is the best step.
        min_gain_se: that margin; 0 picks the highest score.
        inner_val_ratio: share of the trainset that prompt steps use as their own valset.
        num_threads: threads for scoring steps.

    Example:
        >>> from cotune.lm import FakeLM
        >>> from cotune.program import Predict
        >>> class Noop(Optimizer):
        ...     def __init__(self, tag="x"):
        ...         self.tag = tag
        ...     def compile(self, program, *, trainset, valset=None, events=None):
        ...         return program.deepcopy()
        >>> class P(Program):
        ...     def __init__(self):
        ...         self.qa = Predict("q -> a")
        ...     def forward(self, q):
        ...         return self.qa(q=q)
        >>> data = [Example(q=str(i), a="ok").with_inputs("q") for i in range(10)]
        >>> bt = BetterTogether(lambda e, p: float(p["a"] == "ok"), prompt=Noop(), weights=Noop(), strategy="p,w,p")
        >>> _ = bt.compile(P().bind(FakeLM(["A: ok"])), trainset=data, valset=data)
        >>> [(s.strategy, s.val_score) for s in bt.steps_]
        [('zero-shot', 1.0), ('p', 1.0), ('p-w', 1.0), ('p-w-p', 1.0)]
    """

    def __init__(
        self,
        metric: Metric,
        *,
        prompt: Optimizer | None = None,
        weights: Optimizer | None = None,
        strategy: str | Sequence[str] = "p,w,p",
        return_best: bool = False,
        inner_val_ratio: Annotated[float, Field(gt=0, lt=1)] = 0.7,
        num_threads: Positive = 8,
        min_gain_se: NonNegative = 1.0,
    ):
        self.metric = metric
        self.prompt = prompt
        self.weights = weights
        self.strategy = strategy
        self.return_best = return_best
        self.inner_val_ratio = inner_val_ratio
        self.num_threads = num_threads
        self.min_gain_se = min_gain_se

    def _optimizer_for(self, kind: StepKind) -> Optimizer:
        opt = {StepKind.PROMPT: self.prompt, StepKind.WEIGHTS: self.weights}[kind]
        if opt is None:
            raise ConfigError(
                f"strategy {self.strategy!r} has a {kind.word} step but no `{kind.word}=` optimizer was given"
            )
        return opt

    def compile(
        self, program: Program, *, trainset: Examples, valset: Examples | None = None, events: Events = None
    ) -> Program:
        steps = parse_strategy(self.strategy)
        valset = require_valset(valset, "BetterTogether")
        for kind in steps:
            self._optimizer_for(kind)  # fail before any work

        done = self.run_tree(program, [steps], trainset=trainset, valset=valset, events=events)
        self.steps_: list[StepResult] = [done[steps[:i]] for i in range(len(steps) + 1)]
        self.best_index_ = max(range(len(self.steps_)), key=lambda i: (self.steps_[i].val_score, -i))
        self.selection_ = None
        best, start = self.steps_[self.best_index_], self.steps_[0]
        if self.best_index_ > 0 and best.val_scores is not None and start.val_scores is not None:
            comparison = paired_gain(best.val_scores, start.val_scores, self.min_gain_se)
            self.selection_ = comparison.to_dict() | {"best_step": best.strategy}
            if not comparison.significant:
                self.best_index_ = 0
                emit(events, "better_together.kept_start", best_step=best.strategy, reason=comparison.describe())
        self.best_score_ = self.steps_[self.best_index_].val_score
        chosen = self.steps_[self.best_index_] if self.return_best else self.steps_[-1]
        return chosen.program

    def run_tree(
        self,
        program: Program,
        strategies: Sequence[Steps],
        *,
        trainset: Examples,
        valset: Examples | None = None,
        events: Events = None,
        hooks: StepHooks | None = None,
    ) -> dict[Steps, StepResult]:
        """Every prefix of every strategy, each once, parents before children, from ``program``.

        Each step gets a fresh optimizer (a clone, or the hooks' own), the trainset split by `split_for_step`,
        and, with a ``valset``, a score on it. Returns the finished steps by prefix (``()`` is ``program``
        itself, copied); a step whose failure the hooks accept is missing, and so is its branch (each of
        its descendants is passed to ``hooks.failed`` with no error, as `StrategyTree.descendants` lists them).
        """
        hooks = hooks or StepHooks()
        tree = StrategyTree(parse_strategy(s) for s in strategies)  # letters as written, or `StepKind`s
        done: dict[Steps, StepResult] = {}
        skipped: set[Steps] = set()
        for steps in tree:
            if steps in skipped:
                continue
            restored = hooks.restore(steps)
            if restored is not None:
                handoff = hooks.restore_handoff(steps)
                name = strategy_name(steps)
                done[steps] = StepResult(
                    len(steps), last_kind(steps), name, restored, None, steps=steps, restored=True, handoff=handoff
                )
                continue
            try:
                parent = program if not steps else done[steps[:-1]].base_for(steps[-1])
                done[steps] = self._step(parent, steps, trainset, valset, events, hooks)
            except Exception as e:
                if not hooks.failed(steps, e):
                    raise
                for later in tree.descendants(steps):  # nothing to build on
                    if later not in skipped and not hooks.failed(later, None):
                        raise ConfigError(f"step {strategy_name(later)} has no parent result") from e
                    skipped.add(later)
        return done

    def _step(self, parent, steps, trainset, valset, events, hooks) -> StepResult:
        name, kind = strategy_name(steps), last_kind(steps)
        letter = kind.value if kind else ""  # events keep "" for the starting program
        hooks.start(steps)
        emit(events, "step.start", strategy=name, kind=letter, index=len(steps))
        t0 = time.perf_counter()
        info: dict[str, Any] = {}
        if kind is not None:
            optimizer = hooks.optimizer(kind, steps) or self._optimizer_for(kind).clone()
            train, val = split_for_step(optimizer, trainset, self.inner_val_ratio)
            current = optimizer.compile(parent, trainset=train, valset=val, events=events)
            info = learned_attributes(optimizer)
            handoff = optimizer.handoff_program_
        else:
            current, handoff = parent.deepcopy(), None
        seconds = time.perf_counter() - t0
        scored = self._score(current, valset, name, events) if valset is not None else None
        score = scored.score if scored is not None else None
        val_scores = scored.scores() if scored is not None else None
        result = StepResult(
            len(steps), kind, name, current, score, info, seconds, steps, val_scores=val_scores, handoff=handoff
        )
        hooks.finished(result)
        emit(events, "step.done", strategy=name, kind=letter, index=len(steps), val_score=score)
        return result

    def _score(
        self, program: Program, valset: Sequence[Example], name: str, events: EventSink | None
    ) -> EvaluationResult:
        return evaluate(
            program, valset, self.metric, num_threads=self.num_threads, events=events, description=f"score {name}"
        )


def learned_attributes(optimizer: Optimizer, max_chars: int = 200_000) -> dict[str, Any]:
    """The optimizer's ``name_`` attributes that serialize to JSON (programs and huge values left out)."""
    out: dict[str, Any] = {}
    for key, value in vars(optimizer).items():
        if not key.endswith("_") or key.startswith("_") or isinstance(value, Program):
            continue
        try:
            text = json.dumps(value, default=_jsonable)
        except (TypeError, ValueError):
            continue
        if len(text) <= max_chars:
            out[key] = json.loads(text)
    return out


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Program):
        return None
    for attr in ("to_dict", "summary"):
        if hasattr(obj, attr) and callable(getattr(obj, attr)):
            return getattr(obj, attr)()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(type(obj).__name__)
