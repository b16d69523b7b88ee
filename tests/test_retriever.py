"""The retriever: documents -> vectors -> FAISS + SQLite + BM25 -> hits, from Python and the CLI."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules import Dense, Normalize, Transformer
from sentence_transformers.sentence_transformer.modules import Pooling
from typer.testing import CliRunner

from encoder import load_embedder
from retriever import Retriever
from retriever.cli import app
from retriever.documents import Document, html_text, read_corpus
from retriever.embedding import Chunking, PassageEncoder
from retriever.errors import IndexLockedError, IndexMismatchError
from retriever.fusion import DEFAULT_FUSION, Fusion
from retriever.segment import search_dense
from tests.conftest import WORDS, make_corpus

ROOT = Path(__file__).resolve().parents[1]


def st_layout(checkpoint_dir, path: Path, pooling: str, prompts: dict | None, dense: bool = False) -> Path:
    transformer = Transformer(str(checkpoint_dir), max_seq_length=4096)
    modules = [transformer, Pooling(transformer.get_embedding_dimension(), pooling_mode=pooling)]
    if dense:
        torch.manual_seed(0)
        modules.append(Dense(transformer.get_embedding_dimension(), 32, activation_function=torch.nn.Tanh()))
    modules.append(Normalize())
    SentenceTransformer(modules=modules, prompts=prompts, device="cpu").save(str(path))
    return path


@pytest.fixture(scope="module")
def model_dir(checkpoint_dir, tmp_path_factory) -> Path:
    """Mean pooling, normalised, with query and document prompts (modernbert-embed style)."""
    return st_layout(checkpoint_dir, tmp_path_factory.mktemp("st_mean"), "mean",
                     {"query": "query: ", "document": "passage: "})


@pytest.fixture(scope="module")
def cls_model_dir(checkpoint_dir, tmp_path_factory) -> Path:
    return st_layout(checkpoint_dir, tmp_path_factory.mktemp("st_cls"), "cls", {"query": "query: "})


# at least 15 words each, so that the query prompt does not outweigh a text searched for itself
@pytest.fixture(scope="module")
def dense_model_dir(checkpoint_dir, tmp_path_factory) -> Path:
    """Mean pooling, then a Dense projection (64 -> 32, tanh), normalised."""
    return st_layout(checkpoint_dir, tmp_path_factory.mktemp("st_dense"), "mean", None, dense=True)


TEXTS = [t for t in make_corpus(120, 7) if len(t.split()) >= 15][:30]
LONG = " ".join(WORDS * 20)  # ~2k tokens


def write_corpus(folder: Path) -> Path:
    (folder / "notes").mkdir(parents=True)
    for i, text in enumerate(TEXTS[:6]):
        (folder / "notes" / f"n{i}.txt").write_text(text)
    (folder / "guide.md").write_text("# Late chunking guide\n\n" + LONG)
    (folder / "page.html").write_text("<html><head><title>Vaccine trials</title><style>p{}</style></head>"
                                      "<body><p>vaccine dose trial</p><script>var x;</script><p>patient result</p>"
                                      "</body></html>")
    rows = [{"_id": f"r{i}", "title": f"record {i}", "text": t, "year": 2000 + i} for i, t in enumerate(TEXTS[6:12])]
    (folder / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


# ---- embedding ---------------------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["model_dir", "cls_model_dir", "dense_model_dir"])
def test_vectors_equal_the_sentence_transformers_embedder(layout, request):
    path = request.getfixturevalue(layout)
    ours = PassageEncoder.load(path)
    reference = load_embedder(path, device="cpu")
    texts = TEXTS + [LONG]
    documents, passages = ours.encode_documents(texts)
    assert [p.doc for p in passages] == list(range(len(texts)))  # every text fits: one vector each
    assert np.abs(documents - reference.encode_document(texts)).max() < 1e-5
    assert np.abs(ours.encode_queries(texts[:5]) - reference.encode_query(texts[:5])).max() < 1e-5


def test_long_documents_are_split_into_overlapping_windows(model_dir):
    model = PassageEncoder.load(model_dir, max_length=256)
    vectors, passages = model.encode_documents([TEXTS[0], LONG], Chunking("window", overlap=32))
    long_windows = [p for p in passages if p.doc == 1]
    assert len(long_windows) > 5 and len(vectors) == len(passages)
    assert long_windows[0].start == 0 and long_windows[-1].end == len(LONG)
    for before, after in zip(long_windows, long_windows[1:]):
        assert after.start < before.end  # overlap
    # each window is embedded as the text it covers
    window = long_windows[1]
    alone = model.encode_documents([LONG[window.start: window.end]])[0][0]
    assert np.abs(vectors[2] - alone).max() < 1e-4


def test_late_chunking_spans_tile_the_document_and_carry_context(model_dir):
    model = PassageEncoder.load(model_dir)
    vectors, passages = model.encode_documents([LONG, TEXTS[1]], Chunking("late", passage_tokens=64))
    spans = [(p.start, p.end) for p in passages if p.doc == 0]
    tokens = len(model.tokenizer.encode(LONG, add_special_tokens=False).ids)
    assert -(-tokens // (64 + 16)) <= len(spans) <= -(-tokens // 64)  # 64 tokens, up to the next word start
    assert spans[0][0] == 0 and spans[-1][1] == len(LONG)
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))  # contiguous, no gaps
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    # a passage's late vector differs from the passage embedded alone: it saw the whole document
    start, end = spans[3]
    alone = model.encode_documents([LONG[start:end]])[0][0]
    assert np.abs(vectors[3] - alone).max() > 1e-3


def test_passages_and_windows_begin_at_word_starts(model_dir):
    model = PassageEncoder.load(model_dir, max_length=64)
    text = " ".join(["lymphocyte", "retrieval", "quokka", "zephyrs", "vaccine"] * 30)
    assert len(model.tokenizer.encode("lymphocyte", add_special_tokens=False).ids) > 5
    for chunking in (Chunking("late", passage_tokens=5), Chunking("window", overlap=16)):
        _, passages = model.encode_documents([text], chunking)
        starts = [p.start for p in passages[1:]]
        assert len(starts) > 10
        assert all(text[s - 1] == " " or text[s] == " " for s in starts), chunking
    # a "word" far longer than a passage is still cut
    blob = "q" * 400
    _, passages = model.encode_documents([f"vaccine {blob} trial"], Chunking("late", passage_tokens=5))
    assert len(passages) > 3


def test_late_chunking_needs_mean_pooling(cls_model_dir, tmp_path):
    with pytest.raises(IndexMismatchError, match="mean-pooling"):
        Retriever.create(tmp_path / "idx", cls_model_dir, chunking=Chunking("late"))


# ---- the Python API ----------------------------------------------------------------------------

def test_api_add_search_remove_info(model_dir, tmp_path):
    index = Retriever.create(tmp_path / "idx", model_dir)
    report = index.add([{"id": f"d{i}", "title": f"title {i}", "text": t, "lang": "en"} for i, t in enumerate(TEXTS)]
                       + ["a plain string document about zebras and xylophones"])
    assert len(report.added) == 31
    for i in (0, 5, 17):
        hits = index.search(TEXTS[i], k=3)
        assert hits[0].id == f"d{i}" and hits[0].rank == 1
        assert hits[0].title == f"title {i}" and hits[0].text == TEXTS[i] and hits[0].metadata == {"lang": "en"}
        assert hits[0].passage == TEXTS[i][slice(*hits[0].span)]
        assert hits[0].score >= hits[1].score
    batch = index.search_batch([TEXTS[2], TEXTS[3]], k=2)
    assert [hits[0].id for hits in batch] == ["d2", "d3"]
    string_id = hashlib.sha256(b"a plain string document about zebras and xylophones").hexdigest()[:16]
    assert index.search("zebras xylophones", k=5, mode="hybrid")[0].id == string_id  # strings: id from their text
    assert index.info()["documents"] == 31

    report = index.remove(["d5", "nope"])
    assert report.removed == ["d5"] and report.missing == ["nope"]
    assert "d5" not in [h.id for h in index.search(TEXTS[5], k=30)]
    reopened = Retriever.open(tmp_path / "idx")
    assert reopened.info()["documents"] == 30 and reopened.info()["chunks"] == 30
    assert reopened.search(TEXTS[7])[0].id == "d7"
    with pytest.raises(ValueError, match="empty"):
        reopened.search("   ")


def test_search_modes_and_fusions(model_dir, tmp_path):
    Retriever.create(tmp_path / "idx", model_dir).add([{"id": f"d{i}", "text": t} for i, t in enumerate(TEXTS)])
    index = Retriever.open(tmp_path / "idx")
    lexical = index.search(TEXTS[4], k=3, mode="lexical")
    assert lexical[0].id == "d4" and index._model is None, "BM25 alone needs no model"
    index = Retriever.open(tmp_path / "idx")
    assert index.search(TEXTS[4], k=3, mode="dense")[0].id == "d4" and all(s._lexical is None for s in index.segments), "dense needs no BM25"
    for fusion in ("rrf", "wrrf:0.3", "minmax:0.5", "zscore:0.7", "dbsf:0.5", Fusion("zscore", 0.2)):
        hits = index.search(TEXTS[9], k=4, fusion=fusion)
        assert hits[0].id == "d9" and [h.rank for h in hits] == [1, 2, 3, 4]
        assert all(a.score >= b.score for a, b in zip(hits, hits[1:]))
    default = [(h.id, h.score) for h in index.search(TEXTS[9], k=4)]
    assert default == [(h.id, h.score) for h in index.search(TEXTS[9], k=4, mode="hybrid")] == \
        [(h.id, h.score) for h in index.search(TEXTS[9], k=4, fusion=DEFAULT_FUSION)], "no mode: hybrid, default fusion"
    assert index.info()["search"] == {"mode": "hybrid", "fusion": str(DEFAULT_FUSION)}
    with pytest.raises(ValueError, match="expected one of dense, lexical, hybrid"):
        index.search("x", mode="sparse")
    with pytest.raises(ValueError, match="has one side"):
        index.search("x", mode="dense", fusion="rrf")
    with pytest.raises(ValueError, match="must be a number"):
        index.search("x", fusion="zscore:high")


def test_metadata_filters_apply_inside_every_search_mode(model_dir, tmp_path):
    index = Retriever.create(tmp_path / "idx", model_dir)
    index.add([{"id": f"d{i}", "text": t, "team": ["ops", "dev", "qa"][i % 3], "year": 2000 + i}
               for i, t in enumerate(TEXTS)])
    ops = {f"d{i}" for i in range(0, len(TEXTS), 3)}
    for mode in ("dense", "lexical", "hybrid"):
        hits = index.search(TEXTS[1], k=5, mode=mode, where={"team": "ops"})
        assert len(hits) == 5 and {h.id for h in hits} <= ops and "d1" not in {h.id for h in hits}
        # k hits whenever k documents match, however low they rank unfiltered
        hits = index.search(TEXTS[1], k=3, mode=mode, where={"year": {">=": 2027}})
        assert {h.id for h in hits} == {"d27", "d28", "d29"}
        hits = index.search(TEXTS[4], k=10, mode=mode, where={"team": {"in": ["dev", "qa"]}, "year": {"<": 2010}})
        assert {h.id for h in hits} == {"d1", "d2", "d4", "d5", "d7", "d8"} and hits[0].id == "d4"
    assert index.search(TEXTS[1], where={"team": "nobody"}) == []
    # every operator, and `source` as a path prefix, in every mode: exactly the documents that match
    other = Retriever.create(tmp_path / "sources", model_dir)
    other.add([Document(id=f"d{i}", text=t, source=str(tmp_path / ("ops" if i < 5 else "dev") / f"{i}.txt"),
                        metadata={"team": ["ops", "dev", "qa"][i % 3], "year": 2000 + i}) for i, t in enumerate(TEXTS)])
    cases = [({"year": {">": 2026}}, lambda i: i > 26), ({"year": {"<=": 2002}}, lambda i: i <= 2),
             ({"team": {"!=": "ops"}, "year": {"<": 2006}}, lambda i: i % 3 and i < 6),
             ({"team": {"not in": ["ops", "dev"]}, "year": {">=": 2020}}, lambda i: i % 3 == 2 and i >= 20),
             ({"source": str(tmp_path / "ops")}, lambda i: i < 5),
             ({"source": {"prefix": str(tmp_path / "dev")}, "year": {"<": 2008}}, lambda i: 5 <= i < 8)]
    for where, admits in cases:
        expected = {f"d{i}" for i in range(len(TEXTS)) if admits(i)}
        for mode in ("dense", "lexical", "hybrid"):
            hits = other.search(TEXTS[3], k=len(expected), mode=mode, where=where)
            assert {h.id for h in hits} == expected, (where, mode)
    assert [h.id for h in index.search(TEXTS[1], k=3, where={})] == [h.id for h in index.search(TEXTS[1], k=3)]
    with pytest.raises(ValueError, match="no document has a metadata field 'tem'"):
        index.search(TEXTS[1], where={"tem": "ops"})
    with pytest.raises(ValueError, match="unknown operator"):
        index.search(TEXTS[1], where={"year": {"=>": 2001}})


def test_lexical_search_returns_k_documents_when_one_document_holds_the_best_chunks(model_dir, tmp_path):
    index = Retriever.create(tmp_path / "idx", model_dir, max_length=32, chunking=Chunking(overlap=0))
    many = " ".join(f"zebra zebra {word}" for word in WORDS[:60])  # many chunks, each with zebra more often
    index.add([{"id": "many", "text": many},
               *({"id": f"d{i}", "text": f"zebra {WORDS[10 + i]} {WORDS[20 + i]}"} for i in range(3))])
    assert len(index.store.chunk_ids(["many"])) > 4 * 4  # more zebra chunks than k=4 asks for at first
    assert [h.id for h in index.search("zebra", k=1, mode="lexical")] == ["many"]
    for mode in ("lexical", "hybrid"):
        hits = index.search("zebra", k=4, mode=mode)
        assert {h.id for h in hits} == {"many", "d0", "d1", "d2"}


@pytest.mark.parametrize("index_type", ["hnsw", "ivfpq"])
def test_a_filter_finds_its_documents_in_an_approximate_index(model_dir, tmp_path, index_type):
    from retriever.vectors import IVFPQ_MIN_TRAIN

    index = Retriever.create(tmp_path / "idx", model_dir, index_type=index_type)
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((IVFPQ_MIN_TRAIN, 8)) @ rng.standard_normal((8, index.manifest.dimension))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    rare = [i for i in range(len(vectors)) if i % 500 == 7]  # 20 documents: 0.2% of the index
    index.add_embedded([{"id": f"v{i}", "text": f"vector {i}", "team": "rare" if i in rare else "common"}
                        for i in range(len(vectors))], vectors)
    assert [s.info.kind for s in index.segments] == [index_type]
    query = "what is in vector seven"
    exact = vectors[rare] @ index.model.encode_queries([query])[0]
    best = [f"v{rare[i]}" for i in np.argsort(-exact)]
    for mode in ("dense", "hybrid"):
        hits = index.search(query, k=10, mode=mode, where={"team": "rare"})
        assert len(hits) == 10 and {h.id for h in hits} <= set(best)
        assert {h.id for h in index.search(query, k=30, mode=mode, where={"team": "rare"})} == set(best)
    if index_type == "hnsw":  # below FILTER_SCAN_SHARE of the index, its admitted vectors are scored exactly
        assert [h.id for h in index.search(query, k=10, mode="dense", where={"team": "rare"})] == best[:10]


def test_commit_every_commits_batches_and_reports_the_whole(model_dir, tmp_path):
    index = Retriever.create(tmp_path / "idx", model_dir)
    report = index.add([{"id": f"d{i}", "text": t} for i, t in enumerate(TEXTS[:7])], commit_every=3)
    assert len(report.added) == 7 and report.chunks_embedded == 7 and report.tokens > 0
    assert index.manifest.generation == "gen-000003" and index.info()["documents"] == 7  # 3 + 3 + 1
    report = index.add([{"id": "d0", "text": TEXTS[9]}, {"id": "d9", "text": TEXTS[8]}], commit_every=1)
    assert report.updated == ["d0"] and report.added == ["d9"] and index.manifest.generation == "gen-000005"
    assert index.search(TEXTS[9], k=1, mode="dense")[0].id == "d0" and index.info()["chunks"] == 8
    with pytest.raises(ValueError, match="commit_every must be at least 1"):
        index.add(["x"], commit_every=0)


def test_titles_are_embedded_before_the_text(model_dir, tmp_path):
    index = Retriever.create(tmp_path / "idx", model_dir)
    index.add([{"id": "t", "title": "Zebra facts", "text": TEXTS[0]},
               {"id": "u", "title": "alpha", "text": "alpha beta gamma"}])  # opens with its title: once
    expected = PassageEncoder.load(model_dir).encode_documents(["Zebra facts\n" + TEXTS[0], "alpha beta gamma"])[0]
    ids, vectors = index.segments[0].vectors.ids_and_vectors()
    got = vectors[np.searchsorted(ids, index.store.chunk_ids(["t", "u"]))]
    assert np.abs(got - expected).max() < 1e-5
    assert index.search(TEXTS[0])[0].span == (0, len(TEXTS[0]))


def test_unchanged_documents_are_not_embedded_again(model_dir, tmp_path):
    index = Retriever.create(tmp_path / "idx", model_dir)
    index.add([{"id": "a", "text": TEXTS[0]}, {"id": "b", "text": TEXTS[1]}])
    report = index.add([{"id": "a", "text": TEXTS[0]}, {"id": "b", "text": TEXTS[2]}])
    assert report.unchanged == 1 and report.updated == ["b"] and report.chunks_embedded == 1
    assert index.search(TEXTS[2])[0].id == "b"
    assert index.info()["chunks"] == 2


def test_add_embedded_takes_vectors_made_elsewhere(model_dir, tmp_path):
    index = Retriever.create(tmp_path / "idx", model_dir)
    model = PassageEncoder.load(model_dir)
    vectors, _ = model.encode_documents(TEXTS[:4])
    index.add_embedded([{"id": f"e{i}", "text": t} for i, t in enumerate(TEXTS[:4])], vectors)
    index.add_embedded([{"id": "e0", "text": TEXTS[0]}], vectors[:1])  # replaced, not duplicated
    assert index.info()["chunks"] == 4 and len(index._tombstones) == 1  # e0's first vector, until a merge
    assert index.search(TEXTS[2])[0].id == "e2"
    assert [h.id for h in index.search(TEXTS[0], k=4)].count("e0") == 1
    with pytest.raises(ValueError, match="shape"):
        index.add_embedded(["x"], vectors)


@pytest.mark.parametrize("index_type", ["hnsw", "flat"])
def test_index_types_search_and_remove(model_dir, tmp_path, index_type):
    index = Retriever.create(tmp_path / "idx", model_dir, index_type=index_type)
    index.add([{"id": str(i), "text": t} for i, t in enumerate(TEXTS)])
    index.remove(["3"])
    assert index.search(TEXTS[4])[0].id == "4" and "3" not in [h.id for h in index.search(TEXTS[3], k=30)]
    assert index.info()["chunks"] == 29 and index.segments[0].vectors.ntotal == 30 and len(index._tombstones) == 1
    allowed = np.array(sorted(index.store.chunk_ids(["5", "9", "20"])))
    vectors = index.segments[0].vectors
    _, ids = vectors.search(index.model.encode_queries([TEXTS[9]]), 10, allowed)
    assert ids[0][0] == allowed[1] and set(ids[0][ids[0] >= 0]) == set(allowed)
    _, ids = vectors.search(index.model.encode_queries([TEXTS[9]]), 30, excluded=allowed)
    assert not set(ids[0]) & set(allowed) and (ids[0] >= 0).sum() == 27


def test_an_ivfpq_index_is_flat_until_it_trains_on_all_its_chunks(model_dir, tmp_path):
    from retriever.vectors import IVFPQ_MIN_TRAIN

    index = Retriever.create(tmp_path / "idx", model_dir, index_type="ivfpq")
    index.add([{"id": str(i), "text": t} for i, t in enumerate(TEXTS)])
    assert [s.info.kind for s in index.segments] == ["flat"] and index.search(TEXTS[4])[0].id == "4"
    # enough chunks, in a second write: both segments merge into one ivfpq segment trained on all of them
    rng = np.random.default_rng(0)
    vectors = (rng.standard_normal((IVFPQ_MIN_TRAIN, 6)) @ rng.standard_normal((6, index.manifest.dimension)))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    index.add_embedded([{"id": f"v{i}", "text": f"vector {i}"} for i in range(len(vectors))], vectors)
    assert [(s.info.kind, s.info.chunks) for s in index.segments] == [("ivfpq", IVFPQ_MIN_TRAIN + len(TEXTS))]
    reopened = Retriever.open(tmp_path / "idx")
    assert reopened.search(TEXTS[4], mode="dense")[0].id == "4"
    hits = reopened._best_documents(search_dense, reopened.segments, reopened._tombstones, vectors[:20], 40, 10, None)
    assert np.mean([f"v{i}" in hits[i] for i in range(20)]) >= 0.9
    # later segments share its training, and merge with it code by code
    reopened.add([{"id": "late", "text": TEXTS[5] + " again"}])
    assert [s.info.kind for s in reopened.segments] == ["ivfpq", "ivfpq"]
    assert reopened.search(TEXTS[5] + " again", mode="dense")[0].id in ("late", "5")
    # a removed document's codes stay in its segment, tombstoned, and the search's selector skips them
    found = next(i for i in range(20) if f"v{i}" in hits[i])
    reopened.remove([f"v{found}"])
    assert len(reopened._tombstones) == 1 and reopened.segments[0].vectors.ntotal == IVFPQ_MIN_TRAIN + len(TEXTS)
    again = reopened._best_documents(search_dense, reopened.segments, reopened._tombstones, vectors[[found]], 40, 10,
                                     None)
    assert f"v{found}" not in again[0] and len(again[0]) >= 10


def test_ivfpq_on_enough_vectors():
    from retriever.vectors import IVFPQ_MIN_TRAIN, VectorIndex

    rng = np.random.default_rng(0)  # vectors near a 6-d subspace, as embeddings are near a low-d manifold
    vectors = (rng.standard_normal((IVFPQ_MIN_TRAIN, 6)) @ rng.standard_normal((6, 32))).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = VectorIndex.new("ivfpq", 32)
    index.add(np.arange(100, 100 + len(vectors)), vectors)
    index = VectorIndex.merge("ivfpq", 32, [index], dropped=np.array([100]), count=IVFPQ_MIN_TRAIN - 1)
    assert index.ntotal == IVFPQ_MIN_TRAIN - 1
    _, ids = index.search(vectors[:50], 10)
    assert 100 not in ids
    assert np.mean([100 + i in ids[i] for i in range(1, 50)]) >= 0.9
    allowed = np.arange(100, 100 + len(vectors), 7)  # a filter inside the IVF search
    _, ids = index.search(vectors[7:57:7], 10, allowed)
    assert set(ids[ids >= 0]) <= set(allowed) and np.mean([107 + 7 * i in ids[i] for i in range(7)]) >= 0.8


def test_ivfpq_segments_are_read_memory_mapped_and_merge_from_their_files(tmp_path):
    """A saved ivfpq index's codes stay in its file (mapped, read-only) and a merge copies them list by
    list from there: the merged index, tombstones left out, is the one index holding the same vectors."""
    import faiss

    from retriever.vectors import IVFPQ_MIN_TRAIN, VectorIndex

    rng = np.random.default_rng(1)
    vectors = (rng.standard_normal((IVFPQ_MIN_TRAIN + 2000, 6)) @ rng.standard_normal((6, 32))).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = np.arange(len(vectors)) * 3 + 7
    trained = VectorIndex.new("ivfpq", 32)
    trained.add(ids[:IVFPQ_MIN_TRAIN], vectors[:IVFPQ_MIN_TRAIN])
    later = VectorIndex.empty_like(trained)
    later.add(ids[IVFPQ_MIN_TRAIN:], vectors[IVFPQ_MIN_TRAIN:])
    for name, part in (("a", trained), ("b", later)):
        part.save(tmp_path / f"{name}.faiss")
    parts = [VectorIndex.load(tmp_path / f"{name}.faiss", "ivfpq", 32, part.ntotal)
             for name, part in (("a", trained), ("b", later))]
    for part in parts:
        lists = faiss.downcast_InvertedLists(faiss.extract_index_ivf(part.index).invlists)
        assert isinstance(lists, faiss.OnDiskInvertedLists) and lists.read_only
    # a new segment of a mapped one's training is in memory, and encodes as the original training does
    fresh = VectorIndex.empty_like(parts[0])
    assert fresh.ntotal == 0 and isinstance(
        faiss.downcast_InvertedLists(faiss.extract_index_ivf(fresh.index).invlists), faiss.ArrayInvertedLists)
    dropped = ids[::5]
    merged = VectorIndex.merge("ivfpq", 32, parts, dropped, count=len(ids) - len(dropped))
    whole = VectorIndex.empty_like(trained)
    whole.add(ids, vectors)
    whole.index.remove_ids(faiss.IDSelectorBatch(dropped))
    assert merged.ntotal == whole.ntotal == len(ids) - len(dropped)
    queries = vectors[::97]
    (merged_scores, merged_ids), (whole_scores, whole_ids) = merged.search(queries, 10), whole.search(queries, 10)
    np.testing.assert_array_equal(merged_scores, whole_scores)
    assert [set(row) for row in merged_ids] == [set(row) for row in whole_ids] and not np.isin(merged_ids, dropped).any()
    # the merged index saves and maps like any other
    merged.save(tmp_path / "merged.faiss")
    reread = VectorIndex.load(tmp_path / "merged.faiss", "ivfpq", 32, merged.ntotal)
    np.testing.assert_array_equal(reread.search(queries, 10)[0], whole_scores)


def test_opening_with_another_model_is_an_error(model_dir, cls_model_dir, tmp_path):
    Retriever.create(tmp_path / "idx", model_dir).add([{"id": str(i), "text": t} for i, t in enumerate(TEXTS[:3])])
    with pytest.raises(IndexMismatchError, match="fingerprint"):
        Retriever.open(tmp_path / "idx", cls_model_dir)
    assert Retriever.open(tmp_path / "idx", model_dir).search(TEXTS[1])[0].id == "1"


def test_npy_shards_import_as_the_documents_they_embed_and_a_mismatch_names_the_shard(model_dir, cls_model_dir,
                                                                                       tmp_path):
    documents = [{"id": f"d{i}", "title": f"title {i}", "text": t, "team": ["ops", "dev"][i % 2]}
                 for i, t in enumerate(TEXTS[:12])]
    reference = Retriever.create(tmp_path / "reference", model_dir)
    reference.add(documents)
    segment, = reference.segments
    chunk_ids, vectors = segment.vectors.ids_and_vectors()
    row_of = {reference.store.chunks([c])[c][0]: k for k, c in enumerate(chunk_ids.tolist())}  # one passage each
    shards = tmp_path / "shards"
    shards.mkdir()
    for name, part in (("part-0", documents[:7]), ("part-1", documents[7:])):
        np.save(shards / f"{name}.npy", vectors[[row_of[d["id"]] for d in part]])
        (shards / f"{name}.jsonl").write_text("".join(json.dumps(d) + "\n" for d in part))

    imported = tmp_path / "imported"
    result = cli("import", shards, "--index", imported, "--model", model_dir, "--batch-docs", "5")
    assert result.exit_code == 0 and "12 added" in " ".join(result.output.split()), result.output
    opened = Retriever.open(imported)
    for query in (TEXTS[3], "gene protein"):
        ours, theirs = opened.search(query, k=5, mode="dense"), reference.search(query, k=5, mode="dense")
        assert [h.id for h in ours] == [h.id for h in theirs]
        np.testing.assert_allclose([h.score for h in ours], [h.score for h in theirs], atol=1e-6)
    hit, = [h for h in opened.search(TEXTS[2], k=3, mode="dense") if h.id == "d2"]
    assert (hit.title, hit.text, hit.metadata) == ("title 2", TEXTS[2], {"team": "ops"})
    dev = opened.search("gene protein", k=20, where={"team": "dev"})  # filters see the imported metadata
    assert dev and {h.id for h in dev} <= {d["id"] for d in documents if d["team"] == "dev"}
    again = cli("import", shards, "--index", imported, "--model", model_dir)
    assert "0 added, 0 updated" in " ".join(again.output.split())  # a rerun adds nothing twice

    np.save(shards / "wide.npy", np.zeros((2, vectors.shape[1] + 1), np.float32))
    (shards / "wide.jsonl").write_text(json.dumps({"id": "w", "text": "x"}) + "\n")
    wide = f"{shards / 'wide.npy'}: {vectors.shape[1] + 1}-d vectors"
    for args, expected in (((shards / "wide.npy", "--model", model_dir), wide),
                           ((shards / "part-0.npy",), "--model"),
                           ((shards / "part-0.npy", "--model", cls_model_dir), "fingerprint")):
        result = cli("import", *args, "--index", imported)
        assert result.exit_code == 2 and expected in " ".join(result.output.split()), result.output
    (shards / "part-1.jsonl").write_text(json.dumps(documents[7]) + "\n{not json\n")
    result = cli("import", shards / "part-1.npy", "--index", imported, "--model", model_dir)
    assert result.exit_code == 2 and f"{shards / 'part-1.jsonl'}:2: invalid JSON" in result.output, result.output
    assert Retriever.open(imported).info()["documents"] == 12  # no failed import added anything


def test_missing_or_damaged_vectors_are_an_error_not_an_empty_index(model_dir, tmp_path):
    index = tmp_path / "idx"
    Retriever.create(index, model_dir).add([{"id": str(i), "text": t} for i, t in enumerate(TEXTS[:3])])
    segment = json.loads((index / "manifest.json").read_text())["segments"][0]["name"]
    vectors = index / "segments" / segment / "vectors.faiss"
    saved = vectors.read_bytes()
    vectors.unlink()
    result = cli("search", TEXTS[1], "--index", index)
    assert result.exit_code == 2 and f"{vectors}: the vectors file is missing" in result.output
    vectors.write_bytes(saved[: len(saved) // 2])
    result = cli("search", TEXTS[1], "--index", index)
    assert result.exit_code == 2 and f"{vectors}: not a readable FAISS index" in " ".join(result.output.split())
    import faiss

    faiss.write_index(faiss.IndexIDMap2(faiss.IndexFlatIP(64)), str(vectors))
    result = cli("search", TEXTS[1], "--index", index)
    assert result.exit_code == 2 and "holds 0 vectors where the manifest counts 3 chunks" in result.output
    vectors.write_bytes(saved)
    assert Retriever.open(index).search(TEXTS[1])[0].id == "1"


def test_an_empty_ivfpq_index_opens(model_dir, tmp_path):
    Retriever.create(tmp_path / "idx", model_dir, index_type="ivfpq")
    assert Retriever.open(tmp_path / "idx").search(TEXTS[0]) == []


def test_reads_are_safe_from_several_threads(model_dir, tmp_path):
    index = Retriever.create(tmp_path / "idx", model_dir)
    index.add(TEXTS)
    expected = [[h.id for h in index.search(t, k=5, mode="hybrid")] for t in TEXTS]
    results: dict[int, list[str]] = {}

    def worker(i: int) -> None:
        for j in range(i, len(TEXTS), 4):
            results[j] = [h.id for h in index.search(TEXTS[j], k=5, mode="hybrid")]

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [results[j] for j in range(len(TEXTS))] == expected


# ---- documents ---------------------------------------------------------------------------------

def test_reading_a_folder(tmp_path):
    folder = write_corpus(tmp_path / "corpus")
    (folder / "table.csv").write_text("id,title,text,lang\nc1,First,some csv text,en\nc2,Second,,en\n")
    corpus = read_corpus([folder])
    by_id = {d.id: d for d in corpus.documents}
    assert set(by_id) >= {"notes/n0.txt", "guide.md", "page.html", "r0", "r5", "c1"}
    assert by_id["guide.md"].title == "Late chunking guide"
    assert by_id["page.html"].title == "Vaccine trials" and "var x" not in by_id["page.html"].text
    assert by_id["r2"].metadata == {"year": 2002} and by_id["r2"].title == "record 2"
    assert by_id["c1"].metadata == {"lang": "en"}
    assert [str(p) for p in corpus.problems] == [f"{folder / 'table.csv'}:3: no 'text' (or it is empty)"]


def test_html_text():
    title, text = html_text("<title> A  page </title><p>one</p><div>two <b>three</b></div><style>x</style>")
    assert title == "A page" and text == "one\ntwo three"


@pytest.mark.parametrize("page,heading,content,furniture", [
    ("sphinx", "Restrictions", "does not support concurrent read/write access",
     ["Navigation", "Table of Contents", "Report a Bug", "Show Source", "Quick search", "Created using Sphinx",
      "previous", "¶"]),
    ("mkdocs", "site_name", "The title shown in the browser tab",
     ["Getting started", "Changelog", "Go to repository", "Made with Material", "Search"]),
    ("news", "Traffic returns to the old town", "repair cost 41 million euros",
     ["cookies", "Subscribe", "Most read", "Storm warning", "Privacy policy", "All rights reserved"]),
])
def test_html_pages_keep_their_main_content(page, heading, content, furniture):
    """Real sites' page shapes (tests/html/: a Sphinx page, an MkDocs Material page, a news article; text
    written for the tests): the article with its headings on their own lines, none of the page furniture."""
    title, text = html_text((Path(__file__).parent / "html" / f"{page}.html").read_text(encoding="utf-8"))
    lines = text.splitlines()
    assert title and heading in lines and content in text
    assert not [word for word in furniture if word in text]


def test_beir_folder_reads_only_its_corpus(tmp_path):
    (tmp_path / "corpus.jsonl").write_text('{"_id": "1", "title": "t", "text": "corpus text"}\n')
    (tmp_path / "queries.jsonl").write_text('{"_id": "q", "text": "a query"}\n')
    assert [d.id for d in read_corpus([tmp_path]).documents] == ["1"]


def test_read_corpus_spills_documents_and_reads_jsonl_a_line_at_a_time(tmp_path):
    """A corpus holds its documents on disk, not in memory: iterating them twice (as sync does: once to
    diff, once to embed) gives the same documents; a JSON Lines file is read a line at a time, so a bad
    line is a problem of that line and the others load."""
    rows = [json.dumps({"id": f"d{i}", "text": f"text {i}", "team": "ops" if i % 2 else "dev"}).encode()
            for i in range(5)]
    rows[2] = b'{"id": "d2", "text": "caf\xe9"}'
    (tmp_path / "docs.jsonl").write_bytes(b"\n".join(rows) + b"\n")
    corpus = read_corpus([tmp_path])
    assert not isinstance(corpus.documents, list) and len(corpus.documents) == 4
    first, second = list(corpus.documents), list(corpus.documents)
    assert first == second and [d.id for d in first] == ["d0", "d1", "d3", "d4"]
    assert first[1].metadata == {"team": "ops"} and first[1].source == str((tmp_path / "docs.jsonl").resolve())
    assert [str(p) for p in corpus.problems] == [f"{tmp_path / 'docs.jsonl'}:3: not valid UTF-8 (byte 25 of the line)"]


def test_snippet_shows_the_stretch_with_the_most_query_words():
    """A long window's snippet is where the query's words are together, not its first mention of one."""
    from retriever.cli import snippet

    text = ("The tar command. " + "Filler about other things. " * 40 + "To extract a tar archive compressed with "
            "gzip, run tar -xzf. " + "More filler. " * 30)
    shown = snippet(text, "extract a gzip tar archive")
    assert "extract a tar archive compressed with gzip" in shown and shown.startswith("...")
    assert snippet(text, "no such words").startswith("The tar command.")


# ---- the CLI -----------------------------------------------------------------------------------

def cli(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_cli_index_search_info_remove(model_dir, tmp_path):
    folder = write_corpus(tmp_path / "corpus")
    index = tmp_path / "idx"
    result = cli("index", folder, "--index", index, "--model", model_dir)
    assert result.exit_code == 0, result.output
    assert "14 added" in " ".join(result.output.split())

    result = cli("search", TEXTS[3], "--index", index, "--json", "-k", "3", "--dense")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["query"] == TEXTS[3] and len(payload["hits"]) == 3
    top = payload["hits"][0]
    assert top["id"] == "notes/n3.txt" and top["rank"] == 1
    assert set(top) == {"rank", "id", "score", "title", "passage", "span", "source", "metadata"}

    result = cli("search", "vaccine dose trial", "--index", index, "--hybrid", "--json")
    assert json.loads(result.stdout)["hits"][0]["id"] == "page.html"
    for flags in (["--lexical"], ["--fusion", "zscore:0.4"], ["--dense"]):
        result = cli("search", "vaccine dose trial", "--index", index, *flags, "--json")
        assert result.exit_code == 0, result.output
        payload = json.loads(result.stdout)
        assert payload["mode"] == {"--lexical": "lexical", "--fusion": "hybrid", "--dense": "dense"}[flags[0]]
        assert payload["score"] == {"--lexical": "BM25", "--fusion": "fused (zscore:0.4)", "--dense": "cosine"}[flags[0]]
        if flags[0] != "--dense":
            assert payload["hits"][0]["id"] == "page.html"
    payload = json.loads(cli("search", "vaccine dose trial", "--index", index, "--json").stdout)
    assert payload["mode"] == "hybrid" and payload["fusion"] == str(DEFAULT_FUSION)
    for where, expected in ((["source=" + str(folder / "notes")], "notes/"), (["id_col=x"], None)):
        result = cli("search", "vaccine dose trial", "--index", index, "--json", *[f"--where={w}" for w in where])
        if expected is None:
            assert result.exit_code == 2 and "no document has a metadata field 'id_col'" in result.output
        else:
            hits = json.loads(result.stdout)["hits"]
            assert hits and all(h["id"].startswith(expected) for h in hits)
    result = cli("search", "vaccine", "--index", index, "--lexical", "--hybrid")
    assert result.exit_code == 2 and "pick one search mode" in result.output
    result = cli("search", "vaccine", "--index", index, "--fusion", "borda")
    assert result.exit_code == 2 and "expected one of rrf" in result.output

    result = cli("search", TEXTS[7], "--index", index)  # the table
    assert result.exit_code == 0 and "r1" in result.stdout and "record 1" in result.stdout

    result = cli("info", "--index", index, "--json")
    facts = json.loads(result.stdout)
    assert facts["documents"] == 14 and facts["chunks"] == 14 and facts["dimension"] == 64
    assert facts["model"] == str(model_dir.resolve()) and facts["index_type"] == "flat"
    assert facts["size_bytes"] > 0 and facts["chunking"]["mode"] == "window"
    info_table = cli("info", "--index", index).stdout
    assert "documents" in info_table and f"hybrid (fusion {DEFAULT_FUSION})" in info_table

    result = cli("remove", "r1", "missing-id", "--index", index)
    assert result.exit_code == 0 and "1 removed" in result.output and "missing-id" in result.output
    assert cli("remove", "missing-id", "--index", index).exit_code == 1
    assert "r1" not in [h["id"] for h in json.loads(cli("search", TEXTS[7], "--index", index, "--json",
                                                        "-k", "20").stdout)["hits"]]


def test_cli_reindex_embeds_only_changes_and_applies_deletions(model_dir, tmp_path):
    folder = write_corpus(tmp_path / "corpus")
    index = tmp_path / "idx"
    assert cli("index", folder, "--index", index, "--model", model_dir).exit_code == 0
    result = cli("index", folder, "--index", index)
    assert "0 added, 0 updated, 14 unchanged, 0 removed; 0 chunks" in " ".join(result.output.split())

    (folder / "notes" / "n1.txt").write_text(TEXTS[20])  # changed
    (folder / "notes" / "n2.txt").unlink()  # deleted file
    (folder / "new.txt").write_text(TEXTS[21])  # new
    rows = (folder / "records.jsonl").read_text().splitlines()
    (folder / "records.jsonl").write_text("\n".join(rows[:-1]) + "\n")  # record r5 dropped
    result = cli("index", folder, "--index", index)
    assert result.exit_code == 0, result.output
    assert "1 added, 1 updated, 11 unchanged, 2 removed; 2 chunks" in " ".join(result.output.split())
    hits = json.loads(cli("search", TEXTS[20], "--index", index, "--json", "-k", "20").stdout)["hits"]
    ids = [h["id"] for h in hits]
    assert ids[0] == "notes/n1.txt" and "notes/n2.txt" not in ids and "r5" not in ids and "new.txt" in ids
    # documents indexed from other paths are not touched by a re-index of this one
    other = tmp_path / "other.txt"
    other.write_text(TEXTS[25])
    assert cli("index", other, "--index", index).exit_code == 0
    assert "0 removed" in cli("index", folder, "--index", index).output
    assert json.loads(cli("info", "--index", index, "--json").stdout)["documents"] == 14


def test_a_file_that_became_unreadable_keeps_its_indexed_version_and_says_so(model_dir, tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text(TEXTS[0])
    (tmp_path / "docs" / "b.txt").write_text(TEXTS[1])
    index = tmp_path / "idx"
    assert cli("index", tmp_path / "docs", "--index", index, "--model", model_dir).exit_code == 0
    (tmp_path / "docs" / "b.txt").write_bytes(b"caf\xe9 is not UTF-8")
    result = cli("index", tmp_path / "docs", "--index", index)
    output = " ".join(result.output.split())
    assert result.exit_code == 0 and "b.txt: not valid UTF-8" in output
    assert "0 added, 0 updated, 1 unchanged, 0 removed" in output
    assert "kept the indexed version of 1 document whose file could not be read now" in output and "b.txt" in output
    assert Retriever.open(index).search(TEXTS[1], k=1, mode="dense")[0].id == "b.txt"
    table = cli("search", TEXTS[1], "--index", index).stdout
    assert "fused" in table and "zscore:0.2" in " ".join(table.split())


def test_files_of_other_types_are_counted_and_listed_on_request(model_dir, tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text(TEXTS[0])
    (tmp_path / "docs" / "logo.png").write_bytes(b"\x89PNG")
    (tmp_path / "docs" / "tool.py").write_text("print(1)")
    (tmp_path / "docs" / ".hidden.py").write_text("print(2)")
    result = cli("index", tmp_path / "docs", "--index", tmp_path / "idx", "--model", model_dir)
    output = " ".join(result.output.split())
    assert result.exit_code == 0 and "2 files of other types ignored (.png 1, .py 1); --verbose lists them" in output
    assert "1 document read" in output
    result = cli("index", tmp_path / "docs", "--index", tmp_path / "idx", "--verbose")
    assert "ignored " + str(tmp_path / "docs" / "tool.py") in result.output and "hidden" not in result.output


def test_one_file_is_one_id_whatever_the_path_given(model_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text(TEXTS[0])
    (tmp_path / "docs" / "b.txt").write_text(TEXTS[1])
    assert cli("index", "docs", "--index", "idx", "--model", model_dir).exit_code == 0
    result = cli("index", "docs/a.txt", "--index", "idx")  # the file by its own path: the same document
    assert "0 added, 0 updated, 1 unchanged, 0 removed" in " ".join(result.output.split())
    result = cli("index", "docs", str(tmp_path / "docs" / "b.txt"), "--index", "idx")  # reached twice: read once
    assert "2 documents read" in " ".join(result.output.split())
    index = Retriever.open(tmp_path / "idx")
    assert index.info()["documents"] == 2 and index.search(TEXTS[0], k=1, mode="dense")[0].id == "a.txt"


def test_cli_late_chunking_returns_the_best_passage(model_dir, tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "long.txt").write_text(LONG)
    index = tmp_path / "idx"
    result = cli("index", tmp_path / "docs", "--index", index, "--model", model_dir, "--chunking", "late",
                 "--passage-tokens", "128")
    assert result.exit_code == 0, result.output
    facts = json.loads(cli("info", "--index", index, "--json").stdout)
    assert facts["documents"] == 1 and facts["chunks"] > 10 and facts["chunking"]["passage_tokens"] == 128
    hit = json.loads(cli("search", "protein cell gene", "--index", index, "--json").stdout)["hits"][0]
    start, end = hit["span"]
    assert hit["id"] == "long.txt" and hit["passage"] == LONG[start:end] and 0 < end - start < len(LONG)
    result = cli("index", tmp_path / "docs", "--index", index, "--chunking", "window")
    assert result.exit_code == 2 and "created with --chunking late" in result.output


IMPORTS_OF = textwrap.dedent("""
    import sys
    from retriever_command import app
    try:
        app(sys.argv[1:], standalone_mode=False)
    except SystemExit:
        pass
    print(" ".join(sorted({m.split(".")[0] for m in sys.modules})), file=sys.stderr)
""")
HEAVY = {"sentence_transformers", "transformers", "mteb", "datasets", "matplotlib", "evals", "recipes"}


def test_search_imports_only_what_it_needs(model_dir, tmp_path):
    """`retriever search --help` imports neither torch nor faiss; a dense search nothing heavy beyond
    torch and faiss (no sentence-transformers, transformers, BM25, ...)."""
    index = tmp_path / "idx"
    Retriever.create(index, model_dir).add([{"id": str(i), "text": t} for i, t in enumerate(TEXTS[:5])])

    def imported(*args: str) -> set[str]:
        result = subprocess.run([sys.executable, "-c", IMPORTS_OF, *args], capture_output=True, text=True, cwd=ROOT,
                                timeout=120)
        return set(result.stderr.split("\n")[-2].split())

    assert not imported("search", "--help") & (HEAVY | {"torch", "faiss", "bm25s", "numpy"})
    assert not imported("search", TEXTS[1], "--index", str(index), "--dense", "--json") & (HEAVY | {"bm25s"})


def test_cli_queries_file_writes_a_trec_run(model_dir, tmp_path):
    folder = write_corpus(tmp_path / "corpus")
    index = tmp_path / "idx"
    cli("index", folder, "--index", index, "--model", model_dir)
    queries = tmp_path / "queries.tsv"
    queries.write_text(f"q1\t{TEXTS[0]}\nq2\t{TEXTS[8]}\n")
    run = tmp_path / "run.trec"
    result = cli("search", "--queries", queries, "--index", index, "-k", "4", "--output", run, "--dense")
    assert result.exit_code == 0, result.output
    lines = [line.split() for line in run.read_text().splitlines()]
    assert len(lines) == 8 and lines[0][:4] == ["q1", "Q0", "notes/n0.txt", "1"] and lines[4][2] == "r2"


def test_cli_bad_inputs(model_dir, tmp_path):
    index = tmp_path / "idx"
    result = cli("index", tmp_path / "missing", "--index", index, "--model", model_dir)
    assert result.exit_code == 2 and "missing: no such file or folder" in result.output

    empty = tmp_path / "empty"
    empty.mkdir()
    result = cli("index", empty, "--index", index, "--model", model_dir)
    assert result.exit_code == 2 and "no documents found" in result.output

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "ok.txt").write_text("alpha beta gamma")
    (bad / "binary.txt").write_bytes(b"\x00\x01\x02binary")
    (bad / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (bad / "rows.jsonl").write_text('{"id": "x1", "text": "fine"}\n{"id": "x2", "text": \n'
                                    '{"id": "ok.txt", "text": "dup"}\n')
    (bad / "locked.md").write_text("secret")
    os.chmod(bad / "locked.md", 0)
    result = cli("index", bad, "--index", index, "--model", model_dir)
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    assert "binary.txt: binary file" in output
    assert "latin1.txt: not valid UTF-8 (byte 3)" in output
    assert "rows.jsonl:2: invalid JSON" in output
    assert "duplicate id 'ok.txt'" in output
    readable = os.geteuid() == 0  # root reads anything
    assert readable or "locked.md: cannot read" in output
    assert f"{3 if readable else 2} added" in output and "skipped (listed above)" in output
    assert "Traceback" not in result.output

    result = cli("search", "   ", "--index", index)
    assert result.exit_code == 2 and "the query is empty" in result.output
    result = cli("search", "x", "--index", tmp_path / "nowhere")
    assert result.exit_code == 2 and "no index here" in result.output
    result = cli("index", bad, "--index", tmp_path / "idx2", "--model", tmp_path / "no-model")
    assert result.exit_code == 2 and "no such model folder" in result.output


# ---- interrupted and concurrent writers --------------------------------------------------------

# A writer that stops for good half-way through a write (after the new generation's store and vectors
# are written, before the commit), so the test can kill it there or race it.
STALLED_WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import retriever.segment as segment_module
    from retriever import Retriever

    def stalled_save(lexical, directory):  # inside the segment's building folder
        Path(sys.argv[2]).write_text("stalled")
        time.sleep(600)

    segment_module.LexicalIndex.save = stalled_save
    Retriever.open(sys.argv[1]).add([{"id": "late", "text": "added by the killed writer"}])
""")


def _start_stalled_writer(index: Path, marker: Path) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", STALLED_WRITER, str(index), str(marker)], cwd=ROOT)
    deadline = time.time() + 120
    while not marker.exists():
        assert process.poll() is None, "the writer ended before stalling"
        assert time.time() < deadline, "the writer did not reach the middle of its write"
        time.sleep(0.1)
    return process


def test_kill_9_mid_write_leaves_the_previous_index_usable(model_dir, tmp_path):
    index = tmp_path / "idx"
    Retriever.create(index, model_dir).add([{"id": str(i), "text": t} for i, t in enumerate(TEXTS[:10])])
    writer = _start_stalled_writer(index, tmp_path / "marker")
    assert list(index.glob("segments/.building-*")), "the killed writer had a segment under construction"
    writer.send_signal(signal.SIGKILL)
    writer.wait()

    reopened = Retriever.open(index)
    assert reopened.info()["documents"] == 10
    assert reopened.search(TEXTS[4])[0].id == "4"
    assert reopened.search("added by the killed writer", k=10)[0].id != "late"
    reopened.add([{"id": "after", "text": TEXTS[20]}])  # the lock died with the writer; its leftovers go
    assert not list(index.glob("segments/.building-*")) and len(list(index.glob("segments/*"))) == 2
    assert Retriever.open(index).search(TEXTS[20])[0].id == "after"


def test_ctrl_c_mid_index_leaves_the_index_as_it_was(model_dir, tmp_path):
    index = tmp_path / "idx"
    Retriever.create(index, model_dir).add([{"id": str(i), "text": t} for i, t in enumerate(TEXTS[:5])])
    (tmp_path / "more").mkdir()
    (tmp_path / "more" / "new.txt").write_text(TEXTS[9])
    script = STALLED_WRITER.replace(
        'Retriever.open(sys.argv[1]).add([{"id": "late", "text": "added by the killed writer"}])',
        'from retriever.cli import app; app(["index", sys.argv[3], "--index", sys.argv[1]])')
    marker = tmp_path / "marker"
    writer = subprocess.Popen([sys.executable, "-c", script, str(index), str(marker), str(tmp_path / "more")],
                              cwd=ROOT, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not marker.exists():
        assert writer.poll() is None and time.time() < deadline, "the CLI did not reach the middle of its write"
        time.sleep(0.1)
    writer.send_signal(signal.SIGINT)
    _, stderr = writer.communicate(timeout=60)
    assert writer.returncode == 130 and "interrupted: what was committed stays in the index" in stderr
    assert not list(index.glob("segments/.building-*"))  # cleaned up on the way out
    assert Retriever.open(index).info()["documents"] == 5


def test_index_progress_shows_documents_tokens_per_second_and_the_eta(model_dir, tmp_path):
    (tmp_path / "docs").mkdir()
    for i in range(7):
        (tmp_path / "docs" / f"d{i}.txt").write_text(TEXTS[i])
    result = subprocess.run([sys.executable, "-m", "retriever_command", "index", str(tmp_path / "docs"), "--index",
                             str(tmp_path / "idx"), "--model", str(model_dir), "--commit-every", "2"],
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    # the bar's last state (rich on stderr): documents done of all, tokens/s, and the time remaining
    assert re.search(r"embedding\s.*\s7/7 documents [\d,]+ tokens/s \d+:\d\d:\d\d", result.stderr), result.stderr


def test_a_killed_index_run_keeps_its_commits_and_a_rerun_embeds_only_the_rest(model_dir, tmp_path):
    (tmp_path / "docs").mkdir()
    for i in range(7):
        (tmp_path / "docs" / f"d{i}.txt").write_text(TEXTS[i])
    index = tmp_path / "idx"
    Retriever.create(index, model_dir)
    # the third commit (documents 5 and 6 of 7, two a commit) stalls before it is written
    script = STALLED_WRITER.replace("segment_module.LexicalIndex.save = stalled_save", textwrap.dedent("""
        saved = segment_module.LexicalIndex.save
        calls = []
        def third_stalls(lexical, directory):
            calls.append(1)
            return stalled_save(lexical, directory) if len(calls) == 3 else saved(lexical, directory)
        segment_module.LexicalIndex.save = third_stalls""")).replace(
        'Retriever.open(sys.argv[1]).add([{"id": "late", "text": "added by the killed writer"}])',
        'from retriever.cli import app; app(["index", sys.argv[3], "--index", sys.argv[1], "--commit-every", "2"])')
    marker = tmp_path / "marker"
    writer = subprocess.Popen([sys.executable, "-c", script, str(index), str(marker), str(tmp_path / "docs")],
                              cwd=ROOT, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not marker.exists():
        assert writer.poll() is None and time.time() < deadline, "the CLI did not reach its third commit"
        time.sleep(0.1)
    writer.kill()
    writer.wait(timeout=60)
    assert Retriever.open(index).info()["documents"] == 4  # two commits of two
    result = cli("index", tmp_path / "docs", "--index", index, "--commit-every", "2")
    assert result.exit_code == 0, result.output
    assert "3 added, 0 updated, 4 unchanged" in " ".join(result.output.split())
    reopened = Retriever.open(index)
    assert reopened.info()["documents"] == 7 and reopened.search(TEXTS[6], mode="dense")[0].id == "d6.txt"


def test_a_second_writer_gets_a_clear_message(model_dir, tmp_path):
    index = tmp_path / "idx"
    Retriever.create(index, model_dir).add([{"id": str(i), "text": t} for i, t in enumerate(TEXTS[:3])])
    writer = _start_stalled_writer(index, tmp_path / "marker")
    try:
        with pytest.raises(IndexLockedError, match=f"another process is writing to this index \\(pid {writer.pid}"):
            Retriever.open(index).add(["second writer"])
        (tmp_path / "more").mkdir()
        (tmp_path / "more" / "a.txt").write_text("second writer")
        result = cli("index", tmp_path / "more", "--index", index, "--wait", "0.5")
        assert result.exit_code == 2 and "another process is writing" in result.output
        assert Retriever.open(index).search(TEXTS[1])[0].id == "1"  # readers are not blocked
    finally:
        writer.kill()
        writer.wait()
    assert cli("index", tmp_path / "more", "--index", index).exit_code == 0
