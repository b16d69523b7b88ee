"""An ivfpq index larger than the memory a process may use (`retriever bench ondisk`): resident memory
against index size, and search under the limit against search with the whole index in memory.

The index: `IVFPQ_MIN_TRAIN` synthetic unit vectors (near a 16-d subspace of `dimension`, as
embeddings lie near a low-dimensional manifold) train the quantizer and codebooks, as a new ivfpq
index trains on its first chunks; one segment of `segment_chunks` vectors is encoded with that
training, and further segments are copies of its codes under other ids, until the segments' files
reach `index_mib` (encoding each afresh would only make the benchmark slower: a code's search cost does
not depend on its value). Segments are the index's own: `VectorIndex` files in segment folders, read
by `Segment.load` and searched by `search_dense`, the functions `retriever search` runs.

Each measurement runs in a process of its own, which loads every segment and times `queries` dense
searches (k=10, one query at a time, after 20 warm-up queries):
- memory-mapped (how an index reads ivfpq segments), inside a memory cgroup limited to `limit_mib`
  (cgroup v1 or v2, created under this process's own; without one the limit is not applied and the
  report says so): the cgroup's peak usage counts the page cache the searches touch;
- in memory (the reference): the same segments read whole (no IO_FLAG_MMAP), no limit.
Reported: RSS (anonymous and file-backed), VmHWM, the cgroup's peak and failures, p50/p99, whether
both processes returned the same ids, and the share of queries whose best hit is a copy of the vector
the query was made from.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

SEED = 0
SUBSPACE = 16
WARMUP_QUERIES = 20


def synthetic_vectors(rng: np.random.Generator, basis: np.ndarray, count: int) -> np.ndarray:
    vectors = rng.standard_normal((count, basis.shape[0])).astype(np.float32) @ basis
    vectors += 0.05 * rng.standard_normal(vectors.shape).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def build(root: Path, index_mib: int, dimension: int, segment_chunks: int, status: Callable[[str], None]) -> dict:
    """Segment folders under root/segments holding ivfpq segments of `segment_chunks` chunks, to index_mib in all."""
    import faiss

    from retriever.segment import SEGMENTS, VECTORS_FILE
    from retriever.vectors import IVFPQ_MIN_TRAIN, VectorIndex

    rng = np.random.default_rng(SEED)
    basis = rng.standard_normal((SUBSPACE, dimension)).astype(np.float32)
    status(f"training on {IVFPQ_MIN_TRAIN:,} vectors")
    trained = VectorIndex.new("ivfpq", dimension)
    trained.add(np.arange(IVFPQ_MIN_TRAIN) - IVFPQ_MIN_TRAIN, synthetic_vectors(rng, basis, IVFPQ_MIN_TRAIN))
    status(f"encoding a segment of {segment_chunks:,} vectors")
    segment = VectorIndex.empty_like(trained)
    vectors = synthetic_vectors(rng, basis, segment_chunks)
    segment.add(np.arange(segment_chunks), vectors)
    chosen = rng.choice(segment_chunks, min(2000, segment_chunks), replace=False)  # what queries are made from
    np.save(root / "source_ids.npy", chosen)
    np.save(root / "sources.npy", vectors[chosen])
    lists = faiss.extract_index_ivf(segment.index).invlists
    segments, total = [], 0
    while total < index_mib * 2**20:
        number = len(segments)
        if number:  # the same codes under the next segment_chunks ids
            for list_no in range(lists.nlist):
                size = lists.list_size(list_no)
                if size:
                    faiss.rev_swig_ptr(lists.get_ids(list_no), size)[:] += segment_chunks
        name = f"seg-{number:06d}"
        folder = root / SEGMENTS / name
        folder.mkdir(parents=True)
        segment.save(folder / VECTORS_FILE)
        total += (folder / VECTORS_FILE).stat().st_size
        segments.append({"name": name, "kind": "ivfpq", "chunks": segment_chunks})
        status(f"segments: {len(segments)}, {total / 2**20:,.0f} MiB")
    layout = {"dimension": dimension, "segment_chunks": segment_chunks, "segments": segments,
              "index_mib": total / 2**20, "chunks": segment_chunks * len(segments)}
    (root / "layout.json").write_text(json.dumps(layout))
    return layout


def search_in_process(root: Path, queries: int, mapped: bool) -> dict:
    """In this process: load every segment (mapped or whole), time `queries` searches of one query each."""
    import faiss

    from retriever import vectors as vector_module
    from retriever.segment import Segment, SegmentInfo, search_dense

    if not mapped:
        vector_module._IVF_READ_FLAGS = 0  # the reference reads the lists into memory
    layout = json.loads((root / "layout.json").read_text())
    started = time.perf_counter()
    segments = [Segment.load(root, SegmentInfo(**info), layout["dimension"]) for info in layout["segments"]]
    load_seconds = time.perf_counter() - started
    lists = faiss.downcast_InvertedLists(faiss.extract_index_ivf(segments[0].vectors.index).invlists)
    sources = np.load(root / "sources.npy")
    rng = np.random.default_rng(SEED + 1)
    picks = rng.integers(0, len(sources), WARMUP_QUERIES + queries)
    noisy = sources[picks] + 0.02 * rng.standard_normal((len(picks), sources.shape[1])).astype(np.float32)
    noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
    none = np.zeros(0, np.int64)
    seconds, ids = [], []
    for i, query in enumerate(noisy):
        start = time.perf_counter()
        hits = search_dense(segments, query[None], 10, None, none)[0]
        if i >= WARMUP_QUERIES:
            seconds.append(time.perf_counter() - start)
            ids.append([chunk for chunk, _ in hits])
    # a query's own vector is in every segment, under ids segment_chunks apart: its best hit should be one of them
    own = np.load(root / "source_ids.npy")[picks[WARMUP_QUERIES:]]
    top_is_own = float(np.mean([bool(row) and row[0] % layout["segment_chunks"] == o for row, o in zip(ids, own)]))
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    kib = {key: int(status[key].split()[0]) for key in ("VmRSS", "RssAnon", "RssFile", "VmHWM")}
    return {"mapped": mapped, "lists": type(lists).__name__, "load_seconds": load_seconds,
            "p50_ms": float(np.percentile(seconds, 50) * 1e3), "p99_ms": float(np.percentile(seconds, 99) * 1e3),
            "ids": ids, "top_is_own": top_is_own, **{f"{k}_mib": v / 1024 for k, v in kib.items()}}


class MemoryCgroup:
    """A memory cgroup under this process's own, limited to `limit_bytes`, for one child process;
    None-like (`path` None) where cgroups cannot be created here."""

    def __init__(self, limit_bytes: int):
        self.limit_bytes, self.path, self.version = limit_bytes, None, None
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            number, controllers, group = line.split(":", 2)
            if controllers == "memory" and Path("/sys/fs/cgroup/memory").is_dir():
                self._make(Path("/sys/fs/cgroup/memory") / group.lstrip("/"), 1)
            elif number == "0" and not controllers and self.path is None and \
                    (Path("/sys/fs/cgroup") / "cgroup.controllers").is_file():
                self._make(Path("/sys/fs/cgroup") / group.lstrip("/"), 2)

    def _make(self, parent: Path, version: int) -> None:
        path = parent / f"bench-ondisk-{os.getpid()}"
        try:
            path.mkdir()
            limit = "memory.limit_in_bytes" if version == 1 else "memory.max"
            (path / limit).write_text(str(self.limit_bytes))
            if version == 1:  # no swap either, where the kernel accounts it
                swap = path / "memory.memsw.limit_in_bytes"
                if swap.exists():
                    swap.write_text(str(self.limit_bytes))
        except OSError:
            if path.is_dir():
                path.rmdir()
            return
        self.path, self.version = path, version

    def enter(self) -> None:
        """Moves the calling process in (run in the child before exec)."""
        (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def figures(self) -> dict:
        if self.version == 1:
            read = {"peak": "memory.max_usage_in_bytes", "failures": "memory.failcnt"}
            values = {k: int((self.path / f).read_text()) for k, f in read.items()}
        else:
            peak = self.path / "memory.peak"
            events = dict(line.split() for line in (self.path / "memory.events").read_text().splitlines())
            values = {"peak": int(peak.read_text()) if peak.exists() else -1, "failures": int(events.get("max", 0))}
        return {"cgroup_peak_mib": values["peak"] / 2**20, "cgroup_limit_hits": values["failures"]}

    def remove(self) -> None:
        if self.path is not None:
            self.path.rmdir()


def _child(root: Path, queries: int, mapped: bool, cgroup: MemoryCgroup | None) -> dict:
    command = [sys.executable, "-m", "evals.bench.ondisk", str(root), str(queries), "mapped" if mapped else "memory"]
    result = subprocess.run(command, capture_output=True, text=True, preexec_fn=cgroup.enter if cgroup else None)
    if result.returncode:
        killed = " (killed: over the memory limit?)" if result.returncode < 0 else ""
        raise RuntimeError(f"{' '.join(command)} exited {result.returncode}{killed}: {result.stderr[-2000:]}")
    return json.loads(result.stdout)


def ondisk(index_mib: int, limit_mib: int, dimension: int, segment_chunks: int, queries: int,
           status: Callable[[str], None], directory: Path | None = None) -> dict:
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        layout = build(root, index_mib, dimension, segment_chunks, status)
        build_seconds = time.perf_counter() - started
        cgroup = MemoryCgroup(limit_mib * 2**20)
        try:
            status(f"searching memory-mapped, {'limited to ' + str(limit_mib) + ' MiB' if cgroup.path else 'no limit'}")
            mapped = _child(root, queries, True, cgroup if cgroup.path else None)
            if cgroup.path:
                mapped.update(cgroup.figures())
        finally:
            cgroup.remove()
        status("searching with the index in memory (the reference)")
        memory = _child(root, queries, False, None)
    same = mapped.pop("ids") == memory.pop("ids")
    return {"layout": {k: v for k, v in layout.items() if k != "segments"}, "segments": len(layout["segments"]),
            "build_seconds": build_seconds, "limit_mib": limit_mib if cgroup.path else None,
            "cgroup": f"v{cgroup.version}" if cgroup.path else None, "mapped": mapped, "memory": memory,
            "same_ids": same, "index_vs_limit": layout["index_mib"] / limit_mib,
            "p50_mapped_vs_memory": mapped["p50_ms"] / memory["p50_ms"]}


if __name__ == "__main__":
    root_arg, queries_arg, mode = sys.argv[1:4]
    print(json.dumps(search_in_process(Path(root_arg), int(queries_arg), mode == "mapped")))
