"""Demo selectors: what picks a predictor's demos per input at inference, saved with the program and rebuilt
on load. `KNNSelector` (built by `cotune.optimize.knn.KNNFewShot`) holds k, the pool's embedding matrix and how
to rebuild its embedder; each call embeds the input and shows the k nearest demos. It lives with programs, not
with the optimizer that builds it, so loading a saved program needs no optimizer.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cotune.data.example import Example
from cotune.errors import ConfigError, UnknownChoiceError
from cotune.program.demo_pins import chosen
from cotune.program.format import render_value
from cotune.retrieve.embed import Embedder, MiniLMEmbedder, TfidfEmbedder, minilm_package_dir


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
        # Nearest last: the most similar demo sits right before the question. Within a wrapper's later runs of the
        # same question (`cotune.program.demo_pins`), the demos its first run got.
        return [self.pool[i] for i in reversed(chosen(id(self), lambda: self.neighbours(inputs)))]

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
