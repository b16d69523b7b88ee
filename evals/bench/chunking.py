"""What late chunking costs against window chunking: the same long documents encoded both ways by the
index's own encoder (`PassageEncoder.encode_documents`, as `retriever index` embeds).

Late chunking runs the same forward passes as window chunking (each document up to the model's length is
one input either way) and pools one vector per passage instead of one per window, so it should cost
within ~10% of window chunking. The two are timed in turns, `repeats` times each, and the best of each
is reported: on a shared machine, the turns see the same load.
"""

from __future__ import annotations

import time
from pathlib import Path

from evals.bench.corpus import read_beir_corpus

TARGET_RATIO = 1.10


def long_texts(abstracts: list[str], tokenizer, lengths: list[int]) -> list[str]:
    """Abstracts joined (cycling through the corpus) and cut to each length in tokens, the special tokens
    included: a text of the model's length is one window, as late chunking reads it."""
    texts, i = [], 0
    for target in lengths:
        parts, tokens = [], 0
        while tokens < target:
            parts.append(abstracts[i % len(abstracts)])
            tokens += len(tokenizer.encode(parts[-1], add_special_tokens=False).ids)
            i += 1
        text = "\n\n".join(parts)
        offsets = tokenizer.encode(text, add_special_tokens=False).offsets
        texts.append(text[:offsets[target - 3][1]])  # room for [CLS] and [SEP], and a token the cut may split
    return texts


def cost(model_name: str, scifact: Path, lengths: list[int], repeats: int, status) -> dict:
    from retriever.embedding import Chunking, PassageEncoder
    from retriever.index import DEFAULT_MODEL, default_model_path

    encoder = PassageEncoder.load(default_model_path() if model_name == DEFAULT_MODEL else model_name, device="cpu")
    texts = long_texts(read_beir_corpus(scifact, 2000), encoder.tokenizer, lengths)
    tokens = sum(len(encoder.tokenizer.encode(t).ids) for t in texts)
    chunkings = {"window": Chunking("window"), "late": Chunking("late")}
    encoder.encode_documents(texts[:1], chunkings["late"])  # warm-up: first-call allocations
    seconds: dict[str, list[float]] = {mode: [] for mode in chunkings}
    vectors: dict[str, int] = {}
    for repeat in range(repeats):
        for mode, chunking in chunkings.items():
            status(f"{mode} chunking, run {repeat + 1} of {repeats}: {len(texts)} documents, {tokens:,} tokens")
            started = time.perf_counter()
            matrix, _ = encoder.encode_documents(texts, chunking)
            seconds[mode].append(time.perf_counter() - started)
            vectors[mode] = len(matrix)
    best = {mode: min(times) for mode, times in seconds.items()}
    return {
        "model": model_name, "max_length": encoder.max_length, "documents": len(texts), "tokens": tokens,
        "repeats": repeats,
        "results": [{"chunking": mode, "vectors": vectors[mode], "best_s": round(best[mode], 3),
                     "all_s": [round(s, 3) for s in seconds[mode]], "tokens_per_s": round(tokens / best[mode])}
                    for mode in chunkings],
        "late_vs_window": round(best["late"] / best["window"], 3), "target": TARGET_RATIO,
    }
