"""The documents and chunks of an index, in one SQLite database (WAL): what a FAISS or BM25 id
stands for, and which chunks are deleted.

documents: id, title, text, source file, metadata (JSON), content hash.
chunks: chunk_id (the id FAISS and BM25 return), the document it belongs to, its character span.

Rows are versioned by commit, so that one database serves every reader a consistent snapshot
while a writer works: each row records the commit that `added` it and the one that `deleted` it
(NULL while live), and a store opened at commit c sees the rows with added <= c and no deletion
at or before c. A deleted chunk's row stays as its tombstone while a segment still holds its
vector; a merge that leaves it out of every segment marks it `dropped`, and at the end of each
write the rows no snapshot from the current commit on can see are purged. Rows of a commit that never made it into
the manifest (a writer killed after writing the store) are rolled back by the next writer.
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
    id TEXT NOT NULL,
    title TEXT NOT NULL,
    text TEXT NOT NULL,
    source TEXT NOT NULL,
    metadata TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    added INTEGER NOT NULL,
    deleted INTEGER,
    PRIMARY KEY (id, added)
);
CREATE TABLE IF NOT EXISTS chunks (
    chunk_id INTEGER PRIMARY KEY,
    doc_id TEXT NOT NULL,
    start INTEGER NOT NULL,
    end INTEGER NOT NULL,
    added INTEGER NOT NULL,
    deleted INTEGER,
    dropped INTEGER
);
CREATE INDEX IF NOT EXISTS chunks_by_doc ON chunks(doc_id);
CREATE INDEX IF NOT EXISTS chunks_by_deletion ON chunks(deleted) WHERE deleted IS NOT NULL;
CREATE INDEX IF NOT EXISTS chunks_by_drop ON chunks(dropped) WHERE dropped IS NOT NULL;
CREATE INDEX IF NOT EXISTS documents_by_source ON documents(source);
CREATE INDEX IF NOT EXISTS documents_by_deletion ON documents(deleted) WHERE deleted IS NOT NULL;
-- written: the last commit whose rows the store holds; next_chunk_id: never reused, not even the
-- ids of rolled-back or purged chunks, so a FAISS id means one chunk for good
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta VALUES ('written', 0), ('next_chunk_id', 1);
"""
_BOUND = 900  # SQLite's bound-parameter limit, with room to spare


def _visible(table: str) -> str:
    """The rows of `table` (an alias) a snapshot sees; two parameters follow: its commit, twice."""
    return f"{table}.added <= ? AND ({table}.deleted IS NULL OR {table}.deleted > ?)"


class Store:
    def __init__(self, path: Path, at: int, readonly: bool = False):
        """The store at `path` as commit `at` left it; a writer's store writes commit `at` + 1."""
        self.path = path
        self.at = at
        if readonly:
            self.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        else:
            self.db = sqlite3.connect(path, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")  # a commit survives a power cut: the manifest counts on it
            self.db.executescript(_SCHEMA)

    def close(self) -> None:
        self.db.close()

    def _rows(self, sql: str, *params) -> sqlite3.Cursor:
        """`sql` with the snapshot's parameters (each `_visible` clause's) after `params`."""
        return self.db.execute(sql, [*params, *[self.at] * (sql.count("?") - len(params))])

    # ---- reads (of snapshot `at`) --------------------------------------------------------------

    def hashes(self, doc_ids: Iterable[str]) -> dict[str, str]:
        """{doc id: content hash} of those of these documents the store holds."""
        ids, out = list(doc_ids), {}
        for i in range(0, len(ids), _BOUND):
            part = ids[i: i + _BOUND]
            out.update(self._rows(f"SELECT id, content_hash FROM documents d WHERE id IN "
                                  f"({','.join('?' * len(part))}) AND {_visible('d')}", *part))
        return out

    def ids_from_sources(self, sources: Iterable[str]) -> dict[str, str]:
        """{doc id: source} of the documents read from any of these files or folders."""
        found = {}
        for source in sources:
            sql, params = to_sql([Condition(SOURCE, "prefix", source)])
            found.update(self._rows(f"SELECT id, source FROM documents d WHERE {sql} AND {_visible('d')}", *params))
        return found

    def chunk_ids_where(self, where: list[Condition]) -> np.ndarray:
        """The live chunk ids of the documents that meet every condition, ascending."""
        sql, params = to_sql(where)
        rows = self._rows(f"SELECT c.chunk_id FROM chunks c JOIN documents d ON d.id = c.doc_id AND d.added = c.added "
                          f"WHERE {sql} AND {_visible('c')} ORDER BY c.chunk_id", *params)
        return np.fromiter((r[0] for r in rows), dtype=np.int64)

    def deleted_chunk_ids(self) -> np.ndarray:
        """The tombstones: chunks deleted at or before this snapshot whose vectors segments may still hold."""
        # sorted here: an ORDER BY would make SQLite walk the whole table in chunk id order instead of the index
        rows = self._rows("SELECT chunk_id FROM chunks WHERE deleted <= ? AND dropped IS NULL")
        return np.sort(np.fromiter((r[0] for r in rows), dtype=np.int64))

    def metadata_fields(self) -> set[str]:
        """Every metadata field some document has."""
        return {r[0] for r in self._rows(f"SELECT DISTINCT j.key FROM documents d, json_each(d.metadata) j "
                                         f"WHERE {_visible('d')}")}

    def chunk_ids(self, doc_ids: Iterable[str]) -> list[int]:
        out: list[int] = []
        for doc_id in doc_ids:
            out.extend(r[0] for r in self._rows(f"SELECT chunk_id FROM chunks c WHERE doc_id = ? AND "
                                                f"{_visible('c')}", doc_id))
        return out

    def chunks(self, chunk_ids: list[int]) -> dict[int, tuple[str, int, int]]:
        """{chunk id: (doc id, start, end)} of those still in the store (tombstones included)."""
        out = {}
        for i in range(0, len(chunk_ids), _BOUND):
            part = chunk_ids[i: i + _BOUND]
            rows = self.db.execute(f"SELECT chunk_id, doc_id, start, end FROM chunks WHERE chunk_id IN "
                                   f"({','.join('?' * len(part))})", part)
            out.update((r[0], (r[1], r[2], r[3])) for r in rows)
        return out

    def documents(self, doc_ids: list[str]) -> dict[str, Document]:
        out = {}
        for i in range(0, len(doc_ids), _BOUND):
            part = doc_ids[i: i + _BOUND]
            rows = self._rows(f"SELECT id, title, text, source, metadata FROM documents d WHERE id IN "
                              f"({','.join('?' * len(part))}) AND {_visible('d')}", *part)
            out.update((r[0], Document(id=r[0], title=r[1], text=r[2], source=r[3], metadata=json.loads(r[4])))
                       for r in rows)
        return out

    def chunk_texts(self, chunk_ids: np.ndarray) -> Iterator[tuple[int, str, str]]:
        """(chunk id, its document's title, passage text) of these chunks, in the order given: what
        BM25 indexes."""
        ids = [int(i) for i in chunk_ids]
        for i in range(0, len(ids), _BOUND):
            part = ids[i: i + _BOUND]
            rows = {r[0]: r for r in self.db.execute(
                "SELECT c.chunk_id, d.title, substr(d.text, c.start + 1, c.end - c.start) FROM chunks c "
                "JOIN documents d ON d.id = c.doc_id AND d.added = c.added "
                f"WHERE c.chunk_id IN ({','.join('?' * len(part))})", part)}
            yield from (rows[chunk_id] for chunk_id in part)

    def counts(self) -> tuple[int, int]:
        documents = self._rows(f"SELECT COUNT(*) FROM documents d WHERE {_visible('d')}").fetchone()[0]
        chunks = self._rows(f"SELECT COUNT(*) FROM chunks c WHERE {_visible('c')}").fetchone()[0]
        return documents, chunks

    def _meta(self, key: str) -> int:
        return self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0]

    def next_chunk_id(self) -> int:
        return self._meta("next_chunk_id")

    # ---- writes (of commit `at` + 1, by the one writer; committed by the caller) ---------------

    def roll_back_uncommitted(self) -> None:
        """Undoes what writes of commits after `at` left (a writer killed between its store and its manifest)."""
        if self._meta("written") <= self.at:
            return
        self._rows("DELETE FROM documents WHERE added > ?")
        self._rows("DELETE FROM chunks WHERE added > ?")
        for table in ("documents", "chunks"):
            self._rows(f"UPDATE {table} SET deleted = NULL WHERE deleted > ?")
        self._rows("UPDATE chunks SET dropped = NULL WHERE dropped > ?")
        self._rows("UPDATE meta SET value = ? WHERE key = 'written'")
        self.db.commit()

    def purge(self) -> None:
        """Removes the rows no snapshot from `at` on sees: deleted documents, and chunks a merge left
        out of every segment."""
        self._rows("DELETE FROM documents WHERE deleted <= ?")
        self._rows("DELETE FROM chunks WHERE dropped <= ?")
        self.db.commit()

    def put(self, document: Document, spans: list[tuple[int, int]], first_chunk_id: int) -> list[int]:
        """Inserts a document (delete a replaced one first) and its chunks; returns the new chunk ids."""
        self.db.execute("INSERT INTO documents VALUES (?, ?, ?, ?, ?, ?, ?, NULL)",
                        (document.id, document.title, document.text, document.source,
                         json.dumps(document.metadata, ensure_ascii=False), document.content_hash, self.at + 1))
        ids = list(range(first_chunk_id, first_chunk_id + len(spans)))
        self.db.executemany("INSERT INTO chunks VALUES (?, ?, ?, ?, ?, NULL, NULL)",
                            [(i, document.id, s, e, self.at + 1) for i, (s, e) in zip(ids, spans)])
        self.db.execute("UPDATE meta SET value = MAX(value, ?) WHERE key = 'next_chunk_id'",
                        (ids[-1] + 1 if ids else 1,))
        return ids

    def delete(self, doc_ids: Iterable[str]) -> tuple[int, int]:
        """Marks these documents and their chunks deleted by the next commit; (documents, chunks) marked."""
        marked = [0, 0]
        for doc_id in doc_ids:
            for i, (table, key) in enumerate((("documents", "id"), ("chunks", "doc_id"))):
                marked[i] += self._rows(f"UPDATE {table} SET deleted = ? WHERE {key} = ? AND {_visible(table)}",
                                        self.at + 1, doc_id).rowcount
        return marked[0], marked[1]

    def drop(self, chunk_ids: np.ndarray) -> None:
        """Marks these tombstones as left out of every segment by the next commit (a merge's)."""
        ids = [int(i) for i in chunk_ids]
        for i in range(0, len(ids), _BOUND):
            part = ids[i: i + _BOUND]
            self.db.execute(f"UPDATE chunks SET dropped = ? WHERE chunk_id IN ({','.join('?' * len(part))})",
                            [self.at + 1, *part])

    def commit(self) -> None:
        """Makes this write of commit `at` + 1 durable; the manifest's replacement makes it current."""
        self._rows("UPDATE meta SET value = ? + 1 WHERE key = 'written'")
        self.db.commit()
