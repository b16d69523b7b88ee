"""Format 1 -> 2, in place and atomically, under the write lock.

Format 1 kept a folder per generation (gen-000007/: store.sqlite, vectors.faiss, bm25/) named by
the manifest. Its vectors are one segment's, as they are (copied), with BM25 over the same chunks
(rebuilt: a segment's keeps the chunk lengths multi-segment scoring needs); its store becomes the
versioned store, every row added by the generation's commit; the manifest of format 2, renamed
into place, is the commit point. Until then the format 1 index is whole, and an interrupted
upgrade is redone by the next open; after it, the old folder is removed.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import numpy as np

from retriever.commit import fsync_dir, write_lock
from retriever.errors import RetrieverError
from retriever.lexical import LexicalIndex
from retriever.manifest import FORMAT_VERSION, IndexManifest
from retriever.segment import BM25_FOLDER, VECTORS_FILE, SegmentInfo, build_folder
from retriever.store import Store


def upgrade_format_1(directory: Path, store_name: str) -> IndexManifest:
    """Upgrades the format 1 index in `directory`; returns its new manifest."""
    with write_lock(directory, wait=0):
        manifest = IndexManifest.read(directory)
        if manifest.format_version == FORMAT_VERSION:  # another process upgraded it meanwhile
            return manifest
        old = directory / manifest.generation
        commit = manifest.commit
        upgrading = directory / f".{store_name}.upgrading"
        for leftover in directory.glob(f".{store_name}.upgrading*"):
            leftover.unlink()
        store = Store(upgrading, commit)
        try:
            store.db.execute("ATTACH DATABASE ? AS old", (str(old / "store.sqlite"),))
            store.db.execute("INSERT INTO documents SELECT id, title, text, source, metadata, content_hash, ?, NULL "
                             "FROM old.documents", (commit,))
            store.db.execute("INSERT INTO chunks SELECT chunk_id, doc_id, start, end, ?, NULL, NULL FROM old.chunks",
                             (commit,))
            store.db.execute("UPDATE meta SET value = (SELECT COALESCE(MAX(chunk_id), 0) + 1 FROM chunks) "
                             "WHERE key = 'next_chunk_id'")
            store.db.execute("UPDATE meta SET value = ? WHERE key = 'written'", (commit,))
            store.db.commit()
            store.db.execute("DETACH DATABASE old")
            store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.DatabaseError as e:
            raise RetrieverError(f"{old / 'store.sqlite'}: cannot upgrade this format 1 store ({e})") from e
        finally:
            store.close()
        segments = []
        if manifest.chunks:
            name = f"seg-{commit:06d}-0"

            def fill(folder: Path) -> None:
                shutil.copy2(old / "vectors.faiss", folder / VECTORS_FILE)
                # rebuilt, not copied: a segment's BM25 keeps its chunks' lengths, format 1's did not
                ids = np.load(old / "bm25" / "chunk_ids.npy")
                reader = Store(upgrading, commit, readonly=True)
                try:
                    LexicalIndex.build(reader.chunk_texts(ids)).save(folder / BM25_FOLDER)
                finally:
                    reader.close()

            build_folder(directory, name, fill)
            segments.append(SegmentInfo(name, manifest.index_type, manifest.chunks).to_dict())
        for stale in (store_name, f"{store_name}-wal", f"{store_name}-shm"):  # an interrupted upgrade's
            (directory / stale).unlink(missing_ok=True)
        upgrading.rename(directory / store_name)
        fsync_dir(directory)
        manifest.format_version, manifest.segments = FORMAT_VERSION, segments
        manifest.write(directory)
        for folder in [*directory.glob("gen-*"), *directory.glob(".building-gen-*")]:
            shutil.rmtree(folder, ignore_errors=True)
        return manifest
