"""Partitioned selection: a selector run per k-means partition, for corpora beyond the driver.

The algorithm (both engines run these same functions, so they select the
same rows):

1. **Sample.** Draw ``sample`` row positions uniformly without replacement
   (from ``(seed, step)``) and fit ``clusters`` centroids on their
   embeddings with faiss k-means, on the driver.
2. **Assign.** Every row goes to its nearest centroid (squared L2, ties
   decided in float64 so that batching cannot change the answer), with its
   squared distance. On Spark this runs on the executors (``mapInArrow``).
3. **Allocate.** Per partition, its size and cost (sum of squared distances,
   summed exactly with ``math.fsum``, so independent of row order) go to the
   driver, which splits the budget across partitions: proportionally to the
   selector's :meth:`~thresher.selectors._partition.Partitionable.allocation_weights`,
   capped at each partition's size, rounded by largest remainder
   (deterministic; the total is exactly the budget).
4. **Select.** The selector runs on each partition alone (on Spark:
   ``groupBy(partition).applyInArrow``), on the partition's rows in input
   order, with the partition's budget and a random generator derived from
   ``(seed, step, partition)`` only, never from the data layout. Partition 0
   draws from the step's own stream ``(seed, step)``, which is what the
   in-memory selection uses, so one partition reproduces it exactly.

Selection groups are the partitions; ``details["clusters"]`` lists each
partition's size, kept rows and mean weight (the report's cluster table).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

from thresher.selectors import Selection, Selector
from thresher.selectors._allocation import allocate
from thresher.selectors._kmeans import fit_kmeans, nearest_centroid, seed_from, squared_distances
from thresher.selectors._partition import Partitionable

#: Column names added to the rows while they are being partitioned.
POSITION = "_thresher_position"
PARTITION = "_thresher_partition"
SQ_DISTANCE = "_thresher_sq_distance"
SAMPLE = "_thresher_sample"


@dataclass(frozen=True)
class PartitionJob:
    """Everything a partitioned step needs besides the rows themselves.

    Attributes
    ----------
    selector : Selector
        A selector that is :class:`~thresher.selectors._partition.Partitionable`.
    budget : int or None
        Rows to keep in total (already resolved against the step's rows);
        None for selectors that define their own size.
    clusters, sample, iterations : int
        Partitions, rows sampled to fit them, k-means iterations.
    seed, step : int
        Run seed and step number: the only sources of randomness.
    embeddings : str
        Score-table column holding the vectors.
    columns : tuple of str
        Other score-table columns the selector reads (scores, label).
    """

    selector: Selector
    budget: int | None
    clusters: int
    sample: int
    iterations: int
    seed: int
    step: int
    embeddings: str
    columns: tuple[str, ...]


def partition_random_state(seed: int, step: int, partition: int) -> np.random.Generator:
    """The generator of one partition: ``(seed, step)`` for partition 0, else ``(seed, step, p)``."""
    return np.random.default_rng([seed, step] if partition == 0 else [seed, step, partition])


def plan_sample(n_rows: int, job: PartitionJob) -> tuple[NDArray[np.int64], int]:
    """Sorted positions of the centroid sample, and the faiss seed (from ``(seed, step)`` only)."""
    rng = np.random.default_rng([job.seed, job.step, 0, 1])  # apart from the partition streams
    size = min(job.sample, n_rows)
    positions = np.sort(rng.choice(n_rows, size=size, replace=False)).astype(np.int64)
    return positions, seed_from(rng)


def fit_partitions(
    sample: NDArray[np.float32], faiss_seed: int, job: PartitionJob
) -> NDArray[np.float32]:
    """Centroids (clusters, d) fitted on the sample's embeddings (in position order)."""
    return fit_kmeans(sample, job.clusters, seed=faiss_seed, n_iter=job.iterations).centroids


def assign(
    matrix: NDArray[np.float32], centroids: NDArray[np.float32]
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Partition of each row and its squared distance to the partition's centroid."""
    labels = nearest_centroid(matrix, centroids)
    return labels, squared_distances(matrix, centroids, labels)


def partition_cost(sq_distances: NDArray[np.float64]) -> float:
    """Exactly rounded sum of squared distances (the same whatever the row order)."""
    return math.fsum(np.asarray(sq_distances, dtype=np.float64).tolist())


def allocate_partitions(
    job: PartitionJob, rows: NDArray[np.int64], costs: NDArray[np.float64]
) -> NDArray[np.int64] | None:
    """Budget of each partition (aligned with ``rows``), or None for a filter."""
    if job.budget is None:
        return None
    if not isinstance(job.selector, Partitionable):
        raise ValueError(f"selector {job.selector.name!r} cannot run per partition")
    weights = job.selector.allocation_weights(rows, costs)
    return allocate(job.budget, weights, rows)


def select_partition(
    job: PartitionJob,
    partition: int,
    scores: pa.Table,
    positions: NDArray[np.int64],
    matrix: NDArray[np.float32],
    budget: int | None,
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Run the selector on one partition's rows (in position order); kept positions and weights."""
    if budget == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    chosen = job.selector.select(
        scores.select(list(job.columns)),
        matrix,
        budget,
        random_state=partition_random_state(job.seed, job.step, partition),
    )
    return positions[chosen.indices], chosen.weights


def assemble(
    job: PartitionJob,
    partitions: NDArray[np.int64],
    rows: NDArray[np.int64],
    sample_size: int,
    positions: NDArray[np.int64],
    weights: NDArray[np.float64],
    groups: NDArray[np.int64],
) -> Selection:
    """The step's Selection from every partition's kept rows, with per-partition details."""
    kept = np.bincount(groups, minlength=int(partitions.max(initial=-1)) + 1)
    weight_sum = np.bincount(groups, weights=weights, minlength=kept.size)
    clusters = []
    for partition, size in zip(partitions.tolist(), rows.tolist(), strict=True):
        selected = int(kept[partition]) if partition < kept.size else 0
        clusters.append(
            {
                "cluster": partition,
                "size": int(size),
                "selected": selected,
                "weight_mean": float(weight_sum[partition] / selected) if selected else 0.0,
            }
        )
    details: dict[str, Any] = {
        "partitions": int(partitions.size),
        "partition_sample": sample_size,
        "clusters": clusters,
    }
    return Selection.from_indices(positions, weights=weights, groups=groups, details=details)


def vector_matrix(column: pa.Array | pa.ChunkedArray, name: str) -> NDArray[np.float32]:
    """An (n, d) float32 matrix from a list column whose rows all have d numbers."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    n = len(array)
    if n == 0:
        return np.zeros((0, 0), dtype=np.float32)
    if array.null_count:
        raise ValueError(f"embedding column {name!r} has {array.null_count} null rows")
    lengths = pc.list_value_length(array).to_numpy(zero_copy_only=False)
    if lengths.min() != lengths.max():
        raise ValueError(
            f"embedding column {name!r} mixes vector lengths {int(lengths.min())} and "
            f"{int(lengths.max())}"
        )
    flat = array.flatten().to_numpy(zero_copy_only=False)
    return np.asarray(flat, dtype=np.float32).reshape(n, int(lengths[0]))


def valid_vectors(column: pa.Array | pa.ChunkedArray) -> NDArray[np.bool_]:
    """True where a list entry is present, non-empty and holds only finite numbers."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    n = len(array)
    lengths = pc.list_value_length(array).to_numpy(zero_copy_only=False)
    valid = ~np.isnan(np.asarray(lengths, dtype=np.float64))  # null rows have a null length
    valid &= np.nan_to_num(np.asarray(lengths, dtype=np.float64), nan=0.0) > 0
    flat = array.flatten()
    if len(flat):
        finite = pc.fill_null(pc.is_finite(flat.cast(pa.float64())), False)
        parents = pc.list_parent_indices(array).to_numpy(zero_copy_only=False)
        bad = np.asarray(parents)[~finite.to_numpy(zero_copy_only=False)]
        valid[bad] = False
    return valid if n else np.zeros(0, dtype=bool)


def select_partitioned_local(
    job: PartitionJob, scores: pa.Table, embeddings: NDArray[np.float32]
) -> Selection:
    """Partitioned selection in memory (the local engine, and the reference for Spark).

    Parameters
    ----------
    scores : pa.Table
        The rows reaching the step, in input order, with ``job.columns``.
    embeddings : ndarray of float32, shape (n, d)
        Row-aligned vectors.
    """
    n = scores.num_rows
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return assemble(job, empty, empty, 0, empty, np.zeros(0), empty)
    sample, faiss_seed = plan_sample(n, job)
    centroids = fit_partitions(embeddings[sample], faiss_seed, job)
    labels, sq = assign(embeddings, centroids)
    order = np.argsort(labels, kind="stable")  # by partition, then position
    partitions, starts, rows = np.unique(labels[order], return_index=True, return_counts=True)
    members = np.split(order, starts[1:])
    costs = np.array([partition_cost(sq[m]) for m in members])
    budgets = allocate_partitions(job, rows, costs)
    kept_positions, kept_weights, kept_groups = [], [], []
    for i, (partition, rows_of) in enumerate(zip(partitions.tolist(), members, strict=True)):
        budget = None if budgets is None else int(budgets[i])
        positions, weights = select_partition(
            job, partition, scores.take(pa.array(rows_of)), rows_of, embeddings[rows_of], budget
        )
        kept_positions.append(positions)
        kept_weights.append(weights)
        kept_groups.append(np.full(positions.size, partition, dtype=np.int64))
    return assemble(
        job,
        partitions.astype(np.int64),
        rows.astype(np.int64),
        int(sample.size),
        np.concatenate(kept_positions),
        np.concatenate(kept_weights),
        np.concatenate(kept_groups),
    )
