"""BEIR-format evaluation: a folder with corpus.jsonl, queries.jsonl and qrels/SPLIT.tsv.

corpus (read by `retriever.beir`, as `retriever index` reads it) -> documents embedded as the
index embeds them (`retriever.documents.embedding_input`) -> exact top-k search -> run -> metrics.
Metrics come from pytrec_eval (trec_eval's own code): nDCG@10, Recall@100, MRR@10 (reciprocal
rank over each query's top 10) and MAP@100. `--hybrid` adds the index's BM25 (`retriever.lexical`)
over the same texts and fuses it with the dense run through the index's fusion (`retriever.fusion`).
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import torch

from retriever.beir import BeirDataset, Qrels
from retriever.documents import embedding_input
from retriever.fusion import DEFAULT_FUSION, Fusion
from retriever.trec import Run

METRICS = {
    "ndcg_at_10": "ndcg_cut.10",
    "recall_at_100": "recall.100",
    "map_at_100": "map_cut.100",
}


def dense_run(model, dataset: BeirDataset, k: int = 100, batch_tokens: int | None = None,
              show_progress_bar: bool = True) -> Run:
    """Exact search: every query scored against every document with the model's similarity."""
    from encoder.embedder import ModernBertSentenceTransformer

    doc_ids, query_ids = list(dataset.corpus), list(dataset.queries)
    # stock sentence-transformers models (baselines) batch by count, ours by tokens
    ours = isinstance(model, ModernBertSentenceTransformer)
    encode_kwargs = {"batch_tokens": batch_tokens} if batch_tokens and ours else {}
    docs = model.encode_document([embedding_input(dataset.corpus[d]) for d in doc_ids], convert_to_tensor=True,
                                 show_progress_bar=show_progress_bar, **encode_kwargs)
    queries = model.encode_query([dataset.queries[q] for q in query_ids], convert_to_tensor=True,
                                 show_progress_bar=show_progress_bar, **encode_kwargs)
    run: Run = {}
    for start in range(0, len(query_ids), 256):
        scores = model.similarity(queries[start:start + 256], docs)
        top = torch.topk(scores, min(k, len(doc_ids)), dim=1)
        for row, qid in enumerate(query_ids[start:start + 256]):
            run[qid] = {doc_ids[j]: float(s) for s, j in zip(top.values[row].tolist(), top.indices[row].tolist())}
    return run


def bm25_run(dataset: BeirDataset, k: int = 100) -> Run:
    """The index's BM25 (same tokenising, same text: title and passage) over the whole documents."""
    from retriever.lexical import LexicalIndex, tokenize

    doc_ids, query_ids = list(dataset.corpus), list(dataset.queries)
    index = LexicalIndex.build((i, dataset.corpus[d].title, dataset.corpus[d].text) for i, d in enumerate(doc_ids))
    hits = index.search(tokenize([dataset.queries[q] for q in query_ids]), k)
    return {qid: {doc_ids[i]: score for i, score in row} for qid, row in zip(query_ids, hits)}


def fuse_runs(dense: Run, lexical: Run, fusion: Fusion = DEFAULT_FUSION, k: int = 100) -> Run:
    """Each query's dense and lexical rankings joined by the index's `fusion`; the k best kept."""
    fused: Run = {}
    for qid in dense.keys() | lexical.keys():
        sides = [sorted(run.get(qid, {}).items(), key=lambda item: -item[1]) for run in (dense, lexical)]
        fused[qid] = dict(fusion(*sides)[:k])
    return fused


def evaluate(qrels: Qrels, run: Run, measures: dict[str, str] | None = None) -> dict[str, float]:
    """Means over the judged queries (a query with no hits scores 0).

    By default nDCG@10, Recall@100, MAP@100 and MRR@10; `measures` maps result names to other
    trec_eval measures instead (e.g. {"ndcg_at_1": "ndcg_cut.1"}).
    """
    import pytrec_eval

    run = {qid: run.get(qid, {}) for qid in qrels}
    per_query = pytrec_eval.RelevanceEvaluator(qrels, set((measures or METRICS).values())).evaluate(run)
    results = {}
    for name, measure in (measures or METRICS).items():
        key = measure.replace(".", "_")
        results[name] = float(np.mean([per_query.get(qid, {}).get(key, 0.0) for qid in qrels]))
    if measures is None:
        top10 = {qid: dict(sorted(hits.items(), key=lambda item: -item[1])[:10]) for qid, hits in run.items()}
        mrr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(top10)
        results["mrr_at_10"] = float(np.mean([mrr.get(qid, {}).get("recip_rank", 0.0) for qid in qrels]))
    return results


def open_model(name: str, device: str | None = None, max_length: int | None = None):
    """A ModernBERT model through load_embedder; any other sentence-transformers model (a baseline
    such as all-MiniLM-L6-v2) through stock SentenceTransformer, without remote code."""
    from encoder import load_embedder
    from encoder.hub import CheckpointError

    try:
        return load_embedder(name, device=device, max_length=max_length)
    except CheckpointError:
        raise
    except ValueError as e:
        if "model_type" not in str(e):
            raise
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(name, device=device)
    if max_length is not None:
        model.max_seq_length = min(max_length, model.max_seq_length or max_length)
    return model


def model_fingerprint(model) -> str:
    """sha256 over the encoder's parameters (names, shapes, values) and the tokenizer's vocabulary."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    digest.update(json.dumps(sorted(model.tokenizer.get_vocab().items())).encode())
    return digest.hexdigest()[:16]


def markdown_table(rows: list[dict[str, object]], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [f"{row[c]:.4f}" if isinstance(row[c], float) else str(row[c]) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
