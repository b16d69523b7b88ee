"""BEIR evaluation: metrics on hand-made runs, file handling, and the CLI end to end."""

from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

from evals.beir import evaluate, fuse_runs
from retriever.beir import BeirFormatError, load_beir
from retriever.fusion import Fusion
from retriever.trec import write_trec_run
from retriever_command import app
from tests.conftest import make_corpus


def test_metrics_on_a_hand_made_run():
    qrels = {"q1": {"a": 1, "b": 1}, "q2": {"c": 2}, "q3": {"z": 1}}
    run = {
        "q1": {"x": 3.0, "a": 2.0, "y": 1.0},  # relevant at rank 2 of 2 relevant; b never found
        "q2": {"c": 5.0, "d": 1.0},  # perfect
        # q3 retrieved nothing
    }
    results = evaluate(qrels, run)
    ideal_q1 = 1 + 1 / math.log2(3)
    expected_ndcg = ((1 / math.log2(3)) / ideal_q1 + 1.0 + 0.0) / 3
    assert results["ndcg_at_10"] == pytest.approx(expected_ndcg)
    assert results["recall_at_100"] == pytest.approx((0.5 + 1 + 0) / 3)
    assert results["mrr_at_10"] == pytest.approx((0.5 + 1 + 0) / 3)
    assert results["map_at_100"] == pytest.approx((0.5 / 2 + 1 + 0) / 3)


def test_mrr_at_10_ignores_hits_below_rank_10():
    run = {"q": {f"d{i}": 100.0 - i for i in range(12)}}
    assert evaluate({"q": {"d11": 1}}, run)["mrr_at_10"] == 0.0
    assert evaluate({"q": {"d9": 1}}, run)["mrr_at_10"] == pytest.approx(0.1)


def test_reciprocal_rank_fusion_of_runs():
    fused = fuse_runs({"q": {"a": 0.9, "b": 0.5}}, {"q": {"b": 10.0, "c": 3.0}}, Fusion("rrf"))
    assert fused["q"]["b"] == pytest.approx(1 / 62 + 1 / 61)
    assert list(fused["q"]) == ["b", "a", "c"]


def test_trec_run_file(tmp_path):
    write_trec_run({"q1": {"a": 0.5, "b": 0.9}}, tmp_path / "run.trec", tag="t")
    assert (tmp_path / "run.trec").read_text().splitlines() == ["q1 Q0 b 1 0.900000 t", "q1 Q0 a 2 0.500000 t"]


def write_beir(path, docs: dict[str, str], queries: dict[str, str], qrels: list[tuple[str, str, int]]):
    path.mkdir(parents=True, exist_ok=True)
    (path / "corpus.jsonl").write_text("".join(json.dumps({"_id": i, "title": "", "text": t}) + "\n"
                                               for i, t in docs.items()))
    (path / "queries.jsonl").write_text("".join(json.dumps({"_id": i, "text": t}) + "\n" for i, t in queries.items()))
    (path / "qrels").mkdir(exist_ok=True)
    (path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n"
                                             + "".join(f"{q}\t{d}\t{s}\n" for q, d, s in qrels))
    return path


def test_bad_folders_name_file_and_line(tmp_path):
    folder = write_beir(tmp_path / "ok", {"d1": "x"}, {"q1": "x"}, [("q1", "d1", 1)])
    with (folder / "corpus.jsonl").open("a") as f:
        f.write("{not json\n")
    with pytest.raises(BeirFormatError, match=r"corpus.jsonl:2: invalid JSON"):
        load_beir(folder)
    folder = write_beir(tmp_path / "dup", {"d1": "x"}, {"q1": "x"}, [("q1", "d1", 1)])
    with (folder / "corpus.jsonl").open("a") as f:
        f.write(json.dumps({"_id": "d1", "text": "again"}) + "\n")
    with pytest.raises(BeirFormatError, match=r"corpus.jsonl:2: duplicate _id 'd1'"):
        load_beir(folder)
    folder = write_beir(tmp_path / "nosplit", {"d1": "x"}, {"q1": "x"}, [("q1", "d1", 1)])
    with pytest.raises(BeirFormatError, match=r"qrels/dev.tsv: not found"):
        load_beir(folder, split="dev")
    folder = write_beir(tmp_path / "badqrels", {"d1": "x"}, {"q1": "x"}, [("q1", "d1", 1)])
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1 d1\n")
    with pytest.raises(BeirFormatError, match=r"test.tsv:2: expected"):
        load_beir(folder)


@pytest.fixture(scope="module")
def tiny_beir(tmp_path_factory):
    """Queries are copies of documents: any sane model and BM25 rank the copied document first."""
    texts = make_corpus(30, seed=5)
    docs = {f"d{i}": t for i, t in enumerate(texts)}
    queries = {f"q{i}": texts[i] for i in range(0, 30, 3) if len(texts[i].split()) > 3}
    qrels = [(q, "d" + q[1:], 1) for q in queries]
    return write_beir(tmp_path_factory.mktemp("beir") / "tiny", docs, queries, qrels)


def test_eval_beir_cli_end_to_end(tiny_beir, checkpoint_dir, tmp_path):
    result = CliRunner().invoke(app, ["eval", "beir", str(tiny_beir), "--model", str(checkpoint_dir),
                                      "--hybrid", "--device", "cpu", "--output", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report["results"]) == {"dense", "bm25", "hybrid"}
    for metrics in report["results"].values():
        assert set(metrics) == {"ndcg_at_10", "recall_at_100", "mrr_at_10", "map_at_100"}
        assert metrics["ndcg_at_10"] == pytest.approx(1.0)
    for key in ("model", "fingerprint", "max_length", "dtype", "date", "versions", "wall_time_s"):
        assert key in report
    written = sorted(p.name for p in tmp_path.iterdir())
    assert any(name.endswith("-dense.trec") for name in written)
    assert any(name.endswith(".md") for name in written)
    run_lines = next(tmp_path.glob("*-hybrid.trec")).read_text().splitlines()
    assert run_lines[0].split()[1:4] == ["Q0", run_lines[0].split()[2], "1"]


def test_eval_beir_cli_bad_input_is_one_line(tmp_path, checkpoint_dir):
    result = CliRunner().invoke(app, ["eval", "beir", str(tmp_path / "missing"), "--model", str(checkpoint_dir)])
    assert result.exit_code == 2
    assert "corpus.jsonl: not found" in result.output
    assert "Traceback" not in result.output


def test_non_modernbert_baselines_run_through_stock_sentence_transformers(tiny_beir, checkpoint_dir, tmp_path):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    from encoder.embedder import ModernBertSentenceTransformer
    from evals.beir import dense_run, evaluate, open_model
    import transformers

    bert_dir = tmp_path / "bert"
    transformers.AutoTokenizer.from_pretrained(checkpoint_dir).save_pretrained(bert_dir)
    transformers.BertModel(transformers.BertConfig(
        vocab_size=300, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
    )).save_pretrained(bert_dir)
    transformer = Transformer(str(bert_dir))
    SentenceTransformer(modules=[transformer, Pooling(32, "mean")], device="cpu").save(str(tmp_path / "st"))

    model = open_model(str(tmp_path / "st"), device="cpu", max_length=8192)
    assert not isinstance(model, ModernBertSentenceTransformer) and model.max_seq_length <= 512
    dataset = load_beir(tiny_beir)
    assert evaluate(dataset.qrels, dense_run(model, dataset, show_progress_bar=False))["ndcg_at_10"] == pytest.approx(1.0)


def test_eval_beir_uses_the_shipped_model_by_default(tmp_path):
    write_beir(tmp_path / "beir", {"d0": "Paris is the capital and largest city of France.",
                                   "d1": "Influenza causes fever, cough and muscle aches."},
               {"q1": "what is the capital of France"}, [("q1", "d0", 1)])
    result = CliRunner().invoke(app, ["eval", "beir", str(tmp_path / "beir"), "--output", str(tmp_path / "out"),
                                      "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout[result.stdout.index("{"):])
    assert report["model"] == "default" and report["max_length"] == 8192
    assert report["results"]["dense"]["ndcg_at_10"] == 1.0


def test_evaluation_scores_what_search_serves(checkpoint_dir, tmp_path):
    """The eval's dense and hybrid runs are the rankings `Retriever.search_batch` returns for the
    same folder indexed, documents with titles included (embedded as title, newline, text)."""
    from evals.beir import bm25_run, dense_run, fuse_runs, open_model
    from retriever import Retriever
    from retriever.fusion import candidate_depths

    texts = make_corpus(40, seed=11)
    folder = tmp_path / "beir"
    folder.mkdir()
    (folder / "corpus.jsonl").write_text("".join(
        json.dumps({"_id": f"d{i}", "title": f"note {i % 7}" if i % 3 else "", "text": t}) + "\n"
        for i, t in enumerate(texts)))
    queries = {f"q{i}": " ".join(texts[i].split()[:4]) for i in range(0, 40, 4)}
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in queries.items()))
    (folder / "qrels").mkdir()
    (folder / "qrels" / "test.tsv").write_text("".join(f"{q}\td{q[1:]}\t1\n" for q in queries))
    dataset = load_beir(folder)

    k = 5
    dense_depth, lexical_depth = candidate_depths(k)
    dense = dense_run(open_model(str(checkpoint_dir), device="cpu", max_length=8192), dataset, k=dense_depth,
                      show_progress_bar=False)
    hybrid = fuse_runs(dense, bm25_run(dataset, k=lexical_depth), k=k)

    index = Retriever.create(tmp_path / "index", checkpoint_dir)
    index.add(list(dataset.corpus.values()))
    served_dense = index.search_batch(list(queries.values()), k=k, mode="dense")
    served_hybrid = index.search_batch(list(queries.values()), k=k, mode="hybrid")
    for qid, dense_hits, hybrid_hits in zip(queries, served_dense, served_hybrid):
        assert [h.id for h in dense_hits] == list(dense[qid])[:k]
        assert [h.score for h in dense_hits] == pytest.approx(list(dense[qid].values())[:k], abs=1e-5)
        assert [h.id for h in hybrid_hits] == list(hybrid[qid])


def test_eval_chunking_indexes_each_set_with_each_chunking(tiny_beir, checkpoint_dir, tmp_path):
    """`retriever eval chunking` builds the real index per chunking and scores what search serves."""
    from tests.test_retriever import st_layout

    model = st_layout(checkpoint_dir, tmp_path / "mean", "mean", None)  # late chunking pools by mean
    result = CliRunner().invoke(app, ["eval", "chunking", f"{tiny_beir}:test", "--model", str(model),
                                      "--device", "cpu", "--output", str(tmp_path / "out"), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [r["chunking"] for r in report["results"]] == ["window", "late"]
    for r in report["results"]:
        assert r["documents"] == 30 and r["chunks"] >= 30 and r["index_seconds"] > 0
        assert set(r["scores"]) == {"dense", "lexical", "hybrid"}
        assert r["scores"]["lexical"]["ndcg_at_10"] == pytest.approx(1.0)  # queries are copies of documents
    assert (tmp_path / "out" / f"chunking-{model.parent.name}_{model.name}.md").is_file()


def test_eval_dtype_indexes_each_set_in_each_dtype(tiny_beir, checkpoint_dir, tmp_path):
    """`retriever eval dtype` builds the real index per dtype and compares what search serves."""
    from tests.test_retriever import st_layout

    model = st_layout(checkpoint_dir, tmp_path / "mean", "mean", None)
    result = CliRunner().invoke(app, ["eval", "dtype", f"{tiny_beir}:test", "--model", str(model),
                                      "--output", str(tmp_path / "out"), "--json"])
    assert result.exit_code == 0, result.output
    float32, bfloat16 = json.loads(result.stdout)["results"]
    assert (float32["dtype"], bfloat16["dtype"]) == ("float32", "bfloat16")
    assert float32["top10_overlap"] == {"dense": 1.0, "lexical": 1.0, "hybrid": 1.0}  # the reference itself
    assert bfloat16["top10_overlap"]["lexical"] == 1.0 and 0.5 <= bfloat16["top10_overlap"]["dense"] <= 1.0
    for r in (float32, bfloat16):
        assert r["documents"] == 30 and r["index_seconds"] > 0 and r["docs_per_s"] > 0
        assert r["scores"]["lexical"]["ndcg_at_10"] == pytest.approx(1.0)  # queries are copies of documents
    assert (tmp_path / "out" / f"dtype-{model.parent.name}_{model.name}.md").is_file()


def test_chunking_cost_benchmark_times_both_chunkings(tiny_beir, checkpoint_dir, tmp_path):
    from tests.test_retriever import st_layout

    model = st_layout(checkpoint_dir, tmp_path / "mean", "mean", None)
    result = CliRunner().invoke(app, ["bench", "chunking", "--model", str(model), "--scifact", str(tiny_beir),
                                      "--lengths", "300,600", "--repeats", "2", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    window, late = report["results"]
    assert (window["chunking"], late["chunking"]) == ("window", "late")
    assert window["vectors"] == 2 and late["vectors"] > 2  # one window per document; passages of 256 tokens
    assert len(late["all_s"]) == 2 and late["best_s"] == min(late["all_s"]) and window["best_s"] == min(window["all_s"])
    # times are printed to the millisecond and the ratio from the unrounded times: it lies in the rounding's bounds
    half_ms = 5e-4
    low = (late["best_s"] - half_ms) / (window["best_s"] + half_ms)
    high = (late["best_s"] + half_ms) / (window["best_s"] - half_ms)
    assert low - 1e-3 <= report["late_vs_window"] <= high + 1e-3
