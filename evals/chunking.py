"""Window against late chunking, measured through the index: what `retriever index --chunking MODE`
builds and `retriever search` serves.

For each BEIR set and each chunking mode, the set's corpus is indexed in a temporary folder
(`Retriever.create` + `add`, the model and its length as `retriever index` takes them), timed, and
searched in each search mode (dense, lexical, hybrid with the default fusion); nDCG@10 and
Recall@100 come from `evals.beir.evaluate`. The index time is the chunking's cost: late chunking runs
the same forward passes as window chunking plus a pooling per passage.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from evals.beir import evaluate
from retriever.beir import BeirDataset
from retriever.embedding import Chunking
from retriever.index import SEARCH_MODES, Retriever
from retriever.trec import Run

MEASURES = {"ndcg_at_10": "ndcg_cut.10", "recall_at_100": "recall.100"}


@dataclass
class ChunkingResult:
    set: str
    chunking: str
    documents: int
    chunks: int
    index_seconds: float
    scores: dict[str, dict[str, float]]  # search mode -> measure -> mean over the judged queries


@dataclass
class IndexedRuns:
    chunks: int
    index_seconds: float
    runs: dict[str, Run]  # search mode -> query id -> {document id: score}, best first


def index_and_search(dataset: BeirDataset, chunking: Chunking, model: str | Path | None = None,
                     max_length: int | None = None, device: str | None = None, dtype: str | None = None,
                     k: int = 100) -> IndexedRuns:
    """`dataset`'s corpus indexed as `retriever index` does (timed), then its queries searched in every
    search mode as `retriever search` serves them."""
    query_ids = list(dataset.queries)
    queries = [dataset.queries[q] for q in query_ids]
    with tempfile.TemporaryDirectory(prefix="indexed-") as folder:
        retriever = Retriever.create(Path(folder) / "index", model, max_length=max_length, chunking=chunking,
                                     device=device, dtype=dtype)
        try:
            started = time.perf_counter()
            retriever.add(list(dataset.corpus.values()), show_progress=True)
            seconds = time.perf_counter() - started
            runs = {}
            for mode in SEARCH_MODES:
                hits = retriever.search_batch(queries, k=k, mode=mode)
                runs[mode] = {qid: {hit.id: hit.score for hit in found} for qid, found in zip(query_ids, hits)}
            chunks = retriever.manifest.chunks
        finally:
            retriever.close()
    return IndexedRuns(chunks, round(seconds, 2), runs)


def measure(name: str, dataset: BeirDataset, chunking: Chunking, model: str | Path | None = None,
            max_length: int | None = None, device: str | None = None, k: int = 100) -> ChunkingResult:
    """`dataset`'s corpus indexed with `chunking`, then its queries searched in every search mode."""
    indexed = index_and_search(dataset, chunking, model, max_length, device, k=k)
    scores = {mode: evaluate(dataset.qrels, run, MEASURES) for mode, run in indexed.runs.items()}
    return ChunkingResult(name, chunking.mode, len(dataset.corpus), indexed.chunks, indexed.index_seconds, scores)
