"""`retriever bench ray`: indexing docs/s with the Ray engine (`retriever index --engine ray`) against the single
process, on the same documents in the same run.

Each case writes the same SciFact abstracts into a new index with the same model through `Retriever.add`: once
embedded in this process, then through `RayEngine` with each number of actors. The local Ray cluster is started
once, before the Ray cases, and its start is reported apart; each Ray case's time includes what a run pays on a
running cluster: starting the actors, each loading the model, and moving the rows to them and back. The CPUs
are split evenly between a case's actors (Ray sets each actor's torch threads to its CPUs), so that every case
has the whole machine.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path


def run(model: str, scifact: Path, docs: int, actor_counts: list[int], cpus: int, batch_docs: int,
        commit_every: int, status: Callable[[str], None]) -> dict:
    import ray
    import torch

    from retriever import Retriever
    from retriever.beir import read_corpus
    from retriever.ray_engine import RayEngine

    documents = list(read_corpus(scifact / "corpus.jsonl").values())[:docs]
    results = []
    with tempfile.TemporaryDirectory() as folder:
        def timed_case(name: str, engine: RayEngine | None) -> dict:
            index = Retriever.create(Path(folder) / name, model)
            started = time.perf_counter()
            report = index.add(documents, commit_every=commit_every, engine=engine)
            seconds = time.perf_counter() - started
            assert len(report.added) == len(documents) and index.info()["documents"] == len(documents)
            return {"case": name, "seconds": seconds, "docs_per_s": len(documents) / seconds, "tokens": report.tokens,
                    "chunks": report.chunks_embedded}

        status(f"single process: {len(documents):,} documents")
        results.append(timed_case("single process", None))
        status(f"starting a local Ray cluster ({cpus} CPUs)")
        started = time.perf_counter()
        ray.init(num_cpus=cpus, include_dashboard=False, logging_level=logging.WARNING)
        cluster_start_s = time.perf_counter() - started
        try:
            for actors in actor_counts:
                status(f"ray engine, {actors} actor{'s' if actors > 1 else ''}")
                engine = RayEngine(actors=actors, cpus_per_actor=cpus / actors, batch_docs=batch_docs)
                results.append({**timed_case(f"ray, {actors} actor{'s' if actors > 1 else ''}", engine),
                                "actors": actors, "cpus_per_actor": cpus / actors})
        finally:
            ray.shutdown()
    for result in results:
        result["vs_single_process"] = result["docs_per_s"] / results[0]["docs_per_s"]
    return {"environment": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                            "ray": ray.__version__, "model": model},
            "documents": len(documents), "batch_docs": batch_docs, "commit_every": commit_every,
            "cluster_start_s": cluster_start_s, "results": results}
