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
