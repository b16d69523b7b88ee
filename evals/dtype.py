"""bfloat16 against float32, measured through the index: what `retriever index --dtype D` builds and
`retriever search` serves.

For each BEIR set and each dtype, the set's corpus is indexed (`evals.chunking.index_and_search`, timed)
and searched in each search mode; nDCG@10 and Recall@100 come from `evals.beir.evaluate`, and each
dtype's top 10 is compared with the first dtype's (the mean share of documents both hold, per query).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from evals.beir import evaluate
from evals.chunking import MEASURES, index_and_search
from retriever.beir import BeirDataset
from retriever.embedding import Chunking
from retriever.trec import Run


@dataclass
class DtypeResult:
    set: str
    dtype: str
    documents: int
    index_seconds: float
    docs_per_s: float
    scores: dict[str, dict[str, float]]  # search mode -> measure -> mean over the judged queries
    top10_overlap: dict[str, float]  # search mode -> mean |top 10 ∩ the first dtype's top 10| / 10


def top10_overlap(run: Run, reference: Run) -> float:
    shares = [len(set(list(run[q])[:10]) & set(list(reference[q])[:10])) / max(1, min(10, len(reference[q])))
              for q in reference]
    return sum(shares) / len(shares) if shares else 1.0


def compare(name: str, dataset: BeirDataset, dtypes: list[str], model: str | Path | None = None,
            max_length: int | None = None, device: str | None = None) -> list[DtypeResult]:
    results, reference = [], None
    for dtype in dtypes:
        indexed = index_and_search(dataset, Chunking(), model, max_length, device, dtype)
        reference = reference or indexed.runs
        results.append(DtypeResult(
            name, dtype, len(dataset.corpus), indexed.index_seconds,
            round(len(dataset.corpus) / indexed.index_seconds, 1),
            {mode: evaluate(dataset.qrels, run, MEASURES) for mode, run in indexed.runs.items()},
            {mode: round(top10_overlap(run, reference[mode]), 4) for mode, run in indexed.runs.items()}))
    return results
