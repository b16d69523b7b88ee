"""Segments: the immutable parts of an index's vectors and BM25, as search engines keep them.

A write adds one segment (its chunks' vectors in FAISS, their BM25, their ids); deleting or
replacing a document only marks its chunks deleted in the store (tombstones), which searches skip
inside FAISS and BM25. A segment never changes once written; a merge writes one new segment from
several, leaving the tombstoned chunks out (its BM25 from the parts' term counts, no text re-read),
and the commit that names it retires them.

    segments/seg-000007/       vectors.faiss, bm25/ (bm25s and chunk_ids.npy)
    segments/.building-...     a segment being written (removed if its writer died)

The merge policy is tiered, as Lucene's TieredMergePolicy: segments are grouped by size in tiers
a factor SEGMENTS_PER_TIER apart (all under MERGE_FLOOR chunks are one tier), and a tier holding
SEGMENTS_PER_TIER segments is merged into one, so an index of n chunks has O(log n) segments and
each chunk is rewritten O(log n) times. A segment whose chunks are mostly deleted is rewritten
alone, and one whose chunks are all deleted is dropped. A merge writes at most MAX_MERGED_BYTES of
vectors (ivfpq: of codes and ids), so a writer's memory does not grow with the index (an index of 1M
256-d chunks holds some 20 flat segments; ivfpq segments of 256-d chunks hold up to 932k chunks).
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from retriever.commit import fsync_dir, fsync_tree
from retriever.lexical import LexicalIndex
from retriever.vectors import IVFPQ_MIN_TRAIN, VectorIndex, stored_bytes

SEGMENTS = "segments"
SEGMENTS_PER_TIER = 10
MERGE_FLOOR = 1000  # chunks
EXPUNGE_DELETED = 0.5  # a segment with more of its chunks deleted than this is rewritten
# The most a merge writes (flat and hnsw: float32 vectors, 65,536 chunks of 256 dimensions, 21,845 of 768;
# ivfpq: codes and ids, 932k chunks of 256 dimensions): what a writer holds, whatever the index's size.
# Larger segments are not merged again (Lucene's max merged size).
MAX_MERGED_BYTES = 64 * 2**20
VECTORS_FILE = "vectors.faiss"
BM25_FOLDER = "bm25"
_BUILDING = ".building-"


@dataclass
class SegmentInfo:
    """A segment as the manifest names it."""
    name: str
    kind: str  # the FAISS index type of its vectors (an ivfpq index's first segments are flat)
    chunks: int  # vectors it holds, deleted ones included

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "chunks": self.chunks}


class Segment:
    """A segment's files. A reader holds the vectors of the commit it serves (`load` reads them then, so a
    merge that retires the segment later changes nothing); BM25 is read on first use. A writer keeps
    neither for the segments it writes, only their chunk ids: its memory is one batch, whatever the index
    holds, and it reads a segment's vectors back only to merge or search it."""

    def __init__(self, directory: Path, info: SegmentInfo, dimension: int, chunk_ids: np.ndarray | None = None):
        self.directory = directory
        self.info = info
        self.dimension = dimension
        self._vectors: VectorIndex | None = None
        self._lexical: LexicalIndex | None = None
        self._chunk_ids = chunk_ids

    @classmethod
    def load(cls, root: Path, info: SegmentInfo, dimension: int) -> Segment:
        segment = cls(root / SEGMENTS / info.name, info, dimension)
        segment._vectors = segment.read_vectors()
        return segment

    @classmethod
    def write(cls, root: Path, name: str, make_vectors: Callable[[], VectorIndex],
              make_lexical: Callable[[], LexicalIndex]) -> Segment:
        """The segment `name` holding the vectors and the BM25 (over the same chunks) that these make,
        built aside and renamed into place when complete. One after the other: a merge's vectors are
        written and freed before its BM25 is merged."""
        made = {}

        def fill(folder: Path) -> None:
            vectors = make_vectors()
            vectors.save(folder / VECTORS_FILE)
            made["info"], made["dimension"] = SegmentInfo(name, vectors.kind, vectors.ntotal), vectors.dimension
            del vectors
            lexical = make_lexical()
            lexical.save(folder / BM25_FOLDER)
            made["chunk_ids"] = lexical.chunk_ids

        return cls(build_folder(root, name, fill), made["info"], made["dimension"], made["chunk_ids"])

    @property
    def vectors(self) -> VectorIndex:
        """Its FAISS index (a segment this process wrote: read on first use; VectorIndexError once a merge
        retired it)."""
        if self._vectors is None:
            self._vectors = self.read_vectors()
        return self._vectors

    def read_vectors(self) -> VectorIndex:
        """Its FAISS index, not kept unless it is already: a merge reads its parts one at a time."""
        if self._vectors is not None:
            return self._vectors
        return VectorIndex.load(self.directory / VECTORS_FILE, self.info.kind, self.dimension, self.info.chunks)

    @property
    def lexical(self) -> LexicalIndex:
        """Its BM25, read on first use (FileNotFoundError once a merge retired the segment)."""
        if self._lexical is None:
            self._lexical = self.read_lexical()
        return self._lexical

    def read_lexical(self) -> LexicalIndex:
        """Its BM25 (memory-mapped), not kept unless it is already: what a merge reads of each part."""
        return self._lexical or LexicalIndex.load(self.directory / BM25_FOLDER)

    @property
    def chunk_ids(self) -> np.ndarray:
        if self._chunk_ids is None:
            self._chunk_ids = self.lexical.chunk_ids
        return self._chunk_ids


def build_folder(root: Path, name: str, fill: Callable[[Path], None]) -> Path:
    """Segment folder `name`, filled by `fill(folder)` under a temporary name, synced and renamed
    into place when complete; a failure removes it."""
    parent = root / SEGMENTS
    parent.mkdir(exist_ok=True)
    building = parent / f"{_BUILDING}{name}"
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir()
    try:
        fill(building)
        fsync_tree(building)
        shutil.rmtree(parent / name, ignore_errors=True)  # an interrupted writer's, never committed
        building.rename(parent / name)
        fsync_dir(parent)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return parent / name


def merge_plan(segments: list[Segment], tombstones: np.ndarray, index_type: str, dimension: int
               ) -> list[list[Segment]]:
    """The groups of segments to merge now, each into one segment (a group of one whose chunks are
    all deleted is dropped). A full tier merges its smallest segments, as many as make at most
    MAX_MERGED_BYTES of stored vectors (a merge holds its result in memory)."""
    live = {s.info.name: s.info.chunks - int(np.isin(s.chunk_ids, tombstones).sum()) for s in segments}
    if index_type == "ivfpq" and not any(s.info.kind == "ivfpq" for s in segments):
        # the quantizer trains once the index holds enough chunks, on all of them
        return [segments] if sum(live.values()) >= IVFPQ_MIN_TRAIN else []
    plan, tiers = [], {}
    for segment in segments:
        count = live[segment.info.name]
        if count < segment.info.chunks * (1 - EXPUNGE_DELETED):
            plan.append([segment])
        else:
            tier = int(math.log(max(count, MERGE_FLOOR) / MERGE_FLOOR, SEGMENTS_PER_TIER))
            tiers.setdefault(tier, []).append(segment)
    most = MAX_MERGED_BYTES // stored_bytes(index_type, dimension)
    for tier in tiers.values():
        if len(tier) < SEGMENTS_PER_TIER:
            continue
        group, total = [], 0
        for segment in sorted(tier, key=lambda s: live[s.info.name])[:SEGMENTS_PER_TIER]:
            if total + live[segment.info.name] > most:
                break
            group.append(segment)
            total += live[segment.info.name]
        if len(group) > 1:
            plan.append(group)
    return plan


def retire(root: Path, keep: set[str]) -> None:
    """Removes segment folders the manifest does not name: merged-away segments and what interrupted
    writers left."""
    parent = root / SEGMENTS
    if parent.is_dir():
        for path in parent.iterdir():
            if path.name not in keep:
                shutil.rmtree(path, ignore_errors=True)


def search_dense(segments: list[Segment], queries: np.ndarray, k: int, allowed: np.ndarray | None,
                 tombstones: np.ndarray) -> list[list[tuple[int, float]]]:
    """[(chunk id, score)] per query, the k best over all segments, best first."""
    scores, ids = [], []
    share = 1.0 if allowed is None else len(allowed) / max(sum(s.vectors.ntotal for s in segments), 1)
    for segment in segments:
        s, i = segment.vectors.search(queries, k, allowed, excluded=tombstones, allowed_share=share)
        scores.append(s)
        ids.append(i)
    if not scores:
        return [[] for _ in queries]
    scores, ids = np.concatenate(scores, axis=1), np.concatenate(ids, axis=1)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return [[(int(i), float(s)) for i, s in zip(ids[q, row], scores[q, row]) if i >= 0]
            for q, row in enumerate(order)]


def search_lexical(segments: list[Segment], queries: list[list[str]], k: int, allowed: np.ndarray | None,
                   tombstones: np.ndarray) -> list[list[tuple[int, float]]]:
    """[(chunk id, score)] per tokenized query, the k best BM25 scores over all segments with the
    collection's term statistics, best first."""
    if not segments:
        return [[] for _ in queries]
    statistics = None  # one segment: its own
    if len(segments) > 1:
        statistics = segments[0].lexical.statistics(queries)
        for segment in segments[1:]:
            statistics.add(segment.lexical.statistics(queries))
    results = [[] for _ in queries]
    for segment in segments:
        for merged, hits in zip(results, segment.lexical.search(queries, k, allowed, statistics, tombstones)):
            merged.extend(hits)
    return [sorted(hits, key=lambda hit: -hit[1])[:k] for hits in results]
