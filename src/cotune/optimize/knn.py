"""`KNNFewShot`: dynamic few-shot (MedPrompt) — every input gets the k demos whose inputs are most similar.

At compile time each predictor's demo pool (self-generated chain-of-thought demos when a metric is given,
labeled training examples otherwise) is embedded ONCE. The pool stays in the predictor's ``demos``; a
`KNNSelector` set as its ``demo_selector`` holds k, the embedding matrix and the embedder's name, and is
saved with the program (``"selector"`` in the predictor's state: the matrix as base64 float32). Loading
rebuilds the selector from that state without embedding the pool again; at inference each call embeds
its own inputs (one text) and shows the k nearest demos, the nearest last, right before the question.

The texts embedded are the predictor's input fields as ``name: value`` lines, for demos and queries
alike. Only the embedder reads them (they rank the demos; the LM never sees them), so they do not follow
the predictor's format adapter, which renders the demos chosen. A demo whose inputs equal the query's is never shown (it would hold the very answer, e.g. when a
later optimizer runs the program on its training examples).

Example:
    >>> from cotune.data import Example
    >>> from cotune.lm import FakeLM
    >>> from cotune.retrieve.embed import TfidfEmbedder
    >>> from cotune.program.examples import QA
    >>> train = [Example(question=q, answer=a).with_inputs("question") for q, a in
    ...          [("capital of France?", "Paris"), ("boiling point of water?", "100 C"), ("capital of Spain?", "Madrid")]]
    >>> knn = KNNFewShot(k=1, demos="labeled", embedder=TfidfEmbedder())
    >>> program = knn.compile(QA().bind(FakeLM(["Answer: Rome"])), trainset=train)
    >>> [d["answer"] for d in program.answer.demos_for({"question": "freezing point of water?"})]
    ['100 C']
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from cotune.data.example import Example
from cotune.errors import ConfigError
from cotune.evaluate.metrics import Metric
from cotune.events import EventSink, emit
from cotune.optimize.base import Events, Examples, Optimizer
from cotune.optimize.bootstrap import BootstrapFewShot
from cotune.optimize.labeled import labeled_demos
from cotune.optimize.self_cot import self_generated_demos
from cotune.params import Positive
from cotune.program.program import Program
from cotune.program.selectors import KNNSelector, demo_text, embedder_from_spec, embedder_spec, fixed_for
from cotune.retrieve.embed import Embedder

DEMO_SOURCES = ("auto", "bootstrap", "labeled")


def attach_embedder(program: Program, embedder: Embedder) -> Program:
    """Give every kNN predictor of ``program`` this embedder for its queries (in place; returns the program).

    Needed after loading a program whose index was built with a custom embedder; also lets several
    predictors share one model instead of each loading its own.
    """
    for predictor in program.predictors():
        if isinstance(predictor.demo_selector, KNNSelector):
            predictor.demo_selector.set_embedder(embedder)
    return program


# -- the optimizer ------------------------------------------------------------------------------------


class KNNFewShot(Optimizer):
    """Per-input demos: each predictor shows the ``k`` pool demos nearest to the call's inputs.

    Args:
        k: demos per call.
        metric: with ``demos`` "auto"/"bootstrap", the pool is self-generated: the program's own runs on
            the trainset that pass this metric (see `self_generated_demos`), with their reasoning.
        demos: "auto" (self-generated when ``metric`` or ``bootstrap`` is given, labeled otherwise),
            "bootstrap" (self-generated; needs one of them) or "labeled" (the training examples themselves).
            A predictor that ends with no self-generated demo falls back to labeled ones.
        bootstrap: a configured `BootstrapFewShot` to self-generate with (instead of ``metric``).
        embedder: an `Embedder`; default `cotune.retrieve.embed.default_embedder()` (MiniLM, or TF-IDF).
        seed: seeds the self-generation when it is built from ``metric``.

    Learned attributes: ``pool_sizes_`` (predictor → {"bootstrapped", "labeled"} demo counts in its pool),
    ``n_passed_`` / ``n_run_`` (self-generation: passing / run training examples; 0 when labeled),
    ``embedder_`` (the embedder's spec).
    """

    selects_on_valset = False  # nothing is chosen by validation score: it gets the whole trainset

    def __init__(
        self,
        k: Positive = 5,
        *,
        metric: Metric | None = None,
        demos: Literal[DEMO_SOURCES] = "auto",
        bootstrap: BootstrapFewShot | None = None,
        embedder: Embedder | None = None,
        seed: int = 0,
    ):
        self.k = k
        self.metric = metric
        self.demos = demos
        self.bootstrap = bootstrap
        self.embedder = embedder
        self.seed = seed

    def check_relations(self) -> None:
        if self.metric is not None and self.bootstrap is not None:
            raise ConfigError("give KNNFewShot metric= or bootstrap= (which carries its metric), not both")
        if self.demos == "bootstrap" and self.metric is None and self.bootstrap is None:
            raise ConfigError("demos='bootstrap' self-generates demos and needs metric= or bootstrap=")

    def compile(
        self, program: Program, *, trainset: Examples, valset: Examples | None = None, events: Events = None
    ) -> Program:
        """Return a copy of ``program`` whose predictors pick their ``k`` demos per input; ``program`` is unchanged.

        Raises:
            ConfigError: a bad hyperparameter or an empty trainset.
        """
        if not trainset:
            raise ConfigError("KNNFewShot needs a non-empty trainset")
        pools = self._pools(program, trainset, events)
        embedder = self.embedder
        if embedder is None:
            from cotune.retrieve.embed import default_embedder

            embedder = default_embedder()
        student = program.deepcopy()
        for name, predictor in student.named_predictors():
            pool = pools[name]
            if not pool:
                continue  # nothing to choose from: the predictor keeps what it had
            fields = predictor.signature.input_names
            texts = [demo_text(d, fields) for d in pool]
            mine = fixed_for(embedder, texts)
            vectors = np.asarray(mine.embed(texts), dtype=np.float32)  # the pool is embedded once, here
            predictor.demos = pool
            predictor.demo_selector = KNNSelector(pool, vectors, k=self.k, fields=fields, embedder=mine)
        self.embedder_ = embedder_spec(embedder)
        emit(events, "knn.done", k=self.k, pools=self.pool_sizes_)
        return student

    def _pools(
        self, program: Program, trainset: Sequence[Example], events: EventSink | None
    ) -> dict[str, list[Example]]:
        """Each predictor's demo pool; sets ``pool_sizes_``, ``n_passed_``, ``n_run_``."""
        generate = self.demos != "labeled" and (self.metric is not None or self.bootstrap is not None)
        generated: dict[str, list[Example]] = {}
        self.n_passed_ = self.n_run_ = 0
        if generate:
            bootstrap = self.bootstrap if self.bootstrap is not None else BootstrapFewShot(self.metric, seed=self.seed)
            result = self_generated_demos(program, trainset, bootstrap=bootstrap, events=events)
            generated, self.n_passed_, self.n_run_ = result.demos, result.n_passed, result.n_run
        pools: dict[str, list[Example]] = {}
        self.pool_sizes_: dict[str, dict[str, int]] = {}
        for name, predictor in program.named_predictors():
            pool = list(generated.get(name, []))
            labeled: list[Example] = []
            if not pool:
                if generate:
                    emit(events, "knn.labeled_fallback", predictor=name)
                labeled = labeled_demos(predictor, trainset, len(trainset))
            pools[name] = pool + labeled
            self.pool_sizes_[name] = {"bootstrapped": len(pool), "labeled": len(labeled)}
        return pools


__all__ = ["KNNFewShot", "KNNSelector", "attach_embedder", "demo_text", "embedder_from_spec", "embedder_spec"]
