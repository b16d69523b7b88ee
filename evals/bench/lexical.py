"""`retriever bench lexical`: the index's BM25 (bm25s per segment, scored with the whole index's term
statistics) against SQLite FTS5 (incremental and transactional, in the store's own database engine),
the two ways issue 14 names of keeping a lexical index whose writes cost what changed.

- quality: SciFact test nDCG@10. The index's BM25 through an index written in 6 segments
  (`Retriever.search(mode="lexical")`, what `retriever search --lexical` serves), and FTS5 over the
  same documents (title and text, `tokenize='porter unicode61'`, FTS5's own `bm25()`, whose k1 1.2
  and b 0.75 are fixed; the index's bm25s uses 1.5 and 0.75; the query's words joined by OR).
- cost, at each of `--sizes` documents (SciFact sentences, random vectors for the index): the median
  one-document write, each its own durable commit (the index: a segment and the manifest; FTS5: an
  INSERT and a COMMIT in WAL mode with synchronous=FULL), and search p50/p99 for the 10 best with their
  text.
"""

from __future__ import annotations

import re
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from evals.bench.retriever import p50_p99_ms, small_write_seconds
from evals.bench.writes import BUILD_BATCH, _unit, sentences

FTS5_WRITES = 20


def _fts5(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE VIRTUAL TABLE IF NOT EXISTS passages USING fts5(title, body, tokenize='porter unicode61')")
    return db


def fts5_query(text: str) -> str:
    """The query's words, each quoted (FTS5's syntax takes no raw punctuation), joined by OR."""
    return " OR ".join(f'"{word}"' for word in re.findall(r"\w+", text.lower()))


def _fts5_search(db: sqlite3.Connection, query: str, k: int) -> list[tuple[int, float, str]]:
    return db.execute("SELECT rowid, bm25(passages), body FROM passages WHERE passages MATCH ? "
                      "ORDER BY bm25(passages) LIMIT ?", (fts5_query(query), k)).fetchall()


def quality(scifact: Path, model_name: str, workdir: Path) -> dict[str, float]:
    from evals.beir import evaluate
    from retriever import Retriever
    from retriever.beir import load_beir

    dataset = load_beir(scifact)
    documents = list(dataset.corpus.values())
    query_ids = list(dataset.queries)
    index = Retriever.create(workdir / "scifact-index", model_name)
    vectors = _unit(np.random.default_rng(0), len(documents), index.manifest.dimension)
    for part in np.array_split(np.arange(len(documents)), 6):
        index.add_embedded([documents[i] for i in part], vectors[part])
    hits = index.search_batch([dataset.queries[q] for q in query_ids], k=100, mode="lexical")
    ours = evaluate(dataset.qrels, {q: {h.id: h.score for h in row} for q, row in zip(query_ids, hits)})
    index.close()
    db = _fts5(workdir / "scifact-fts5.sqlite")
    db.execute("BEGIN")
    db.executemany("INSERT INTO passages(rowid, title, body) VALUES (?, ?, ?)",
                   ((i, d.title, d.text) for i, d in enumerate(documents)))
    db.execute("COMMIT")
    run = {q: {documents[rowid].id: -score for rowid, score, _ in _fts5_search(db, dataset.queries[q], 100)}
           for q in query_ids}
    db.close()
    return {"index_bm25_ndcg_at_10": ours["ndcg_at_10"], "fts5_ndcg_at_10": evaluate(dataset.qrels, run)["ndcg_at_10"]}


def cost(sizes: list[int], scifact: Path | None, model_name: str, queries: int, workdir: Path, status) -> dict:
    from retriever import Retriever

    rng = np.random.default_rng(0)
    texts, source = sentences(scifact, max(sizes), rng)
    query_texts = sentences(scifact, queries, rng)[0]
    rows = []
    for size in sorted(sizes):
        status(f"lexical: the index at {size:,} documents")
        index = Retriever.create(workdir / f"idx-{size}", model_name)
        for start in range(0, size, BUILD_BATCH):
            end = min(size, start + BUILD_BATCH)
            index.add_embedded([{"id": f"s{i}", "text": texts[i]} for i in range(start, end)],
                               _unit(rng, end - start, index.manifest.dimension))
        writes = small_write_seconds(index, rng)
        index.search(query_texts[0], mode="lexical")  # lazy loads
        ours = p50_p99_ms(lambda _, query: index.search(query, k=10, mode="lexical"), query_texts)
        index.close()
        status(f"lexical: FTS5 at {size:,} documents")
        db = _fts5(workdir / f"fts5-{size}.sqlite")
        db.execute("BEGIN")
        db.executemany("INSERT INTO passages(rowid, title, body) VALUES (?, '', ?)", enumerate(texts[:size]))
        db.execute("COMMIT")
        fts5_writes = []
        for i in range(FTS5_WRITES):
            started = time.perf_counter()
            db.execute("BEGIN")
            db.execute("INSERT INTO passages(rowid, title, body) VALUES (?, '', 'one more document')", (size + i,))
            db.execute("COMMIT")
            fts5_writes.append(time.perf_counter() - started)
        _fts5_search(db, query_texts[0], 10)
        theirs = p50_p99_ms(lambda _, query: _fts5_search(db, query, 10), query_texts)
        db.close()
        rows.append({"documents": size, "index_add_one_median_s": writes["add_one_median_s"],
                     "fts5_add_one_median_s": statistics.median(fts5_writes),
                     "index_p50_ms": ours[0], "index_p99_ms": ours[1],
                     "fts5_p50_ms": theirs[0], "fts5_p99_ms": theirs[1]})
    return {"texts": source, "results": rows}


def run(sizes: list[int], scifact: Path | None, model_name: str, queries: int, status) -> dict:
    with tempfile.TemporaryDirectory() as workdir:
        report = cost(sizes, scifact, model_name, queries, Path(workdir), status)
        if scifact is not None and (scifact / "corpus.jsonl").is_file():
            status("lexical: SciFact quality")
            report["quality"] = quality(scifact, model_name, Path(workdir))
    return report
