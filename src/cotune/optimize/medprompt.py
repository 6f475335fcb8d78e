"""`MedPrompt` (Nori et al. 2023): self-generated chain of thought + kNN few-shot + choice-shuffle ensemble.

1. **self-generated CoT**: the program answers every training question with its own reasoning; runs
   whose answer passes the metric become demos (`self_generated_demos`);
2. **kNN few-shot**: each question is shown the ``k`` most similar of those demos (`KNNFewShot`);
3. **choice-shuffle ensemble**: the question is asked ``m`` times with the options in different orders,
   and the answers, mapped back to the original options, vote (`ChoiceShuffleEnsemble`).

`compile` returns the ensemble, a `Program` whose inner program holds the predictors (with their demo
pools and kNN indexes), so it saves and loads like any program:
``ChoiceShuffleEnsemble(task.program()).load(path)``.

Example:
    >>> from cotune.data import Example
    >>> from cotune.lm import FakeLM
    >>> from cotune.retrieve.embed import TfidfEmbedder
    >>> from cotune.tasks.multiple_choice import MultipleChoiceQA, choice_match, mc_example
    >>> lm = FakeLM(lambda m: "Reasoning: it is 4.\\nAnswer: " + ("(A)" if "(A) 4" in m[-1]["content"] else "(B)"))
    >>> train = [mc_example(f"{i}+{4 - i}?", ["4", "5"], "4") for i in range(4)]
    >>> best = MedPrompt(choice_match, k=2, m=2, embedder=TfidfEmbedder()).compile(
    ...     MultipleChoiceQA().bind(lm), trainset=train)
    >>> pred = best(question="1+3?", options=["5", "4"])
    >>> pred.answer, pred.votes, pred.agreement
    ('B', ['B', 'B'], 1.0)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from cotune.data.example import Example
from cotune.errors import ConfigError
from cotune.evaluate.metrics import Metric
from cotune.events import emit
from cotune.optimize.base import Events, Examples, Optimizer
from cotune.optimize.bootstrap import BootstrapFewShot
from cotune.optimize.knn import KNNFewShot
from cotune.params import Positive
from cotune.program.ensemble import ChoiceShuffleEnsemble
from cotune.program.program import Program
from cotune.retrieve.embed import Embedder


class MedPrompt(Optimizer):
    """Self-generated CoT demos → kNN few-shot over them → choice-shuffle ensemble.

    Args:
        metric: decides which self-generated runs are kept (``(example, prediction) -> float``).
        k: demos per question (kNN).
        m: ensemble runs per question (option orders); 1 turns the ensemble off.
        bootstrap: a configured `BootstrapFewShot` for the self-generation (threshold, rollouts, threads);
            default ``BootstrapFewShot(metric, num_threads=num_threads, seed=seed)``.
        embedder: the kNN `Embedder`; default MiniLM when installed, else TF-IDF.
        options_field / answer_field: the input holding the options list / the output naming the choice.
        num_threads: training examples self-generated at once (a local model batches them).
        seed: seeds the self-generation and the option orders.

    Learned attributes: ``pool_sizes_``, ``n_passed_``, ``n_run_`` (from the kNN step), ``embedder_``.

    Raises (from `compile`):
        ConfigError: training examples without the options list (the ensemble needs it), or bad settings.
    """

    selects_on_valset = False  # nothing is chosen by validation score: it gets the whole trainset

    def __init__(
        self,
        metric: Metric,
        *,
        k: Positive = 5,
        m: Positive = 5,
        bootstrap: BootstrapFewShot | None = None,
        embedder: Embedder | None = None,
        options_field: str = "options",
        answer_field: str = "answer",
        num_threads: Positive = 8,
        seed: int = 0,
    ):
        self.metric = metric
        self.k = k
        self.m = m
        self.bootstrap = bootstrap
        self.embedder = embedder
        self.options_field = options_field
        self.answer_field = answer_field
        self.num_threads = num_threads
        self.seed = seed

    def compile(
        self, program: Program, *, trainset: Examples, valset: Examples | None = None, events: Events = None
    ) -> Program:
        """Return the ensemble over a kNN copy of ``program``; ``program`` is unchanged."""
        missing = [i for i, ex in enumerate(trainset) if not isinstance(ex.get(self.options_field), (list, tuple))]
        if missing:
            raise ConfigError(
                f"MedPrompt shuffles multiple-choice options, but training example {missing[0]} has no list field "
                f"{self.options_field!r} (fields: {', '.join(trainset[missing[0]])}); use KNNFewShot for other tasks"
            )
        bootstrap = self.bootstrap
        if bootstrap is None:
            bootstrap = BootstrapFewShot(self.metric, num_threads=self.num_threads, seed=self.seed)
        knn = KNNFewShot(self.k, demos="bootstrap", bootstrap=bootstrap, embedder=self.embedder, seed=self.seed)
        inner = knn.compile(program, trainset=trainset, valset=valset, events=events)
        self.pool_sizes_: dict[str, dict[str, int]] = knn.pool_sizes_
        self.n_passed_, self.n_run_ = knn.n_passed_, knn.n_run_
        self.embedder_: dict[str, Any] = knn.embedder_
        emit(events, "medprompt.done", k=self.k, m=self.m, pools=self.pool_sizes_)
        return ChoiceShuffleEnsemble(
            inner, m=self.m, options_field=self.options_field, answer_field=self.answer_field, seed=self.seed
        )

    def planned_runs(self, trainset: Examples, evalset: Sequence[Example] = ()) -> dict[str, int]:
        """Program runs that `compile` and an evaluation of its result on ``evalset`` make, by phase.

        "self-generation": each training example once a rollout; later rollouts re-run only the failures, so
        with ``bootstrap.num_rollouts`` > 1 this is an upper bound. "ensemble": each evaluated question once
        per option order (``m``, or every order when its options have fewer). The demos cost no runs.

        Example:
            >>> from cotune.tasks.multiple_choice import mc_example
            >>> two, six = mc_example("q", ["a", "b"], "a"), mc_example("q", list("abc"), "a")
            >>> MedPrompt(lambda ex, p: 1.0, m=5).planned_runs([two] * 50, [two, six])
            {'self-generation': 50, 'ensemble': 7}
        """
        rounds = self.bootstrap.num_rollouts if self.bootstrap is not None else 1
        orders = sum(min(self.m, math.factorial(len(ex.get(self.options_field) or [None]))) for ex in evalset)
        return {"self-generation": len(trainset) * rounds, "ensemble": orders}


__all__ = ["MedPrompt"]
