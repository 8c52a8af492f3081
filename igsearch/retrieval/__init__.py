"""Retrieval: one `Retriever` protocol, BM25 and dense indexes, an HTTP server and its client."""

from igsearch.retrieval.base import Doc, Hit, Retriever

__all__ = ["Doc", "Hit", "Retriever"]
