"""BEIR-format evaluation: a folder with corpus.jsonl, queries.jsonl and qrels/SPLIT.tsv.

corpus -> documents (title + text) -> embeddings -> exact top-k search -> run -> metrics.
Metrics come from pytrec_eval (trec_eval's own code): nDCG@10, Recall@100, MRR@10 (reciprocal
rank over each query's top 10) and MAP@100. `--hybrid` fuses the dense run with a BM25 run
(bm25s, English stopwords, Snowball stemmer) by reciprocal-rank fusion.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from retriever.fusion import RRF_K
from retriever.fusion import reciprocal_rank_fusion as _fuse

Run = dict[str, dict[str, float]]  # query id -> {doc id: score}
Qrels = dict[str, dict[str, int]]  # query id -> {doc id: relevance}

METRICS = {
    "ndcg_at_10": "ndcg_cut.10",
    "recall_at_100": "recall.100",
    "map_at_100": "map_cut.100",
}


class BeirFormatError(ValueError):
    """A BEIR folder that cannot be read: the message names the file and line."""


@dataclass
class BeirDataset:
    corpus: dict[str, str]  # doc id -> "title text"
    queries: dict[str, str]  # query id -> text, only queries with judgements in the split
    qrels: Qrels


def _read_jsonl(path: Path) -> list[tuple[int, dict]]:
    if not path.is_file():
        raise BeirFormatError(f"{path}: not found")
    rows = []
    with path.open(encoding="utf-8") as f:
        for line_number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise BeirFormatError(f"{path}:{line_number}: invalid JSON ({e.msg})") from None
            if not isinstance(row, dict) or "_id" not in row or "text" not in row:
                raise BeirFormatError(f"{path}:{line_number}: expected an object with '_id' and 'text'")
            rows.append((line_number, row))
    return rows


def load_beir(directory: str | Path, split: str = "test") -> BeirDataset:
    directory = Path(directory)
    corpus: dict[str, str] = {}
    for line_number, row in _read_jsonl(directory / "corpus.jsonl"):
        doc_id = str(row["_id"])
        if doc_id in corpus:
            raise BeirFormatError(f"{directory / 'corpus.jsonl'}:{line_number}: duplicate _id {doc_id!r}")
        corpus[doc_id] = f"{row.get('title') or ''} {row['text']}".strip()
    queries = {str(row["_id"]): row["text"] for _, row in _read_jsonl(directory / "queries.jsonl")}

    qrels_path = directory / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        raise BeirFormatError(f"{qrels_path}: not found (is {split!r} a split of this dataset?)")
    qrels: Qrels = {}
    with qrels_path.open(encoding="utf-8", newline="") as f:
        for line_number, fields in enumerate(csv.reader(f, delimiter="\t"), 1):
            if line_number == 1 and fields[:2] == ["query-id", "corpus-id"]:
                continue
            if len(fields) != 3 or not fields[2].lstrip("-").isdigit():
                raise BeirFormatError(f"{qrels_path}:{line_number}: expected 'query-id<TAB>corpus-id<TAB>score'")
            qrels.setdefault(fields[0], {})[fields[1]] = int(fields[2])
    missing = sorted(set(qrels) - set(queries))
    if missing:
        raise BeirFormatError(f"{qrels_path}: query ids not in queries.jsonl: {missing[:5]}")
    return BeirDataset(corpus, {q: queries[q] for q in qrels}, qrels)


def dense_run(model, dataset: BeirDataset, k: int = 100, batch_tokens: int | None = None,
              show_progress_bar: bool = True) -> Run:
    """Exact search: every query scored against every document with the model's similarity."""
    from encoder.embedder import Embedder

    doc_ids, query_ids = list(dataset.corpus), list(dataset.queries)
    # stock sentence-transformers models (baselines) batch by count, ours by tokens
    encode_kwargs = {"batch_tokens": batch_tokens} if batch_tokens and isinstance(model, Embedder) else {}
    docs = model.encode_document([dataset.corpus[d] for d in doc_ids], convert_to_tensor=True,
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
    import bm25s
    import Stemmer

    stemmer = Stemmer.Stemmer("english")
    doc_ids, query_ids = list(dataset.corpus), list(dataset.queries)
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize([dataset.corpus[d] for d in doc_ids], stopwords="en", stemmer=stemmer,
                                   show_progress=False), show_progress=False)
    query_tokens = bm25s.tokenize([dataset.queries[q] for q in query_ids], stopwords="en", stemmer=stemmer,
                                  show_progress=False)
    indices, scores = retriever.retrieve(query_tokens, k=min(k, len(doc_ids)), show_progress=False)
    return {
        qid: {doc_ids[j]: float(s) for j, s in zip(indices[row], scores[row])}
        for row, qid in enumerate(query_ids)
    }


def reciprocal_rank_fusion(runs: list[Run], k: int = 100, rrf_k: int = RRF_K) -> Run:
    """score(d) = sum over runs of 1 / (rrf_k + rank of d in that run), ranks from 1 (the retriever's
    fusion, applied per query)."""
    fused: Run = {}
    for qid in set().union(*runs):
        rankings = [[doc for doc, _ in sorted(run.get(qid, {}).items(), key=lambda item: -item[1])] for run in runs]
        fused[qid] = dict(_fuse(rankings, rrf_k)[:k])
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


def write_trec_run(run: Run, path: str | Path, tag: str) -> None:
    """TREC format: `qid Q0 docid rank score tag`, ranks from 1, best first."""
    with Path(path).open("w", encoding="utf-8") as f:
        for qid in sorted(run):
            ranked = sorted(run[qid].items(), key=lambda item: (-item[1], item[0]))
            for rank, (doc_id, score) in enumerate(ranked, 1):
                f.write(f"{qid} Q0 {doc_id} {rank} {score:.6f} {tag}\n")


def open_model(name: str, device: str | None = None, max_length: int | None = None):
    """A ModernBERT model through load_embedder; any other sentence-transformers model (a baseline
    such as all-MiniLM-L6-v2) through stock SentenceTransformer, without remote code."""
    from encoder import load_embedder
    from encoder.checkpoint import CheckpointError

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
