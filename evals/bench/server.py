"""The server benchmark (`retriever bench server`): search latency over HTTP against the same search in-process.

An index of `docs` synthetic documents (random words, random unit vectors of the model's dimension:
`evals.bench.retriever.synthetic_index`) is searched by `clients` concurrent clients, each sending
the same `queries` queries (random words; the default hybrid mode, query encoding included):
(1) in-process, `clients` threads calling `Retriever.search` on one `Retriever`;
(2) over HTTP, `clients` threads each with its own httpx connection, POSTing /search to
    `retriever serve` on a free port of 127.0.0.1 (a subprocess on the same machine).
Per side: p50/p99 latency of one search (as its caller waits for it) and searches/s over the run.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np

from evals.bench.retriever import _percentile, _texts, synthetic_index

# the longest a `retriever serve` start (imports, index and model load, a warm-up search) may take
_START_SECONDS = 120


def concurrent_latency(make_search: Callable[[], Callable[[str], object]], queries: list[str],
                       clients: int) -> dict[str, float]:
    """p50/p99 ms of one search and searches/s, `clients` threads each running every query once
    (after one untimed search) with its own `make_search()`."""
    times: list[float] = []
    ready = threading.Barrier(clients + 1)

    def client() -> None:
        search = make_search()
        search(queries[0])
        ready.wait()
        own = []
        for query in queries:
            started = time.perf_counter()
            search(query)
            own.append((time.perf_counter() - started) * 1000)
        times.extend(own)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    ready.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    return {"p50_ms": _percentile(times, 50), "p99_ms": _percentile(times, 99), "searches_per_s": len(times) / wall}


def _serve(index_dir: Path, log: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "RETRIEVER_API_KEY"}
    with log.open("w") as out:
        process = subprocess.Popen([sys.executable, "-m", "retriever_command", "serve", "--index", str(index_dir),
                                    "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT)
    return process, f"http://127.0.0.1:{port}"


def _wait_until_up(process: subprocess.Popen, url: str, log: Path) -> None:
    import httpx

    deadline = time.monotonic() + _START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"retriever serve exited ({process.returncode}): {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.2)
    raise RuntimeError(f"retriever serve did not answer /health within {_START_SECONDS} s: {log.read_text()[-2000:]}")


def run(model_name: str, docs: int, queries: int, clients: int, k: int, status: Callable[[str], None]) -> dict:
    import httpx

    rng = np.random.default_rng(0)
    query_texts = _texts(queries, rng, 3, 12)
    with tempfile.TemporaryDirectory() as workdir:
        index_dir = Path(workdir) / "index"
        status(f"writing {docs:,} documents")
        retriever, _ = synthetic_index(index_dir, model_name, _texts(docs, rng), rng)
        status(f"in-process: {clients} threads x {queries} searches")
        in_process = concurrent_latency(lambda: lambda query: retriever.search(query, k=k), query_texts, clients)

        def http_client() -> Callable[[str], object]:
            client = httpx.Client(base_url=url, timeout=60)
            return lambda query: client.post("/search", json={"query": query, "k": k}).raise_for_status()

        status("starting retriever serve")
        log = Path(workdir) / "serve.log"
        process, url = _serve(index_dir, log)
        try:
            _wait_until_up(process, url, log)
            status(f"over HTTP: {clients} clients x {queries} searches")
            over_http = concurrent_latency(http_client, query_texts, clients)
        finally:
            process.terminate()
            process.wait(timeout=30)
    return {"model": model_name, "documents": docs, "clients": clients, "queries_per_client": queries, "k": k,
            "in_process": in_process, "http": over_http,
            "http_overhead_p50_ms": over_http["p50_ms"] - in_process["p50_ms"],
            "environment": {"cpus": os.cpu_count()}}
