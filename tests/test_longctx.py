"""Synthetic long-context tasks: exact lengths, one relevant document per query, the CLI and its plot."""

from __future__ import annotations

import json

import pytest
import transformers
from typer.testing import CliRunner

from evals.longctx import generate
from retriever_command import app


@pytest.fixture(scope="module")
def tokenizer(checkpoint_dir):
    return transformers.AutoTokenizer.from_pretrained(checkpoint_dir)


@pytest.mark.parametrize("task", ["passkey", "needle"])
@pytest.mark.parametrize("length", [128, 256, 1000])
def test_documents_have_the_requested_token_length(tokenizer, task, length):
    dataset = generate(task, tokenizer, length, num_docs=8, seed=1)
    counts = [len(tokenizer(doc.text)["input_ids"]) for doc in dataset.corpus.values()]
    # exact, or one short where the tokenizer merges across every possible cut
    assert all(length - 1 <= n <= length for n in counts)
    assert counts.count(length) >= len(counts) // 2


@pytest.mark.parametrize("task", ["passkey", "needle"])
def test_each_query_has_exactly_one_relevant_document_holding_its_secret(tokenizer, task):
    dataset = generate(task, tokenizer, 128, num_docs=10, seed=2)
    assert len(dataset.queries) == len(dataset.corpus) == 10
    for qid, query in dataset.queries.items():
        (doc_id, relevance), = dataset.qrels[qid].items()
        name = query.split()[-1].rstrip("?") if task == "passkey" else query.split()[2].removesuffix("'s")
        assert relevance == 1 and name in dataset.corpus[doc_id].text
        assert sum(name in doc.text for doc in dataset.corpus.values()) == 1


def test_too_short_a_length_is_refused(tokenizer):
    with pytest.raises(ValueError, match="cannot hold"):
        generate("passkey", tokenizer, 16, num_docs=1)


def test_generation_is_deterministic(tokenizer):
    a = generate("needle", tokenizer, 200, num_docs=4, seed=3)
    b = generate("needle", tokenizer, 200, num_docs=4, seed=3)
    c = generate("needle", tokenizer, 200, num_docs=4, seed=4)
    assert a == b and a.corpus != c.corpus


def test_eval_longctx_cli_writes_table_json_and_png(checkpoint_dir, tmp_path):
    result = CliRunner().invoke(app, ["eval", "longctx", "--model", str(checkpoint_dir), "--lengths", "128,256",
                                      "--docs", "4", "--device", "cpu", "--output", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    scores = report["models"][str(checkpoint_dir)]["scores"]
    assert set(scores) == {"passkey", "needle"}
    assert all(0.0 <= v <= 1.0 for by_length in scores.values() for v in by_length.values())
    assert (tmp_path / "longctx.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| passkey | 128 |" in (tmp_path / "longctx.md").read_text()
