"""The index on disk and the Python API: `Retriever.create/open`, `.add`, `.remove`, `.search`.

One directory (default `./.retriever`):

    manifest.json    IndexManifest (manifest.py): model and fingerprint, dimension, prompts,
                     chunking, index type, the encoder's dtype, counts, times, versions, the commit
                     and its live segments
    store.sqlite     documents and chunks, versioned by commit, with the tombstones (store.py)
    segments/        immutable segments: each one's vectors (FAISS, ids = chunk ids) and BM25 (segment.py)
    .lock            held by the one writer (writer.json says who; commit.py)

A write costs what it changes: it writes one segment of its new chunks, records its new and
deleted rows in the store (rows of commit c + 1, unseen by snapshots up to c), and commits by
replacing manifest.json (write aside, fsync, rename). Then small segments may merge (the merge
policy, segment.py; a commit of its own), and rows no snapshot sees any longer are purged. An
interrupted write (Ctrl-C, kill -9, a full disk) leaves the manifest naming the previous commit,
whose segments and rows are whole; the next writer rolls back what it left. Readers serve the
commit the manifest named when they last looked (one stat per search) and keep serving it while
a writer works.

Format 1 indexes (a folder per generation, before segments) are upgraded in place on opening:
their vectors and BM25 become the first segment, their store the versioned store, and the new
manifest is the commit point, so an interrupted upgrade leaves the format 1 index as it was.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import itertools
import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from encoder.batching import DEFAULT_BATCH_TOKENS
from encoder.progress import TokenProgress
from retriever import filters
from retriever.commit import write_lock
from retriever.documents import Corpus, Document, as_document, embedding_input, is_page
from retriever.embedding import Chunking, Passage, PassageEncoder, default_dtype
from retriever.errors import IndexExistsError, IndexMismatchError, RetrieverError
from retriever.fusion import DEFAULT_FUSION, LEXICAL_FACTOR, Fusion, candidate_depths
from retriever.lexical import LexicalIndex, tokenize
from retriever.manifest import MANIFEST, UPGRADABLE_VERSIONS, IndexManifest, commit_name, manifest_stamp
from retriever.segment import Segment, SegmentInfo, merge_plan, retire, search_dense, search_lexical
from retriever.store import Store
from retriever.upgrade import upgrade_format_1
from retriever.vectors import VectorIndex, VectorIndexError

DEFAULT_INDEX_DIR = Path(".retriever")
DEFAULT_MODEL = "default"
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "default_model"
SEARCH_MODES = ("dense", "lexical", "hybrid")
# What search does when no mode is named: fused search beat dense alone on every set measured
# (the default model's card).
DEFAULT_MODE = "hybrid"
FILTER_CACHE = 64
DIFF_BATCH = 10_000  # documents whose stored hashes one lookup fetches
MERGE_ROUNDS = 8  # merges after one write: a cascade through the tiers ends well before
STORE = "store.sqlite"


def default_model_path() -> Path:
    """The model shipped inside the package, used when no model is named."""
    if not (DEFAULT_MODEL_DIR / "modules.json").is_file():
        raise RetrieverError(f"the default model is not installed ({DEFAULT_MODEL_DIR} is missing); pass --model")
    return DEFAULT_MODEL_DIR


@dataclass
class Hit:
    rank: int
    id: str
    score: float
    title: str
    text: str  # the whole document
    passage: str  # its best-matching passage
    span: tuple[int, int]  # the passage's characters in text
    source: str
    metadata: dict

    def to_dict(self, with_text: bool = False) -> dict:
        out = asdict(self)
        out["span"] = list(self.span)
        if not with_text:
            del out["text"]
        return out

    def metadata_with_index_facts(self) -> dict:
        """The document's own metadata with the index's facts on top, `title` and `source` where the
        index has them: the metadata the LangChain and LlamaIndex retrievers hand on."""
        facts = {key: value for key, value in (("title", self.title), ("source", self.source)) if value}
        return {**self.metadata, **facts}


@dataclass
class UpdateReport:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: int = 0
    removed: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # remove(): ids that were not in the index
    kept: list[str] = field(default_factory=list)  # sync(): ids whose file could not be read now: old version kept
    chunks_embedded: int = 0
    tokens: int = 0
    encode_seconds: float = 0.0
    seconds: float = 0.0


# Documents, their passages' vectors (float32, one row per passage) and the passages, whose `doc`
# indexes those documents: what an embedding engine hands the write path, one commit's worth at a time.
Embedded = tuple[list[Document], np.ndarray, list[Passage]]


class EmbeddingEngine(Protocol):
    """What embeds the documents a write changes, elsewhere than in this process (retriever/ray_engine.py),
    or not at all (vectors made before: retriever/shards.py)."""

    def embed(self, retriever: Retriever, documents: Iterable[Document], per_commit: int,
              progress: TokenProgress) -> Iterable[Embedded]:
        """`documents` (an iterator over the changed documents, read once, as they are needed) embedded as the
        retriever's own model would embed them, in batches of at most `per_commit` documents, each document
        once, in any order; `progress` advanced by tokens."""


class _Renamed:
    """Documents read with some pages' ids replaced (page source -> id), re-iterable as they are."""

    def __init__(self, documents: Iterable[Document], ids: dict[str, str]):
        self.documents, self.ids = documents, ids

    def __iter__(self) -> Iterator[Document]:
        for document in self.documents:
            if document.source in self.ids and is_page(document):
                document.id = self.ids[document.source]
            yield document


class Retriever:
    """A searchable index of documents. Reads (search, info) are safe from several threads."""

    def __init__(self, directory: Path, manifest: IndexManifest, model: PassageEncoder | None = None,
                 device: str | None = None, batch_tokens: int = DEFAULT_BATCH_TOKENS, follow_commits: bool = True):
        self.directory = directory
        self.follow_commits = follow_commits
        self.device = device
        self.batch_tokens = batch_tokens
        self._model = model
        self._lock = threading.Lock()
        self.store = Store(directory / STORE, manifest.commit, readonly=True)
        self.segments: list[Segment] = []
        self._serve(manifest)

    # ---- opening ------------------------------------------------------------------------------

    @classmethod
    def create(cls, directory: str | Path = DEFAULT_INDEX_DIR, model: str | Path | None = None, *,
               index_type: str = "flat", max_length: int | None = None, chunking: Chunking = Chunking(),
               device: str | None = None, dtype: str | None = None,
               batch_tokens: int = DEFAULT_BATCH_TOKENS) -> Retriever:
        """A new, empty index in `directory` for `model` (default: the model shipped with the package),
        whose encoder runs in `dtype` for the index's life (default: `embedding.default_dtype(device)`)."""
        directory = Path(directory)
        if (directory / MANIFEST).is_file():
            raise IndexExistsError(f"{directory}: an index exists here already; open it, or pick another folder")
        VectorIndex.new(index_type, 1)  # the type is checked before the model loads
        name = _model_name(model)
        passage_encoder = PassageEncoder.load(model_location(name), device=device, max_length=max_length,
                                              dtype=dtype or default_dtype(device))
        if chunking.mode == "late" and passage_encoder.pooling != "mean":
            raise IndexMismatchError(f"late chunking needs a mean-pooling model; {name} pools by "
                                     f"{passage_encoder.pooling}")
        manifest = IndexManifest(
            model=name, model_fingerprint=passage_encoder.fingerprint(), dimension=passage_encoder.dimension,
            normalize=passage_encoder.normalize, prompts=passage_encoder.prompts,
            max_length=passage_encoder.max_length, chunking=asdict(chunking), index_type=index_type,
            dtype=passage_encoder.dtype, generation=commit_name(0))
        directory.mkdir(parents=True, exist_ok=True)
        with write_lock(directory, wait=0):
            if (directory / MANIFEST).is_file():
                raise IndexExistsError(f"{directory}: an index was created here meanwhile")
            for leftover in (STORE, f"{STORE}-wal", f"{STORE}-shm"):  # what a create killed before its manifest left
                (directory / leftover).unlink(missing_ok=True)
            Store(directory / STORE, 0).close()
            manifest.write(directory)
        return cls(directory, manifest, passage_encoder, device, batch_tokens)

    @classmethod
    def open(cls, directory: str | Path = DEFAULT_INDEX_DIR, model: str | Path | None = None, *,
             device: str | None = None, batch_tokens: int = DEFAULT_BATCH_TOKENS,
             follow_commits: bool = True) -> Retriever:
        """An existing index (a format 1 one is upgraded first). `model` (optional) must be the one it
        was built with: same fingerprint. Searches see every commit made since (one stat of the
        manifest per search), or with `follow_commits=False` the commit the index had when opened
        (the server pins one per commit, so that each answer names the commit it read); its own
        writes move it on either way."""
        directory = Path(directory)
        manifest = IndexManifest.read(directory)
        if manifest.format_version in UPGRADABLE_VERSIONS:
            manifest = upgrade_format_1(directory, STORE)
        retriever = cls(directory, manifest, None, device, batch_tokens, follow_commits)
        if model is not None:
            retriever._model = retriever._checked_model(_model_name(model))
        return retriever

    def _serve(self, manifest: IndexManifest, written: list[Segment] = ()) -> None:
        """Reads come from `manifest`'s commit from now on: its segments (those loaded already kept,
        the `written` ones taken as they are, others read; BM25 on first use), the store's rows at
        its commit, and its tombstones. A merge may retire a segment between the manifest's read
        and its files': then the current manifest is taken."""
        for _ in range(3):
            known = {segment.info.name: segment for segment in [*self.segments, *written]}
            try:
                segments = [known.get(info["name"]) or Segment.load(self.directory, SegmentInfo(**info),
                                                                    manifest.dimension)
                            for info in manifest.segments]
            except VectorIndexError:
                latest = IndexManifest.read(self.directory)
                if latest.generation == manifest.generation:
                    raise  # the current commit's own vectors are missing or damaged: no race
                manifest = latest
                continue
            with self._lock:
                self.store.at = manifest.commit
                self.segments, self.manifest = segments, manifest
                self._tombstones = self.store.deleted_chunk_ids()
                self._stamp = manifest_stamp(self.directory)
                # what filters found at this commit: its metadata fields, and recent filters' chunks
                self._fields: set[str] | None = None
                self._filtered: dict[str, np.ndarray] = {}
            return
        raise RetrieverError(f"{self.directory}: commit {manifest.generation} named by the manifest is missing")

    def _serve_current(self) -> None:
        """Serves the commit the manifest names now, unless it is the one served already."""
        stamp = manifest_stamp(self.directory)
        if stamp == self._stamp:
            return
        manifest = IndexManifest.read(self.directory)
        if manifest.generation != self.manifest.generation:
            self._serve(manifest)
        else:
            self._stamp = stamp

    def _checked_model(self, name: str) -> PassageEncoder:
        return checked_model(self.manifest, self.directory, name, self.device)

    @property
    def model(self) -> PassageEncoder:
        with self._lock:
            if self._model is None:
                self._model = self._checked_model(self.manifest.model)
            return self._model

    @property
    def chunking(self) -> Chunking:
        return Chunking(**self.manifest.chunking)

    # ---- writing ------------------------------------------------------------------------------

    def add(self, documents: Iterable[dict | str | Document], *, show_progress: bool = False,
            wait: float = 0, commit_every: int | None = None, engine: EmbeddingEngine | None = None) -> UpdateReport:
        """Adds documents (dicts with id/_id, text, title, metadata; strings; or Documents); a
        document whose id is indexed already is replaced when its content changed. With
        `commit_every`, the changed documents are embedded and committed that many at a time;
        `engine`: embedded by it instead of in this process."""
        return self._update(_as_documents(documents), [], show_progress, wait, commit_every, engine)

    def sync(self, corpus: Corpus, *, show_progress: bool = False, wait: float = 0,
             commit_every: int | None = None, engine: EmbeddingEngine | None = None) -> UpdateReport:
        """Makes the index hold `corpus` for the files it read: new and changed documents embedded,
        documents from those files (or folders) that are gone removed. Others stay. With
        `commit_every`, each batch of that many changed documents is committed as it is embedded:
        an interrupted run keeps what it committed, and a rerun embeds only the rest. `engine`
        (e.g. ray_engine.RayEngine): the documents are embedded by it, and committed as they come."""
        self._serve_current()
        with self._lock:
            indexed = self.store.ids_from_sources(corpus.roots)
        renamed, vanished, kept = _sync_plan(corpus, indexed)
        del indexed  # the update holds no ids but those it changes
        report = self._update(_Renamed(corpus.documents, renamed), vanished, show_progress, wait, commit_every, engine)
        report.kept = kept
        return report

    def remove(self, ids: Iterable[str], *, wait: float = 0) -> UpdateReport:
        ids = list(dict.fromkeys(ids))
        report = self._update([], ids, False, wait)
        removed = set(report.removed)
        report.missing = [i for i in ids if i not in removed]
        return report

    def add_embedded(self, documents: Iterable[dict | str | Document], vectors: np.ndarray, *,
                     wait: float = 0) -> UpdateReport:
        """Adds documents with vectors made elsewhere, one per document (its passage: the whole text),
        e.g. from an earlier run of the same model; they must be what the index's model would make."""
        docs = _as_documents(documents)
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.shape != (len(docs), self.manifest.dimension):
            raise ValueError(f"expected vectors of shape ({len(docs)}, {self.manifest.dimension}), "
                             f"got {vectors.shape}")
        started = time.perf_counter()
        with self._writing(wait) as store:
            report, _ = self._reload_and_diff(docs, [])
            new_ids = set(report.added)
            report.updated = [d.id for d in docs if d.id not in new_ids]  # given vectors replace the old ones
            report.unchanged = 0
            passages = [Passage(i, 0, len(d.text)) for i, d in enumerate(docs)]
            self._commit(store, docs, vectors, passages, report.updated)
        report.seconds = time.perf_counter() - started
        return report

    @contextlib.contextmanager
    def _writing(self, wait: float) -> Iterator[Store]:
        """Holds the write lock, serves the latest commit (another writer may have committed), and
        yields the store to write its next commit in, with what an interrupted writer left undone:
        its store rows rolled back, its segment folders removed. After the write, rows no snapshot
        sees any longer are purged and merged-away segments retired."""
        with write_lock(self.directory, wait):
            self._serve_current()
            store = Store(self.directory / STORE, self.manifest.commit)
            try:
                store.roll_back_uncommitted()
                retire(self.directory, {segment.info.name for segment in self.segments})
                yield store
                store.at = self.manifest.commit
                store.purge()
                retire(self.directory, {segment.info.name for segment in self.segments})
            finally:
                store.close()

    def _reload_and_diff(self, documents: Iterable[Document], deletions: list[str]
                         ) -> tuple[UpdateReport, np.ndarray]:
        """What `documents` and `deletions` change in the commit served (under the lock: the latest),
        looked up DIFF_BATCH documents at a time: the report, and whether each document changes (in
        the order `documents` come: a changed one is found again by its place, not by its id)."""
        report, changes = UpdateReport(), []
        documents = iter(documents)
        while batch := [(d.id, d.content_hash) for d in itertools.islice(documents, DIFF_BATCH)]:
            with self._lock:
                hashes = self.store.hashes([doc_id for doc_id, _ in batch])
            report.added += [doc_id for doc_id, _ in batch if doc_id not in hashes]
            report.updated += [doc_id for doc_id, digest in batch if doc_id in hashes and hashes[doc_id] != digest]
            report.unchanged += sum(hashes.get(doc_id) == digest for doc_id, digest in batch)
            changes.append(np.fromiter((hashes.get(doc_id) != digest for doc_id, digest in batch), bool, len(batch)))
        with self._lock:
            held = self.store.hashes(deletions)
        report.removed = [doc_id for doc_id in deletions if doc_id in held]
        return report, np.concatenate(changes) if changes else np.zeros(0, bool)

    def _update(self, documents: Iterable[Document], deletions: list[str], show_progress: bool,
                wait: float, commit_every: int | None = None, engine: EmbeddingEngine | None = None) -> UpdateReport:
        """`documents` (a list, or a corpus's spilled documents: iterated once to diff, then to embed what
        changed, `commit_every` at a time; for an engine once more before, for the ids it must send back)
        added or replaced and `deletions` removed."""
        if commit_every is not None and commit_every < 1:
            raise ValueError(f"commit_every must be at least 1, got {commit_every}")
        started = time.perf_counter()
        with self._writing(wait) as store:
            report, changes = self._reload_and_diff(documents, deletions)
            changing = len(report.added) + len(report.updated)
            if changing or report.removed:
                step = commit_every or max(changing, 1)
                with TokenProgress(show_progress, "embedding", documents=changing) as progress:
                    if changing:
                        changed = itertools.compress(documents, changes)
                        if engine:  # the ids it must send back, then the documents streamed to it
                            pending = {d.id for d in changed}
                            batches = engine.embed(self, itertools.compress(documents, changes), step, progress)
                        else:
                            pending, batches = None, self._embedded(changed, step, progress)
                        self._commit_batches(store, batches, report, pending, progress)
                    else:
                        self._commit(store, [], np.zeros((0, self.manifest.dimension), np.float32), [],
                                     report.removed)
                report.tokens = progress.done
        report.seconds = time.perf_counter() - started
        return report

    def _commit_batches(self, store: Store, batches: Iterable[Embedded], report: UpdateReport,
                        pending: set[str] | None, progress: TokenProgress) -> None:
        """Commits each embedded batch as it comes: the report's added and updated documents, each
        exactly once, and with the first batch the report's removals. `pending`: the ids of an
        engine's documents, checked off as they commit (this process's own batches are the changed
        documents in order, each once: nothing to check)."""
        removals = report.removed  # removed documents leave with the first commit
        batches = iter(batches)
        while True:
            encode_started = time.perf_counter()  # an engine's batches take their time coming
            embedded = next(batches, None)
            report.encode_seconds += time.perf_counter() - encode_started
            if embedded is None:
                break
            batch, vectors, passages = embedded
            if pending is not None:
                _check_once(batch, pending)
            report.chunks_embedded += len(passages)
            # replaced documents leave with their new version: those of the batch the index holds
            store.at = self.manifest.commit
            indexed = store.hashes([d.id for d in batch])
            self._commit(store, batch, vectors, passages, [d.id for d in batch if d.id in indexed] + removals)
            removals = []
            if pending is not None:
                pending.difference_update(d.id for d in batch)
            progress.advance_documents(len(batch))
        if pending:
            changing = len(report.added) + len(report.updated)
            raise RetrieverError(f"no vectors came back for {len(pending)} of {changing} documents "
                                 f"(e.g. {min(pending)!r}); those that did are committed: run again to embed the rest")

    def _embedded(self, documents: Iterable[Document], step: int, progress: TokenProgress) -> Iterator[Embedded]:
        """`documents` embedded in this process, `step` at a time (read as they are embedded)."""
        documents = iter(documents)
        while batch := list(itertools.islice(documents, step)):
            yield batch, *self._embed(batch, progress)

    def _commit(self, store: Store, changed: list[Document], vectors: np.ndarray, passages: list[Passage],
                replaced: list[str]) -> None:
        """Commits the next write: the changed documents' chunks in a new segment and the store, the
        `replaced` ids' old chunks tombstoned; then merges what the merge policy asks for. Called
        under the write lock."""
        store.at = self.manifest.commit
        spans: list[list[tuple[int, int]]] = [[] for _ in changed]
        for passage in passages:
            spans[passage.doc].append((passage.start, passage.end))
        first_id = store.next_chunk_id()
        firsts = first_id + np.cumsum([0] + [len(doc_spans) for doc_spans in spans])  # each document's first chunk id
        next_id = int(firsts[-1])
        texts = [(int(first) + i, doc.title, doc.text[start:end])  # passages in document order, as ids go
                 for doc, doc_spans, first in zip(changed, spans, firsts) for i, (start, end) in enumerate(doc_spans)]
        written = []
        if texts:
            segment_vectors = self._new_vectors()
            segment_vectors.add(np.arange(first_id, next_id, dtype=np.int64), vectors)
            written.append(Segment.write(self.directory, _segment_name(self.manifest.commit + 1, 0),
                                         lambda: segment_vectors, lambda: LexicalIndex.build(texts)))
        removed_documents, removed_chunks = store.delete(replaced)
        for doc, doc_spans, first in zip(changed, spans, firsts):
            store.put(doc, doc_spans, int(first))
        store.commit()
        manifest = self.manifest.updated_with(
            documents=self.manifest.documents - removed_documents + len(changed),
            chunks=self.manifest.chunks - removed_chunks + len(texts),
            segments=[s.info.to_dict() for s in [*self.segments, *written]])
        manifest.write(self.directory)
        self._serve(manifest, written)
        for _ in range(MERGE_ROUNDS):
            if not self._merge(store):
                break
        _trim_heap()

    def _new_vectors(self) -> VectorIndex:
        """An empty vector index for a new segment: an ivfpq index's starts from its trained segments'
        training, and is flat until there is one."""
        if self.manifest.index_type != "ivfpq":
            return VectorIndex.new(self.manifest.index_type, self.manifest.dimension)
        trained = [s.vectors for s in self.segments if s.info.kind == "ivfpq"]
        return VectorIndex.empty_like(trained[0]) if trained else VectorIndex.new("flat", self.manifest.dimension)

    def _merge(self, store: Store) -> bool:
        """One commit of the merges the merge policy asks for now, if any (whether there were)."""
        plan = merge_plan(self.segments, self._tombstones, self.manifest.index_type, self.manifest.dimension)
        if not plan:
            return False
        store.at = commit = self.manifest.commit
        merged, written, dropped = {s.info.name for group in plan for s in group}, [], []
        for number, group in enumerate(plan):
            ids = np.concatenate([s.chunk_ids for s in group])
            gone = ids[np.isin(ids, self._tombstones)]
            dropped.append(gone)
            if len(gone) == len(ids):
                continue
            # ivfpq: merge_plan merges flat segments only once there are enough chunks to train on
            vectors = functools.partial(VectorIndex.merge, self.manifest.index_type, self.manifest.dimension,
                                        (s.read_vectors() for s in group), gone, len(ids) - len(gone))
            lexical = functools.partial(LexicalIndex.merge, (s.read_lexical() for s in group), gone)
            written.append(Segment.write(self.directory, _segment_name(commit + 1, number), vectors, lexical))
        store.drop(np.concatenate(dropped))
        store.commit()
        segments = [s for s in self.segments if s.info.name not in merged] + written
        manifest = self.manifest.updated_with(self.manifest.documents, self.manifest.chunks,
                                              [s.info.to_dict() for s in segments])
        manifest.write(self.directory)
        self._serve(manifest, written)
        return True

    def _embed(self, documents: list[Document], progress: TokenProgress) -> tuple[np.ndarray, list[Passage]]:
        return embed_documents(self.model, documents, self.chunking, self.batch_tokens, progress)

    # ---- reading ------------------------------------------------------------------------------

    def search(self, query: str, k: int = 10, mode: str | None = None, fusion: Fusion | str | None = None,
               where: dict | None = None) -> list[Hit]:
        return self.search_batch([query], k=k, mode=mode, fusion=fusion, where=where)[0]

    def search_batch(self, queries: list[str], k: int = 10, mode: str | None = None,
                     fusion: Fusion | str | None = None, where: dict | None = None) -> list[list[Hit]]:
        """The k best documents per query, each with its best passage.

        `mode`: "dense" (cosine similarity of each document's best chunk), "lexical" (BM25 of its
        best chunk) or "hybrid" (both rankings joined by `fusion`, a `Fusion` or "NAME[:WEIGHT]",
        default DEFAULT_FUSION); None: DEFAULT_MODE ("hybrid" whenever a fusion is given).
        `where`: only documents that meet these metadata conditions (retriever/filters.py), applied
        inside both searches, so k hits come back whenever k documents match."""
        mode, fusion = search_settings(mode, fusion)
        for i, query in enumerate(queries):
            if not isinstance(query, str) or not query.strip():
                raise ValueError("the query is empty" if len(queries) == 1 else f"query {i + 1} is empty")
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        if self.follow_commits:
            self._serve_current()
        with self._lock:  # one commit's view for the whole search, whatever another thread serves meanwhile
            segments, tombstones = self.segments, self._tombstones
        if not queries or not segments:
            return [[] for _ in queries]
        allowed = self._allowed_chunks(where) if where else None
        if allowed is not None and not len(allowed):
            return [[] for _ in queries]
        dense_depth, lexical_depth = candidate_depths(k) if mode == "hybrid" else (k, k * LEXICAL_FACTOR)
        sides = []  # per side, per query: {doc id: (best chunk id, its score)}, best first
        if mode != "lexical":
            query_vectors = self.model.encode_queries(list(queries), self.batch_tokens)
            dense = self._best_documents(search_dense, segments, tombstones, query_vectors, dense_depth * 4,
                                         dense_depth, allowed)
            sides.append([dict(list(docs.items())[:dense_depth]) for docs in dense])
        if mode != "dense":
            sides.append(self._best_documents(search_lexical, segments, tombstones, tokenize(list(queries)),
                                              lexical_depth, k, allowed))
        results = []
        for per_side in zip(*sides):
            best_chunk = {doc: chunk for side in reversed(per_side) for doc, (chunk, _) in side.items()}
            if mode == "hybrid":
                ranking = fusion(*[[(doc, score) for doc, (_, score) in side.items()] for side in per_side])[:k]
            else:
                ranking = [(doc, score) for doc, (_, score) in list(per_side[0].items())[:k]]
            results.append(self._hits(ranking, best_chunk))
        return results

    def _allowed_chunks(self, where: dict) -> np.ndarray:
        """The chunk ids of the documents `where` admits; a field no document has is an error. The
        store is scanned once per generation for its fields and once per distinct filter (the last
        FILTER_CACHE kept): a generation never changes, so neither do the answers."""
        conditions = filters.conditions(where)
        key = json.dumps([[c.field, c.operator, c.value] for c in conditions], sort_keys=True)
        with self._lock:
            if self._fields is None:
                self._fields = self.store.metadata_fields()
            if unknown := [c.field for c in conditions if c.field != filters.SOURCE and c.field not in self._fields]:
                raise ValueError(f"where: no document has a metadata field {unknown[0]!r} (fields: "
                                 f"{', '.join(sorted(self._fields)) or 'none'}, and {filters.SOURCE!r})")
            if key not in self._filtered:
                if len(self._filtered) >= FILTER_CACHE:
                    del self._filtered[next(iter(self._filtered))]
                self._filtered[key] = self.store.chunk_ids_where(conditions)
            return self._filtered[key]

    def _best_documents(self, search, segments: list[Segment], tombstones: np.ndarray, queries, fetch: int,
                        k: int, allowed: np.ndarray | None) -> list[dict[str, tuple[int, float]]]:
        """Per query: {doc id: (best chunk id, its score)}, best first, from `search`'s `fetch` best chunks,
        fetched 4x deeper while a query has fewer than k documents and its search did not run dry (fewer
        chunks than asked): one document's many chunks, or a filter, leave fewer documents than chunks."""
        while True:
            hits = self._over_segments(search, segments, tombstones, queries, fetch, allowed)
            per_query = [_best_per_doc(self._doc_ids(chunks)) for chunks in hits]
            if all(len(docs) >= k or len(chunks) < fetch for docs, chunks in zip(per_query, hits)):
                return per_query
            fetch *= 4

    def _over_segments(self, search, segments: list[Segment], tombstones: np.ndarray, *args):
        """search(segments, *args, tombstones); a merge that retired one of them since this search began
        (the files read on first use are gone: BM25, the vectors of segments this process wrote): over the
        current ones. A pinned reader, too, moves on: what it served is gone."""
        try:
            return search(segments, *args, tombstones)
        except (FileNotFoundError, VectorIndexError):
            self._serve(IndexManifest.read(self.directory))
            with self._lock:
                segments, tombstones = self.segments, self._tombstones
            return search(segments, *args, tombstones)

    def _doc_ids(self, chunk_hits: list[tuple[int, float]]) -> list[tuple[str, int, float]]:
        with self._lock:
            chunks = self.store.chunks([c for c, _ in chunk_hits])
        return [(chunks[c][0], c, s) for c, s in chunk_hits if c in chunks]

    def _hits(self, ranking: list[tuple[str, float]], best_chunk: dict[str, int]) -> list[Hit]:
        with self._lock:
            documents = self.store.documents([doc for doc, _ in ranking])
            chunks = self.store.chunks([best_chunk[doc] for doc, _ in ranking])
        hits = []
        for rank, (doc_id, score) in enumerate(ranking, 1):
            if doc_id not in documents or best_chunk[doc_id] not in chunks:
                continue  # purged by writes since this search began (it served a commit two behind)
            document = documents[doc_id]
            _, start, end = chunks[best_chunk[doc_id]]
            hits.append(Hit(rank=rank, id=doc_id, score=score, title=document.title, text=document.text,
                            passage=document.text[start:end], span=(start, end), source=document.source,
                            metadata=document.metadata))
        return hits

    def info(self) -> dict:
        files = [self.directory / STORE, self.directory / f"{STORE}-wal",
                 *(f for s in self.segments for f in s.directory.rglob("*"))]
        size = sum(p.stat().st_size for p in files if p.is_file())
        return {"directory": str(self.directory.resolve()), **asdict(self.manifest), "size_bytes": size,
                "search": {"mode": DEFAULT_MODE, "fusion": str(DEFAULT_FUSION)}}

    def close(self) -> None:
        self.store.close()


def embed_documents(model: PassageEncoder, documents: list[Document], chunking: Chunking, batch_tokens: int,
                    progress: TokenProgress) -> tuple[np.ndarray, list[Passage]]:
    """The vectors of `documents`' passages and the passages (spans in each document's text): what the
    index stores for them, in this process or in an engine's worker (the same code, so the same vectors)."""
    if not documents:
        return np.zeros((0, model.dimension), np.float32), []
    inputs = [embedding_input(d) for d in documents]
    vectors, passages = model.encode_documents(inputs, chunking, batch_tokens, progress)
    for passage in passages:  # spans in the text, without the title put before it
        length = len(documents[passage.doc].text)
        shift = len(inputs[passage.doc]) - length
        passage.start = min(max(passage.start - shift, 0), length)
        passage.end = min(max(passage.end - shift, passage.start), length)
    return vectors, passages


def checked_model(manifest: IndexManifest, directory: Path, name: str | None = None,
                  device: str | None = None) -> PassageEncoder:
    """The model `name` (default: the index's own) loaded for the index in `directory`, with its
    prompts: an error unless it makes the index's vectors (same dimension and fingerprint)."""
    name = name or manifest.model
    model = PassageEncoder.load(model_location(name), device=device, max_length=manifest.max_length,
                                dtype=manifest.dtype)
    if model.dimension != manifest.dimension:
        raise IndexMismatchError(f"{directory} holds {manifest.dimension}-d vectors of "
                                 f"{manifest.model}; {name} makes {model.dimension}-d vectors")
    fingerprint = model.fingerprint()
    if fingerprint != manifest.model_fingerprint:
        raise IndexMismatchError(f"{directory} was built with {manifest.model} (fingerprint "
                                 f"{manifest.model_fingerprint}); {name} has fingerprint {fingerprint}: "
                                 "search it with the same model, or build a new index")
    model.prompts = manifest.prompts
    return model


def _sync_plan(corpus: Corpus, indexed: dict[str, str]) -> tuple[dict[str, str], list[str], list[str]]:
    """What a sync of `corpus` does to the documents `indexed` ({id: source}) from the files it read:
    the pages indexed before under another path, which keep the id they have (source -> that id);
    the ids whose documents are gone (removed); and the ids whose file could not be read now (kept)."""
    # one file, one id: a page indexed before under another path given keeps the id it has
    ids_of: dict[str, list[str]] = {}
    for doc_id, source in indexed.items():
        ids_of.setdefault(source, []).append(doc_id)
    taken = {d.id for d in corpus.documents}
    renamed: dict[str, tuple[str, str]] = {}  # page's source -> (id read, id it keeps)
    for document in corpus.documents:
        ids = ids_of.get(document.source, [])
        if is_page(document) and len(ids) == 1 and ids[0] != document.id and ids[0] not in taken:
            renamed[document.source] = (document.id, ids[0])
    seen = taken - {read for read, _ in renamed.values()} | {kept for _, kept in renamed.values()}
    unreadable = {str(Path(problem.path).resolve()) for problem in corpus.problems}
    vanished = [doc_id for doc_id, source in indexed.items() if doc_id not in seen and source not in unreadable]
    kept = sorted(doc_id for doc_id, source in indexed.items() if doc_id not in seen and source in unreadable)
    return {source: kept_id for source, (_, kept_id) in renamed.items()}, vanished, kept


def _check_once(batch: list[Document], pending: set[str]) -> None:
    """An engine's batch holds documents asked for and not committed yet (`pending`), each once: what
    makes a retried or resumed job commit every document exactly once. Checked before the batch commits."""
    ids = [d.id for d in batch]
    if len(set(ids)) != len(ids) or not pending.issuperset(ids):
        wrong = next(i for n, i in enumerate(ids) if i not in pending or i in ids[:n])
        raise RetrieverError(f"the embedding engine returned document {wrong!r} twice, or unasked; its batch "
                             "was not committed (those before it were)")


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(None).malloc_trim  # glibc's
    except (OSError, AttributeError):
        return None


def _trim_heap() -> None:
    """Hands the heap a commit freed (its batch, a merge's result) back to the system. glibc keeps
    it for later allocations, which small objects then pin: over 200k documents, a writer's resident
    memory climbed by 80 MiB from merge to merge; trimmed, it stays where the first commits left it."""
    if trim := _malloc_trim():
        trim(0)


def _segment_name(commit: int, number: int) -> str:
    return f"seg-{commit:06d}-{number}"


def search_settings(mode: str | None, fusion: Fusion | str | None) -> tuple[str, Fusion | None]:
    """The mode and fusion a search given `mode` and `fusion` runs (what `search_batch` does, and what
    the CLI, the server and the evaluations report): no mode is DEFAULT_MODE, "hybrid" whenever a
    fusion is given; hybrid without a fusion fuses by DEFAULT_FUSION; one-sided modes have none. A
    mode not in SEARCH_MODES, or a fusion with a one-sided mode, is a ValueError."""
    mode = mode or ("hybrid" if fusion is not None else DEFAULT_MODE)
    if mode not in SEARCH_MODES:
        raise ValueError(f"search mode {mode!r}: expected one of {', '.join(SEARCH_MODES)}")
    if fusion is not None and mode != "hybrid":
        raise ValueError(f"a fusion ({fusion}) joins the two sides of hybrid search; mode {mode!r} has one side")
    if mode != "hybrid":
        return mode, None
    return mode, Fusion.parse(fusion) if isinstance(fusion, str) else fusion or DEFAULT_FUSION


def _as_documents(items: Iterable[dict | str | Document]) -> list[Document]:
    """Documents from the Python API's inputs; an id given twice is an error."""
    documents = [d if isinstance(d, Document) else as_document(d, i) for i, d in enumerate(items)]
    seen: set[str] = set()
    for document in documents:
        if document.id in seen:
            raise ValueError(f"duplicate document id {document.id!r}")
        seen.add(document.id)
    return documents


def _best_per_doc(chunk_hits: list[tuple[str, int, float]]) -> dict[str, tuple[int, float]]:
    """{doc: (chunk, score)} keeping each document's best chunk, ordered by that score."""
    best: dict[str, tuple[int, float]] = {}
    for doc, chunk, score in chunk_hits:
        if doc not in best or score > best[doc][1]:
            best[doc] = (chunk, score)
    return dict(sorted(best.items(), key=lambda item: -item[1][1]))


def _model_name(model: str | Path | None) -> str:
    if model is None or str(model) == DEFAULT_MODEL:
        return DEFAULT_MODEL
    path = Path(model).expanduser()
    return str(path.resolve()) if path.exists() else str(model)


def model_location(name: str) -> str | Path:
    """Where the model an index names is loaded from: the shipped one for "default"."""
    return default_model_path() if name == DEFAULT_MODEL else name
