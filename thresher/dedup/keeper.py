"""The keeper order: which document of a duplicate cluster is kept.

One total order over documents, the same on both engines: the configured
score keys (each compared as float64, ascending or descending, null and
NaN last), then the id in byte order, then the input position. The keeper
of a cluster is its first member in this order, so it never depends on how
the cluster was found.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

from thresher.dedup.spec import KeeperKey


def keeper_rank(
    table: pa.Table, keys: tuple[KeeperKey, ...], positions: NDArray[np.int64]
) -> NDArray[np.int64]:
    """Rank of every row of ``table`` in the keeper order (0 = kept first).

    ``table`` holds ``id`` and the key columns; ``positions`` are the rows'
    document keys (input order), the last tie-breaker.
    """
    n = table.num_rows
    id_order = np.asarray(pc.sort_indices(table.column("id")))
    id_rank = np.empty(n, dtype=np.int64)
    id_rank[id_order] = np.arange(n, dtype=np.int64)
    sort_keys: list[NDArray[Any]] = [positions, id_rank]
    for key in reversed(keys):
        values = np.asarray(
            table.column(key.column).cast(pa.float64()).to_numpy(zero_copy_only=False),
            dtype=np.float64,
        )
        missing = np.isnan(values)
        values = np.where(missing, 0.0, -values if key.descending else values)
        sort_keys += [values, missing]
    order = np.lexsort(sort_keys)
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n, dtype=np.int64)
    return rank
