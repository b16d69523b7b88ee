"""mteb integration, offline: our synthetic tasks as mteb tasks, and one-line errors for hub tasks."""

from __future__ import annotations

import json

import mteb
import pytest
from typer.testing import CliRunner

from encoder import load_embedder
from encoder.embedder import ModernBertSentenceTransformer
from evals.beir import dense_run
from evals.longctx import generate, ndcg_at_1
from evals.mteb_tasks import longctx_mteb_task, mteb_encoder
from retriever_command import app


def test_custom_task_runs_offline_through_our_packed_encoder(checkpoint_dir, monkeypatch):
    model = load_embedder(checkpoint_dir, device="cpu")
    calls = []
    packed = ModernBertSentenceTransformer._encode_packed
    monkeypatch.setattr(ModernBertSentenceTransformer, "_encode_packed",
                        lambda self, texts, *a: calls.append(len(texts)) or packed(self, texts, *a))
    task = longctx_mteb_task("passkey", model.tokenizer, 128, num_docs=6, seed=7)
    result = mteb.evaluate(mteb_encoder(model), [task], cache=None, show_progress_bar=False)
    (task_result,) = result.task_results
    assert calls and sum(calls) == 12, "mteb must reach our token-budget encode for queries and documents"
    # the same generated set scored by our own pipeline gives the same nDCG@1
    dataset = generate("passkey", model.tokenizer, 128, num_docs=6, seed=7)
    ours = ndcg_at_1(dataset, dense_run(model, dataset, show_progress_bar=False))
    assert task_result.get_score() == pytest.approx(ours, abs=1e-4)  # mteb rounds to 5 decimals


def test_eval_mteb_cli_synthetic_tasks(checkpoint_dir, tmp_path):
    result = CliRunner().invoke(app, ["eval", "mteb", "-t", "SyntheticNeedle128", "-m", str(checkpoint_dir),
                                      "--device", "cpu", "--output", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert 0.0 <= report["results"]["SyntheticNeedle128"]["main_score"] <= 1.0
    assert report["versions"]["mteb"] == mteb.__version__


def test_hub_task_offline_is_one_clear_line(checkpoint_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    result = CliRunner().invoke(app, ["eval", "mteb", "-t", "LEMBPasskeyRetrieval", "-m", str(checkpoint_dir),
                                      "--device", "cpu"])
    assert result.exit_code == 2
    assert "LEMBPasskeyRetrieval: its dataset mteb/LEMBPasskeyRetrieval could not be loaded" in result.output
    assert "Traceback" not in result.output
    result = CliRunner().invoke(app, ["eval", "mteb", "-t", "NoSuchTask", "-m", str(checkpoint_dir)])
    assert result.exit_code == 2 and "NoSuchTask: no such mteb task" in result.output


def test_hub_task_from_a_local_beir_copy(checkpoint_dir, tmp_path, monkeypatch):
    """SciFact's mteb task scored offline from a BEIR folder the user points to."""
    from tests.test_beir import write_beir

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    texts = ["alpha beta gamma delta", "protein cell gene virus", "vaccine dose trial patient", "search index query"]
    folder = write_beir(tmp_path / "scifact", {f"d{i}": t for i, t in enumerate(texts)},
                        {f"q{i}": t for i, t in enumerate(texts)}, [(f"q{i}", f"d{i}", 1) for i in range(4)])
    result = CliRunner().invoke(app, ["eval", "mteb", "-t", "SciFact", "--local", f"SciFact={folder}",
                                      "-m", str(checkpoint_dir), "--device", "cpu", "--output", str(tmp_path),
                                      "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["results"]["SciFact"]["main_score"] == pytest.approx(1.0)


@pytest.mark.parametrize("mode,method", [("dense", "dense"), ("lexical", "bm25"), ("hybrid", "hybrid")])
def test_mteb_scores_the_index_as_eval_beir_does(checkpoint_dir, tmp_path, monkeypatch, mode, method):
    """--search MODE: mteb's search protocol over an index of the task's corpus gives `retriever eval beir`'s
    nDCG@10 for the same mode (both score what `retriever search` serves)."""
    from tests.conftest import make_corpus
    from tests.test_beir import write_beir

    import tempfile

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the temporary index goes
    texts = make_corpus(30, 41)
    queries = {f"q{i}": " ".join(texts[i].split()[2:6]) for i in range(0, 30, 3)}
    folder = write_beir(tmp_path / "scifact", {f"d{i}": t for i, t in enumerate(texts)}, queries,
                        [(f"q{i}", f"d{i}", 1) for i in range(0, 30, 3)] + [("q0", "d1", 1)])
    common = ["-m", str(checkpoint_dir), "--device", "cpu", "--output", str(tmp_path / "out"), "--json"]
    served = CliRunner().invoke(app, ["eval", "mteb", "-t", "SciFact", "--local", f"SciFact={folder}",
                                      "--search", mode, *common])
    assert served.exit_code == 0, served.output
    report = json.loads(served.stdout)
    assert report["search"] == mode and report["chunking"] == "window"
    beir = CliRunner().invoke(app, ["eval", "beir", str(folder), "--hybrid", *common])
    assert beir.exit_code == 0, beir.output
    expected = json.loads(beir.stdout)["results"][method]["ndcg_at_10"]
    assert 0 < expected < 1, "a set where the ranking matters"
    assert report["results"]["SciFact"]["main_score"] == pytest.approx(expected, abs=1e-4)
    assert not list(tmp_path.glob("mteb-index-*")), "the temporary index is removed"


def test_mteb_search_mode_is_checked(checkpoint_dir):
    result = CliRunner().invoke(app, ["eval", "mteb", "-t", "SciFact", "--search", "fuzzy", "-m", str(checkpoint_dir)])
    assert result.exit_code == 2 and "--search 'fuzzy': expected one of dense, lexical, hybrid" in result.output
