"""Retrieval: BM25 search over a passage corpus (a tool LM programs call) and sentence embeddings for
similarity search (kNN few-shot, GPO's trajectory retrieval). Neither imports torch until used."""

from cotune.retrieve.bm25 import BM25Retriever, Hit, format_passage, passage_title
from cotune.retrieve.embed import Embedder, MiniLMEmbedder, TfidfEmbedder, default_embedder

__all__ = [
    "BM25Retriever",
    "Embedder",
    "Hit",
    "MiniLMEmbedder",
    "TfidfEmbedder",
    "default_embedder",
    "format_passage",
    "passage_title",
]
