"""Chunks -> BM25 (bm25s, English stemming and stop words), for hybrid search. bm25s is imported
when first needed: a dense `retriever search` does without it.

Each segment of an index has its own bm25s index over its chunks (bm25s builds in one pass and
cannot add to it, so a segment's is built once, when the segment is). Scores are the index-wide
BM25, as Lucene scores over segments: bm25s keeps idf(t) x tf/(tf + k1 (1 - b + b |d| / avgdl))
per term and chunk from the segment's own statistics; with each chunk's length kept beside it,
the search recovers tf from that and scores it with the collection's document frequencies,
chunk count and average length (deleted chunks count until a merge drops them, as in Lucene).
With one segment, the scores are bm25s' own.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_CHUNK_IDS = "chunk_ids.npy"
_LENGTHS = "chunk_lengths.npy"  # tokens per chunk, as bm25s counts them for |d|


def tokenize(texts: list[str]) -> list[list[str]]:
    """bm25s tokens of texts or queries: English stop words out, Snowball-stemmed."""
    import bm25s
    import Stemmer

    return bm25s.tokenize(texts, stopwords="en", stemmer=Stemmer.Stemmer("english"), show_progress=False,
                          return_ids=False)


def lexical_text(title: str, passage: str) -> str:
    """What BM25 indexes for a chunk: its document's title, a newline and the passage."""
    return f"{title}\n{passage}" if title else passage


def idf(document_frequency: int, documents: int) -> float:
    """BM25's idf as bm25s' default ("lucene") method computes it."""
    return math.log(1 + (documents - document_frequency + 0.5) / (document_frequency + 0.5))


@dataclass
class TermStatistics:
    """What BM25 weighs a term by: chunks in all, their tokens in all, and chunks holding each query term."""
    documents: int
    tokens: int
    frequencies: dict[str, int]

    def add(self, other: TermStatistics) -> None:
        self.documents += other.documents
        self.tokens += other.tokens
        for term, count in other.frequencies.items():
            self.frequencies[term] = self.frequencies.get(term, 0) + count


class LexicalIndex:
    def __init__(self, bm25, chunk_ids: np.ndarray, lengths: np.ndarray):
        self.bm25 = bm25  # None: no chunks
        self.chunk_ids = chunk_ids
        self.lengths = lengths

    @classmethod
    def build(cls, chunks: Iterable[tuple[int, str, str]]) -> LexicalIndex:
        """BM25 over (chunk id, title, passage) triples."""
        ids, texts = [], []
        for chunk_id, title, passage in chunks:
            ids.append(chunk_id)
            texts.append(lexical_text(title, passage))
        if not texts:
            return cls(None, np.zeros(0, np.int64), np.zeros(0, np.int32))
        import bm25s

        tokens = tokenize(texts)
        bm25 = bm25s.BM25()
        bm25.index(tokens, show_progress=False)
        return cls(bm25, np.asarray(ids, dtype=np.int64), np.asarray([len(t) for t in tokens], dtype=np.int32))

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        np.save(directory / _CHUNK_IDS, self.chunk_ids)
        np.save(directory / _LENGTHS, self.lengths)
        if self.bm25 is not None:
            self.bm25.save(str(directory), show_progress=False)

    @classmethod
    def load(cls, directory: Path) -> LexicalIndex:
        chunk_ids = np.load(directory / _CHUNK_IDS)
        if not len(chunk_ids):
            return cls(None, chunk_ids, np.zeros(0, np.int32))
        import bm25s

        return cls(bm25s.BM25.load(str(directory), mmap=True, show_progress=False), chunk_ids,
                   np.load(directory / _LENGTHS))

    def document_frequency(self, term: str) -> int:
        """Chunks of this index holding `term`."""
        if self.bm25 is None or (column := self.bm25.vocab_dict.get(term)) is None:
            return 0
        indptr = self.bm25.scores["indptr"]
        return int(indptr[column + 1] - indptr[column])

    def statistics(self, queries: Sequence[list[str]]) -> TermStatistics:
        """This index's own statistics of the query terms."""
        terms = {t for query in queries for t in query}
        return TermStatistics(len(self.chunk_ids), int(self.lengths.sum()),
                              {t: self.document_frequency(t) for t in terms})

    def search(self, queries: Sequence[list[str]], k: int, allowed: np.ndarray | None = None,
               statistics: TermStatistics | None = None, excluded: np.ndarray | None = None
               ) -> list[list[tuple[int, float]]]:
        """[(chunk id, score)] per tokenized query, best first; chunks without any query term are left
        out, and with `allowed`, chunks not in it, or else with `excluded` (tombstones; an `allowed`
        holds live chunks only), chunks in it: masked inside the search. `statistics`: the
        collection's (several segments'), default this index's own."""
        k = min(k, len(self.chunk_ids))
        if self.bm25 is None or k == 0:
            return [[] for _ in queries]
        mask = None
        if allowed is not None:
            mask = np.isin(self.chunk_ids, allowed)
        elif excluded is not None and len(excluded):
            mask = ~np.isin(self.chunk_ids, excluded)
        data, indices, indptr = (self.bm25.scores[key] for key in ("data", "indices", "indptr"))
        if statistics is not None:
            k1, b = self.bm25.k1, self.bm25.b
            own = k1 * (1 - b + b * self.lengths / self.lengths.mean())  # tf-part denominators, less tf
            every = k1 * (1 - b + b * self.lengths / (statistics.tokens / statistics.documents))
        results = []
        for query in queries:
            scores = np.zeros(len(self.chunk_ids), np.float32)
            for term in query:  # a term given twice counts twice, as in bm25s
                column = self.bm25.vocab_dict.get(term)
                if column is None:
                    continue
                start, end = indptr[column], indptr[column + 1]
                rows, weights = indices[start:end], data[start:end]
                if statistics is not None:
                    part = weights / idf(end - start, len(self.chunk_ids))  # tf / (tf + own)
                    tf = np.rint(part * own[rows] / (1 - part))
                    weights = idf(statistics.frequencies[term], statistics.documents) * tf / (tf + every[rows])
                scores[rows] += weights
            if mask is not None:
                scores[~mask] = 0
            top = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
            top = top[np.argsort(-scores[top], kind="stable")]
            results.append([(int(self.chunk_ids[r]), float(scores[r])) for r in top if scores[r] > 0])
        return results
