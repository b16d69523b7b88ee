"""The encoder as a Sentence-Transformers model, against stock sentence-transformers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules import Normalize, Transformer
from sentence_transformers.sentence_transformer.modules import Pooling

import encoder.layout as layout_module
from encoder import load_embedder
from tests.conftest import WORDS, make_corpus

def stock_layout(checkpoint_dir, path, pooling: str, normalize: bool, prompts: dict | None):
    transformer = Transformer(str(checkpoint_dir), max_seq_length=4096)
    modules = [transformer, Pooling(transformer.get_embedding_dimension(), pooling_mode=pooling)]
    if normalize:
        modules.append(Normalize())
    SentenceTransformer(modules=modules, prompts=prompts, device="cpu").save(str(path))
    return path


@pytest.fixture(scope="module")
def cls_dir(checkpoint_dir, tmp_path_factory):
    """gte-modernbert-style: CLS pooling, normalised, query prompt in the config."""
    return stock_layout(checkpoint_dir, tmp_path_factory.mktemp("cls"), "cls", True, {"query": "query: "})


@pytest.fixture(scope="module")
def mean_dir(checkpoint_dir, tmp_path_factory):
    """modernbert-embed-style: mean pooling, normalised, no prompts saved."""
    return stock_layout(checkpoint_dir, tmp_path_factory.mktemp("mean"), "mean", True, None)


# one long document (~3k tokens) among short ones: exercises sliding windows and global buckets
CORPUS = make_corpus(20, 1) + [" ".join(WORDS * 60)]


@pytest.mark.parametrize("layout", ["cls_dir", "mean_dir"])
def test_embeddings_equal_stock_sentence_transformers(layout, request):
    path = request.getfixturevalue(layout)
    stock = SentenceTransformer(str(path), device="cpu")
    ours = load_embedder(path, device="cpu")
    assert isinstance(ours, SentenceTransformer)
    assert isinstance(ours[1], Pooling) and ours[1].pooling_mode == stock[1].pooling_mode
    expected = stock.encode(CORPUS, batch_size=8)
    got = ours.encode(CORPUS)
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= 1e-4


def test_prompts_match_stock(cls_dir):
    stock = SentenceTransformer(str(cls_dir), device="cpu")
    ours = load_embedder(cls_dir, device="cpu")
    assert ours.prompts["query"] == "query: "
    queries = CORPUS[:5]
    expected = stock.encode_query(queries)
    got = ours.encode_query(queries)
    assert np.abs(got - expected).max() <= 1e-4
    assert np.abs(got - ours.encode(queries)).max() > 1e-3, "the prompt must change the embedding"
    assert np.abs(ours.encode(queries, prompt="query: ") - got).max() <= 1e-6
    assert np.abs(ours.encode_document(queries) - stock.encode_document(queries)).max() <= 1e-4


def test_known_model_gets_prompts_and_caller_overrides(mean_dir, monkeypatch):
    monkeypatch.setitem(layout_module.KNOWN_PROMPTS, str(mean_dir),
                        {"query": "search_query: ", "document": "search_document: "})
    model = load_embedder(mean_dir, device="cpu")
    assert model.prompts["query"] == "search_query: "
    assert np.abs(model.encode_document(["gene"]) - model.encode(["search_document: gene"])).max() <= 1e-6
    model = load_embedder(mean_dir, device="cpu", prompts={"query": "q: "})
    assert model.prompts == {"query": "q: ", "document": "search_document: "}


def test_save_round_trips_both_ways(cls_dir, tmp_path):
    ours = load_embedder(cls_dir, device="cpu")
    ours.save(str(tmp_path / "ours"))
    modules = json.loads((tmp_path / "ours" / "modules.json").read_text())
    assert modules[0]["type"] == "sentence_transformers.models.Transformer"
    stock = SentenceTransformer(str(tmp_path / "ours"), device="cpu")  # no trust_remote_code
    assert type(stock[0]).__name__ == "Transformer"
    assert np.abs(stock.encode_query(CORPUS) - ours.encode_query(CORPUS)).max() <= 1e-4
    again = load_embedder(tmp_path / "ours", device="cpu")
    assert np.abs(again.encode(CORPUS) - ours.encode(CORPUS)).max() == 0


def test_bare_checkpoint_is_mean_pooled_like_stock(checkpoint_dir):
    model = load_embedder(checkpoint_dir, device="cpu")
    assert model[1].pooling_mode == "mean"
    stock = SentenceTransformer(str(checkpoint_dir), device="cpu")  # stock also falls back to mean pooling
    assert np.abs(model.encode(CORPUS) - stock.encode(CORPUS)).max() <= 1e-4


def test_token_budget_batches_keep_input_order(mean_dir):
    model = load_embedder(mean_dir, device="cpu")
    one_by_one = np.stack([model.encode(text) for text in CORPUS])
    for budget in (1, 64, 500, 100_000):
        assert np.abs(model.encode(CORPUS, batch_tokens=budget) - one_by_one).max() <= 1e-5, budget


def test_truncate_dim_float16_and_tensor_output(mean_dir):
    model = load_embedder(mean_dir, device="cpu")
    full = model.encode(CORPUS[:3])
    short = model.encode(CORPUS[:3], truncate_dim=16, normalize_embeddings=True)
    assert short.shape == (3, 16)
    np.testing.assert_allclose(short, full[:, :16] / np.linalg.norm(full[:, :16], axis=1, keepdims=True), atol=1e-6)
    half = model.encode(CORPUS[:3], precision="float16")
    assert half.dtype == np.float16 and np.abs(half - full).max() < 1e-2
    tensor = model.encode(CORPUS[:3], convert_to_tensor=True)
    assert isinstance(tensor, torch.Tensor) and tensor.shape == full.shape
    assert model.encode([]).shape[0] == 0


def test_max_length_truncates(mean_dir):
    model = load_embedder(mean_dir, device="cpu", max_length=16)
    long_text = " ".join(WORDS * 3)
    assert np.abs(model.encode(long_text) - model.encode(long_text + " more words here")).max() == 0


def test_stock_paths_still_work(mean_dir):
    """Outputs other than sentence embeddings go through sentence-transformers' own loop."""
    model = load_embedder(mean_dir, device="cpu")
    tokens = model.encode(CORPUS[:2], output_value="token_embeddings")
    assert tokens[0].shape[-1] == 64 and len(tokens) == 2


def test_training_loss_backpropagates_through_our_encoder(mean_dir):
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    model = load_embedder(mean_dir, device="cpu")
    loss = MultipleNegativesRankingLoss(model)
    queries, documents = CORPUS[:4], CORPUS[4:8]
    value = loss([model.preprocess(queries), model.preprocess(documents)], None)
    value.backward()
    grad = model[0].model.layers[1].attn.Wqkv.weight.grad
    assert value.item() > 0 and grad is not None and grad.abs().sum() > 0


def test_unknown_module_types_are_refused(mean_dir, tmp_path):
    import shutil

    copy = tmp_path / "model"
    shutil.copytree(mean_dir, copy)
    modules = json.loads((copy / "modules.json").read_text())
    modules[1]["type"] = "evil_package.Pooling"
    (copy / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ValueError, match="custom code is not loaded"):
        load_embedder(copy, device="cpu")
