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

import base64
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from cotune.data.example import Example
from cotune.errors import ConfigError, UnknownChoiceError
from cotune.evaluate.metrics import Metric
from cotune.events import EventSink, emit
from cotune.optimize.base import Events, Examples, Optimizer
from cotune.optimize.bootstrap import BootstrapFewShot
from cotune.optimize.labeled import labeled_demos
from cotune.optimize.params import Positive
from cotune.optimize.self_cot import self_generated_demos
from cotune.program.format import render_value
from cotune.program.program import Program
from cotune.retrieve.embed import Embedder, MiniLMEmbedder, TfidfEmbedder, minilm_package_dir

DEMO_SOURCES = ("auto", "bootstrap", "labeled")


def demo_text(values: Mapping[str, Any], fields: Sequence[str]) -> str:
    """What is embedded for a demo or a query: its ``fields`` (those present) as ``name: value`` lines."""
    return "\n".join(f"{name}: {render_value(values[name])}" for name in fields if values.get(name) is not None)


# -- embedders by name (so a saved index knows how to embed new queries) -----------------------------


def embedder_spec(embedder: Embedder) -> dict[str, Any]:
    """How to rebuild ``embedder`` after loading: MiniLM by model, TF-IDF by settings, others by class name only."""
    if isinstance(embedder, MiniLMEmbedder):
        return {"name": "minilm", "model": embedder.model}
    if isinstance(embedder, TfidfEmbedder):
        return {"name": "tfidf", "ngram_range": list(embedder.ngram_range)}
    return {"name": "custom", "class": f"{type(embedder).__module__}.{type(embedder).__qualname__}"}


def embedder_from_spec(spec: Mapping[str, Any], corpus: Sequence[str]) -> Embedder:
    """Rebuild a saved embedder; TF-IDF is refitted on ``corpus`` (the pool's texts), as when it was built.

    Raises:
        ConfigError: a custom embedder (pass it with `attach_embedder`), or MiniLM not installed here.
        UnknownChoiceError: an unknown embedder name.
    """
    name = spec.get("name")
    if name == "minilm":
        model = spec.get("model")
        if model is None or not Path(model).exists():  # saved on another machine: use this one's package
            model = minilm_package_dir() or model
        return MiniLMEmbedder(model)
    if name == "tfidf":
        return TfidfEmbedder(corpus, ngram_range=tuple(spec.get("ngram_range", (1, 2))))
    if name == "custom":
        raise ConfigError(
            f"this kNN index was built with a custom embedder ({spec.get('class')}); give the same one with "
            "cotune.optimize.knn.attach_embedder(program, embedder) before running the program"
        )
    raise UnknownChoiceError("embedder", name, ["custom", "minilm", "tfidf"])


def fixed_for(embedder: Embedder, texts: Sequence[str]) -> Embedder:
    """An embedder whose vectors for ``texts`` stay comparable with later queries.

    A `TfidfEmbedder` without a fixed corpus refits on every new text, which would make the stored pool
    vectors incomparable with query vectors; it is replaced by one fitted once on the pool's texts.
    """
    if isinstance(embedder, TfidfEmbedder):
        return TfidfEmbedder(texts, ngram_range=embedder.ngram_range)
    return embedder


def encode_vectors(vectors: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(vectors, dtype="<f4").tobytes()).decode("ascii")


def decode_vectors(text: str, shape: Sequence[int]) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<f4").reshape(tuple(shape)).astype(np.float32)


# -- the selector -------------------------------------------------------------------------------------


class KNNSelector:
    """A predictor's ``demo_selector``: the ``k`` pool demos nearest to each call's inputs.

    Args:
        pool: the demos (the predictor's ``demos``).
        vectors: one L2-normalized row per pool demo (embeddings of `demo_text`).
        k: demos per call.
        fields: the input fields embedded.
        embedder: embeds queries; None builds one from ``spec`` on first use.
        spec: the embedder's `embedder_spec` (default: read from ``embedder``).

    Raises:
        ConfigError: ``vectors`` does not have one row per pool demo.
    """

    kind = "knn"

    def __init__(
        self,
        pool: Sequence[Example],
        vectors: np.ndarray,
        *,
        k: int,
        fields: Sequence[str],
        embedder: Embedder | None = None,
        spec: Mapping[str, Any] | None = None,
    ):
        self.pool = list(pool)
        self.vectors = np.asarray(vectors, dtype=np.float32)
        if self.vectors.ndim != 2 or len(self.vectors) != len(self.pool):
            raise ConfigError(
                f"kNN index has {self.vectors.shape[0] if self.vectors.ndim else 0} vectors for {len(self.pool)} demos"
            )
        self.k, self.fields = k, list(fields)
        self.spec = dict(spec) if spec is not None else embedder_spec(embedder)
        self.texts = [demo_text(d, self.fields) for d in self.pool]
        self._embedder = embedder
        self._lock = threading.Lock()

    @property
    def embedder(self) -> Embedder:
        with self._lock:  # built once even when evaluation threads ask at the same time
            if self._embedder is None:
                self._embedder = embedder_from_spec(self.spec, self.texts)
            return self._embedder

    def set_embedder(self, embedder: Embedder) -> None:
        with self._lock:
            self._embedder = embedder

    def neighbours(self, inputs: Mapping[str, Any]) -> list[int]:
        """Pool indices of the ``k`` nearest demos, nearest first (ties: earlier pool demo first)."""
        query = demo_text(inputs, self.fields)
        vector = np.asarray(self.embedder.embed([query]), dtype=np.float32)[0]
        if vector.shape[0] != self.vectors.shape[1]:
            raise ConfigError(
                f"the embedder gives {vector.shape[0]}-dimensional vectors but this kNN index holds "
                f"{self.vectors.shape[1]}-dimensional ones; use the embedder that built it ({self.spec.get('name')})"
            )
        sims = self.vectors @ vector
        order = sorted(range(len(self.pool)), key=lambda i: (-float(sims[i]), i))
        return [i for i in order if self.texts[i] != query][: self.k]

    def __call__(self, inputs: Mapping[str, Any]) -> list[Example]:
        # Nearest last: the most similar demo sits right before the question.
        return [self.pool[i] for i in reversed(self.neighbours(inputs))]

    def dump_state(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "k": self.k,
            "fields": self.fields,
            "embedder": self.spec,
            "shape": list(self.vectors.shape),
            "vectors": encode_vectors(self.vectors),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any], demos: Sequence[Example]) -> KNNSelector:
        """Rebuild from `dump_state` over the predictor's loaded ``demos`` (no embedding happens here).

        Raises:
            ConfigError: the saved matrix does not match the demos.
        """
        shape = state["shape"]
        if shape[0] != len(demos):
            raise ConfigError(f"saved kNN index has {shape[0]} vectors but the predictor has {len(demos)} demos")
        vectors = decode_vectors(state["vectors"], shape)
        return cls(demos, vectors, k=state["k"], fields=state["fields"], spec=state["embedder"])

    def __repr__(self) -> str:
        return f"KNNSelector(k={self.k}, pool={len(self.pool)}, embedder={self.spec.get('name')})"


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
