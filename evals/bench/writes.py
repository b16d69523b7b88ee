"""The index benchmarks (`retriever bench writes|memory|crash`): what a write costs as the index grows,
search at a million chunks, the memory of `retriever index`, and kill -9 at random moments.

(1) writes: indexes of 10k, 100k and 1M chunks (`--sizes`, of `--index-type`), built with `Retriever.add_embedded`
    in writes of up to 100k documents (random unit vectors of the model's dimension; texts: random
    sentences of SciFact's abstracts, real text for BM25), then at each size the median of
    `SMALL_WRITES` one-document writes and one 1,000-document write. The reference is the
    smallest index: the 1-document write at the largest size against it (target <= 3x). At the
    largest size, warm search p50/p99 (hybrid, dense, and hybrid filtered to 1% of the documents, another
    1% for each query).
(2) memory: peak RSS of `retriever index` (a process of its own, the shipped model) over 20k and
    200k short documents in a JSONL file: it must not grow with the corpus. And the writer alone
    (`writer_alone`: the forward replaced by random vectors), its peak anonymous memory.
(3) crash: one growing `retriever index --commit-every 200` of short documents, killed (SIGKILL)
    at a random moment 20 times and rerun each time, then run to the end: one kill in four up to 8 s
    from the process's start, the others up to 3 s after its first commit (mid-write: embedding,
    a segment being built, the store, the manifest, a merge). After each kill: the
    index opens, manifest, store and segments count the same documents and chunks, it holds every
    document the manifest had committed before the kill, each with its chunks in live segments, and
    `SEARCHED_AFTER_A_KILL` of them are found by a lexical search for the unique word each holds. At
    the end: every document once.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from evals.bench.retriever import WORDS, small_write_seconds, warm_latency_ms

BUILD_BATCH = 100_000
SEARCHED_AFTER_A_KILL = 200  # committed documents searched for after each kill (every one is checked in the index)


def sentences(scifact: Path | None, count: int, rng: np.random.Generator) -> tuple[list[str], str]:
    """`count` texts: SciFact sentences drawn at random, or random words where SciFact is absent; and which."""
    if scifact is not None and (scifact / "corpus.jsonl").is_file():
        from retriever.beir import read_corpus

        pool = [s for d in read_corpus(scifact / "corpus.jsonl").values()
                for s in re.split(r"(?<=[.!?])\s+", d.text) if len(s.split()) >= 5]
        return [pool[i] for i in rng.integers(0, len(pool), count)], "SciFact sentences"
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(8, 30)))) for _ in range(count)], "random words"


def _unit(rng: np.random.Generator, count: int, dimension: int) -> np.ndarray:
    vectors = rng.standard_normal((count, dimension)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def write_cost(model_name: str, sizes: list[int], scifact: Path | None, queries: int, status,
               index_type: str = "flat") -> dict:
    from retriever import Retriever

    rng = np.random.default_rng(0)
    texts, source = sentences(scifact, max(sizes) + 1_000, rng)
    query_texts = sentences(scifact, queries, rng)[0]
    results = []
    with tempfile.TemporaryDirectory() as workdir:
        for size in sorted(sizes):
            index = Retriever.create(Path(workdir) / f"idx-{size}", model_name, index_type=index_type)
            started = time.perf_counter()
            for start in range(0, size, BUILD_BATCH):
                status(f"writes: building {size:,} ({start:,} written)")
                end = min(size, start + BUILD_BATCH)
                index.add_embedded([{"id": f"s{i}", "text": texts[i], "bucket": i % 100} for i in range(start, end)],
                                   _unit(rng, end - start, index.manifest.dimension))
            build = time.perf_counter() - started
            status(f"writes: small writes at {size:,}")
            small = small_write_seconds(index, rng)
            batch = [{"id": f"b{i}", "text": texts[size + i]} for i in range(1_000)]
            thousand = index.add_embedded(batch, _unit(rng, 1_000, index.manifest.dimension)).seconds
            row = {"chunks": size, "build_seconds": build, **small, "add_1000_s": thousand}
            if size == max(sizes):
                status(f"writes: search at {size:,}")
                row.update(warm_latency_ms(index, query_texts, buckets=100))
            results.append(row)
            index.close()
    smallest, largest = results[0], results[-1]
    return {"texts": source, "index_type": index_type, "results": results,
            "add_one_largest_vs_smallest": largest["add_one_median_s"] / smallest["add_one_median_s"]}


def _short_corpus(path: Path, count: int, rng: np.random.Generator) -> None:
    """`count` documents of 8 to 30 random words, each with a word of its own (`w{i}`), as JSONL."""
    with path.open("w") as f:
        for i in range(count):
            words = " ".join(rng.choice(WORDS, size=int(rng.integers(8, 30))))
            f.write(json.dumps({"id": f"d{i}", "text": f"{words} w{i}"}) + "\n")


def _retriever_index(*args: str) -> list[str]:
    return [sys.executable, "-m", "retriever_command", "index", *args]


def peak_memory(sizes: list[int], status) -> list[dict]:
    rng = np.random.default_rng(0)
    results = []
    with tempfile.TemporaryDirectory() as workdir:
        for size in sizes:
            corpus = Path(workdir) / f"corpus-{size}.jsonl"
            _short_corpus(corpus, size, rng)
            status(f"memory: retriever index over {size:,} documents")
            # a process of its own per size: RUSAGE_CHILDREN is the peak over the children waited for
            probe = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
                     "subprocess.run(sys.argv[1:], check=True, capture_output=True); "
                     "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
            out = subprocess.run([sys.executable, "-c", probe,
                                  *_retriever_index(str(corpus), "--index", str(Path(workdir) / f"idx-{size}"))],
                                 check=True, capture_output=True, text=True).stdout.split()
            status(f"memory: the writer alone over {size:,} documents")
            alone = subprocess.run([sys.executable, "-c", "import sys; from evals.bench.writes import writer_alone; "
                                    "writer_alone(*sys.argv[1:])", str(corpus), str(Path(workdir) / f"alone-{size}")],
                                   check=True, capture_output=True, text=True).stdout.split()
            results.append({"documents": size, "seconds": float(out[0]), "peak_rss_mib": int(out[1]) / 1024,
                            "writer_seconds": float(alone[0]), "writer_anon_mib": int(alone[1]) / 1024})
    return results


def writer_alone(corpus: str, index: str) -> None:
    """Prints the seconds and the peak anonymous memory (KiB, sampled every 10 ms) of what `retriever index`
    does over `corpus` with the model's forward replaced by random unit vectors: the writer's own memory
    (reading, diffing, committing, merging) beside the model's weights, without what its forward uses."""
    import threading

    import retriever.index
    from retriever.documents import read_corpus
    from retriever.embedding import Passage

    peak = [0]

    def sample() -> None:
        while True:
            with open("/proc/self/status") as status:
                peak[0] = max(peak[0], next(int(line.split()[1]) for line in status if line.startswith("RssAnon")))
            time.sleep(0.01)

    threading.Thread(target=sample, daemon=True).start()
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    writer = retriever.index.Retriever.create(Path(index), None)

    def random_forward(model, documents, chunking, batch_tokens, progress):
        return _unit(rng, len(documents), writer.manifest.dimension), [Passage(i, 0, len(d.text))
                                                                        for i, d in enumerate(documents)]

    retriever.index.embed_documents = random_forward
    writer.sync(read_corpus([corpus]), commit_every=1000)  # retriever index's default
    print(time.perf_counter() - started, peak[0])


def _committed(index: Path) -> tuple[int, int]:
    """(commit, documents) of the manifest in place now; (0, 0) before there is one."""
    try:
        manifest = json.loads((index / "manifest.json").read_text())
        return int(manifest["generation"].removeprefix("gen-")), manifest["documents"]
    except (OSError, ValueError, KeyError):
        return 0, 0


def _check(index: Path, before: tuple[int, int], rng: np.random.Generator) -> dict:
    """The index after a kill: it opens, its counts agree, and every document the manifest had committed
    before the kill (`before`: its commit and document count) is there, its chunks in live segments,
    and a sample of them is found by a lexical search for the unique word each holds."""
    from retriever import Retriever

    commit, committed = before
    if not (index / "manifest.json").is_file():  # killed before it created the index: nothing to keep
        return {"documents": 0, "counts_agree": True, "kept_committed": committed == 0, "committed_found": True}
    reader = Retriever.open(index)
    manifest = reader.manifest
    held = sum(s.vectors.ntotal for s in reader.segments) - len(reader._tombstones)
    agree = reader.store.counts() == (manifest.documents, manifest.chunks) and held == manifest.chunks
    # a growing run deletes nothing: what commit `commit` held is what was added by then
    kept = [row[0] for row in reader.store.db.execute(
        "SELECT id FROM documents WHERE added <= ? AND deleted IS NULL", (commit,))]
    # each one searchable: its chunks in a live segment and not tombstoned, and a sample found by search
    live = np.setdiff1d(np.concatenate([s.chunk_ids for s in reader.segments] or [np.zeros(0, np.int64)]),
                        reader._tombstones)
    searchable = bool(np.isin(reader.store.chunk_ids(kept), live).all())
    sample = [kept[i] for i in rng.choice(len(kept), min(SEARCHED_AFTER_A_KILL, len(kept)), replace=False)]
    found = searchable and all(hits and hits[0].id == doc_id for doc_id, hits in
                               zip(sample, reader.search_batch([f"w{d[1:]}" for d in sample], k=1, mode="lexical")))
    reader.close()
    return {"documents": manifest.documents, "counts_agree": agree, "kept_committed": len(kept) == committed,
            "committed_found": found}


def crashes(documents: int, kills: int, status: Callable[[str], None]) -> dict:
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as workdir:
        corpus, index = Path(workdir) / "corpus.jsonl", Path(workdir) / "idx"
        _short_corpus(corpus, documents, rng)
        command = _retriever_index(str(corpus), "--index", str(index), "--commit-every", "200")
        checks = []
        for kill in range(kills):
            status(f"crash: run {kill + 1} of {kills}")
            started, before = _committed(index), _committed(index)
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            # one kill in four at a moment counted from the start (loading, reading, diffing, the first
            # commit); the others a moment into the run's writes, counted from its first commit
            from_start = kill % 4 == 0
            after = float(rng.uniform(0.5, 8.0) if from_start else rng.uniform(0.0, 3.0))
            deadline = time.monotonic() + after if from_start else None
            while process.poll() is None and (deadline is None or time.monotonic() < deadline):
                before = max(before, _committed(index))  # what the manifest had committed before the kill
                if deadline is None and before > started:
                    deadline = time.monotonic() + after
                time.sleep(0.02)
            process.send_signal(signal.SIGKILL)
            process.wait()
            checks.append({"kill": kill + 1, "moment": "from start" if from_start else "from its first commit",
                           "after_s": round(after, 2), "committed_before": before[1], **_check(index, before, rng)})
        status("crash: the last run, to the end")
        subprocess.run(command, check=True, capture_output=True)
        final = _check(index, _committed(index), rng)
    return {"documents": documents, "kills": checks, "final": final,
            "all_ok": all(c["counts_agree"] and c["kept_committed"] and c["committed_found"] for c in checks)
            and final["documents"] == documents and final["counts_agree"] and final["committed_found"]}


