"""k-means based selectors: sensitivity sampling, prototypes, SemDeDup (known answers)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from thresher.selectors import make_selector
from thresher.selectors.kmeans import fit_kmeans, nearest_centroid, squared_distances
from thresher.selectors.kmeans_sensitivity import inclusion_probabilities, systematic_sample
from thresher.selectors.semdedup import greedy_keep, redundancy, similar_earlier_pairs

# -- shared k-means --------------------------------------------------------------------


def test_kmeans_is_deterministic_and_batch_invariant() -> None:
    rng = np.random.default_rng(0)
    x = (
        rng.normal(size=(3000, 16)) + 5 * rng.normal(size=(20, 16))[rng.integers(0, 20, 3000)]
    ).astype(np.float32)
    first = fit_kmeans(x, 20, seed=7)
    again = fit_kmeans(x, 20, seed=7)
    np.testing.assert_array_equal(first.centroids, again.centroids)
    np.testing.assert_array_equal(first.labels, again.labels)
    pieces = np.concatenate(
        [nearest_centroid(x[i : i + 7], first.centroids) for i in range(0, 3000, 7)]
    )
    np.testing.assert_array_equal(pieces, first.labels)
    sq = np.concatenate(
        [
            squared_distances(x[i : i + 7], first.centroids, first.labels[i : i + 7])
            for i in range(0, 3000, 7)
        ]
    )
    np.testing.assert_array_equal(sq, first.sq_distances)
    # a row equidistant from two centroids goes to the lower index, batched or not
    centroids = np.array([[1.0, 0.0], [-1.0, 0.0]], dtype=np.float32)
    tie = np.array([[0.0, 3.0]] * 30, dtype=np.float32)
    assert nearest_centroid(tie, centroids).tolist() == [0] * 30


def _float64_nearest(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """The definition: smallest float64 squared distance, ties to the lower index."""
    diff = x.astype(np.float64)[:, None, :] - centroids.astype(np.float64)[None, :, :]
    return np.argmin(np.einsum("ijk,ijk->ij", diff, diff), axis=1)


def test_a_near_tie_float32_gets_wrong_is_decided_in_float64() -> None:
    # far from the origin, float32's |c|^2 - 2 x.c cannot tell the two centroids apart
    # (their squared distances differ by 0.02; float32 resolves about 0.06 at 10^6)
    rng = np.random.default_rng(1)
    x = (1000.0 + rng.integers(-3, 4, size=(200, 2))).astype(np.float32)
    centroids = np.array([[1001.0, 1000.0], [1000.0, 1001.0]], dtype=np.float32)
    x[:, 1] += np.float32(0.01)  # every row is slightly closer to centroid 1 along y
    centroids_sq = np.einsum("ij,ij->i", centroids, centroids)
    rough = np.argmin(centroids_sq[None, :] - 2.0 * (x @ centroids.T), axis=1)
    expected = _float64_nearest(x, centroids)
    assert np.any(rough != expected)  # the fault: float32 ranking alone gets rows wrong
    assert nearest_centroid(x, centroids).tolist() == expected.tolist()


def test_nearest_centroid_is_the_float64_argmin_in_any_batch() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3000, 24)).astype(np.float32)
    centroids = x[rng.choice(3000, 300, replace=False)] + np.float32(1e-4)
    centroids[7] = centroids[3]  # an exact tie: the lower index wins
    x[:40] = centroids[3]
    expected = _float64_nearest(x, centroids)
    assert expected[:40].tolist() == [3] * 40
    assert nearest_centroid(x, centroids).tolist() == expected.tolist()
    alone = [int(nearest_centroid(x[i : i + 1], centroids)[0]) for i in range(0, 3000, 11)]
    assert alone == expected[::11].tolist()


def test_fit_is_the_same_for_any_block_size(monkeypatch: pytest.MonkeyPatch) -> None:
    from thresher.selectors import kmeans

    rng = np.random.default_rng(3)
    x = rng.normal(size=(4000, 16)) + 4 * rng.normal(size=(30, 16))[rng.integers(0, 30, 4000)]
    x = x.astype(np.float32)
    first = fit_kmeans(x, 40, seed=11)
    monkeypatch.setattr(kmeans, "_CHUNK_ENTRIES", 40 * 13)  # 13 rows per block
    monkeypatch.setattr(kmeans, "_CHUNK_ROWS", 7)
    again = fit_kmeans(x, 40, seed=11)
    np.testing.assert_array_equal(first.centroids, again.centroids)
    np.testing.assert_array_equal(first.labels, again.labels)
    np.testing.assert_array_equal(first.sq_distances, again.sq_distances)
    other = fit_kmeans(x, 40, seed=12)
    assert not np.array_equal(first.centroids, other.centroids)  # the seed matters


def test_fit_finds_separated_clusters_and_survives_duplicates() -> None:
    rng = np.random.default_rng(4)
    centres = 50.0 * np.eye(5, 8)
    truth = rng.integers(0, 5, 2000)
    x = (centres[truth] + rng.normal(size=(2000, 8))).astype(np.float32)
    fit = fit_kmeans(x, 5, seed=1)
    pairs = set(zip(truth.tolist(), fit.labels.tolist(), strict=True))
    assert len(pairs) == 5  # one cluster per blob
    np.testing.assert_allclose(fit.sq_distances.mean(), 8.0, rtol=0.1)
    # 6 distinct rows, 20 clusters: empty clusters are split again and again, no error
    few = np.repeat(rng.normal(size=(6, 4)), 50, axis=0).astype(np.float32)
    fit = fit_kmeans(few, 20, seed=2)
    assert fit.centroids.shape == (20, 4) and np.isfinite(fit.centroids).all()
    assert np.all(fit.sq_distances < 1e-4)  # a split moves a centroid by 1/1024 of itself
    np.testing.assert_array_equal(fit.labels, fit_kmeans(few, 20, seed=2).labels)


def test_spherical_fit_has_unit_centroids_and_refuses_nan() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(500, 6)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    fit = fit_kmeans(x, 8, seed=3, spherical=True)
    np.testing.assert_allclose(np.linalg.norm(fit.centroids, axis=1), 1.0, rtol=1e-6)
    x[3, 2] = np.nan
    with pytest.raises(ValueError, match="finite"):
        fit_kmeans(x, 8, seed=3)


# -- sensitivity sampling ---------------------------------------------------------------


def test_inclusion_probabilities_sum_to_the_sample_size() -> None:
    weights = np.array([1.0, 1.0, 2.0, 4.0, 100.0])
    pi = inclusion_probabilities(weights, 3)
    assert pi.sum() == pytest.approx(3.0)
    assert pi[4] == 1.0  # its share would exceed 1: taken for certain
    np.testing.assert_allclose(pi[:4], 2 * weights[:4] / weights[:4].sum())


def test_systematic_sampling_has_the_stated_inclusion_probabilities() -> None:
    rng = np.random.default_rng(0)
    weights = rng.exponential(size=30) + 0.05
    pi = inclusion_probabilities(weights, 8)
    counts = np.zeros(30)
    draws = 20000
    for _ in range(draws):
        taken = systematic_sample(pi, rng)
        assert taken.size == 8 and np.unique(taken).size == 8
        counts[taken] += 1
    sd = np.sqrt(pi * (1 - pi) / draws)
    assert np.all(np.abs(counts / draws - pi) <= 5 * sd + 1e-12)


def _clustered(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Four clusters of unequal size and spread, and a loss that grows with the spread."""
    rng = np.random.default_rng(seed)
    sizes, spread = [400, 150, 40, 10], [0.5, 1.0, 2.0, 3.0]
    centres = rng.normal(scale=10.0, size=(4, 8))
    x = np.concatenate([centres[c] + spread[c] * rng.normal(size=(sizes[c], 8)) for c in range(4)])
    cluster = np.repeat(np.arange(4), sizes)
    loss = np.sum((x - centres[cluster]) ** 2, axis=1) + np.array([0.0, 5.0, 10.0, 20.0])[cluster]
    return x.astype(np.float32), loss


def test_weighted_loss_is_unbiased_and_beats_uniform_variance() -> None:
    x, loss = _clustered(1)
    n, m, seeds = x.shape[0], 40, 300
    table = pa.table({"id": np.arange(n)})
    selector = make_selector("kmeans_sensitivity", {"n_clusters": 4})
    estimates, uniform = [], []
    for seed in range(seeds):
        selection = selector.select(table, x, m, random_state=seed)
        assert len(selection) == m
        estimates.append(np.sum(selection.weights * loss[selection.indices]) / n)
        uniform.append(loss[np.random.default_rng(10**6 + seed).choice(n, m, replace=False)].mean())
    estimates_arr = np.array(estimates)
    standard_error = estimates_arr.std(ddof=1) / np.sqrt(seeds)
    assert abs(estimates_arr.mean() - loss.mean()) < 4 * standard_error
    assert estimates_arr.var() < 0.6 * np.var(uniform)


def test_sensitivity_details_and_weights() -> None:
    x, _ = _clustered(2)
    selection = make_selector("kmeans_sensitivity", {"n_clusters": 4}).select(
        pa.table({"id": np.arange(600)}), x, 60, random_state=0
    )
    clusters = selection.details["clusters"]
    assert sum(c["size"] for c in clusters) == 600
    assert sum(c["selected"] for c in clusters) == 60
    assert np.all(selection.weights >= 1.0)
    # the small, wide clusters are over-sampled and carry small weights
    by_size = sorted(clusters, key=lambda c: c["size"])
    assert (
        by_size[0]["selected"] / by_size[0]["size"] > by_size[-1]["selected"] / by_size[-1]["size"]
    )
    assert by_size[0]["weight_mean"] < by_size[-1]["weight_mean"]


# -- prototypes -------------------------------------------------------------------------


def _two_clusters_with_outliers() -> np.ndarray:
    rng = np.random.default_rng(3)
    a = np.array([1.0, 0.0, 0.0]) + 0.02 * rng.normal(size=(50, 3))
    b = np.array([0.0, 1.0, 0.0]) + 0.02 * rng.normal(size=(50, 3))
    far_a = np.array([[1.0, 0.0, 0.6], [1.0, 0.0, -0.6]])  # same cluster, wide angle
    return np.concatenate([a, b, far_a]).astype(np.float32)


def test_prototypes_keep_hard_or_easy() -> None:
    x = _two_clusters_with_outliers()
    table = pa.table({"id": np.arange(102)})
    hard = make_selector("prototypes", {"n_clusters": 2}).select(table, x, 2, random_state=0)
    assert hard.indices.tolist() == [100, 101]
    easy = make_selector("prototypes", {"n_clusters": 2, "keep": "easy"}).select(
        table, x, 90, random_state=0
    )
    assert not {100, 101} & set(easy.indices.tolist())
    assert hard.details["distance_min"] > 0.1 > easy.details["distance_max"]


# -- SemDeDup ---------------------------------------------------------------------------


def _planted_duplicates(seed: int = 4) -> tuple[np.ndarray, list[list[int]]]:
    """200 unrelated unit vectors; 50 of them get one or two paraphrase-like copies."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(200, 32))
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    rows, groups = list(base), []
    for original in range(50):
        group = [original]
        for _ in range(1 + original % 2):
            copy = base[original] + 0.08 * rng.normal(size=32) / np.sqrt(32)
            group.append(len(rows))
            rows.append(copy)
        groups.append(group)
    order = rng.permutation(len(rows))  # duplicates are not next to their original
    position = np.argsort(order)
    shuffled = np.array(rows)[order].astype(np.float32)
    return shuffled, [[int(position[i]) for i in group] for group in groups]


def test_semdedup_removes_planted_near_duplicates() -> None:
    x, groups = _planted_duplicates()
    n = x.shape[0]
    planted = {i for group in groups for i in group}
    selection = make_selector("semdedup", {"eps": 0.05, "n_clusters": 5}).select(
        pa.table({"id": np.arange(n)}), x, None, random_state=0
    )
    kept = set(selection.indices.tolist())
    assert all(len(kept & set(group)) == 1 for group in groups)
    assert set(range(n)) - planted <= kept  # unrelated rows all survive
    assert len(kept) == 200 and selection.details["removed"] == n - 200


def test_semdedup_searches_eps_and_ranks_at_a_budget() -> None:
    x, groups = _planted_duplicates()
    n = x.shape[0]
    table = pa.table({"id": np.arange(n)})
    searched = make_selector("semdedup", {"target_keep": 200 / n, "n_clusters": 5}).select(
        table, x, None, random_state=0
    )
    assert len(searched) == 200
    ranked = make_selector("semdedup_rank", {"n_clusters": 5}).select(table, x, 200, random_state=0)
    assert all(len(set(ranked.indices.tolist()) & set(g)) == 1 for g in groups)
    fixed = make_selector("semdedup", {"eps": 0.05, "n_clusters": 5}).select(
        table, x, None, random_state=0
    )
    assert ranked.indices.tolist() == fixed.indices.tolist() == searched.indices.tolist()
    with pytest.raises(ValueError, match="budget"):
        make_selector("semdedup", {"eps": 0.05}).select(table, x, 10, random_state=0)


def test_filter_compares_with_kept_rows_only() -> None:
    # a ~ b and b ~ c, but a and c differ: b goes, c stays (its only near-duplicate was removed)
    a = np.array([1.0, 0.0])
    b = np.array([np.cos(0.3), np.sin(0.3)])
    c = np.array([np.cos(0.6), np.sin(0.6)])
    rows = np.array([a, b, c], dtype=np.float32)
    threshold = float(np.cos(0.35))  # cos(0.3) passes, cos(0.6) does not
    pairs = similar_earlier_pairs(rows, threshold)
    assert list(zip(pairs[0].tolist(), pairs[1].tolist(), strict=True)) == [(0, 1), (1, 2)]
    assert greedy_keep(3, pairs, threshold).tolist() == [True, False, True]
    # redundancy (the reference's criterion) counts the removed row too
    np.testing.assert_allclose(redundancy(rows), [-np.inf, np.cos(0.3), np.cos(0.3)], rtol=1e-6)
