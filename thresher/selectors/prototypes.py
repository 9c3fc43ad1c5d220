"""Self-supervised prototypes: difficulty is the distance to the nearest k-means centroid.

Cluster the L2-normalised embeddings with spherical k-means; a row's
difficulty is its cosine distance ``1 - cos(x, c(x))`` to its centroid.
Sorscher et al. keep the hard (far) rows when data is plentiful and the
easy (close) rows when it is scarce. A sum budget
(:class:`~thresher.selectors.base.SumBudget`, e.g. tokens) takes rows in
that order (farthest or closest first) and stops before the first row that
would make the sum exceed the total.

References
----------
Sorscher, Geirhos, Shekhar, Ganguli and Morcos, "Beyond neural scaling
laws: beating power law scaling via data pruning", NeurIPS 2022.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from thresher._params import Constraints, Options
from thresher.selectors.base import Budget, RandomState, Selection, fitting_prefix
from thresher.selectors.clustered import ClusteringSelector
from thresher.selectors.kmeans import KMeansResult, normalize_rows


def cosine_to_centroid(
    unit_rows: NDArray[np.float32], clustering: KMeansResult
) -> NDArray[np.float64]:
    """Cosine similarity of each (unit-norm or zero) row to its assigned centroid."""
    centroids = normalize_rows(clustering.centroids).astype(np.float64)
    return np.einsum("ij,ij->i", unit_rows.astype(np.float64), centroids[clustering.labels])


class PrototypesSelector(ClusteringSelector):
    """Keep the rows farthest from (``hard``) or closest to (``easy``) their prototype.

    Ties are broken by row position (earlier rows first).

    Parameters
    ----------
    n_clusters : int
        Number of prototypes (k of spherical k-means).
    keep : {"hard", "easy"}
        ``hard`` keeps the largest cosine distances, ``easy`` the smallest.
    n_iter : int
        k-means iterations.
    """

    name: ClassVar[str] = "prototypes"
    _parameter_constraints: ClassVar[dict[str, Constraints]] = {"keep": [Options("hard", "easy")]}

    def __init__(
        self, n_clusters: int = 100, keep: Literal["hard", "easy"] = "hard", n_iter: int = 20
    ) -> None:
        self.n_clusters = n_clusters
        self.keep = keep
        self.n_iter = n_iter

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
            return Selection.from_indices([], details={"n_clusters": 0, "keep": self.keep})
        unit, clustering = self.cluster(matrix, rng)
        distance = 1.0 - cosine_to_centroid(unit, clustering)
        key = -distance if self.keep == "hard" else distance
        kept = fitting_prefix(np.argsort(key, kind="stable")[:k], sizes, budget)
        sizes = clustering.sizes()
        picked = np.bincount(clustering.labels[kept], minlength=clustering.n_clusters)
        details: dict[str, Any] = {
            "n_clusters": clustering.n_clusters,
            "keep": self.keep,
            "clusters": [
                {
                    "cluster": c,
                    "size": int(sizes[c]),
                    "selected": int(picked[c]),
                    "weight_mean": 1.0,
                }
                for c in range(clustering.n_clusters)
            ],
        }
        if kept.size:
            details["distance_min"] = float(distance[kept].min())
            details["distance_max"] = float(distance[kept].max())
        return Selection.from_indices(kept, groups=clustering.labels[kept], details=details)
