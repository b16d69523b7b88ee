"""Precomputed vectors as Parquet shards: what `retriever index --engine ray --output-shards DIR` writes and
`retriever import DIR --index IDX` reads.

A shard holds one row per document: `id`, `title`, `text`, `source`, `metadata` (JSON), and its passages
as three lists of the same length, `starts` and `ends` (character spans in the text) and `vectors`
(float32, one per passage). A document's passages never straddle two rows, so any run of rows is a
batch the write path can commit. The Arrow schema's metadata (key `modernbert-retriever`) records
what made the vectors: the model and its fingerprint, the dimension, the chunking and max length;
an import checks the dimension and the fingerprint against the index, shard by shard, before it adds
anything.

Vectors made elsewhere come as `.npy` shards: `NAME.npy`, a 2-D float array of one vector per
document (its passage: the whole text, as `Retriever.add_embedded` takes them), beside `NAME.jsonl`,
one document per line in the same order (`id`/`_id`, `text`, `title`, `metadata`, other fields as
metadata, as `retriever index` reads JSON Lines). A `.npy` file records no model: the importer names
the model that made its vectors, and that model's fingerprint is checked against the index's.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from encoder.progress import TokenProgress
from retriever.documents import Document, Problem, read_jsonl
from retriever.embedding import Passage
from retriever.errors import IndexMismatchError, RetrieverError
from retriever.index import Embedded, Retriever, UpdateReport, checked_model
from retriever.manifest import IndexManifest

SHARD_FORMAT = 1
METADATA_KEY = b"modernbert-retriever"
DOCUMENT_COLUMNS = ("id", "title", "text", "source", "metadata")
PASSAGE_COLUMNS = ("starts", "ends", "vectors")
DEFAULT_BATCH_DOCS = 1000


@dataclass(frozen=True)
class ShardInfo:
    """What made a shard's vectors (its schema's metadata)."""

    model: str
    model_fingerprint: str
    dimension: int
    max_length: int
    chunking: dict
    format: int = SHARD_FORMAT

    @classmethod
    def of(cls, manifest: IndexManifest) -> ShardInfo:
        return cls(manifest.model, manifest.model_fingerprint, manifest.dimension, manifest.max_length,
                   manifest.chunking)


def shard_schema(info: ShardInfo) -> pa.Schema:
    columns = [pa.field(name, pa.string()) for name in DOCUMENT_COLUMNS] + [
        pa.field("starts", pa.list_(pa.int64())), pa.field("ends", pa.list_(pa.int64())),
        pa.field("vectors", pa.list_(pa.list_(pa.float32(), info.dimension)))]
    return pa.schema(columns, metadata={METADATA_KEY: json.dumps(asdict(info))})


def shard_table(embedded: Embedded, schema: pa.Schema) -> pa.Table:
    """Shard rows of embedded documents (passages in document order, as encode_documents gives them)."""
    documents, vectors, passages = embedded
    counts = np.bincount([p.doc for p in passages], minlength=len(documents))
    offsets = pa.array(np.concatenate([[0], np.cumsum(counts)]), pa.int32())
    dimension = schema.field("vectors").type.value_type.list_size
    flat = pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(vectors, np.float32).reshape(-1)),
                                             dimension)
    columns = {"id": [d.id for d in documents], "title": [d.title for d in documents],
               "text": [d.text for d in documents], "source": [d.source for d in documents],
               "metadata": [json.dumps(d.metadata, ensure_ascii=False) for d in documents],
               "starts": pa.ListArray.from_arrays(offsets, pa.array([p.start for p in passages], pa.int64())),
               "ends": pa.ListArray.from_arrays(offsets, pa.array([p.end for p in passages], pa.int64())),
               "vectors": pa.ListArray.from_arrays(offsets, flat)}
    return pa.table(columns, schema=schema)


def embedded_rows(table: pa.Table, where: str | Path) -> Embedded:
    """The documents, vectors and passages of shard rows (`where` names them in errors)."""
    documents = [Document(id=row["id"], text=row["text"], title=row["title"] or "", source=row["source"] or "",
                          metadata=json.loads(row["metadata"] or "{}"))
                 for row in table.select(list(DOCUMENT_COLUMNS)).to_pylist()]
    starts, ends, vectors = (table.column(name).combine_chunks() for name in PASSAGE_COLUMNS)
    counts = starts.value_lengths().to_numpy(zero_copy_only=False)
    if not (np.array_equal(counts, ends.value_lengths().to_numpy(zero_copy_only=False))
            and np.array_equal(counts, vectors.value_lengths().to_numpy(zero_copy_only=False))):
        raise RetrieverError(f"{where}: a row's starts, ends and vectors differ in length")
    matrix = vectors.flatten().flatten().to_numpy().reshape(-1, vectors.type.value_type.list_size)
    docs = np.repeat(np.arange(len(documents)), counts)
    passages = [Passage(int(doc), start, end) for doc, start, end in
                zip(docs, starts.flatten().to_pylist(), ends.flatten().to_pylist())]
    return documents, matrix.astype(np.float32, copy=False), passages


@dataclass
class Precomputed:
    """An embedding engine that embeds nothing: vectors made before (shard rows), handed to the write
    path for those of their documents that the index does not hold at the same content."""

    embedded: Embedded

    def embed(self, retriever: Retriever, documents: Iterable[Document], per_commit: int,
              progress: TokenProgress) -> Iterator[Embedded]:
        wanted = {d.id for d in documents}
        keep = [i for i, d in enumerate(self.embedded[0]) if d.id in wanted]
        for first in range(0, len(keep), per_commit):
            yield select(self.embedded, keep[first:first + per_commit])


def select(embedded: Embedded, indices: list[int]) -> Embedded:
    """The documents at `indices` (ascending) of an embedded batch, with their vectors and passages."""
    documents, vectors, passages = embedded
    position = {old: new for new, old in enumerate(indices)}
    rows = [k for k, p in enumerate(passages) if p.doc in position]
    return ([documents[i] for i in indices], vectors[rows],
            [Passage(position[passages[k].doc], passages[k].start, passages[k].end) for k in rows])


SHARD_SUFFIXES = (".parquet", ".npy")


def shard_files(paths: Iterable[str | Path]) -> list[Path]:
    """The .parquet and .npy files given, and those under the folders given (sorted)."""
    files: list[Path] = []
    for given in paths:
        path = Path(given).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix in SHARD_SUFFIXES and p.is_file())
            if not found:
                raise RetrieverError(f"{given}: no .parquet or .npy shards in this folder")
            files.extend(found)
        elif path.is_file():
            if path.suffix not in SHARD_SUFFIXES:
                raise RetrieverError(f"{given}: not a shard (.parquet, or .npy beside its .jsonl documents)")
            files.append(path)
        else:
            raise RetrieverError(f"{given}: no such file or folder")
    return files


def shard_info(path: Path) -> ShardInfo:
    """A shard's metadata; an error naming the file if it is not a shard."""
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError) as e:
        raise RetrieverError(f"{path}: not a Parquet shard ({str(e).splitlines()[0][:200]})") from None
    if missing := [c for c in DOCUMENT_COLUMNS + PASSAGE_COLUMNS if c not in schema.names]:
        raise RetrieverError(f"{path}: no column {missing[0]!r} (a shard has "
                             f"{', '.join(DOCUMENT_COLUMNS + PASSAGE_COLUMNS)})")
    raw = (schema.metadata or {}).get(METADATA_KEY)
    if raw is None:
        raise RetrieverError(f"{path}: no {METADATA_KEY.decode()} metadata (model, fingerprint, dimension): not "
                             "written by retriever index --output-shards")
    try:
        info = ShardInfo(**json.loads(raw))
    except (TypeError, ValueError) as e:
        raise RetrieverError(f"{path}: unreadable {METADATA_KEY.decode()} metadata ({e})") from None
    if info.format != SHARD_FORMAT:
        raise RetrieverError(f"{path}: shard format {info.format}; this version reads format {SHARD_FORMAT}")
    vectors = schema.field("vectors").type
    if not (pa.types.is_list(vectors) and pa.types.is_fixed_size_list(vectors.value_type)
            and vectors.value_type.list_size == info.dimension):
        raise RetrieverError(f"{path}: the vectors column ({vectors}) does not hold the {info.dimension}-d vectors "
                             "its metadata names")
    return info


def check_shard(path: Path, manifest: IndexManifest, directory: Path) -> int:
    """The number of rows of shard `path`, once it is known to hold the index's kind of vectors."""
    info = shard_info(path)
    if info.dimension != manifest.dimension:
        raise IndexMismatchError(f"{path}: {info.dimension}-d vectors (model {info.model}); {directory} holds "
                                 f"{manifest.dimension}-d vectors of {manifest.model}")
    if info.model_fingerprint != manifest.model_fingerprint:
        raise IndexMismatchError(f"{path}: vectors of model {info.model} (fingerprint {info.model_fingerprint}); "
                                 f"{directory} was built with {manifest.model} (fingerprint "
                                 f"{manifest.model_fingerprint})")
    return pq.ParquetFile(path).metadata.num_rows


def npy_documents_file(path: Path) -> Path:
    """The JSON Lines file of a .npy shard's documents: NAME.jsonl beside NAME.npy."""
    return path.with_suffix(".jsonl")


def _npy_vectors(path: Path) -> np.ndarray:
    try:
        vectors = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as e:
        raise RetrieverError(f"{path}: not a .npy array of vectors ({str(e).splitlines()[0][:200]})") from None
    if vectors.ndim != 2 or vectors.dtype.kind != "f":
        raise RetrieverError(f"{path}: expected a 2-D float array (one vector per document), got shape "
                             f"{vectors.shape} of {vectors.dtype}")
    return vectors


def _npy_documents(path: Path) -> Iterator[Document]:
    """A .npy shard's documents in file order; a line that is not a document is an error (file:line), since
    every line is the document of one row of vectors."""
    documents_file = npy_documents_file(path)
    if not documents_file.is_file():
        raise RetrieverError(f"{path}: no {documents_file.name} beside it (its documents, one JSON object a line, "
                             "in the order of the vectors)")
    for _, item in read_jsonl(documents_file, str(documents_file.resolve())):
        if isinstance(item, Problem):
            raise RetrieverError(str(item))
        yield item


def check_npy_shard(path: Path, manifest: IndexManifest, directory: Path, model: str | None) -> int:
    """The number of rows of .npy shard `path`, once its dimension is the index's, its documents are one
    per row, and `model` (which made its vectors) is the index's model."""
    vectors = _npy_vectors(path)
    if vectors.shape[1] != manifest.dimension:
        raise IndexMismatchError(f"{path}: {vectors.shape[1]}-d vectors; {directory} holds {manifest.dimension}-d "
                                 f"vectors of {manifest.model}")
    documents = sum(1 for _ in _npy_documents(path))
    if documents != len(vectors):
        raise RetrieverError(f"{path}: {len(vectors)} vectors, but {npy_documents_file(path).name} holds "
                             f"{documents} documents (one per vector, in the same order)")
    if model is None:
        raise RetrieverError(f"{path}: a .npy shard does not record the model that made its vectors: name it "
                             "(retriever import --model), and it is checked against the index's")
    return documents


def npy_batches(path: Path, batch_docs: int) -> Iterator[Embedded]:
    """A .npy shard's rows, `batch_docs` documents at a time, each with its vector as its one passage."""
    vectors = _npy_vectors(path)
    documents = _npy_documents(path)
    for first in range(0, len(vectors), batch_docs):
        batch = [next(documents) for _ in range(min(batch_docs, len(vectors) - first))]
        yield (batch, np.asarray(vectors[first:first + len(batch)], dtype=np.float32),
               [Passage(i, 0, len(d.text)) for i, d in enumerate(batch)])


def parquet_batches(path: Path, batch_docs: int) -> Iterator[Embedded]:
    for record_batch in pq.ParquetFile(path).iter_batches(batch_size=batch_docs,
                                                         columns=list(DOCUMENT_COLUMNS + PASSAGE_COLUMNS)):
        yield embedded_rows(pa.Table.from_batches([record_batch]), path)


def import_shards(retriever: Retriever, paths: Iterable[str | Path], *, model: str | None = None,
                  batch_docs: int = DEFAULT_BATCH_DOCS, wait: float = 0, show_progress: bool = False) -> UpdateReport:
    """Adds the documents of shards to the index, `batch_docs` rows at a time (a commit each), through
    the write path: a document the index holds at the same content is left as it is (so a rerun after
    an interruption adds only the rest), a changed one is replaced. Every shard is checked first;
    `model`: the model that made the vectors of .npy shards (which do not record it)."""
    if batch_docs < 1:
        raise ValueError(f"batch_docs must be at least 1, got {batch_docs}")
    files = shard_files(paths)
    manifest, directory = retriever.manifest, retriever.directory
    rows = {path: check_npy_shard(path, manifest, directory, model) if path.suffix == ".npy"
            else check_shard(path, manifest, directory) for path in files}
    if model is not None and any(path.suffix == ".npy" for path in files):
        try:
            checked_model(manifest, directory, model)
        except IndexMismatchError as e:
            raise IndexMismatchError(f"the .npy shards' vectors, made by {model}, do not fit: {e}") from None
    total = UpdateReport()
    with TokenProgress(show_progress, "importing", documents=sum(rows.values())) as progress:
        for path in files:
            batches = npy_batches if path.suffix == ".npy" else parquet_batches
            for embedded in batches(path, batch_docs):
                report = retriever.add(embedded[0], wait=wait, engine=Precomputed(embedded))
                total.added += report.added
                total.updated += report.updated
                total.unchanged += report.unchanged
                total.chunks_embedded += report.chunks_embedded
                total.seconds += report.seconds
                progress.advance_documents(len(embedded[0]))
    return total
