"""`BootstrapFewShotWithRandomSearch`: the paper's Π step — try several demo sets, keep the best on a valset.

Candidates are explicit kinds, in this order: the program zero-shot, labeled demos only, a bootstrap on
the trainset as given, then bootstraps on seeded shuffles of the trainset with random demo counts.
"""

from __future__ import annotations

import enum
import random
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from cotune.data.example import Example
from cotune.errors import ConfigError
from cotune.evaluate.compare import paired_gain
from cotune.evaluate.evaluate import EvaluationResult, evaluate
from cotune.evaluate.metrics import Metric
from cotune.events import EventSink, Progress, emit
from cotune.optimize.base import Events, Examples, Optimizer, require_valset
from cotune.optimize.bootstrap import BootstrapFewShot, collect_demos, with_demos
from cotune.optimize.labeled import labeled_demos
from cotune.optimize.rollouts import Rollouts
from cotune.params import NonNegative, Positive
from cotune.program.program import Program


class CandidateKind(enum.StrEnum):
    """How a candidate program gets its demos."""

    ZERO_SHOT = "zero_shot"  # no demos
    LABELED = "labeled"  # labeled training examples only
    BOOTSTRAP = "bootstrap"  # bootstrapped on the trainset in its given order, full demo counts
    BOOTSTRAP_SHUFFLED = "bootstrap_shuffled"  # on a seeded shuffle, a random number of bootstrapped demos


@dataclass(frozen=True)
class Candidate:
    """One planned candidate: its kind, its seed and its demo budget per predictor."""

    kind: CandidateKind
    seed: int
    max_bootstrapped_demos: int
    max_labeled_demos: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "seed": self.seed,
            "max_bootstrapped_demos": self.max_bootstrapped_demos,
            "max_labeled_demos": self.max_labeled_demos,
        }


def plan_candidates(
    num_candidates: int, max_bootstrapped_demos: int, max_labeled_demos: int, seed: int
) -> list[Candidate]:
    """The first ``num_candidates`` candidates: zero-shot, labeled, bootstrap, then shuffled bootstraps.

    Each shuffled bootstrap draws its own seed and a demo count in [1, max_bootstrapped_demos] from
    ``seed``, so the plan is a pure function of its arguments.
    """
    fixed = [
        Candidate(CandidateKind.ZERO_SHOT, seed, 0, 0),
        Candidate(CandidateKind.LABELED, seed, 0, max_labeled_demos),
        Candidate(CandidateKind.BOOTSTRAP, seed, max_bootstrapped_demos, max_labeled_demos),
    ]
    rng = random.Random(seed)
    shuffled = []
    for _ in range(max(0, num_candidates - len(fixed))):
        shuffled.append(
            Candidate(
                CandidateKind.BOOTSTRAP_SHUFFLED,
                rng.randrange(2**31),
                rng.randint(1, max(1, max_bootstrapped_demos)),
                max_labeled_demos,
            )
        )
    return (fixed + shuffled)[:num_candidates]


class BootstrapFewShotWithRandomSearch(Optimizer):
    """Build candidate demo sets (see `CandidateKind`), score each on the valset, return the best.

    Args:
        metric: ``(example, prediction) -> float``, used to score candidates.
        num_candidates: how many candidates to try (paper: 6 = zero-shot, labeled, bootstrap, 3 shuffled).
        bootstrap: the `BootstrapFewShot` every bootstrapped candidate runs: its metric and
            ``metric_threshold`` decide which traces pass, its ``teacher``, ``teacher_labeled_demos``,
            ``num_rollouts``, ``rollout_temperature`` and ``num_threads`` run the teacher (once per training
            example and rollout, shared by all candidates), its ``max_bootstrapped_demos`` and
            ``max_labeled_demos`` are each candidate's demo budget; the candidates' own seeds replace its
            ``seed``. Default: ``BootstrapFewShot(metric, **DEFAULT_BOOTSTRAP, num_threads=num_threads)``
            (the paper's 3 bootstrapped + 3 labeled demos).
        num_threads: parallel calls per evaluation.
        concurrent_candidates: how many candidates are scored at the same time (each with
            ``num_threads`` threads); a local model batches calls across them. None: all at once.
        seed: fixes the candidates' shuffles, demo counts and labeled samples.
        min_gain_se: the best candidate replaces the starting program only when its mean per-example gain
            over the start on the valset is more than this many standard errors of the paired differences
            (`cotune.evaluate.compare.paired_gain`); otherwise the starting program is returned unchanged
            (event ``random_search.kept_start``). 1.0: the one-standard-error rule; 0: the best candidate
            wins on any higher mean (the paper's plain argmax, and the start is not scored).

    Learned attributes: ``candidates_`` (the plan), ``trials_`` (per candidate: kind, seed, demo counts
    per predictor, demos, score, evaluation summary), ``best_index_`` (the best-scoring candidate),
    ``start_score_`` (the starting program on the valset; None when ``min_gain_se=0``), ``selection_``
    (the paired comparison of the best candidate with the start), ``kept_start_`` (True: the start was
    returned), ``best_score_`` (the returned program's valset score), ``handoff_program_`` (when the start
    was kept: the best candidate, which `BetterTogether` hands to a following weight step as its teacher;
    a weight step keeps only the runs that pass the metric, so a candidate no better on the valset can still
    be the better teacher: on Iris its demos make SmolLM2's samples name all three species).

    Example:
        >>> from cotune.lm import FakeLM
        >>> from cotune.program.examples import QA
        >>> data = [Example(question=f"{i}+{i}?", answer=str(2 * i)).with_inputs("question") for i in range(8)]
        >>> lm = FakeLM(lambda m: "Answer: 4")
        >>> opt = BootstrapFewShotWithRandomSearch(lambda ex, p: ex["answer"] == p["answer"], num_candidates=4)
        >>> best = opt.compile(QA().bind(lm), trainset=data[:4], valset=data[4:])
        >>> [t["kind"] for t in opt.trials_], opt.best_index_, opt.kept_start_
        (['zero_shot', 'labeled', 'bootstrap', 'bootstrap_shuffled'], 0, True)
    """

    DEFAULT_BOOTSTRAP = {"max_bootstrapped_demos": 3, "max_labeled_demos": 3}  # the paper's Π budget

    def __init__(
        self,
        metric: Metric,
        *,
        num_candidates: Positive = 6,
        bootstrap: BootstrapFewShot | None = None,
        num_threads: Positive = 8,
        concurrent_candidates: Positive | None = None,
        seed: int = 0,
        min_gain_se: NonNegative = 1.0,
    ):
        self.metric = metric
        self.num_candidates = num_candidates
        self.bootstrap = bootstrap
        self.num_threads = num_threads
        self.concurrent_candidates = concurrent_candidates
        self.seed = seed
        self.min_gain_se = min_gain_se

    def _bootstrap(self) -> BootstrapFewShot:
        """The bootstrap the candidates run: ``bootstrap`` or the default one."""
        if self.bootstrap is not None:
            return self.bootstrap
        return BootstrapFewShot(self.metric, **self.DEFAULT_BOOTSTRAP, num_threads=self.num_threads, seed=self.seed)

    def compile(
        self, program: Program, *, trainset: Examples, valset: Examples | None = None, events: Events = None
    ) -> Program:
        """Return the best candidate (a new program; ``program`` is unchanged). Ties go to the earlier one.

        Raises:
            ConfigError: no valset (candidates are never chosen on the trainset), an empty trainset or a
                bad hyperparameter.
        """
        valset = require_valset(valset, type(self).__name__)
        if not trainset:
            raise ConfigError(f"{type(self).__name__} needs a non-empty trainset")
        boot = self._bootstrap()
        self.candidates_ = plan_candidates(
            self.num_candidates, boot.max_bootstrapped_demos, boot.max_labeled_demos, self.seed
        )
        trainset = list(trainset)
        shared = _Shared(runs=None, bootstrap=boot)
        if any(c.kind in (CandidateKind.BOOTSTRAP, CandidateKind.BOOTSTRAP_SHUFFLED) for c in self.candidates_):
            shared.runs = boot.teacher_rollouts(program, trainset, self.seed)

        # Every candidate is built (bootstrapped) and scored in its own thread, all at once by default, so
        # a local model batches calls across candidates; shared teacher runs and shared scores of
        # identical programs keep any request from running twice.
        workers = self.concurrent_candidates or len(self.candidates_)
        score_start = self.min_gain_se > 0
        with Progress(events, "candidates", total=len(self.candidates_)) as bar:

            def build_and_score(i: int) -> tuple[Program, dict[str, Any], EvaluationResult]:
                program_i, info = self._build(self.candidates_[i], program, trainset, shared, events)
                result = self._score(i, program_i, valset, shared, events)
                bar.advance(index=i, kind=self.candidates_[i].kind.value, score=result.score)
                return program_i, info, result

            with ThreadPoolExecutor(min(workers, len(self.candidates_)) + score_start) as pool:
                # The start is scored beside the candidates (batched with them); it is the zero-shot
                # candidate itself when the program has no demos, and then scored once.
                start_future = pool.submit(self._score, -1, program, valset, shared, events) if score_start else None
                outcomes = list(pool.map(build_and_score, range(len(self.candidates_))))
                start = start_future.result() if start_future is not None else None

        self.trials_ = []
        for i, (cand, (_, info, result)) in enumerate(zip(self.candidates_, outcomes, strict=True)):
            self.trials_.append(
                cand.to_dict()
                | {"index": i, "score": result.score, "demo_counts": info["counts"], "n_passed": info["n_passed"]}
                | {"demos": info["demos"], "eval": result.summary()}
            )
        scores = [t["score"] for t in self.trials_]
        self.best_index_ = max(range(len(scores)), key=lambda i: (scores[i], -i))
        best_kind = self.candidates_[self.best_index_].kind.value
        self.start_score_ = start.score if start is not None else None
        self.selection_ = None
        self.kept_start_ = False
        if start is not None:
            comparison = paired_gain(outcomes[self.best_index_][2].scores(), start.scores(), self.min_gain_se)
            self.selection_ = comparison.to_dict() | {"best_index": self.best_index_}
            self.kept_start_ = not comparison.significant
        best_program = outcomes[self.best_index_][0]
        differs = best_program.fingerprint() != program.fingerprint()
        self.handoff_program_ = best_program if self.kept_start_ and differs else None
        if self.kept_start_:
            emit(
                events,
                "random_search.kept_start",
                best_index=self.best_index_,
                best_kind=best_kind,
                start_score=self.start_score_,
                reason=f"best candidate: {comparison.describe()}",
            )
        self.best_score_ = self.start_score_ if self.kept_start_ else scores[self.best_index_]
        emit(
            events,
            "random_search.done",
            best_index=self.best_index_,
            best_score=self.best_score_,
            best_kind=best_kind,
            kept_start=self.kept_start_,
        )
        return program.deepcopy() if self.kept_start_ else best_program

    def _build(
        self, cand: Candidate, program: Program, trainset: list[Example], shared: _Shared, events: EventSink | None
    ) -> tuple[Program, dict[str, Any]]:
        """The candidate's program and what it was built from (demo counts, demos, passing examples)."""
        info: dict[str, Any] = {"n_passed": None}
        if cand.kind is CandidateKind.ZERO_SHOT:
            demos = {name: [] for name, _ in program.named_predictors()}
            info["counts"] = {n: {"bootstrapped": 0, "labeled": 0} for n in demos}
        elif cand.kind is CandidateKind.LABELED:
            pool = list(trainset)
            random.Random(cand.seed).shuffle(pool)
            demos = {n: labeled_demos(p, pool, cand.max_labeled_demos) for n, p in program.named_predictors()}
            info["counts"] = {n: {"bootstrapped": 0, "labeled": len(ds)} for n, ds in demos.items()}
        else:
            assert shared.runs is not None
            items = list(enumerate(trainset))
            if cand.kind is CandidateKind.BOOTSTRAP_SHUFFLED:
                random.Random(cand.seed).shuffle(items)
            result = collect_demos(
                shared.runs,
                program,
                items,
                threshold=shared.bootstrap.metric_threshold,
                max_bootstrapped_demos=cand.max_bootstrapped_demos,
                max_labeled_demos=cand.max_labeled_demos,
                num_rollouts=shared.bootstrap.num_rollouts,
                seed=cand.seed,
                events=events,
            )
            demos, info["counts"], info["n_passed"] = result.demos, result.counts, result.n_passed
        info["demos"] = {n: [d.to_dict() for d in ds] for n, ds in demos.items()}
        return with_demos(program, demos), info

    def _score(
        self, i: int, program: Program, valset: Sequence[Example], shared: _Shared, events: EventSink | None
    ) -> EvaluationResult:
        """Evaluate on the valset; a program identical to one already scored (or being scored) waits for that score."""
        fingerprint = program.fingerprint()
        with shared.lock:
            future = shared.scores.get(fingerprint)
            owner = future is None
            if owner:
                future = shared.scores[fingerprint] = Future()
        if owner:
            kind = self.candidates_[i].kind.value if i >= 0 else "start"
            try:
                result = evaluate(
                    program,
                    valset,
                    self.metric,
                    num_threads=self.num_threads,
                    events=events,
                    description=f"candidate {i} ({kind})" if i >= 0 else "starting program",
                )
            except BaseException as e:
                future.set_exception(e)
                raise
            future.set_result(result)
        return future.result()


@dataclass
class _Shared:
    """State the candidates of one `compile` share across threads."""

    runs: Rollouts | None
    bootstrap: BootstrapFewShot
    scores: dict[str, Future[EvaluationResult]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
