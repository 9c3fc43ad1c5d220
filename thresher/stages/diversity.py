"""The log-det diversity of an embedding step's kept rows, against a random subset of its rows.

Every step that reads an embedding column (the embedding selectors, and
any step with ``partitions``) records in its details

    diversity: {logdet_kept, logdet_random, sample}

``logdet_kept`` is :func:`~thresher.selectors.diversity.logdet_diversity`
of ``sample`` kept rows, ``logdet_random`` that of ``sample`` rows drawn
from every row that reached the step (kept or not): what keeping a random
subset of the same size would give. ``sample`` is the number of kept rows,
at most :data:`~thresher.selectors.diversity.SAMPLE` (2,000), so the cost
is bounded whatever the corpus. Higher is more diverse; a diversity
selector (``dpp``) should score above chance, a pruner of outliers or
duplicates may not.

Both samples are "the rows with the smallest seeded hash of their id" (ties
by input order), the seed coming from the run's seed and the step only:
on the driver from the gathered rows (:func:`table_diversity`), or with
:func:`~thresher.selectors.ranking.k_smallest` where the rows are
(:func:`frame_diversity`, partitioned steps: the kept rows are joined to
the step's rows and one selection takes the smallest keys among the kept
rows and among the others, a few jobs, at most twice the sample on the
driver whatever ``engine.driver_max_rows``, like the partitions' centroid
sample). Either way the same rows reach the driver, in input order, so
every engine, and one partition or none, records the same values (rounded
to 6 decimals). In a mixture, each group's details hold its own.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

from thresher.frame import Frame
from thresher.io import schema as S
from thresher.keys import seed_material
from thresher.selectors.diversity import SAMPLE, logdet_diversity, sample_positions
from thresher.selectors.ranking import PriorityKey, k_smallest
from thresher.selectors.vectors import vector_matrix

#: Decimals the recorded values keep (BLAS sums may differ in the last bits between machines).
DECIMALS = 6
#: The kept rows' column that marks them once joined to the step's rows (never null there).
_KEPT = "weight"


def diversity_seed(seed: int, step: int) -> int:
    """The hash seed of a step's diversity samples, apart from its other random streams."""
    return seed_material(seed, step, 0, 2)


def diversity_details(
    kept: NDArray[np.floating[Any]] | None, random: NDArray[np.floating[Any]] | None
) -> dict[str, Any]:
    """The ``diversity`` entry of a step's details from the two sampled matrices."""
    if kept is None or random is None or kept.shape[0] == 0:
        return {"logdet_kept": None, "logdet_random": None, "sample": 0}
    return {
        "logdet_kept": round(logdet_diversity(kept), DECIMALS),
        "logdet_random": round(logdet_diversity(random), DECIMALS),
        "sample": int(kept.shape[0]),
    }


def table_diversity(
    table: pa.Table, matrix: NDArray[np.floating[Any]] | None, kept: NDArray[np.int64], seed: int
) -> dict[str, Any]:
    """Diversity of the rows ``kept`` (positions) of a step's gathered ``table`` (input order).

    ``table`` has the ids and input-order keys of every row that reached
    the step, ``matrix`` their vectors (row-aligned).
    """
    kept = np.asarray(kept, dtype=np.int64)
    size = min(SAMPLE, int(kept.size))
    if matrix is None or size == 0:
        return diversity_details(None, None)
    ids = table.column(S.ID)
    order = np.asarray(table.column(S.ORDER).to_numpy(), dtype=np.int64)
    mine = kept[sample_positions(ids.take(pa.array(kept)), order[kept], seed, size)]
    anyone = sample_positions(ids, order, seed, size)
    return diversity_details(matrix[mine], matrix[anyone])


class _KeptFirst:
    """Rank key: group 0 the kept rows (a weight joined in), 1 the others; the seeded id hash."""

    def __init__(self, seed: int) -> None:
        self.priority = PriorityKey(seed)

    def __call__(
        self, table: pa.Table
    ) -> tuple[NDArray[np.int64], NDArray[np.uint64], NDArray[np.uint64]]:
        _, primary, secondary = self.priority(table)
        kept = np.asarray(pc.is_valid(table.column(_KEPT)), dtype=bool)
        return np.where(kept, 0, 1).astype(np.int64), primary, secondary


class _Sampled:
    """The rows a cut keeps: id, input-order key, vector and the kept mark."""

    def __init__(self, key: _KeptFirst, cuts: Any) -> None:
        self.key = key
        self.cuts = cuts

    def __call__(self, table: pa.Table) -> pa.Table:
        return table.filter(pa.array(self.cuts.keep(*self.key(table))))


def frame_diversity(
    rows: Frame, kept: Frame, n_rows: int, n_kept: int, column: str, seed: int
) -> dict[str, Any]:
    """Diversity of the ``n_kept`` ``kept`` rows (input-order keys, weights) among the ``n_rows`` ``rows``.

    ``rows`` has the ids, input-order keys and the vector ``column`` of
    every row that reached the step. One selection where the rows are
    finds the ``sample`` smallest keys among the kept rows and among the
    others; the smallest of all rows are among those two sets, so at most
    twice the sample reaches the driver.
    """
    size = min(SAMPLE, n_kept)
    if size == 0:
        return diversity_details(None, None)
    marked = (
        rows.select([S.ID, S.ORDER, column])
        .join(kept.select([S.ORDER, _KEPT]), [S.ORDER], "left")
        .cache()
    )
    try:
        key = _KeptFirst(seed)
        cuts = k_smallest(marked, key, np.array([size, size]), np.array([n_kept, n_rows - n_kept]))
        sample = marked.map_batches(_Sampled(key, cuts), marked.schema).to_table(max_rows=2 * size)
    finally:
        marked.release()
    sample = sample.sort_by(S.ORDER)
    vectors = vector_matrix(sample.column(column), column)
    mine = np.flatnonzero(np.asarray(pc.is_valid(sample.column(_KEPT)), dtype=bool))
    order = np.asarray(sample.column(S.ORDER).to_numpy(), dtype=np.int64)
    anyone = sample_positions(sample.column(S.ID), order, seed, size)
    return diversity_details(vectors[mine], vectors[anyone])
