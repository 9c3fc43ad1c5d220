"""Semantic deduplication (SemDeDup) within k-means clusters of the embeddings.

Cluster the L2-normalised embeddings with spherical k-means. Inside each
cluster, order the rows as the paper does (farthest from the centroid
first, ``prefer="far"``; ties by row position), then scan them in that
order: a row is dropped when its cosine similarity to a row *kept* before
it exceeds ``1 - eps``. Rows of different clusters are never compared.

Two selectors share this machinery:

* ``semdedup`` is a filter (it defines its own size, no budget): give
  ``eps``, or ``target_keep`` to search ``eps`` in ``[0, max_eps]`` by
  bisection for the fraction of rows kept closest to the target.
* ``semdedup_rank`` meets a budget exactly. It ranks rows by their
  *redundancy*: the largest cosine similarity to any row before it in its
  cluster's order (the first row of a cluster has none). The reference
  code removes a row at ``eps`` exactly when its redundancy exceeds
  ``1 - eps``, so the kept sets are nested in ``eps``, and keeping the
  budget's least redundant rows (ties by row position) is SemDeDup at the
  ``eps`` that keeps the budget. A sum budget
  (:class:`~thresher.selectors.base.SumBudget`, e.g. tokens) takes rows
  from the least redundant up and stops before the first row that would
  make the sum exceed the total. Compared with the filter, a row whose only
  near-duplicate was itself removed counts as redundant here.

Cost: O(sum of squared cluster sizes x d) time, memory bounded by blocks.

References
----------
Abbas, Tirumala, Simig, Ganguli and Morcos, "SemDeDup: Data-efficient
learning at web-scale through semantic deduplication", 2023.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Literal, NamedTuple

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from thresher._params import Constraints, Interval, Options, Real
from thresher.selectors.base import Budget, RandomState, Selection, fitting_prefix
from thresher.selectors.clustered import ClusteringSelector
from thresher.selectors.kmeans import KMeansResult
from thresher.selectors.prototypes import cosine_to_centroid

Prefer = Literal["far", "near"]
#: Similarity-matrix blocks hold at most this many entries (float32).
_BLOCK_ENTRIES = 1 << 24
_SEARCH_STEPS = 40


def cluster_orders(
    unit: NDArray[np.float32], clustering: KMeansResult, prefer: Prefer
) -> list[NDArray[np.int64]]:
    """Row indices of each cluster in scan order (``far``: lowest cosine to centroid first)."""
    if prefer not in ("far", "near"):
        raise ValueError(f"semdedup: prefer must be 'far' or 'near', got {prefer!r}")
    cosine = cosine_to_centroid(unit, clustering)
    key = cosine if prefer == "far" else -cosine
    order = np.lexsort((np.arange(unit.shape[0]), key, clustering.labels))
    bounds = np.cumsum(clustering.sizes())[:-1]
    return [part for part in np.split(order, bounds) if part.size]


def _blocks(n: int) -> list[tuple[int, int]]:
    step = int(np.clip(_BLOCK_ENTRIES // max(n, 1), 1, 4096))
    return [(start, min(start + step, n)) for start in range(0, n, step)]


def _margin(rows: NDArray[np.float32]) -> float:
    """Twice the largest float32 error of ``rows[i] . rows[j]``, with a factor 2 to spare.

    A dot product of d terms errs by at most ``gamma_d |x| |y|`` in any
    summation order, so BLAS (whose order depends on threads and blocking)
    can only decide a comparison that is further than this from the threshold.
    """
    if rows.shape[0] == 0:
        return 0.0
    largest = float(np.max(np.einsum("ij,ij->i", rows, rows, dtype=np.float64)))
    return 2.0 * (1.1 * rows.shape[1] + 1.0) * 2.0**-24 * largest + rows.shape[1] * 2.0**-120


def _exact_similarity(
    rows: NDArray[np.float32], first: NDArray[np.int64], second: NDArray[np.int64]
) -> NDArray[np.float64]:
    """``rows[first] . rows[second]`` in float64, one pair at a time (batch independent)."""
    return np.einsum("ij,ij->i", rows[first].astype(np.float64), rows[second].astype(np.float64))


class SimilarPairs(NamedTuple):
    """Pairs (i, j), i < j, of rows at least as similar as a threshold, sorted by j then i.

    ``similarity`` is BLAS's float32 value; :meth:`above` compares it with a
    threshold and decides the pairs within float32's error of it on their
    float64 similarity, so the answer does not depend on threads or blocks.
    """

    earlier: NDArray[np.int64]
    later: NDArray[np.int64]
    similarity: NDArray[np.float32]
    rows: NDArray[np.float32]
    margin: float
    exact: NDArray[np.float64]  # float64 similarity, NaN until needed

    def above(self, threshold: float) -> NDArray[np.bool_]:
        """Which pairs have similarity > threshold (exactly, see class docstring)."""
        approx = self.similarity.astype(np.float64)
        unsure = np.flatnonzero(np.abs(approx - threshold) <= self.margin)
        missing = unsure[np.isnan(self.exact[unsure])]
        if missing.size:
            self.exact[missing] = _exact_similarity(
                self.rows, self.earlier[missing], self.later[missing]
            )
        result = approx > threshold
        result[unsure] = self.exact[unsure] > threshold
        return result


def similar_earlier_pairs(rows: NDArray[np.float32], threshold: float) -> SimilarPairs:
    """Pairs (i, j), i < j, with cosine ``rows[i] . rows[j] > threshold``, sorted by j then i."""
    margin = _margin(rows)
    found_i, found_j, found_s = [], [], []
    for start, stop in _blocks(rows.shape[0]):
        sims = rows[start:stop] @ rows[:stop].T
        later, earlier = np.nonzero(sims > threshold - margin)
        later = later + start
        below = earlier < later
        found_i.append(earlier[below])
        found_j.append(later[below])
        found_s.append(sims[later[below] - start, earlier[below]])
    earlier_all = np.concatenate(found_i).astype(np.int64) if found_i else np.zeros(0, np.int64)
    later_all = np.concatenate(found_j).astype(np.int64) if found_j else np.zeros(0, np.int64)
    sims_all = np.concatenate(found_s) if found_s else np.zeros(0, np.float32)
    pairs = SimilarPairs(
        earlier_all, later_all, sims_all, rows, margin, np.full(sims_all.size, np.nan)
    )
    keep = pairs.above(threshold)
    return SimilarPairs(
        earlier_all[keep], later_all[keep], sims_all[keep], rows, margin, pairs.exact[keep]
    )


def greedy_keep(n: int, pairs: SimilarPairs, threshold: float) -> NDArray[np.bool_]:
    """Scan rows 0..n-1; drop a row whose similarity to an earlier *kept* row exceeds threshold."""
    mask = pairs.above(threshold)
    earlier, later = pairs.earlier[mask], pairs.later[mask]
    keep = np.ones(n, dtype=bool)
    if later.size == 0:
        return keep
    starts = np.flatnonzero(np.r_[True, later[1:] != later[:-1]])
    stops = np.r_[starts[1:], later.size]
    for start, stop in zip(starts.tolist(), stops.tolist(), strict=True):
        if keep[earlier[start:stop]].any():
            keep[later[start]] = False
    return keep


def redundancy(rows: NDArray[np.float32]) -> NDArray[np.float64]:
    """Largest cosine similarity of each row to any earlier row (-inf for the first row).

    BLAS finds the candidates within float32's error of each row's largest
    similarity; the largest is then taken over their float64 similarities.
    """
    n = rows.shape[0]
    out = np.full(n, -np.inf)
    margin = _margin(rows)
    for start, stop in _blocks(n):
        if stop <= 1:
            continue
        sims = rows[start:stop] @ rows[: stop - 1].T  # rows before the block's last one
        positions = np.arange(start, stop)
        sims[np.arange(stop - 1)[None, :] >= positions[:, None]] = -np.inf
        best = sims.max(axis=1).astype(np.float64)
        which, earlier = np.nonzero((sims >= (best - 2.0 * margin)[:, None]) & (sims > -np.inf))
        exact = _exact_similarity(rows, which + start, earlier.astype(np.int64))
        largest = np.full(stop - start, -np.inf)
        np.maximum.at(largest, which, exact)
        out[start:stop] = largest
    return out


class _SemDeDupBase(ClusteringSelector):
    _parameter_constraints: ClassVar[dict[str, Constraints]] = {"prefer": [Options("far", "near")]}
    prefer: Prefer

    def _cluster(
        self, matrix: NDArray[np.float32], rng: np.random.Generator
    ) -> tuple[NDArray[np.float32], KMeansResult, list[NDArray[np.int64]]]:
        unit, clustering = self.cluster(matrix, rng)
        return unit, clustering, cluster_orders(unit, clustering, self.prefer)


class SemDeDupSelector(_SemDeDupBase):
    """SemDeDup as a filter: keep the rows that are no near-duplicate of a kept row.

    Parameters
    ----------
    eps : float or None
        Rows with cosine similarity above ``1 - eps`` to a kept row of their
        cluster are dropped (the paper uses values around 0.01 to 0.1).
    target_keep : float or None
        Instead of ``eps``: the fraction of rows to keep, in (0, 1]; ``eps``
        is searched in ``[0, max_eps]`` (the kept fraction is reached as
        closely as the data allows).
    max_eps : float
        Upper end of the search.
    n_clusters, n_iter : int
        Spherical k-means settings.
    prefer : {"far", "near"}
        Which row of a duplicate group survives: the one farthest from the
        centroid (the paper) or the closest.
    """

    name: ClassVar[str] = "semdedup"
    requires_budget: ClassVar[bool] = False
    _parameter_constraints: ClassVar[dict[str, Constraints]] = {
        "eps": [Interval(Real, 0, 2), None],
        "target_keep": [Interval(Real, 0, 1, closed="right"), None],
        "max_eps": [Interval(Real, 0, 2)],
    }

    def __init__(
        self,
        eps: float | None = None,
        target_keep: float | None = None,
        max_eps: float = 0.5,
        n_clusters: int = 100,
        n_iter: int = 20,
        prefer: Prefer = "far",
    ) -> None:
        self.eps = eps
        self.target_keep = target_keep
        self.max_eps = max_eps
        self.n_clusters = n_clusters
        self.n_iter = n_iter
        self.prefer = prefer

    def _check_together(self) -> None:
        if (self.eps is None) == (self.target_keep is None):
            raise ValueError("semdedup: give exactly one of `eps` and `target_keep`")

    def select(
        self,
        scores: pa.Table,
        embeddings: NDArray[np.floating[Any]] | None = None,
        budget: Budget | None = None,
        *,
        random_state: RandomState = None,
    ) -> Selection:
        if budget is not None:
            raise ValueError(
                "semdedup is a filter and defines its own size; leave its budget empty "
                "(or use semdedup_rank to meet a budget)"
            )
        n = scores.num_rows
        matrix, _, _, rng = self.inputs(scores, embeddings, budget, random_state)
        if n == 0:
            return Selection.from_indices([], details={"eps": self.eps, "n_clusters": 0})
        unit, clustering, orders = self._cluster(matrix, rng)
        widest = float(self.eps) if self.eps is not None else float(self.max_eps)
        pairs = [similar_earlier_pairs(unit[order], 1.0 - widest) for order in orders]

        def kept_at(eps: float) -> NDArray[np.bool_]:
            keep = np.zeros(n, dtype=bool)
            for order, cluster_pairs in zip(orders, pairs, strict=True):
                keep[order] = greedy_keep(order.size, cluster_pairs, 1.0 - eps)
            return keep

        eps = float(self.eps) if self.eps is not None else self._search(kept_at, n)
        keep = kept_at(eps)
        kept = np.flatnonzero(keep)
        return Selection.from_indices(
            kept,
            groups=clustering.labels[kept],
            details={
                "eps": eps,
                "target_keep": self.target_keep,
                "n_clusters": clustering.n_clusters,
                "removed": int(n - kept.size),
            },
        )

    def _search(self, kept_at: Callable[[float], NDArray[np.bool_]], n: int) -> float:
        """Bisection for the eps whose kept fraction is closest to ``target_keep``."""
        target = float(self.target_keep or 1.0) * n
        low, high = 0.0, float(self.max_eps)
        counts = {low: int(kept_at(low).sum()), high: int(kept_at(high).sum())}
        if counts[high] >= target:  # even the widest eps keeps too many: remove what we can
            return high
        if counts[low] <= target:
            return low
        for _ in range(_SEARCH_STEPS):  # invariant: count(low) > target >= count(high)
            middle = (low + high) / 2.0
            counts[middle] = int(kept_at(middle).sum())
            if counts[middle] > target:
                low = middle
            else:
                high = middle
        return min(counts, key=lambda eps: (abs(counts[eps] - target), eps))


class SemDeDupRankSelector(_SemDeDupBase):
    """SemDeDup at a budget: keep the budget's least redundant rows (see module docstring).

    Parameters
    ----------
    n_clusters, n_iter : int
        Spherical k-means settings.
    prefer : {"far", "near"}
        Scan order inside a cluster (see :class:`SemDeDupSelector`).
    """

    name: ClassVar[str] = "semdedup_rank"

    def __init__(self, n_clusters: int = 100, n_iter: int = 20, prefer: Prefer = "far") -> None:
        self.n_clusters = n_clusters
        self.n_iter = n_iter
        self.prefer = prefer

    def select(
        self,
        scores: pa.Table,
        embeddings: NDArray[np.floating[Any]] | None = None,
        budget: Budget | None = None,
        *,
        random_state: RandomState = None,
    ) -> Selection:
        n = scores.num_rows
        matrix, k, sizes, rng = self.inputs(scores, embeddings, budget, random_state)
        if n == 0:
            return Selection.from_indices([], details={"n_clusters": 0})
        unit, clustering, orders = self._cluster(matrix, rng)
        score = np.full(n, -np.inf)
        for order in orders:
            score[order] = redundancy(unit[order])
        kept = fitting_prefix(np.lexsort((np.arange(n), score))[:k], sizes, budget)
        finite = score[kept][np.isfinite(score[kept])]
        worst = float(finite.max()) if finite.size else None
        return Selection.from_indices(
            kept,
            groups=clustering.labels[kept],
            details={
                "n_clusters": clustering.n_clusters,
                "max_redundancy_kept": worst,
                "equivalent_eps": None if worst is None else 1.0 - worst,
            },
        )
