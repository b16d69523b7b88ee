"""The shipped default model (retriever/default_model): loads offline, embeds, ranks, reads 8192 tokens."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

MODEL_DIR = Path(__file__).resolve().parents[1] / "retriever" / "default_model"

PAIRS = [
    ("how do I list the files in a directory", "ls lists information about the files in a directory, "
                                              "sorted alphabetically by default."),
    ("symptoms of the flu", "Influenza causes fever, cough, sore throat, muscle aches and tiredness."),
    ("what is the capital of France", "Paris is the capital and most populous city of France."),
    ("install a python package", "pip is the package installer for Python: pip install requests."),
    ("how to raise money for a startup", "Founders raise seed funding from angel investors and venture "
                                         "capital firms in exchange for equity."),
]


@pytest.fixture(scope="module")
def model():
    import os

    from encoder import load_embedder

    old = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"  # a fresh machine has no network: nothing may be fetched
    try:
        yield load_embedder(MODEL_DIR, device="cpu")
    finally:
        if old is None:
            os.environ.pop("HF_HUB_OFFLINE")
        else:
            os.environ["HF_HUB_OFFLINE"] = old


def test_shipped_files():
    weights = MODEL_DIR / "model.safetensors"
    assert weights.stat().st_size <= 60 * 2**20
    modules = json.loads((MODEL_DIR / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[-1] for m in modules] == ["Transformer", "Pooling", "Dense", "Normalize"]
    config = json.loads((MODEL_DIR / "config.json").read_text())
    assert config["model_type"] == "modernbert" and config["max_position_embeddings"] == 8192
    assert json.loads((MODEL_DIR / "tokenizer_config.json").read_text())["model_max_length"] == 8192
    card = (MODEL_DIR / "README.md").read_text().lower()
    for needed in ("python -m recipes.default_model", "licence", "scifact", "all-minilm-l6-v2", "apache-2.0"):
        assert needed in card


def test_embeddings_are_normalised(model):
    from encoder.embedder import ModernBertSentenceTransformer

    assert isinstance(model, ModernBertSentenceTransformer) and model.max_seq_length == 8192
    embeddings = model.encode(["a short text", "another, somewhat longer text about retrieval"])
    assert embeddings.shape == (2, model.get_embedding_dimension())
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, rtol=1e-5)


def test_queries_find_their_documents(model):
    queries = model.encode_query([q for q, _ in PAIRS])
    documents = model.encode_document([d for _, d in PAIRS])
    ranked = (queries @ documents.T).argmax(axis=1)
    assert ranked.tolist() == list(range(len(PAIRS)))


def test_reads_8192_tokens(model):
    # two long documents that differ only in a sentence near token 7,900: each query must prefer its own
    filler = model.tokenizer.decode(model.tokenizer("The grass is green. The sky is blue. " * 900)["input_ids"][1:7880])
    documents = [filler + f" Kaloro's pass key is {key}. Remember it." for key in ("lighthouse", "volcano")]
    assert all(7800 < len(model.tokenizer(d)["input_ids"]) <= 8192 for d in documents)
    queries = model.encode_query(["what is Kaloro's pass key? lighthouse", "what is Kaloro's pass key? volcano"])
    scores = queries @ model.encode_document(documents).T
    assert scores[0, 0] > scores[0, 1] and scores[1, 1] > scores[1, 0]


def test_known_item_search_finds_a_verbatim_line_of_a_long_document(tmp_path):
    """A line quoted from the middle of any of 30 long, alike documents (Python's own modules, a few
    thousand tokens each) brings that document first in the default search mode, with the shipped
    model. Reciprocal-rank fusion let the weak dense ranking push such answers down (lzma.py 4th,
    gettext.py 6th when this was written; dense alone 8th and 17th)."""
    import os

    from retriever import Retriever

    stdlib = Path(os.__file__).parent
    files = [p for p in sorted(stdlib.glob("*.py")) if 12_000 <= p.stat().st_size <= 30_000][:30]
    assert len(files) == 30, f"expected 30 modules of 12-30 kB in {stdlib}"
    texts = {p.name: p.read_text(encoding="utf-8") for p in files}
    queries = {}
    for name, text in texts.items():
        lines = text.splitlines()
        middle = [line.strip() for line in lines[len(lines) // 3: 2 * len(lines) // 3]]
        queries[name] = next(line for line in middle if len(line.split()) >= 8 and not line.startswith("#")
                             and sum(line in t for t in texts.values()) == 1)
    index = Retriever.create(tmp_path / "index")
    index.add([{"id": name, "text": text} for name, text in texts.items()])
    found = [hits[0].id for hits in index.search_batch(list(queries.values()), k=3)]
    assert found == list(queries)
