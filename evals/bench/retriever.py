"""The retriever benchmark (`retriever bench retriever`): indexing throughput and search latency.

(1) Synthetic: `docs` documents of random words with random unit vectors (the model's dimension),
    written with `Retriever.add_embedded` into a flat and an HNSW index. Then, for each index:
    warm search latency from Python (`Retriever.search` in the default, hybrid mode, dense alone, and
    the default mode filtered to 1% of the documents by a metadata field; query encoding with the
    model included; p50/p99 over `queries` queries), cold `retriever search` wall time (a new process each run:
    imports, model load, index load, query, output), and the cost of small writes to the full index:
    the median of `SMALL_WRITES` one-document `add_embedded` and one-document `remove` calls, against
    the write of the whole collection in the same run (a write should cost what it changes).
(2) SciFact with the real model: pure encoder throughput (`PassageEncoder.encode_documents` on the
    abstracts' `embedding_input`, what `add` embeds) against `Retriever.add` of the same documents
    (in memory in both: no file reading), and the share of `add`'s time spent in the encoder.
"""

from __future__ import annotations

import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

WORDS = ("retrieval encoder protein cell vaccine dose trial patient model data search index query document "
         "window attention token river engine market garden letter bridge machine forest valley council").split()


SMALL_WRITES = 10


def small_write_seconds(retriever, rng: np.random.Generator) -> dict[str, float]:
    """Median seconds of one-document additions and removals, each its own commit."""
    added, removed = [], []
    for i in range(SMALL_WRITES):
        vector = rng.standard_normal((1, retriever.manifest.dimension)).astype(np.float32)
        vector /= np.linalg.norm(vector)
        added.append(retriever.add_embedded([{"id": f"new{i}", "text": "one more document"}], vector).seconds)
    for i in range(SMALL_WRITES):
        removed.append(retriever.remove([f"s{i}"]).seconds)
    return {"add_one_median_s": statistics.median(added), "remove_one_median_s": statistics.median(removed),
            "segments_after": len(retriever.segments)}


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def _texts(count: int, rng: np.random.Generator, low: int = 10, high: int = 60) -> list[str]:
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(low, high)))) for _ in range(count)]


def warm_latency_ms(retriever, queries: list[str], k: int = 10, buckets: int = 0) -> dict[str, float]:
    """p50/p99 of the default search mode (hybrid) and of dense search alone, query encoding included;
    with `buckets` (documents with a `bucket` field of 0 to buckets - 1), also of the default mode
    filtered to one bucket, the next one for each query: a filter the index's cache (FILTER_CACHE,
    fewer entries than buckets) has not kept, so each search reads its documents from the store."""
    out = {}
    cases = [("", None, False), ("dense_", "dense", False)] + ([("filtered_", None, True)] if buckets else [])
    for prefix, mode, filtered in cases:
        retriever.search(queries[0], k=k, mode=mode)  # first call: lazy loads
        p50, p99 = p50_p99_ms(lambda i, query: retriever.search(
            query, k=k, mode=mode, where={"bucket": i % buckets} if filtered else None), queries)
        out.update({f"{prefix}p50_ms": p50, f"{prefix}p99_ms": p99})
    return out


def p50_p99_ms(search: Callable[[int, str], object], queries: list[str]) -> tuple[float, float]:
    """The median and 99th percentile, in ms, of search(i, query) over the queries."""
    times = []
    for i, query in enumerate(queries):
        started = time.perf_counter()
        search(i, query)
        times.append((time.perf_counter() - started) * 1000)
    return _percentile(times, 50), _percentile(times, 99)


def cold_cli_seconds(index_dir: Path, query: str, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        # the `retriever` console script's own module, as a user's shell would run it
        subprocess.run([sys.executable, "-m", "retriever_command", "search", query, "--index", str(index_dir),
                        "--json"], check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return times


def synthetic_index(index_dir: Path, model_name: str, texts: list[str], rng: np.random.Generator,
                    index_type: str = "flat"):
    """A new index of `texts` with random unit vectors of the model's dimension (nothing is encoded),
    written with `Retriever.add_embedded`, each document in one of 100 buckets (metadata `bucket`:
    a 1% filter); the Retriever and the write's report."""
    from retriever import Retriever

    retriever = Retriever.create(index_dir, model_name, index_type=index_type)
    vectors = rng.standard_normal((len(texts), retriever.manifest.dimension)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    report = retriever.add_embedded([{"id": f"s{i}", "text": t, "bucket": i % 100} for i, t in enumerate(texts)],
                                    vectors)
    return retriever, report


def synthetic(model_name: str, docs: int, queries: int, cold_runs: int, index_types: list[str],
              workdir: Path, status) -> list[dict]:
    rng = np.random.default_rng(0)
    texts = _texts(docs, rng)
    query_texts = _texts(queries, rng, 3, 12)
    results = []
    for index_type in index_types:
        index_dir = workdir / f"synthetic-{index_type}"
        status(f"synthetic {index_type}: writing {docs:,} documents")
        retriever, report = synthetic_index(index_dir, model_name, texts, rng, index_type)
        status(f"synthetic {index_type}: warm search")
        latency = warm_latency_ms(retriever, query_texts, buckets=100)  # each filter: 1% of the documents
        encode_times = []
        for query in query_texts:
            started = time.perf_counter()
            retriever.model.encode_queries([query])
            encode_times.append((time.perf_counter() - started) * 1000)
        status(f"synthetic {index_type}: cold CLI search")
        cold = cold_cli_seconds(index_dir, query_texts[0], cold_runs)
        status(f"synthetic {index_type}: one-document writes")
        small = small_write_seconds(retriever, rng)
        results.append({
            "case": f"synthetic {docs:,} docs, {index_type}", "documents": docs,
            "write_seconds": report.seconds, "write_docs_per_s": docs / report.seconds, **small,
            "add_one_vs_full_write": small["add_one_median_s"] / report.seconds,
            **latency, "query_encode_p50_ms": _percentile(encode_times, 50),
            "cold_cli_median_s": statistics.median(cold), "cold_cli_runs_s": cold,
        })
    return results


def scifact(model_name: str, directory: Path, limit: int, queries: int, workdir: Path, status) -> dict:
    from retriever import Retriever
    from retriever.beir import read_corpus, read_queries
    from retriever.documents import embedding_input
    from retriever.embedding import Chunking

    documents = list(read_corpus(directory / "corpus.jsonl").values())
    documents = documents[:limit] if limit else documents
    query_texts = list(read_queries(directory / "queries.jsonl").values())[:queries]

    retriever = Retriever.create(workdir / "scifact", model_name)
    model = retriever.model
    status(f"SciFact: pure encoder on {len(documents):,} abstracts")
    texts = [embedding_input(d) for d in documents]  # what add() embeds
    model.encode_documents(texts[:1])  # warm-up
    started = time.perf_counter()
    model.encode_documents(texts, Chunking(), retriever.batch_tokens)
    encoder_seconds = time.perf_counter() - started
    status(f"SciFact: Retriever.add of {len(documents):,} abstracts")
    report = retriever.add(documents)
    latency = warm_latency_ms(retriever, query_texts)
    return {
        "case": f"SciFact {len(documents):,} abstracts", "documents": len(documents),
        "encoder_docs_per_s": len(documents) / encoder_seconds,
        "index_docs_per_s": len(documents) / report.seconds,
        "index_vs_encoder": encoder_seconds / report.seconds,
        "encoder_share_of_index_time": report.encode_seconds / report.seconds,
        "index_seconds": report.seconds, "tokens": report.tokens, **latency,
    }


def run(model_name: str, docs: int, queries: int, cold_runs: int, index_types: list[str], scifact_dir: Path | None,
        scifact_docs: int, status: Callable[[str], None]) -> dict:
    """The synthetic cases' and (if `scifact_dir` holds a corpus) SciFact's results, and the environment."""
    with tempfile.TemporaryDirectory() as workdir:
        results = synthetic(model_name, docs, queries, cold_runs, index_types, Path(workdir), status)
        if scifact_dir is not None and (scifact_dir / "corpus.jsonl").is_file():
            results.append(scifact(model_name, scifact_dir, scifact_docs, queries, Path(workdir), status))
    environment = {"device": platform.processor() or "cpu", "threads": torch.get_num_threads(),
                   "torch": torch.__version__}
    return {"model": model_name, "results": results, "environment": environment}
