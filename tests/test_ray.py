"""`retriever index --engine ray` and `retriever import`: Ray Data embedding, actor failures, resumption,
Parquet shards. One local Ray cluster (2 CPUs, real worker processes) serves the whole module."""

from __future__ import annotations

import gc
import json
import logging
import sqlite3
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'modernbert-retriever[ray]')")

from typer.testing import CliRunner  # noqa: E402

from retriever import Retriever  # noqa: E402
from retriever.cli import app  # noqa: E402
from retriever.documents import Document, read_corpus  # noqa: E402
from retriever.embedding import Chunking  # noqa: E402
from retriever.ray_engine import RayEngine  # noqa: E402
from retriever.shards import METADATA_KEY  # noqa: E402
from tests.conftest import WORDS, make_corpus  # noqa: E402

MAX_LENGTH = 64  # short inputs, so that the long documents are cut into windows and passages
CHUNKINGS = {"window": ["--chunking", "window", "--overlap", "16"], "late": ["--chunking", "late",
                                                                             "--passage-tokens", "16"]}
QUERIES = ["protein cell gene", "search index query document", "long window attention token"]


@pytest.fixture(scope="module", autouse=True)
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    # the hooks below travel to the actors by value: the workers do not import the test modules
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("corpus")
    for i, text in enumerate(t for t in make_corpus(40, 3) if len(t.split()) >= 10):
        (folder / f"short-{i:02d}.txt").write_text(text)
    for i in range(3):
        (folder / f"long-{i}.txt").write_text(" ".join(WORDS[i:] + WORDS * (3 + i)))
    records = [{"id": f"r{i}", "title": f"record {i}", "text": " ".join(WORDS[i::3]), "team": ["ops", "dev"][i % 2]}
               for i in range(3)]
    (folder / "records.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))
    return folder


def run(*args: str, exit_code: int = 0) -> str:
    """A `retriever` command's output, its line breaks (rich wraps at 80 columns) as spaces."""
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == exit_code, result.output
    return " ".join(result.output.split())


def index(*args: str) -> str:
    return run("index", *args)


@pytest.fixture(scope="module")
def local_indexes(corpus_dir, st_model_dir, tmp_path_factory) -> dict[str, Path]:
    """The single-process indexes of the corpus, per chunking: the reference."""
    indexes = {}
    for mode, options in CHUNKINGS.items():
        indexes[mode] = tmp_path_factory.mktemp(f"local-{mode}")
        index(str(corpus_dir), "--index", str(indexes[mode]), "--model", str(st_model_dir),
              "--max-length", str(MAX_LENGTH), *options)
    return indexes


def passage_vectors(directory: Path) -> dict[tuple[str, int, int], np.ndarray]:
    """{(document id, start, end): vector} of every live passage of an index."""
    retriever = Retriever.open(directory)
    tombstones = set(retriever.store.deleted_chunk_ids().tolist())
    out = {}
    for segment in retriever.segments:
        ids, vectors = segment.vectors.ids_and_vectors()
        chunks = retriever.store.chunks(ids.tolist())
        for chunk_id, vector in zip(ids.tolist(), vectors):
            if chunk_id not in tombstones:
                assert chunks[chunk_id] not in out, f"passage {chunks[chunk_id]} twice"
                out[chunks[chunk_id]] = vector
    return out


def assert_same_vectors(directory: Path, reference: Path) -> None:
    ours, theirs = passage_vectors(directory), passage_vectors(reference)
    assert sorted(ours) == sorted(theirs)
    assert max(np.abs(ours[key] - theirs[key]).max() for key in theirs) <= 1e-5


def live_documents(directory: Path) -> Counter:
    """How many live rows each document id has in an index's store."""
    with sqlite3.connect(directory / "store.sqlite") as db:
        return Counter(doc_id for (doc_id,) in db.execute("SELECT id FROM documents WHERE deleted IS NULL"))


def corpus_ids(corpus_dir: Path) -> set[str]:
    return {d.id for d in read_corpus([corpus_dir]).documents}


@pytest.mark.parametrize("mode", list(CHUNKINGS))
def test_engine_ray_gives_the_single_process_vectors_and_hits(mode, corpus_dir, st_model_dir, local_indexes,
                                                               tmp_path):
    output = index(str(corpus_dir), "--index", str(tmp_path), "--model", str(st_model_dir), "--max-length",
                   str(MAX_LENGTH), *CHUNKINGS[mode], "--engine", "ray", "--actors", "2", "--batch-docs", "3",
                   "--commit-every", "4")
    assert f"{len(corpus_ids(corpus_dir))} added" in output
    assert_same_vectors(tmp_path, local_indexes[mode])
    ours, theirs = Retriever.open(tmp_path), Retriever.open(local_indexes[mode])
    for query in QUERIES:
        assert [(h.id, h.span) for h in ours.search(query)] == [(h.id, h.span) for h in theirs.search(query)]
        assert [h.id for h in ours.search(query, where={"team": "ops"})] == \
            [h.id for h in theirs.search(query, where={"team": "ops"})]
    assert ours.manifest.commit >= len(corpus_ids(corpus_dir)) / 4  # committed 4 documents at a time


class DieOnce:
    """An actor hook: the first actor to get `doc_id` dies there (os._exit, no cleanup), once in all."""

    def __init__(self, marker: Path, doc_id: str):
        self.marker, self.doc_id = marker, doc_id

    def __call__(self, ids: list[str]) -> None:
        import os

        if self.doc_id in ids and not self.marker.exists():
            self.marker.write_text(str(os.getpid()))
            os._exit(1)


class FailOn:
    """An actor hook: the batch holding `doc_id` raises (an error Ray does not retry), ending the job, once
    the index in `directory` has committed some documents (those the actor did before it)."""

    def __init__(self, doc_id: str, directory: Path):
        self.doc_id, self.directory = doc_id, directory

    def __call__(self, ids: list[str]) -> None:
        import time

        if self.doc_id in ids:
            deadline = time.monotonic() + 60
            while not json.loads((self.directory / "manifest.json").read_text())["documents"] and \
                    time.monotonic() < deadline:
                time.sleep(0.1)
            raise RuntimeError(f"injected failure at {self.doc_id}")


class Record:
    """An actor hook: appends each batch's ids to a file, one per line."""

    def __init__(self, path: Path):
        self.path = path

    def __call__(self, ids: list[str]) -> None:
        with self.path.open("a") as f:
            f.write("".join(f"{i}\n" for i in ids))


def test_a_killed_actor_is_restarted_and_every_document_lands_once(corpus_dir, st_model_dir, local_indexes,
                                                                   tmp_path):
    retriever = Retriever.create(tmp_path / "index", st_model_dir, max_length=MAX_LENGTH,
                                 chunking=Chunking("window", overlap=16))
    marker = tmp_path / "died"
    report = retriever.sync(read_corpus([corpus_dir]), commit_every=4,
                            engine=RayEngine(actors=2, batch_docs=2, on_batch=DieOnce(marker, "long-1.txt")))
    assert marker.exists()  # an actor did die mid-job
    ids = corpus_ids(corpus_dir)
    assert sorted(report.added) == sorted(ids)
    assert live_documents(tmp_path / "index") == Counter({doc_id: 1 for doc_id in ids})
    assert_same_vectors(tmp_path / "index", local_indexes["window"])


def test_an_interrupted_run_resumes_without_re_embedding(corpus_dir, st_model_dir, local_indexes, tmp_path):
    retriever = Retriever.create(tmp_path / "index", st_model_dir, max_length=MAX_LENGTH,
                                 chunking=Chunking("window", overlap=16))
    documents = list(read_corpus([corpus_dir]).documents)
    with pytest.raises(Exception, match="injected failure"):
        retriever.sync(read_corpus([corpus_dir]), commit_every=2,
                       engine=RayEngine(actors=1, batch_docs=2,
                                        on_batch=FailOn(documents[len(documents) // 2].id, tmp_path / "index")))
    committed = set(live_documents(tmp_path / "index"))
    assert 0 < len(committed) < len(documents)
    embedded = tmp_path / "embedded.txt"
    report = retriever.sync(read_corpus([corpus_dir]), commit_every=2,
                            engine=RayEngine(actors=1, batch_docs=2, on_batch=Record(embedded)))
    rest = {d.id for d in documents} - committed
    assert sorted(embedded.read_text().split()) == sorted(rest)  # nothing committed was embedded again
    assert sorted(report.added) == sorted(rest) and report.unchanged == len(committed)
    assert live_documents(tmp_path / "index") == Counter({d.id: 1 for d in documents})
    assert_same_vectors(tmp_path / "index", local_indexes["window"])


def live_documents_in_driver() -> int:
    gc.collect()
    return sum(isinstance(o, Document) for o in gc.get_objects())


class CountsAtFirstBatch(RayEngine):
    """The Ray engine, noting how many Documents this process holds when the first embedded batch comes back."""

    counts: list[int] = []

    def embed(self, retriever, documents, per_commit, progress):
        for number, embedded in enumerate(super().embed(retriever, documents, per_commit, progress)):
            if number == 0:
                self.counts.append(live_documents_in_driver())
            yield embedded


def test_documents_stream_to_the_cluster_from_the_spilled_corpus(corpus_dir, st_model_dir, tmp_path):
    """The driver reads the changed documents from the corpus's spill as it sends them: when the first batch
    commits it holds that batch's documents, not the corpus's."""
    retriever = Retriever.create(tmp_path / "index", st_model_dir, max_length=MAX_LENGTH)
    corpus = read_corpus([corpus_dir])
    before = live_documents_in_driver()
    report = retriever.sync(corpus, commit_every=2, engine=CountsAtFirstBatch(actors=1, batch_docs=2))
    assert len(report.added) == len(corpus.documents) == 38
    assert CountsAtFirstBatch.counts[-1] - before <= 2  # the batch in hand


def test_shards_round_trip_and_a_mismatch_names_the_shard(corpus_dir, st_model_dir, local_indexes, tmp_path):
    shards, exporter, imported = tmp_path / "shards", tmp_path / "exporter", tmp_path / "imported"
    output = index(str(corpus_dir), "--index", str(exporter), "--model", str(st_model_dir), "--max-length",
                   str(MAX_LENGTH), *CHUNKINGS["late"], "--engine", "ray", "--actors", "2", "--batch-docs", "4",
                   "--output-shards", str(shards))
    assert "nothing committed" in output and Retriever.open(exporter).info()["documents"] == 0
    assert f"{len(corpus_ids(corpus_dir))} added" in run("import", str(shards), "--index", str(imported),
                                                         "--batch-docs", "5")
    assert_same_vectors(imported, local_indexes["late"])
    assert Retriever.open(imported).manifest.chunking == Retriever.open(local_indexes["late"]).manifest.chunking
    assert "0 added, 0 updated" in run("import", str(shards), "--index", str(imported))  # nothing added twice

    shard = sorted(shards.glob("*.parquet"))[0]
    table = pq.read_table(shard)
    info = json.loads(table.schema.metadata[METADATA_KEY])
    for field, value, expected in (("dimension", 32, "32-d vectors"), ("model_fingerprint", "0" * 16, "fingerprint")):
        bad = tmp_path / f"bad-{field}.parquet"
        pq.write_table(table.replace_schema_metadata({METADATA_KEY: json.dumps({**info, field: value})}), bad)
        output = run("import", str(shards), str(bad), "--index", str(imported), exit_code=2)
        assert str(bad) in output and expected in output, output


def test_device_is_the_actors_device(corpus_dir, tmp_path):
    from retriever.cli import _ray_engine

    cuda = _ray_engine("ray", "cuda")
    assert (cuda.device, cuda.gpus_per_actor) == ("cuda", 1)  # one GPU each unless said otherwise
    assert _ray_engine("ray", "cuda", gpus_per_actor=0.5).gpus_per_actor == 0.5
    assert _ray_engine("ray", "cpu").device == _ray_engine("ray", None).device == "cpu"
    for options, expected in ((["--device", "cpu", "--gpus-per-actor", "1"], "actors given GPUs run on CUDA"),
                              (["--device", "cuda", "--gpus-per-actor", "0"], "the actors would run on CPUs")):
        output = run("index", str(corpus_dir), "--index", str(tmp_path), "--engine", "ray", *options, exit_code=2)
        assert expected in output, output


def test_engine_ray_without_ray_says_how_to_install(corpus_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if it were not installed
    output = run("index", str(corpus_dir), "--index", str(tmp_path), "--engine", "ray", exit_code=2)
    assert "pip install 'modernbert-retriever[ray]'" in output
