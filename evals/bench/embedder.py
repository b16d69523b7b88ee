"""The embedder benchmark: load_embedder(dir) vs stock SentenceTransformer(dir), docs/s on the same corpus.

The checkpoint is ModernBERT-base-shaped with random weights, mean pooling and normalisation, and a BPE tokenizer
trained on SciFact's abstracts. The corpus is those abstracts plus long documents cut from them. Both encode the whole
corpus in one call, as a user would: stock with `batch_size` texts per padded batch, ours with its token budget.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules import Normalize, Transformer
from sentence_transformers.sentence_transformer.modules import Pooling

from encoder import ModernBertConfig, ModernBertModel, load_embedder
from evals.bench.corpus import console, long_documents, read_beir_corpus, train_tokenizer


def base_shaped_model(texts: list[str], folder: Path, num_layers: int, max_length: int):
    """A ModernBERT-base-shaped embedding model with random weights (mean pooling, normalised) and a BPE
    tokenizer trained on `texts`, saved in the sentence-transformers layout under folder/"st"; and the tokenizer."""
    checkpoint, layout = folder / "checkpoint", folder / "st"
    tokenizer = train_tokenizer(texts, checkpoint)
    torch.manual_seed(0)
    config = ModernBertConfig.for_tokenizer(tokenizer, num_hidden_layers=num_layers)
    ModernBertModel(config).save_pretrained(checkpoint)
    transformer = Transformer(str(checkpoint), max_seq_length=max_length)
    SentenceTransformer(modules=[transformer, Pooling(config.hidden_size, "mean"), Normalize()],
                        device="cpu").save(str(layout))
    return layout, tokenizer


def run(scifact: Path, docs: int, long_docs: int, max_length: int, num_layers: int, batch_size: int) -> dict:
    """Wall time, docs/s and speedup of both sides, and the max difference of their embeddings."""
    texts = read_beir_corpus(scifact, docs)
    with tempfile.TemporaryDirectory() as tmp, console.status("building checkpoint and tokenizer"):
        layout, tokenizer = base_shaped_model(texts, Path(tmp), num_layers, max_length)
        lengths = np.linspace(max_length, max_length / long_docs, long_docs).round().astype(int).tolist()
        long_texts = long_documents(texts, tokenizer, lengths)
        stock = SentenceTransformer(str(layout), device="cpu")
        ours = load_embedder(layout, device="cpu")

    corpus = texts + long_texts
    tokens = sum(len(x) for x in tokenizer(corpus, truncation=True, max_length=max_length)["input_ids"])
    console.print(f"{len(texts)} abstracts + {len(long_texts)} long documents ({lengths} tokens), {tokens} tokens")
    stock.encode(texts[:4])
    ours.encode(texts[:4])
    start = time.perf_counter()
    ours_embeddings = ours.encode(corpus, show_progress_bar=True)
    ours_s = time.perf_counter() - start
    console.print(f"  ours  {ours_s:8.1f} s")
    start = time.perf_counter()
    stock_embeddings = stock.encode(corpus, batch_size=batch_size, show_progress_bar=True)
    stock_s = time.perf_counter() - start
    console.print(f"  stock {stock_s:8.1f} s")
    return {
        "docs": len(corpus), "tokens": tokens, "layers": num_layers, "threads": torch.get_num_threads(),
        "ours_s": ours_s, "stock_s": stock_s,
        "ours_docs_per_s": len(corpus) / ours_s, "stock_docs_per_s": len(corpus) / stock_s,
        "speedup": stock_s / ours_s,
        "max_abs_diff": float(np.abs(ours_embeddings - stock_embeddings).max()),
    }
