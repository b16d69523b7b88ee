"""The dtype benchmark: an index's encoder in float32 and in bfloat16, docs/s on the same abstracts.

Both models embed SciFact abstracts through `PassageEncoder.encode_documents`, what `retriever index` runs:
the shipped default model, and a ModernBERT-base-shaped one with random weights. Each dtype's best of
`repeats` runs, the ratio to float32 measured in the same run, and the least cosine between the two dtypes'
vectors of one abstract. Whether this CPU multiplies bfloat16 in hardware is printed with them: without it,
bfloat16 is emulated and `retriever index` keeps float32 as its default.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from encoder.model import cpu_has_native_bfloat16
from evals.bench.corpus import console, read_beir_corpus
from evals.bench.embedder import base_shaped_model
from retriever.embedding import DTYPES, PassageEncoder, default_dtype
from retriever.index import default_model_path


def docs_per_s(model: Path, texts: list[str], repeats: int) -> dict:
    results, vectors = {}, {}
    for dtype in DTYPES:
        encoder = PassageEncoder.load(model, dtype=dtype)
        encoder.encode_documents(texts[:4])  # warm-up: first calls allocate
        seconds = []
        for _ in range(repeats):
            started = time.perf_counter()
            vectors[dtype], _ = encoder.encode_documents(texts)
            seconds.append(time.perf_counter() - started)
        results[dtype] = round(len(texts) / min(seconds), 1)
        console.print(f"  {dtype}: {results[dtype]} docs/s")
    a, b = vectors["float32"], vectors["bfloat16"]
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    return {"docs_per_s": results, "bfloat16_vs_float32": round(results["bfloat16"] / results["float32"], 2),
            "min_cosine": float(cosine.min())}


def run(scifact: Path, docs: int, num_layers: int, repeats: int) -> dict:
    texts = read_beir_corpus(scifact, docs)
    report = {"docs": len(texts), "threads": torch.get_num_threads(), "native_bfloat16": cpu_has_native_bfloat16(),
              "index_default": default_dtype("cpu"), "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        with console.status("building the base-shaped model"):
            base, _ = base_shaped_model(texts, Path(tmp), num_layers, 8192)
        for name, model in (("default (shipped)", default_model_path()),
                            (f"ModernBERT-base shape, {num_layers} layers", base)):
            console.print(name)
            report["models"][name] = docs_per_s(model, texts, repeats)
    return report
