"""The documents and chunks of an index, in SQLite: what a FAISS or BM25 id stands for.

documents: id, title, text, source file, metadata (JSON), content hash.
chunks: chunk_id (the id FAISS and BM25 return), the document it belongs to, its character span.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from retriever.documents import Document
from retriever.filters import SOURCE, Condition, to_sql

_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    text TEXT NOT NULL,
    source TEXT NOT NULL,
    metadata TEXT NOT NULL,
    content_hash TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS chunks (
    chunk_id INTEGER PRIMARY KEY,
    doc_id TEXT NOT NULL REFERENCES documents(id),
    start INTEGER NOT NULL,
    end INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_by_doc ON chunks(doc_id);
CREATE INDEX IF NOT EXISTS documents_by_source ON documents(source);
"""


class Store:
    def __init__(self, path: Path, readonly: bool = False):
        self.path = path
        if readonly:
            self.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        else:
            self.db = sqlite3.connect(path)
            self.db.executescript(_SCHEMA)

    def close(self) -> None:
        self.db.close()

    def copy_to(self, path: Path) -> Store:
        """A writable copy at `path` (sqlite's backup: consistent even while others read)."""
        target = sqlite3.connect(path)
        self.db.backup(target)
        target.close()
        return Store(path)

    # ---- reads --------------------------------------------------------------------------------

    def hashes(self) -> dict[str, str]:
        return dict(self.db.execute("SELECT id, content_hash FROM documents"))

    def ids_from_sources(self, sources: Iterable[str]) -> dict[str, str]:
        """{doc id: source} of the documents read from any of these files or folders."""
        found = {}
        for source in sources:
            sql, params = to_sql([Condition(SOURCE, "prefix", source)])
            found.update(self.db.execute(f"SELECT id, source FROM documents WHERE {sql}", params))
        return found

    def chunk_ids_where(self, where: list[Condition]) -> np.ndarray:
        """The chunk ids of the documents that meet every condition, ascending."""
        sql, params = to_sql(where)
        rows = self.db.execute(f"SELECT c.chunk_id FROM chunks c JOIN documents d ON d.id = c.doc_id WHERE {sql} "
                               "ORDER BY c.chunk_id", params)
        return np.fromiter((r[0] for r in rows), dtype=np.int64)

    def metadata_fields(self) -> set[str]:
        """Every metadata field some document has."""
        return {r[0] for r in self.db.execute("SELECT DISTINCT j.key FROM documents, json_each(documents.metadata) j")}

    def chunk_ids(self, doc_ids: Iterable[str]) -> list[int]:
        out: list[int] = []
        for doc_id in doc_ids:
            out.extend(r[0] for r in self.db.execute("SELECT chunk_id FROM chunks WHERE doc_id = ?", (doc_id,)))
        return out

    def chunks(self, chunk_ids: list[int]) -> dict[int, tuple[str, int, int]]:
        """{chunk id: (doc id, start, end)}."""
        out = {}
        for i in range(0, len(chunk_ids), 900):  # SQLite's bound-parameter limit
            part = chunk_ids[i: i + 900]
            rows = self.db.execute(f"SELECT chunk_id, doc_id, start, end FROM chunks WHERE chunk_id IN "
                                   f"({','.join('?' * len(part))})", part)
            out.update((r[0], (r[1], r[2], r[3])) for r in rows)
        return out

    def documents(self, doc_ids: list[str]) -> dict[str, Document]:
        out = {}
        for i in range(0, len(doc_ids), 900):
            part = doc_ids[i: i + 900]
            rows = self.db.execute(f"SELECT id, title, text, source, metadata FROM documents WHERE id IN "
                                   f"({','.join('?' * len(part))})", part)
            out.update((r[0], Document(id=r[0], title=r[1], text=r[2], source=r[3], metadata=json.loads(r[4])))
                       for r in rows)
        return out

    def chunk_texts(self) -> Iterator[tuple[int, str, str]]:
        """(chunk id, its document's title, passage text) of every chunk, in chunk id order: what BM25 indexes."""
        yield from self.db.execute("SELECT c.chunk_id, d.title, substr(d.text, c.start + 1, c.end - c.start) "
                                   "FROM chunks c JOIN documents d ON d.id = c.doc_id ORDER BY c.chunk_id")

    def counts(self) -> tuple[int, int]:
        documents = self.db.execute("SELECT COUNT(*) FROM documents").fetchone()[0]
        chunks = self.db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
        return documents, chunks

    def next_chunk_id(self) -> int:
        return (self.db.execute("SELECT MAX(chunk_id) FROM chunks").fetchone()[0] or 0) + 1

    # ---- writes (a writable copy only; committed by the caller) -------------------------------

    def put(self, document: Document, spans: list[tuple[int, int]], first_chunk_id: int) -> list[int]:
        """Inserts a document (not in the store: delete a replaced one first) and its chunks; returns
        the new chunk ids."""
        self.db.execute("INSERT INTO documents VALUES (?, ?, ?, ?, ?, ?)",
                        (document.id, document.title, document.text, document.source,
                         json.dumps(document.metadata, ensure_ascii=False), document.content_hash))
        ids = list(range(first_chunk_id, first_chunk_id + len(spans)))
        self.db.executemany("INSERT INTO chunks VALUES (?, ?, ?, ?)",
                            [(i, document.id, s, e) for i, (s, e) in zip(ids, spans)])
        return ids

    def delete(self, doc_ids: Iterable[str]) -> None:
        for doc_id in doc_ids:
            self.db.execute("DELETE FROM chunks WHERE doc_id = ?", (doc_id,))
            self.db.execute("DELETE FROM documents WHERE id = ?", (doc_id,))

    def commit(self) -> None:
        self.db.commit()
