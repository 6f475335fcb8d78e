"""Retrieval: search tools that LM programs call (BM25 over a passage corpus, here) and sentence
embeddings for similarity search (`cotune.retrieve.embed`, imported on its own)."""

from cotune.retrieve.bm25 import BM25Retriever, Hit, format_passage, passage_title

__all__ = ["BM25Retriever", "Hit", "format_passage", "passage_title"]
