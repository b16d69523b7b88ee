"""Fusion of the dense and the BM25 rankings: what hybrid search returns. A module of its own, light
to import: the evaluations fuse through these same functions.

Each method takes the two rankings, best first, as (id, score) pairs, and a weight `w` for the
dense side (the lexical side gets 1 - w), and returns every id of either ranking with its fused
score, best first (ties by id):

- `rrf`: reciprocal-rank fusion (Cormack et al., 2009), sum of 1 / (60 + rank); `w` is not used.
- `wrrf`: weighted RRF, w / (60 + dense rank) + (1 - w) / (60 + lexical rank).
- `minmax`: convex combination of min-max normalised scores, w * dense + (1 - w) * lexical.
- `zscore`: the same of z-scores (score minus mean, over standard deviation).
- `dbsf`: distribution-based score fusion (as Qdrant does it): each side's scores mapped from
  [mean - 3 std, mean + 3 std] onto [0, 1] (clipped), then combined as `minmax` does.

Normalisation is per query, over each side's own candidates; an id that only one side found gets
the other side's floor (the lowest normalised score that side gave), so a confident answer of
one side is not lost for being absent from the other. Ranks and scores count from each ranking
as given: fuse the same number of candidates as search does (`candidate_depths`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

RRF_K = 60
# Candidates fused for k hits: at least this many dense documents, and LEXICAL_FACTOR times as
# many BM25 chunks (several chunks of one document count once).
FUSION_DEPTH = 100
LEXICAL_FACTOR = 4

Ranking = list[tuple[str, float]]  # (id, score), best first


def candidate_depths(k: int) -> tuple[int, int]:
    """(dense documents, BM25 chunks) that hybrid search fuses to return k documents."""
    depth = max(k, FUSION_DEPTH)
    return depth, depth * LEXICAL_FACTOR


def _ranked(scores: dict[str, float]) -> Ranking:
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))


def _rank_fusion(dense: Ranking, lexical: Ranking, weights: tuple[float, float]) -> Ranking:
    scores: dict[str, float] = {}
    for ranking, weight in zip((dense, lexical), weights):
        for rank, (doc_id, _) in enumerate(ranking, 1):
            scores[doc_id] = scores.get(doc_id, 0.0) + weight / (RRF_K + rank)
    return _ranked(scores)


def rrf(dense: Ranking, lexical: Ranking, weight: float = 0.5) -> Ranking:
    return _rank_fusion(dense, lexical, (1.0, 1.0))


def wrrf(dense: Ranking, lexical: Ranking, weight: float = 0.5) -> Ranking:
    return _rank_fusion(dense, lexical, (weight, 1.0 - weight))


def _min_max(scores: np.ndarray) -> np.ndarray:
    spread = scores.max() - scores.min()
    return (scores - scores.min()) / spread if spread > 0 else np.ones_like(scores)


def _z(scores: np.ndarray) -> np.ndarray:
    std = scores.std()
    return (scores - scores.mean()) / std if std > 0 else np.zeros_like(scores)


def _three_sigma(scores: np.ndarray) -> np.ndarray:
    mean, std = scores.mean(), scores.std()
    if std == 0:
        return np.ones_like(scores)
    return np.clip((scores - (mean - 3 * std)) / (6 * std), 0.0, 1.0)


def _score_fusion(dense: Ranking, lexical: Ranking, weight: float,
                  normalise: Callable[[np.ndarray], np.ndarray]) -> Ranking:
    sides = []
    for ranking in (dense, lexical):
        normalised = normalise(np.array([s for _, s in ranking], dtype=np.float64)) if ranking else np.zeros(0)
        sides.append((dict(zip((doc for doc, _ in ranking), normalised.tolist())),
                      float(normalised.min()) if len(normalised) else 0.0))
    (dense_scores, dense_floor), (lexical_scores, lexical_floor) = sides
    return _ranked({doc: weight * dense_scores.get(doc, dense_floor)
                    + (1 - weight) * lexical_scores.get(doc, lexical_floor)
                    for doc in dense_scores.keys() | lexical_scores.keys()})


def minmax(dense: Ranking, lexical: Ranking, weight: float = 0.5) -> Ranking:
    return _score_fusion(dense, lexical, weight, _min_max)


def zscore(dense: Ranking, lexical: Ranking, weight: float = 0.5) -> Ranking:
    return _score_fusion(dense, lexical, weight, _z)


def dbsf(dense: Ranking, lexical: Ranking, weight: float = 0.5) -> Ranking:
    return _score_fusion(dense, lexical, weight, _three_sigma)


# name -> (method, whether it takes a weight)
METHODS: dict[str, tuple[Callable[[Ranking, Ranking, float], Ranking], bool]] = {
    "rrf": (rrf, False), "wrrf": (wrrf, True), "minmax": (minmax, True), "zscore": (zscore, True),
    "dbsf": (dbsf, True),
}


@dataclass(frozen=True)
class Fusion:
    """A fusion method and its dense weight; `Fusion.parse("zscore:0.3")`."""

    method: str = "rrf"
    weight: float = 0.5

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"fusion {self.method!r}: expected one of {', '.join(METHODS)}")
        if not 0.0 <= self.weight <= 1.0:
            raise ValueError(f"fusion weight {self.weight}: expected a number from 0 (lexical only) to 1 (dense only)")

    @classmethod
    def parse(cls, text: str) -> Fusion:
        """NAME or NAME:WEIGHT (the dense side's weight, 0 to 1)."""
        name, _, weight = text.partition(":")
        if not weight:
            return cls(name)
        if name in METHODS and not METHODS[name][1]:
            raise ValueError(f"fusion {name!r} takes no weight (got {text!r})")
        try:
            value = float(weight)
        except ValueError:
            raise ValueError(f"fusion {text!r}: the weight must be a number from 0 to 1") from None
        return cls(name, value)

    def __str__(self) -> str:
        return f"{self.method}:{self.weight:g}" if METHODS[self.method][1] else self.method

    def __call__(self, dense: Ranking, lexical: Ranking) -> Ranking:
        return METHODS[self.method][0](dense, lexical, self.weight)


# Chosen on development data only (`retriever eval fusion runs/train-dev:dev runs/longdocs:dev`,
# the table in the default model's card): the best mean nDCG@10 of every method and weight, above
# BM25 and dense alone on both sets. RRF (0.859) fell below BM25 alone (0.877) there.
DEFAULT_FUSION = Fusion("zscore", 0.2)
