"""Chunks -> BM25 (bm25s, English stemming and stop words), for hybrid search. bm25s is imported
when first needed: a dense `retriever search` does without it.

bm25s builds its index in one pass and cannot add to it, so every write of the index rebuilds it
from the chunk texts in the store (about a second per 10k chunks); the chunk ids, in the order of
bm25s' rows, sit beside it.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

_CHUNK_IDS = "chunk_ids.npy"


def tokenize(texts: list[str]):
    """bm25s tokens of texts or queries: English stop words out, Snowball-stemmed."""
    import bm25s
    import Stemmer

    return bm25s.tokenize(texts, stopwords="en", stemmer=Stemmer.Stemmer("english"), show_progress=False)


def lexical_text(title: str, passage: str) -> str:
    """What BM25 indexes for a chunk: its document's title, a newline and the passage."""
    return f"{title}\n{passage}" if title else passage


class LexicalIndex:
    def __init__(self, bm25, chunk_ids: np.ndarray):
        self.bm25 = bm25  # None: no chunks
        self.chunk_ids = chunk_ids

    @classmethod
    def build(cls, chunks: Iterable[tuple[int, str, str]]) -> LexicalIndex:
        """BM25 over (chunk id, title, passage) triples."""
        ids, texts = [], []
        for chunk_id, title, passage in chunks:
            ids.append(chunk_id)
            texts.append(lexical_text(title, passage))
        if not texts:
            return cls(None, np.zeros(0, np.int64))
        import bm25s

        bm25 = bm25s.BM25()
        bm25.index(tokenize(texts), show_progress=False)
        return cls(bm25, np.asarray(ids, dtype=np.int64))

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        np.save(directory / _CHUNK_IDS, self.chunk_ids)
        if self.bm25 is not None:
            self.bm25.save(str(directory), show_progress=False)

    @classmethod
    def load(cls, directory: Path) -> LexicalIndex:
        chunk_ids = np.load(directory / _CHUNK_IDS)
        if not len(chunk_ids):
            return cls(None, chunk_ids)
        import bm25s

        return cls(bm25s.BM25.load(str(directory), mmap=True, show_progress=False), chunk_ids)

    def search(self, queries: list[str], k: int, allowed: np.ndarray | None = None
               ) -> list[list[tuple[int, float]]]:
        """[(chunk id, score)] per query, best first; chunks without any query term are left out, and
        with `allowed`, chunks not in it (masked inside the search)."""
        k = min(k, len(self.chunk_ids))
        if self.bm25 is None or k == 0:
            return [[] for _ in queries]
        mask = None if allowed is None else np.isin(self.chunk_ids, allowed).astype(np.float32)
        tokens = tokenize(queries)
        rows, scores = self.bm25.retrieve(tokens, k=k, show_progress=False, n_threads=1, weight_mask=mask)
        return [[(int(self.chunk_ids[r]), float(s)) for r, s in zip(row, score) if s > 0]
                for row, score in zip(rows, scores)]
