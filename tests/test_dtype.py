"""The encoder's dtype as an index setting: bfloat16 against float32, the CPU rule, and one dtype per index."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import encoder.model
from encoder import ModernBertModel
from encoder.model import PackedBatch, token_bucket
from retriever import Retriever
from retriever import embedding
from retriever.cli import app
from retriever.embedding import PassageEncoder, default_dtype
from retriever.errors import IndexMismatchError
from retriever.index import checked_model
from retriever.manifest import MANIFEST, IndexManifest
from tests.conftest import make_corpus, ragged_batch

TEXTS = [t for t in make_corpus(60, 41) if len(t.split()) >= 15][:12]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_bfloat16_where_the_cpu_multiplies_it_in_hardware(monkeypatch):
    monkeypatch.setattr(embedding, "cpu_has_native_bfloat16", lambda: True)
    assert default_dtype(None) == default_dtype("cpu") == "bfloat16"
    monkeypatch.setattr(embedding, "cpu_has_native_bfloat16", lambda: False)
    assert default_dtype("cpu") == "float32" and default_dtype("cuda") == default_dtype("cuda:1") == "bfloat16"


def test_token_buckets_are_eight_sizes_a_doubling_at_most_an_eighth_more():
    assert [token_bucket(n) for n in (1, 15, 16, 17, 100, 5000, 8192)] == [1, 15, 16, 18, 104, 5120, 8192]
    assert all(n <= token_bucket(n) <= n * 9 / 8 and token_bucket(token_bucket(n)) == token_bucket(n)
               for n in range(1, 20000))
    assert len({token_bucket(n) for n in range(2049, 4097)}) == 8  # 2304, 2560, ..., 4096


def test_bfloat16_cpu_groups_run_at_bucket_sizes_and_drop_their_padding(hf_base_dir, monkeypatch):
    """oneDNN keeps reordered weights for every input shape a bfloat16 matmul meets: on a CPU each group is
    padded up to a token_bucket size with sequences of token 0, none longer than its longest real one (the
    attention plan stays the real sequences'); the real tokens' states are those of the group run unpadded,
    within bfloat16's rounding."""
    monkeypatch.setattr(encoder.model, "CPU_GROUP_ACTIVATION_BYTES", 41 * 3 * 64 * 2)  # 41 tokens at H = 64
    model = ModernBertModel.from_pretrained(hf_base_dir, dtype=torch.bfloat16).eval()
    lengths = [37, 5, 20, 1, 12, 31, 3]
    input_ids, attention_mask = ragged_batch(lengths, seed=3)
    batch = PackedBatch.from_padded(input_ids, attention_mask)
    groups = model.packed_groups(batch)
    assert [rows.numel() for rows, _ in groups] == [37, 31, 41]  # [37], [31], [20, 12, 5, 3, 1]
    with torch.no_grad():
        out = model.forward_packed(batch)
        for rows, group in groups:
            real = rows.numel()
            real_sequences = int((group.cu_seqlens[1:] <= real).sum())
            assert group.input_ids.numel() == token_bucket(real) > real  # 40, 32, 44
            assert torch.equal(group.input_ids[:real], batch.input_ids[rows]) and not group.input_ids[real:].any()
            assert group.max_seqlen == int(group.cu_seqlens.diff()[:real_sequences].max())
            unpadded = PackedBatch.from_packed(group.input_ids[:real], group.cu_seqlens[: real_sequences + 1])
            assert (out[rows].float() - model.forward_group(unpadded).float()).abs().max() <= 0.05
    assert out.shape == (sum(lengths), 64) and out.dtype == torch.bfloat16


def test_bfloat16_vectors_are_float32_ones_within_rounding(st_model_dir):
    """bfloat16 keeps 8 bits of mantissa: each vector stays within cosine 0.999 of float32's (the shipped
    model on SciFact abstracts: >= 0.99996); pooling and the vectors themselves are float32."""
    full = PassageEncoder.load(st_model_dir)
    half = PassageEncoder.load(st_model_dir, dtype="bfloat16")
    assert (full.dtype, half.dtype) == ("float32", "bfloat16") and half.model.dtype == torch.bfloat16
    expected, _ = full.encode_documents(TEXTS)
    got, _ = half.encode_documents(TEXTS)
    assert got.dtype == np.float32 and got.shape == expected.shape
    assert cosines(got, expected).min() > 0.999
    assert not np.array_equal(got, expected)  # it did run in bfloat16

    from encoder import load_embedder  # the sentence-transformers path in bfloat16 gives the same vectors

    stock = load_embedder(st_model_dir, device="cpu", dtype=torch.bfloat16).encode_document(TEXTS)
    assert cosines(np.asarray(stock, dtype=np.float32), got).min() > 0.9999
    with pytest.raises(ValueError, match="dtype 'float16': expected one of float32, bfloat16"):
        PassageEncoder.load(st_model_dir, dtype="float16")


def test_a_bfloat16_index_is_written_and_searched_in_bfloat16(st_model_dir, tmp_path):
    index = Retriever.create(tmp_path / "idx", st_model_dir, dtype="bfloat16")
    index.add([{"id": f"d{i}", "text": t} for i, t in enumerate(TEXTS)])
    manifest = IndexManifest.read(tmp_path / "idx")
    assert manifest.dtype == "bfloat16"
    assert manifest.model_fingerprint != PassageEncoder.load(st_model_dir).fingerprint()  # float32's differs

    reopened = Retriever.open(tmp_path / "idx")
    hits = reopened.search_batch(TEXTS[:4], k=3, mode="dense")
    assert reopened.model.dtype == "bfloat16"  # the queries are embedded as the documents were
    assert [found[0].id for found in hits] == ["d0", "d1", "d2", "d3"]

    float32_manifest = IndexManifest(**{**manifest.__dict__, "dtype": "float32"})
    with pytest.raises(IndexMismatchError, match="fingerprint"):
        checked_model(float32_manifest, tmp_path / "idx")  # a float32 encoder never serves a bfloat16 index


def test_an_index_made_before_the_dtype_was_recorded_is_float32(st_model_dir, tmp_path):
    index = Retriever.create(tmp_path / "idx", st_model_dir, dtype="float32")
    index.add([{"id": f"d{i}", "text": t} for i, t in enumerate(TEXTS)])
    path = tmp_path / "idx" / MANIFEST
    data = json.loads(path.read_text())
    del data["dtype"]
    path.write_text(json.dumps(data))
    reopened = Retriever.open(tmp_path / "idx")
    assert reopened.manifest.dtype == "float32"
    assert reopened.search(TEXTS[5], k=1, mode="dense")[0].id == "d5"  # same fingerprint as before


def test_cli_index_takes_a_dtype_once(st_model_dir, tmp_path):
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(TEXTS)))
    index = tmp_path / "idx"
    runner = CliRunner()
    result = runner.invoke(app, ["index", str(corpus), "--index", str(index), "--model", str(st_model_dir),
                                 "--dtype", "bfloat16"])
    assert result.exit_code == 0, result.output
    info = runner.invoke(app, ["info", "--index", str(index), "--json"])
    assert json.loads(info.stdout)["dtype"] == "bfloat16"
    again = runner.invoke(app, ["index", str(corpus), "--index", str(index), "--dtype", "float32"])
    assert again.exit_code == 2
    assert "created with --dtype bfloat16; it cannot change to float32" in again.output
    bad = runner.invoke(app, ["index", str(corpus), "--index", str(tmp_path / "other"), "--model",
                              str(st_model_dir), "--dtype", "float16"])
    assert bad.exit_code == 2 and "dtype 'float16': expected one of float32, bfloat16" in bad.output
