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
MERGE_STEP = 2**20  # a merge's scores computed this many (chunk, term) pairs at a time


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


def _idfs(frequencies: np.ndarray, documents: int) -> np.ndarray:
    """idf of each term from its document frequency (math.log, as bm25s: exactly its float64 values)."""
    return np.asarray([idf(int(f), documents) for f in frequencies])


def _length_norms(k1: float, b: float, lengths: np.ndarray, average: float) -> np.ndarray:
    """Each chunk's tf-part denominator less tf: k1 (1 - b + b |d| / avgdl)."""
    return k1 * (1 - b + b * lengths / average)


def _term_frequencies(weights: np.ndarray, idfs: np.ndarray | float, norms: np.ndarray) -> np.ndarray:
    """tf back from bm25s' weights idf x tf / (tf + norm) (rounded: a miscount is possible only where tf
    has saturated the score, thousands of one term in one chunk, and shifts a score by under 1e-5)."""
    part = weights / idfs  # tf / (tf + norm)
    return np.rint(part * norms / (1 - part))


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

    @classmethod
    def merge(cls, parts: Iterable[LexicalIndex], dropped: np.ndarray) -> LexicalIndex:
        """BM25 over the parts' chunks less the `dropped` ones, in chunk id order: what `build` makes of
        those chunks' texts, computed from the term counts the parts hold, so a merge reads and tokenizes
        no text and holds counts, not strings. Scores are bm25s' arithmetic (float64, stored float32),
        computed MERGE_STEP terms at a time: what a merge holds is 4-byte rows, columns and counts."""
        ids, lengths, rows, columns, counts, vocab = [], [], [], [], [], {}
        for part in parts:
            if part.bm25 is None:
                continue
            kept = ~np.isin(part.chunk_ids, dropped)
            row_of = (np.cumsum(kept) - 1 + sum(len(i) for i in ids)).astype(np.int32)  # its row in the merge
            terms = sorted(part.bm25.vocab_dict, key=part.bm25.vocab_dict.get)
            column_of = np.asarray([vocab.setdefault(t, len(vocab)) for t in terms], dtype=np.int32)
            term_rows, term_columns, term_counts = part.term_counts()
            keep = kept[term_rows]
            rows.append(row_of[term_rows[keep]])
            columns.append(column_of[term_columns[keep]])
            counts.append(term_counts[keep].astype(np.float32))  # small whole numbers: exact
            ids.append(part.chunk_ids[kept])
            lengths.append(part.lengths[kept])
            del part, term_rows, term_columns, term_counts, keep  # one part's counts at a time
        ids = np.concatenate(ids) if ids else np.zeros(0, np.int64)
        if not len(ids):
            return cls(None, ids, np.zeros(0, np.int32))
        import bm25s
        import scipy.sparse

        order = np.argsort(ids, kind="stable")
        rank = np.empty(len(order), np.int32)
        rank[order] = np.arange(len(order), dtype=np.int32)
        lengths = np.concatenate(lengths)[order]
        # the chunk x term counts by term (column), rows ascending within each: bm25s' layout
        pairs = (rank[np.concatenate(rows)], np.concatenate(columns))
        by_term = scipy.sparse.coo_array((np.concatenate(counts), pairs), shape=(len(ids), len(vocab))).tocsc()
        del rows, columns, counts, pairs
        by_term.sort_indices()
        frequencies = np.diff(by_term.indptr)
        used = frequencies > 0  # terms only dropped chunks held go
        terms = [t for t, is_used in zip(vocab, used) if is_used]  # vocab's values are its insertion order
        frequencies = frequencies[used]
        bm25 = bm25s.BM25()
        indptr = np.concatenate([[0], np.cumsum(frequencies)])
        idfs = _idfs(frequencies, len(ids)).astype(bm25.dtype)
        norms = _length_norms(bm25.k1, bm25.b, lengths, lengths.mean())
        data = np.empty(len(by_term.data), bm25.dtype)
        for start in range(0, len(data), MERGE_STEP):
            step = slice(start, start + MERGE_STEP)
            term = np.searchsorted(indptr, np.arange(start, min(start + MERGE_STEP, len(data))), side="right") - 1
            tf = by_term.data[step].astype(np.float64)
            data[step] = idfs[term] * (tf / (norms[by_term.indices[step]] + tf))
        bm25.scores = {"data": data, "indices": by_term.indices.astype(bm25.int_dtype, copy=False),
                       "indptr": indptr.astype(bm25.int_dtype), "num_docs": len(ids)}
        bm25.vocab_dict = {t: c for c, t in enumerate(terms)}
        bm25.vocab_dict.setdefault("", len(terms))  # as bm25s' index() adds it
        bm25.nonoccurrence_array = None  # BM25 (lucene) has none
        bm25.unique_token_ids_set = set(bm25.vocab_dict.values())
        return cls(bm25, ids[order], lengths.astype(np.int32))

    def term_counts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(row, column, count) of each term of each chunk, the counts recovered from bm25s' weights."""
        data, indices, indptr = (np.asarray(self.bm25.scores[key]) for key in ("data", "indices", "indptr"))
        frequencies = np.diff(indptr)
        columns = np.repeat(np.arange(len(frequencies)), frequencies)
        own = self._own_norms()
        counts = _term_frequencies(data, _idfs(frequencies, len(self.chunk_ids))[columns], own[indices])
        return indices.astype(np.int64), columns, counts

    def _own_norms(self) -> np.ndarray:
        """Each chunk's tf-part denominator less tf, from this index's own statistics (as bm25s built it)."""
        return _length_norms(self.bm25.k1, self.bm25.b, self.lengths, self.lengths.mean())

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
            own = self._own_norms()
            every = _length_norms(self.bm25.k1, self.bm25.b, self.lengths, statistics.tokens / statistics.documents)
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
                    tf = _term_frequencies(weights, idf(end - start, len(self.chunk_ids)), own[rows])
                    weights = idf(statistics.frequencies[term], statistics.documents) * tf / (tf + every[rows])
                scores[rows] += weights
            if mask is not None:
                scores[~mask] = 0
            top = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
            top = top[np.argsort(-scores[top], kind="stable")]
            results.append([(int(self.chunk_ids[r]), float(scores[r])) for r in top if scores[r] > 0])
        return results
