"""Embedding on a Ray cluster with Ray Data: `retriever index --engine ray`, or from Python
`index.sync(corpus, engine=RayEngine(actors=4, gpus_per_actor=1))`.

The documents a write changes (sync has diffed them by content hash, so a rerun after an
interruption sends only what was not committed) become a Ray Dataset of one row each, in blocks of
`batch_docs` rows put in the object store as the documents are read (the driver holds no documents), and are
embedded by `map_batches` over a fixed pool of actors
(`ActorPoolStrategy(size=actors)`, `num_gpus=gpus_per_actor` each). Each actor loads the index's
model once, checked against the index's fingerprint, and embeds each block with the code a single
process runs (`retriever.index.embed_documents`: the same chunking, prompts and token packing), so
the vectors are the same. It returns shard rows (retriever/shards.py): each document with its
passages' spans and vectors.

The driver takes the rows as they come (`iter_batches`, `commit_every` documents at a time) and hands
them to the index's write path, which commits each batch on arrival. Or `write_shards` has the
workers write them as Parquet shards, for `retriever import`.

Failures: an actor that dies (a crash, an out-of-memory kill, a lost node) is restarted, up to
`max_restarts` times, and the block it was embedding is retried (`max_task_retries`). Ray Data hands on
each block's output once, and the write path refuses a document that comes back twice or not at all
(`Retriever._commit_batches`), so none is lost or committed twice.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import json
import logging
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from encoder.progress import TokenProgress
from retriever.documents import Document
from retriever.embedding import Chunking
from retriever.errors import RetrieverError
from retriever.index import Embedded, Retriever, checked_model, embed_documents
from retriever.manifest import IndexManifest
from retriever.shards import ShardInfo, embedded_rows, shard_schema, shard_table

INSTALL_HINT = "pip install 'modernbert-retriever[ray]'"
# The actors' output column of encoder tokens: a block's count on its first row (0 on the others), so
# that a sum over rows counts each block once. Not a shard column.
TOKENS = "tokens"
# The rows the actors read: a document each, its metadata as JSON.
_DOCUMENT_ROWS = pa.schema([(name, pa.string()) for name in ("id", "title", "text", "source", "metadata")])


@dataclass(frozen=True)
class RayEngine:
    """Where and how wide to embed. `address`: a running cluster ("auto", "ray://HOST:PORT"); None
    joins the cluster this process is connected to already, else RAY_ADDRESS's, else starts one on
    this machine for the job. `on_batch` is called in the actor with each block's document ids before
    it is embedded: where tests make an actor die mid-job."""

    address: str | None = None
    actors: int = 1
    gpus_per_actor: float = 0
    cpus_per_actor: float = 1
    batch_docs: int = 64
    max_restarts: int = 3
    on_batch: Callable[[list[str]], None] | None = None

    def __post_init__(self):
        if importlib.util.find_spec("ray") is None:
            raise RetrieverError(f"the Ray engine (--engine ray) needs Ray, which is not installed: {INSTALL_HINT}")
        if self.actors < 1 or self.batch_docs < 1 or self.gpus_per_actor < 0 or self.cpus_per_actor < 0:
            raise ValueError("ray engine: actors and batch_docs must be at least 1, gpus_per_actor and "
                             "cpus_per_actor at least 0")

    @property
    def device(self) -> str:
        """Where the actors run the encoder: CUDA when they are given GPUs."""
        return "cuda" if self.gpus_per_actor else "cpu"

    def embed(self, retriever: Retriever, documents: Iterable[Document], per_commit: int,
              progress: TokenProgress) -> Iterator[Embedded]:
        """`documents` (read once) embedded on the cluster, `per_commit` at a time, as the actors finish them."""
        with _connected(self.address):
            for table in self._embedded(retriever, documents).iter_batches(batch_size=per_commit,
                                                                            batch_format="pyarrow"):
                progress.advance(sum(table.column(TOKENS).to_pylist()))
                yield embedded_rows(table, "the ray engine's output")

    def write_shards(self, retriever: Retriever, documents: list[Document], directory: str | Path,
                     rows_per_shard: int = 10_000) -> list[Document]:
        """Those of `documents` that the index does not hold at the same content, embedded on the cluster
        and written by the workers as Parquet shards under `directory` (a path every worker can write
        to); nothing is committed: `retriever import` adds them. Returns the documents written."""
        held = retriever.store.hashes([d.id for d in documents])
        todo = [d for d in documents if held.get(d.id) != d.content_hash]
        if todo:
            schema = shard_schema(ShardInfo.of(retriever.manifest))
            with _connected(self.address):
                self._embedded(retriever, todo).drop_columns([TOKENS]).write_parquet(
                    str(directory), schema=schema, min_rows_per_file=rows_per_shard)
        return todo

    def _embedded(self, retriever: Retriever, documents: Iterable[Document]):
        """The Dataset of `documents` embedded by the actor pool (lazy: it runs as it is read)."""
        import ray

        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the index's own bar counts documents and tokens
        context.print_on_execution_start = False
        # a block per batch (what a task embeds, and what a dead actor's retry redoes), put in the object store
        # as it is read: the driver holds a reference per block, not the documents (Ray spills blocks to disk
        # when the store is full)
        documents, blocks = iter(documents), []
        while batch := list(itertools.islice(documents, self.batch_docs)):
            blocks.append(ray.put(pa.Table.from_pylist(
                [{"id": d.id, "title": d.title, "text": d.text, "source": d.source,
                  "metadata": json.dumps(d.metadata, ensure_ascii=False)} for d in batch], schema=_DOCUMENT_ROWS)))
        dataset = ray.data.from_arrow_refs(blocks)
        with warnings.catch_warnings():
            # Ray Data's own defaults restart a dead actor and retry its block without end, so a block that
            # kills every actor would hang the job: the bounds go in as actor options, which Ray 2.60 takes
            # but warns are deprecated (it names no parameter for them yet); the ray extra pins Ray below 2.64
            warnings.filterwarnings("ignore", "`ray_remote_args` is deprecated")
            return dataset.map_batches(
                _Embedder, batch_size=self.batch_docs, batch_format="pyarrow",
                fn_constructor_kwargs={"manifest": retriever.manifest, "directory": str(retriever.directory),
                                       "device": self.device,
                                       "batch_tokens": retriever.batch_tokens, "on_batch": self.on_batch},
                compute=ray.data.ActorPoolStrategy(size=self.actors),
                num_cpus=self.cpus_per_actor, num_gpus=self.gpus_per_actor,
                max_restarts=self.max_restarts, max_task_retries=self.max_restarts)


class _Embedder:
    """A Ray Data actor: the index's model, loaded once, embedding blocks of document rows."""

    def __init__(self, manifest: IndexManifest, directory: str, device: str, batch_tokens: int,
                 on_batch: Callable[[list[str]], None] | None):
        self.model = checked_model(manifest, Path(directory), device=device)
        self.chunking = Chunking(**manifest.chunking)
        self.schema = shard_schema(ShardInfo.of(manifest))
        self.batch_tokens = batch_tokens
        self.on_batch = on_batch

    def __call__(self, rows: pa.Table) -> pa.Table:
        documents = [Document(id=row["id"], text=row["text"], title=row["title"], source=row["source"],
                              metadata=json.loads(row["metadata"])) for row in rows.to_pylist()]
        if self.on_batch is not None:
            self.on_batch([d.id for d in documents])
        progress = TokenProgress(False)
        vectors, passages = embed_documents(self.model, documents, self.chunking, self.batch_tokens, progress)
        table = shard_table((documents, vectors, passages), self.schema)
        return table.append_column(TOKENS, pa.array([progress.done] + [0] * (len(documents) - 1), pa.int64()))


@contextlib.contextmanager
def _connected(address: str | None) -> Iterator[None]:
    """Connected to a Ray cluster for the job: the current connection if there is one, else a new one
    (and a cluster started on this machine when no address is known), closed after the job."""
    import ray

    if ray.is_initialized():
        yield
        return
    ray.init(address=address, logging_level=logging.WARNING, include_dashboard=False)
    try:
        yield
    finally:
        ray.shutdown()
