"""Reciprocal-rank fusion of rankings (Cormack et al., 2009): what `--hybrid` uses to join the dense
and BM25 rankings. A module of its own, light to import: the evaluations use it too."""

from __future__ import annotations

RRF_K = 60
# Candidates fused for k hits: at least this many dense documents, and LEXICAL_FACTOR times as
# many BM25 chunks (several chunks of one document count once).
FUSION_DEPTH = 100
LEXICAL_FACTOR = 4


def candidate_depths(k: int) -> tuple[int, int]:
    """(dense documents, BM25 chunks) that hybrid search fuses to return k documents."""
    depth = max(k, FUSION_DEPTH)
    return depth, depth * LEXICAL_FACTOR


def reciprocal_rank_fusion(rankings: list[list[str]], rrf_k: int = RRF_K) -> list[tuple[str, float]]:
    """Ids ranked by sum over rankings of 1 / (rrf_k + rank), ranks from 1; ties by id."""
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, doc_id in enumerate(ranking, 1):
            scores[doc_id] = scores.get(doc_id, 0.0) + 1.0 / (rrf_k + rank)
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))
