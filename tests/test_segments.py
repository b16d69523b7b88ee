"""Segments: writes that cost what they change, tombstones, the merge policy, BM25 over segments,
interrupted commits, and the upgrade of format 1 indexes."""

from __future__ import annotations

import json
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from retriever import Retriever
from retriever.lexical import LexicalIndex, tokenize
from retriever.segment import MAX_MERGED_BYTES, SEGMENTS_PER_TIER, Segment, SegmentInfo, merge_plan, search_lexical
from tests.conftest import make_corpus

ROOT = Path(__file__).resolve().parents[1]
FORMAT_1 = Path(__file__).parent / "data" / "index-format-1"  # made by the format 1 code (62badea)
TEXTS = [t for t in make_corpus(200, 11) if len(t.split()) >= 15][:40]


def rankings(index: Retriever, queries: list[str], mode: str) -> list[list[tuple[str, float]]]:
    return [[(h.id, h.score) for h in hits] for hits in index.search_batch(queries, k=10, mode=mode)]


def store_rows(index: Path) -> dict[str, int]:
    db = sqlite3.connect(index / "store.sqlite")
    try:
        return {table: db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] for table in ("documents", "chunks")}
    finally:
        db.close()


def assert_counts_agree(index: Path) -> None:
    """Manifest, store and segments count the same live chunks and documents."""
    reopened = Retriever.open(index)
    manifest = json.loads((index / "manifest.json").read_text())
    held = sum(s.vectors.ntotal for s in reopened.segments)
    assert [s["chunks"] for s in manifest["segments"]] == [s.vectors.ntotal for s in reopened.segments]
    assert held - len(reopened._tombstones) == manifest["chunks"]
    assert reopened.store.counts() == (manifest["documents"], manifest["chunks"])


def test_bm25_over_segments_is_the_bm25_of_one_index():
    texts = make_corpus(300, 3)
    one = LexicalIndex.build([(i, "", t) for i, t in enumerate(texts)])

    class Part:  # what search_lexical reads of a segment
        def __init__(self, lexical):
            self.lexical, self.chunk_ids = lexical, lexical.chunk_ids

    parts = [Part(LexicalIndex.build([(i, "", texts[i]) for i in range(a, b)])) for a, b in [(0, 200), (200, 290),
                                                                                            (290, 300)]]
    queries = tokenize(make_corpus(5, 4))
    for expected, got in zip(one.search(queries, 20), search_lexical(parts, queries, 20, None, np.zeros(0, int))):
        assert [c for c, _ in got] == [c for c, _ in expected]
        assert np.allclose([s for _, s in got], [s for _, s in expected], rtol=1e-5)


def test_a_merged_bm25_is_the_bm25_built_over_its_texts(tmp_path, monkeypatch):
    monkeypatch.setattr("retriever.lexical.MERGE_STEP", 100)  # its scores computed in several steps
    texts = make_corpus(300, 5) + ["", "error " * 700 + "log"]  # an empty chunk; a term 700 times in one
    titles = ["title"] * 300 + ["", "title"]
    parts = []
    for number, (a, b) in enumerate([(200, 302), (0, 120), (120, 200)]):  # merged out of id order
        LexicalIndex.build([(i, titles[i], texts[i]) for i in range(a, b)]).save(tmp_path / str(number))
        parts.append(LexicalIndex.load(tmp_path / str(number)))  # memory-mapped, as a merge reads them
    dropped = np.arange(0, 302, 7)
    merged = LexicalIndex.merge(parts, dropped)
    kept = [i for i in range(302) if i not in set(dropped.tolist())]
    built = LexicalIndex.build([(i, titles[i], texts[i]) for i in kept])
    assert np.array_equal(merged.chunk_ids, built.chunk_ids) and np.array_equal(merged.lengths, built.lengths)
    for key in ("data", "indices", "indptr"):  # columns in another order: compare term by term
        assert len(merged.bm25.scores[key]) == len(built.bm25.scores[key])
    assert set(merged.bm25.vocab_dict) == set(built.bm25.vocab_dict)
    queries = tokenize(make_corpus(20, 6)) + [["error"], ["log", "error"]]
    for got, expected in zip(merged.search(queries, 30), built.search(queries, 30)):
        assert got == expected  # same chunks, same float32 scores
    merged.save(tmp_path / "merged")
    assert LexicalIndex.load(tmp_path / "merged").search(queries, 30) == built.search(queries, 30)
    assert LexicalIndex.merge(parts, np.arange(302)).bm25 is None


def test_a_merged_flat_index_is_the_flat_index_of_its_vectors(tmp_path):
    """Parts read from their files, merged out of id order with some ids dropped, into a result
    allocated once at its count: the same ids, vectors and search results as one index of what is left."""
    from retriever.vectors import VectorIndex, VectorIndexError

    rng = np.random.default_rng(2)
    vectors = rng.standard_normal((500, 24)).astype(np.float32)
    ids = np.arange(500) * 2 + 5
    parts = []
    for number, (a, b) in enumerate([(300, 500), (0, 170), (170, 300)]):
        part = VectorIndex.new("flat", 24)
        part.add(ids[a:b], vectors[a:b])
        part.save(tmp_path / f"{number}.faiss")
        parts.append(VectorIndex.load(tmp_path / f"{number}.faiss", "flat", 24, b - a))
    dropped = ids[::9]
    keep = ~np.isin(ids, dropped)
    merged = VectorIndex.merge("flat", 24, iter(parts), dropped, count=int(keep.sum()))
    order = np.r_[300:500, 0:300]  # the parts' order
    whole = VectorIndex.new("flat", 24)
    whole.add(ids[order][keep[order]], vectors[order][keep[order]])
    (got_ids, got_vectors), (expected_ids, expected_vectors) = merged.ids_and_vectors(), whole.ids_and_vectors()
    assert np.array_equal(got_ids, expected_ids) and np.array_equal(got_vectors, expected_vectors)
    queries = rng.standard_normal((7, 24)).astype(np.float32)
    for got, expected in zip(merged.search(queries, 20), whole.search(queries, 20)):
        assert np.array_equal(got, expected)
    assert merged.index.reconstruct(int(ids[1])).tolist() == vectors[1].tolist()  # by id: the reverse map is built
    merged.save(tmp_path / "merged.faiss")
    reread = VectorIndex.load(tmp_path / "merged.faiss", "flat", 24, merged.ntotal)
    assert np.array_equal(reread.ids_and_vectors()[1], expected_vectors)
    for wrong in (int(keep.sum()) - 1, int(keep.sum()) + 1):
        with pytest.raises(VectorIndexError, match=f"a merge into {wrong} vectors"):
            VectorIndex.merge("flat", 24, iter(parts), dropped, count=wrong)


def test_a_write_adds_a_segment_and_ten_merge_into_one(st_model_dir, tmp_path):
    index = Retriever.create(tmp_path / "idx", st_model_dir)
    for i in range(SEGMENTS_PER_TIER - 1):
        index.add([{"id": f"d{i}", "text": TEXTS[i]}])
    assert len(index.segments) == SEGMENTS_PER_TIER - 1
    first = index.segments[0].directory
    index.add([{"id": f"d{SEGMENTS_PER_TIER - 1}", "text": TEXTS[SEGMENTS_PER_TIER - 1]}])
    assert len(index.segments) == 1 and index.segments[0].vectors.ntotal == SEGMENTS_PER_TIER
    assert not first.exists(), "merged-away segments are retired"
    fresh = Retriever.create(tmp_path / "fresh", st_model_dir)
    fresh.add([{"id": f"d{i}", "text": TEXTS[i]} for i in range(SEGMENTS_PER_TIER)])
    queries = TEXTS[:5]
    for mode in ("dense", "lexical"):
        for got, expected in zip(rankings(index, queries, mode), rankings(fresh, queries, mode)):
            assert [d for d, _ in got] == [d for d, _ in expected]
            assert np.allclose([s for _, s in got], [s for _, s in expected], rtol=1e-5, atol=1e-6)
    assert_counts_agree(tmp_path / "idx")


def test_segments_with_tombstones_search_as_a_fresh_index_to_the_bit(st_model_dir, tmp_path):
    """Flat dense search over several segments with live tombstones, before any merge: the same ids and the
    same scores, exactly, as one fresh index of the documents left (the same vectors in both)."""
    index = Retriever.create(tmp_path / "idx", st_model_dir)
    texts = TEXTS[:12] + [TEXTS[20]]
    vectors = {f"d{i}": v for i, v in enumerate(index.model.encode_documents(texts)[0])}
    docs = [{"id": f"d{i}", "text": t} for i, t in enumerate(texts[:12])]
    for part in (docs[:5], docs[5:9], docs[9:]):
        index.add_embedded(part, np.stack([vectors[d["id"]] for d in part]))
    index.remove(["d1", "d6"])
    index.add_embedded([{"id": "d2", "text": TEXTS[20]}], vectors["d12"][None])  # replaced: a tombstone too
    assert len(index.segments) == 4 and len(index._tombstones) == 3
    left = [d for d in docs if d["id"] not in ("d1", "d2", "d6")] + [{"id": "d2", "text": TEXTS[20]}]
    fresh = Retriever.create(tmp_path / "fresh", st_model_dir)
    fresh.add_embedded(left, np.stack([vectors[d["id"]] if d["id"] != "d2" else vectors["d12"] for d in left]))
    queries = TEXTS[:6] + [TEXTS[20]]
    assert rankings(index, queries, "dense") == rankings(fresh, queries, "dense")


def test_deletions_are_tombstones_until_a_merge_drops_them(st_model_dir, tmp_path):
    index = Retriever.create(tmp_path / "idx", st_model_dir)
    index.add([{"id": f"d{i}", "text": t} for i, t in enumerate(TEXTS[:10])])
    segment = index.segments[0]
    index.remove(["d1", "d2"])
    index.add([{"id": "d3", "text": TEXTS[20]}])  # replaced: its old chunk is a tombstone too
    assert index.segments[0] is segment and len(index._tombstones) == 3
    ids = [h.id for h in index.search(TEXTS[1], k=10, mode="dense")]
    assert "d1" not in ids and "d2" not in ids and len(ids) == 8
    assert index.search(TEXTS[20], k=1)[0].id == "d3" and index.search(TEXTS[3], k=1, mode="lexical")[0].id != "d3"
    assert index.search(TEXTS[4], k=10, where={"source": "nowhere"}) == []
    assert_counts_agree(tmp_path / "idx")
    # more than half of the first segment deleted: it is rewritten without them
    index.remove(["d4", "d5", "d6"])
    assert [s.vectors.ntotal for s in index.segments] == [1, 4] and len(index._tombstones) == 0
    assert store_rows(tmp_path / "idx") == {"documents": 5, "chunks": 5}, "rows no snapshot sees are purged"
    index.add([{"id": "x", "text": TEXTS[30]}])
    assert sorted(h.id for h in index.search(TEXTS[0], k=10, mode="dense")) == ["d0", "d3", "d7", "d8", "d9", "x"]
    assert_counts_agree(tmp_path / "idx")
    # once merges dropped the tombstones, searches equal a fresh index's of the same documents
    fresh = Retriever.create(tmp_path / "fresh", st_model_dir)
    fresh.add([{"id": f"d{i}", "text": TEXTS[i]} for i in (0, 7, 8, 9)] + [{"id": "d3", "text": TEXTS[20]},
                                                                         {"id": "x", "text": TEXTS[30]}])
    for mode in ("dense", "lexical"):
        for got, expected in zip(rankings(index, TEXTS[:8], mode), rankings(fresh, TEXTS[:8], mode)):
            assert [d for d, _ in got] == [d for d, _ in expected]
            assert np.allclose([s for _, s in got], [s for _, s in expected], rtol=1e-5, atol=1e-6)


def test_a_reader_sees_each_new_commit(st_model_dir, tmp_path):
    Retriever.create(tmp_path / "idx", st_model_dir).add([{"id": "a", "text": TEXTS[0]}])
    reader, writer = Retriever.open(tmp_path / "idx"), Retriever.open(tmp_path / "idx")
    assert [h.id for h in reader.search(TEXTS[1], k=5)] == ["a"]
    writer.add([{"id": "b", "text": TEXTS[1]}])
    assert reader.search(TEXTS[1], k=1)[0].id == "b" and reader.info()["documents"] == 2
    writer.remove(["a"])
    assert [h.id for h in reader.search(TEXTS[0], k=5)] == ["b"]


# A writer killed after its store rows are committed and before its manifest is: the next writer rolls back.
STALLED_COMMIT = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from retriever import Retriever
    from retriever.manifest import IndexManifest

    def stalled_write(self, directory):
        Path(sys.argv[2]).write_text("stalled")
        time.sleep(600)

    index = Retriever.open(sys.argv[1])
    IndexManifest.write = stalled_write
    index.add([{"id": "d0", "text": "replaced by the killed writer"}, {"id": "late", "text": "late"}])
""")


def test_kill_9_between_the_store_and_the_manifest_loses_nothing(st_model_dir, tmp_path):
    index = tmp_path / "idx"
    Retriever.create(index, st_model_dir).add([{"id": f"d{i}", "text": t} for i, t in enumerate(TEXTS[:6])])
    before = store_rows(index)
    marker = tmp_path / "marker"
    writer = subprocess.Popen([sys.executable, "-c", STALLED_COMMIT, str(index), str(marker)], cwd=ROOT)
    deadline = time.time() + 120
    while not marker.exists():
        assert writer.poll() is None and time.time() < deadline, "the writer did not reach its manifest"
        time.sleep(0.1)
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    assert store_rows(index)["documents"] == before["documents"] + 2, "the killed writer's rows are in the store"

    reopened = Retriever.open(index)
    assert reopened.info()["documents"] == 6 and reopened.search(TEXTS[0], k=1)[0].id == "d0"
    assert reopened.search("replaced by the killed writer late", k=6, mode="lexical") == []
    reopened.add([{"id": "after", "text": TEXTS[10]}])  # rolls back the killed write first
    assert store_rows(index) == {"documents": 7, "chunks": 7}
    assert [h.id for h in reopened.search(TEXTS[0], k=1)] == ["d0"] and "late" not in {
        h.id for h in reopened.search("late", k=7)}
    assert_counts_agree(index)


def test_a_format_1_index_is_upgraded_in_place(tmp_path):
    index = tmp_path / "idx"
    shutil.copytree(FORMAT_1, index)
    assert json.loads((index / "manifest.json").read_text())["format_version"] == 1
    upgraded = Retriever.open(index)
    manifest = json.loads((index / "manifest.json").read_text())
    assert manifest["format_version"] == 2 and manifest["generation"] == "gen-000003"
    assert [s["chunks"] for s in manifest["segments"]] == [3] and not list(index.glob("gen-*"))
    assert upgraded.info()["documents"] == 3
    assert upgraded.search("sourdough starter", k=1, mode="lexical")[0].id == "bread"
    assert [h.id for h in upgraded.search("trees", k=3, mode="lexical", where={"kind": "plant"})] == ["moss"]
    assert upgraded.search("how long is green tea steeped?", k=1)[0].id == "tea"  # the shipped model
    upgraded.add([{"id": "kite", "text": "A kite needs steady wind and a long line."}])
    upgraded.remove(["tea"])
    assert {h.id for h in Retriever.open(index).search("wind", k=5)} == {"bread", "moss", "kite"}
    assert_counts_agree(index)


def test_an_interrupted_upgrade_leaves_the_format_1_index_as_it_was(tmp_path, monkeypatch):
    import retriever.upgrade as upgrade

    index = tmp_path / "idx"
    shutil.copytree(FORMAT_1, index)

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(upgrade, "build_folder", fail)
    with pytest.raises(OSError, match="disk full"):
        Retriever.open(index)
    assert json.loads((index / "manifest.json").read_text())["format_version"] == 1
    assert (index / "gen-000003" / "vectors.faiss").is_file()
    monkeypatch.undo()
    assert Retriever.open(index).search("bicycle chain oil", k=3, mode="lexical") == []  # removed in format 1
    assert Retriever.open(index).info()["documents"] == 3


SCIFACT = ROOT.parent / "shared" / "data" / "scifact"


@pytest.mark.skipif(not (SCIFACT / "corpus.jsonl").is_file(), reason=f"needs BEIR SciFact in {SCIFACT}")
def test_scifact_bm25_through_an_index_of_six_segments(st_model_dir, tmp_path):
    from evals.beir import bm25_run, evaluate
    from retriever.beir import load_beir

    dataset = load_beir(SCIFACT)
    index = Retriever.create(tmp_path / "idx", st_model_dir)
    documents = list(dataset.corpus.values())
    vectors = np.random.default_rng(0).standard_normal((len(documents), index.manifest.dimension)).astype(np.float32)
    for part in np.array_split(np.arange(len(documents)), 6):
        index.add_embedded([documents[i] for i in part], vectors[part])
    assert len(index.segments) == 6
    query_ids = list(dataset.queries)
    hits = index.search_batch([dataset.queries[q] for q in query_ids], k=100, mode="lexical")
    run = {q: {h.id: h.score for h in row} for q, row in zip(query_ids, hits)}
    segmented = evaluate(dataset.qrels, run)["ndcg_at_10"]
    single = evaluate(dataset.qrels, bm25_run(dataset))["ndcg_at_10"]
    assert segmented >= 0.68 and abs(segmented - single) < 1e-3, (segmented, single)


def test_merges_write_at_most_max_merged_bytes_of_vectors(tmp_path):
    """A full tier merges its smallest segments up to MAX_MERGED_BYTES of stored vectors (float32, or
    ivfpq's codes and ids), so a writer holds that much at most, whatever the index's size."""
    def tier(kind: str, size: int) -> list[Segment]:
        return [Segment(tmp_path / f"s{i}", SegmentInfo(f"s{i}", kind, size), 256,
                        np.arange(i * size, (i + 1) * size)) for i in range(SEGMENTS_PER_TIER)]

    size = 10_000
    segments = tier("flat", size)
    none_deleted = np.zeros(0, np.int64)
    for dimension in (256, 768):
        plan = merge_plan(segments, none_deleted, "flat", dimension)
        fits = MAX_MERGED_BYTES // (4 * dimension) // size
        assert [len(group) for group in plan] == [fits] and 1 < fits < SEGMENTS_PER_TIER
    # 256-d ivfpq chunks take 64 bytes of code and 8 of id: ten such segments merge whole, ten 20 times larger do not
    assert [len(group) for group in merge_plan(tier("ivfpq", size), none_deleted, "ivfpq", 256)] == [SEGMENTS_PER_TIER]
    large = 200_000
    fits = MAX_MERGED_BYTES // (64 + 8) // large
    assert [len(group) for group in merge_plan(tier("ivfpq", large), none_deleted, "ivfpq", 256)] == [fits] and fits == 4
    # deleted chunks do not count: a half-deleted tier of the same segments merges in one
    deleted = np.concatenate([s.chunk_ids[: size // 2 - 1] for s in segments])
    half = merge_plan(segments, deleted, "flat", 256)
    assert [len(group) for group in half] == [SEGMENTS_PER_TIER]


def test_writes_benchmark_runs_on_an_hnsw_index(tmp_path):
    """A tiny shape of `python -m evals.bench writes`: both sizes built, written to and searched."""
    result = subprocess.run([sys.executable, "-m", "evals.bench", "writes", "--sizes", "300,600", "--queries", "3",
                             "--index-type", "hnsw", "--scifact", str(tmp_path / "absent"), "--json"],
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["index_type"] == "hnsw" and report["texts"] == "random words"
    assert [r["chunks"] for r in report["results"]] == [300, 600]
    largest = report["results"][-1]
    assert largest["add_one_median_s"] > 0 and largest["add_1000_s"] > 0
    assert 0 < largest["dense_p50_ms"] <= largest["dense_p99_ms"] and largest["filtered_p50_ms"] > 0


def test_memory_benchmark_runs_retriever_index_and_the_writer_alone():
    """A tiny shape of `python -m evals.bench memory`: each size through `retriever index` and through the
    writer alone, each with its peak memory."""
    result = subprocess.run([sys.executable, "-m", "evals.bench", "memory", "--sizes", "200,400", "--json"],
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [r["documents"] for r in rows] == [200, 400]
    for row in rows:  # the writer alone runs no forward: less than retriever index's whole process
        assert 0 < row["writer_anon_mib"] < row["peak_rss_mib"] and row["seconds"] > 0 and row["writer_seconds"] > 0


def test_crash_benchmark_kills_a_growing_index_and_checks_every_committed_document():
    """A tiny shape of `python -m evals.bench crash`: two kill -9s of a growing `retriever index`, each
    index checked after it (counts, and every document committed before the kill found), then the rest."""
    result = subprocess.run([sys.executable, "-m", "evals.bench", "crash", "--documents", "3000", "--kills", "2",
                             "--json"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert len(report["kills"]) == 2 and report["all_ok"], report
    assert report["final"]["documents"] == 3000 and report["final"]["committed_found"]
    for kill in report["kills"]:
        assert kill["documents"] >= kill["committed_before"] and kill["kept_committed"] and kill["committed_found"]


def test_lexical_benchmark_times_the_index_and_fts5(tmp_path):
    """A tiny shape of `python -m evals.bench lexical`: one-document writes and searches of both, at one size."""
    result = subprocess.run([sys.executable, "-m", "evals.bench", "lexical", "--sizes", "500", "--queries", "5",
                             "--scifact", str(tmp_path / "absent"), "--json"],
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    (row,) = report["results"]
    assert row["documents"] == 500 and "quality" not in report
    assert row["index_add_one_median_s"] > 0 and row["fts5_add_one_median_s"] > 0
    assert 0 < row["index_p50_ms"] <= row["index_p99_ms"] and 0 < row["fts5_p50_ms"] <= row["fts5_p99_ms"]


def test_fts5_query_quotes_each_word():
    from evals.bench.lexical import fts5_query

    assert fts5_query('What is "AND" (x-ray)?') == '"what" OR "is" OR "and" OR "x" OR "ray"'


def test_ondisk_benchmark_searches_a_mapped_index_as_the_in_memory_one(tmp_path):
    """A tiny shape of `python -m evals.bench ondisk`: segments built, searched memory-mapped (under a
    cgroup limit where one can be made) and read whole, with the same ids both ways."""
    result = subprocess.run([sys.executable, "-m", "evals.bench", "ondisk", "--index-mib", "3", "--limit-mib", "128",
                             "--dimension", "32", "--segment-chunks", "12000", "--queries", "20",
                             "--dir", str(tmp_path), "--json"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["segments"] >= 3 and report["layout"]["chunks"] == 12000 * report["segments"]
    assert report["mapped"]["lists"] == "OnDiskInvertedLists" and report["memory"]["lists"] == "ArrayInvertedLists"
    assert report["same_ids"] and report["mapped"]["top_is_own"] >= 0.9
    assert 0 < report["mapped"]["p50_ms"] <= report["mapped"]["p99_ms"]
    if report["cgroup"]:
        assert report["limit_mib"] == 128 and 0 < report["mapped"]["cgroup_peak_mib"] <= 128
    assert not list(tmp_path.iterdir()), "the benchmark's index is removed"
