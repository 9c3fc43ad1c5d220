"""The outside-reference checks agree with thresher at a tiny size, and their references are right."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.outside_checks import (
    authors_semdedup,
    authors_strata,
    bin_allocate,
    check_ccs,
    check_influence,
    check_semdedup,
    kept_rows_rule,
    spearman,
)


def test_authors_rule_drops_against_any_earlier_row() -> None:
    # one cluster: A, B close to A, C close to B, D unrelated; centroid at angle 0.12,
    # so the farthest-first order is D, A, C, B
    angles = np.array([0.0, 0.1, 0.2, 1.5])
    unit = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)
    centroid = np.array([[np.cos(0.12), np.sin(0.12)]], dtype=np.float32)
    labels = np.zeros(4, dtype=np.int64)
    m = authors_semdedup(unit, labels, centroid)
    # D first (0); A's best earlier row is D; C's is A; B's is A (or C)
    np.testing.assert_allclose(m, [np.cos(1.5), np.cos(0.1), np.cos(0.2), 0.0], atol=1e-6)
    assert np.flatnonzero(~(m > 1 - 0.01)).tolist() == [0, 2, 3]  # threshold 0.99: B goes
    assert np.flatnonzero(~(m > 1 - 0.03)).tolist() == [0, 3]  # 0.97: C goes as well
    assert kept_rows_rule(unit, labels, centroid, 0.01).tolist() == [0, 2, 3]
    assert kept_rows_rule(unit, labels, centroid, 0.03).tolist() == [0, 3]


def test_kept_rows_rule_keeps_the_end_of_a_chain() -> None:
    # order by distance to the centroid (along C): A (farthest), then B, then C
    angles = np.array([0.0, 0.1, 0.2])
    unit = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)
    centroid = np.array([[np.cos(0.2), np.sin(0.2)]], dtype=np.float32)
    labels = np.zeros(3, dtype=np.int64)
    eps = 0.01  # A ~ B and B ~ C (cos 0.1 = 0.995), A and C apart (0.980)
    m = authors_semdedup(unit, labels, centroid)
    assert np.flatnonzero(~(m > 1 - eps)).tolist() == [0]  # B and C both go
    assert kept_rows_rule(unit, labels, centroid, eps).tolist() == [0, 2]  # C stays


def test_semdedup_agrees_with_the_authors_rule_at_every_eps() -> None:
    result = check_semdedup(n_base=160, n_chains=12, dim=16, n_clusters=3, seed=1)
    assert result["same_clusters"]
    rows = result["rows"]
    assert all(r["rank_equal"] for r in rows)
    assert all(r["filter_superset"] and r["filter_is_kept_rows_rule"] for r in rows)
    # the data tells the two rules apart: the filter keeps more at some eps
    assert any(r["filter_extra"] > 0 for r in rows)
    assert [r["authors_kept"] for r in rows] == sorted(
        (r["authors_kept"] for r in rows), reverse=True
    )


def test_bin_allocate_known_answer() -> None:
    # visit order: stratum 0 (empty), 1 (2), 3 (5), 2 (10); 9//4=2 -> 0, 9//3=3 -> 2,
    # 7//2=3 -> 3, the last takes 4
    assert bin_allocate(9, np.array([0, 2, 10, 5])).tolist() == [0, 2, 4, 3]


def test_authors_strata_drop_the_maximum_of_negative_scores() -> None:
    values = np.array([-3.0, -2.5, -2.0, -1.0])
    sizes = authors_strata(values, n_strata=4)
    assert sizes.sum() == 3  # max * 1.0001 = -1.0001 < -1.0
    assert authors_strata(-values, n_strata=4).sum() == 4


def test_ccs_budgets_follow_bin_allocate() -> None:
    result = check_ccs(n=1500, fractions=(0.05, 0.4, 0.9), seed=2)
    cases = result["cases"]
    assert all(c["loop_on_our_sizes_equal"] for c in cases)
    assert all(c["kept"] == c["budget"] == c["authors_kept"] for c in cases)
    positive = [c for c in cases if c["scores"] == "positive"]
    assert all(c["sizes_equal"] and c["budgets_equal"] for c in positive)
    negative = [c for c in cases if c["scores"] != "positive"]
    assert all(c["authors_rows_in_strata"] < result["n"] for c in negative)


def test_spearman_known_answer() -> None:
    assert spearman(np.array([1.0, 2.0, 3.0]), np.array([10.0, 20.0, 30.0])) == pytest.approx(1.0)
    assert spearman(np.array([1.0, 2.0, 3.0]), np.array([3.0, 2.0, 1.0])) == pytest.approx(-1.0)


@pytest.mark.slow
def test_influence_agrees_with_captum() -> None:
    pytest.importorskip("captum")
    result = check_influence(n=240, width=8)
    aligned = result["runs"]["aligned, float64"]
    assert aligned["self_spearman"] >= 0.999999
    assert aligned["self_max_rel_error"] < 1e-6
    assert aligned["target_max_error_over_scale"] < 1e-6
    plain = result["runs"]["bias left out, float32"]
    assert plain["self_median_ratio"] > 1.0  # thresher adds the bias gradient
