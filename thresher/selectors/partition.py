"""What a selector must say to run per k-means partition (see ``thresher.stages.partitioned``).

Partitioned selection clusters the rows into partitions, gives each
partition a share of the budget, and runs the selector on each partition
alone. A selector opts in by inheriting :class:`Partitionable`; it may
override :meth:`Partitionable.allocation_weights` when its method implies
a better split than proportional to size.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


class Partitionable:
    """Mixin for selectors that decompose over k-means partitions."""

    def allocation_weights(
        self, rows: NDArray[np.int64], costs: NDArray[np.float64]
    ) -> NDArray[np.float64]:
        """Share of the budget each partition should get (before capping at its size).

        Parameters
        ----------
        rows : ndarray of int64, shape (p,)
            Rows in each partition.
        costs : ndarray of float64, shape (p,)
            Sum of squared distances of the partition's rows to its centroid.

        Returns
        -------
        ndarray of float64, shape (p,)
            Non-negative weights; the default is proportional to size.
        """
        return rows.astype(np.float64)
