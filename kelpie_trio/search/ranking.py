"""Ranking rules as plain functions: BM25, reciprocal rank fusion, promotion (sans-IO).

- **BM25** (Robertson and Sparck Jones, with FTS5's constants and IDF, so the
  pure-Python index and FTS5 give the same scores): k1 = 1.2, b = 0.75,
  idf = ln((N - n + 0.5) / (n + 0.5)), floored at 1e-6 for terms in over half
  the documents, as FTS5 does.
- **Reciprocal rank fusion** merges the BM25 list and the vector list:
  score(d) = sum over lists of 1 / (k + rank), k = 60, ranks from 1.
- **Working-memory promotion**: a document returned by a search gains one
  retrieval. Among results of equal relevance (the same score to three
  significant digits) the one retrieved more often comes first, then the
  newer, then the larger key. Promotion never lifts a less relevant result
  over a more relevant one; it only orders equals, so relevance stays the
  rule and memory breaks the ties.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from kelpie_trio.search.documents import Hit

__all__ = ["BM25_B", "BM25_K1", "RRF_K", "bm25_term", "idf", "order", "rrf"]

BM25_K1 = 1.2
BM25_B = 0.75
RRF_K = 60


def idf(documents: int, containing: int) -> float:
    """FTS5's inverse document frequency of a term found in `containing` of `documents`."""
    value = math.log((documents - containing + 0.5) / (containing + 0.5))
    return max(value, 1e-6)


def bm25_term(tf: int, doc_len: int, avg_len: float, term_idf: float) -> float:
    """One query term's contribution to one document's BM25 score."""
    norm = 1 - BM25_B + BM25_B * (doc_len / avg_len if avg_len else 0.0)
    return term_idf * (tf * (BM25_K1 + 1)) / (tf + BM25_K1 * norm)


def rrf(rankings: Iterable[Sequence[str]], k: int = RRF_K) -> dict[str, float]:
    """Reciprocal rank fusion of several ranked key lists: key -> fused score."""
    fused: dict[str, float] = {}
    for ranking in rankings:
        for position, key in enumerate(ranking, start=1):
            fused[key] = fused.get(key, 0.0) + 1.0 / (k + position)
    return fused


def _equal_relevance(score: float) -> float:
    """`score` to three significant digits: results that agree this far are equals."""
    if score == 0:
        return 0.0
    return round(score, 2 - math.floor(math.log10(abs(score))))


def order(hits: Iterable[Hit]) -> list[Hit]:
    """Best first: relevance, then (among equals) retrievals, recency and key."""
    return sorted(
        hits,
        key=lambda h: (_equal_relevance(h.score), h.retrievals, h.created_at, h.key),
        reverse=True,
    )
