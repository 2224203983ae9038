"""The relevance corpus (tests/data/search_corpus.jsonl) and its two figures.

recall@5: the share of queries with a relevant passage among the first five
results; MRR: the mean over queries of 1 / rank of the first relevant result
(0 when none is in the first ten).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import attrs

from kelpie_trio.search.documents import PASSAGE, Document

CORPUS = Path(__file__).parents[1] / "data" / "search_corpus.jsonl"
AGENT = "agent-00000000-0000-4000-8000-000000000001"


@attrs.frozen
class Corpus:
    documents: list[Document]
    queries: list[tuple[str, frozenset[str]]]


def load_corpus() -> Corpus:
    documents, queries = [], []
    for i, line in enumerate(CORPUS.read_text().splitlines()):
        row = json.loads(line)
        if row["type"] == "passage":
            documents.append(
                Document(PASSAGE, AGENT, row["id"], row["text"], float(i), tags=tuple(row["tags"]))
            )
        else:
            queries.append((row["text"], frozenset(row["relevant"])))
    return Corpus(documents, queries)


@attrs.frozen
class Scores:
    recall_at_5: float
    mrr: float

    def __str__(self) -> str:
        return f"recall@5 {self.recall_at_5:.3f}, MRR {self.mrr:.3f}"


async def evaluate(corpus: Corpus, search: Callable[[str], Awaitable[list[str]]]) -> Scores:
    """`search(query)` answers ranked keys (ten or more)."""
    found5 = 0
    reciprocal = 0.0
    for text, relevant in corpus.queries:
        ranked = (await search(text))[:10]
        if relevant & set(ranked[:5]):
            found5 += 1
        for rank, key in enumerate(ranked, start=1):
            if key in relevant:
                reciprocal += 1 / rank
                break
    count = len(corpus.queries)
    return Scores(found5 / count, reciprocal / count)
