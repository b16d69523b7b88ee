"""Fusion methods on hand-built rankings whose answers are worked out by hand."""

from __future__ import annotations

import pytest

from retriever.fusion import DEFAULT_FUSION, Fusion, candidate_depths, dbsf, minmax, rrf, wrrf, zscore

DENSE = [("a", 0.9), ("b", 0.5), ("c", 0.1)]
LEXICAL = [("c", 12.0), ("d", 4.0)]


def scores(ranking):
    return dict(ranking)


def test_rrf_sums_reciprocal_ranks_and_breaks_ties_by_id():
    fused = rrf(DENSE, LEXICAL)
    assert scores(fused)["c"] == pytest.approx(1 / 63 + 1 / 61)
    assert scores(fused)["a"] == pytest.approx(1 / 61) and scores(fused)["d"] == pytest.approx(1 / 62)
    assert [doc for doc, _ in fused] == ["c", "a", "b", "d"]  # b and d tie at 1/62: by id
    assert rrf([("y", 1.0)], [("x", 1.0)]) == [("x", 1 / 61), ("y", 1 / 61)]


def test_weighted_rrf():
    fused = scores(wrrf(DENSE, LEXICAL, 0.8))
    assert fused["a"] == pytest.approx(0.8 / 61)
    assert fused["c"] == pytest.approx(0.8 / 63 + 0.2 / 61)
    assert fused["d"] == pytest.approx(0.2 / 62)
    assert scores(wrrf(DENSE, LEXICAL, 0.5)) == pytest.approx({d: s / 2 for d, s in rrf(DENSE, LEXICAL)})


def test_minmax_gives_a_document_missing_from_one_side_that_sides_floor():
    fused = scores(minmax(DENSE, LEXICAL, 0.5))
    # dense normalised: a 1, b 0.5, c 0; lexical: c 1, d 0 (its floor, also what a and b get)
    assert fused == pytest.approx({"a": 0.5, "b": 0.25, "c": 0.5, "d": 0.0})
    assert [doc for doc, _ in minmax(DENSE, LEXICAL, 0.5)][:2] == ["a", "c"]  # tie by id
    assert [doc for doc, _ in minmax(DENSE, LEXICAL, 0.3)][0] == "c"


def test_zscore():
    fused = scores(zscore(DENSE, LEXICAL, 0.5))
    # dense: mean 0.5, std sqrt(0.32/3); lexical: mean 8, std 4
    std = (0.32 / 3) ** 0.5
    dense = {"a": 0.4 / std, "b": 0.0, "c": -0.4 / std}
    lexical = {"c": 1.0, "d": -1.0}
    expected = {doc: 0.5 * dense.get(doc, -0.4 / std) + 0.5 * lexical.get(doc, -1.0) for doc in "abcd"}
    assert fused == pytest.approx(expected)


def test_dbsf_maps_three_sigma_onto_the_unit_interval():
    dense = [(f"d{i}", float(i)) for i in range(10)]
    fused = scores(dbsf(dense, [], 1.0))
    mean, std = 4.5, (sum((i - 4.5) ** 2 for i in range(10)) / 10) ** 0.5
    assert fused["d9"] == pytest.approx((9 - (mean - 3 * std)) / (6 * std))
    assert all(0.0 <= s <= 1.0 for s in fused.values())


@pytest.mark.parametrize("method", [rrf, wrrf, minmax, zscore, dbsf])
def test_one_side_empty_keeps_the_other_sides_order(method):
    assert [doc for doc, _ in method(DENSE, [], 0.5)] == ["a", "b", "c"]
    assert [doc for doc, _ in method([], LEXICAL, 0.5)] == ["c", "d"]
    assert method([], [], 0.5) == []


@pytest.mark.parametrize("method", [minmax, zscore, dbsf])
def test_a_side_whose_scores_all_tie_ranks_by_the_other(method):
    fused = method([("a", 1.0), ("b", 1.0)], [("b", 3.0), ("a", 1.0)], 0.5)
    assert [doc for doc, _ in fused] == ["b", "a"]


def test_weights_at_the_ends_pick_one_side():
    assert [d for d, _ in minmax(DENSE, LEXICAL, 1.0)][:3] == ["a", "b", "c"]
    lexical_only = scores(zscore(DENSE, LEXICAL, 0.0))
    assert max(lexical_only, key=lexical_only.get) == "c"
    assert lexical_only["d"] == lexical_only["a"] == lexical_only["b"]  # d is lexical's floor: where a and b stand


def test_parse_and_errors():
    assert Fusion.parse("zscore:0.3") == Fusion("zscore", 0.3) and str(Fusion("zscore", 0.3)) == "zscore:0.3"
    assert Fusion.parse("rrf") == Fusion("rrf") and str(Fusion("rrf")) == "rrf"
    assert Fusion.parse(str(DEFAULT_FUSION)) == DEFAULT_FUSION
    assert Fusion.parse("minmax")(DENSE, LEXICAL) == minmax(DENSE, LEXICAL, 0.5)
    for bad, message in (("borda", "expected one of rrf, wrrf"), ("rrf:0.3", "takes no weight"),
                         ("zscore:x", "must be a number"), ("zscore:1.5", "from 0 .* to 1")):
        with pytest.raises(ValueError, match=message):
            Fusion.parse(bad)


def test_candidate_depths():
    assert candidate_depths(10) == (100, 400) and candidate_depths(500) == (500, 2000)
