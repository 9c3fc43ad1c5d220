"""Partitioned selection: a selector run per k-means partition, for corpora beyond the driver.

Written once against :class:`~thresher.frame.Frame`, so every engine runs
the same steps (and selects the same rows); the driver holds the centroid
sample and one row of statistics per partition, never a row per document:

1. **Sample.** The ``sample`` rows with the smallest seeded hash of their id
   (a uniform sample without replacement, from ``(seed, step)`` only) are
   gathered on the driver, in input order, and ``clusters`` centroids are
   fitted on their embeddings with k-means (:mod:`thresher.selectors.kmeans`).
2. **Assign.** Every row goes to its nearest centroid (squared L2, near-ties
   decided in float64 so that batching cannot change the answer), with its
   squared distance, where the row is.
3. **Allocate.** Per partition, its size and cost (sum of squared distances,
   summed exactly, so independent of row order and partitioning) reach the
   driver, which splits the budget across partitions: proportionally to the
   selector's :meth:`~thresher.selectors.partition.Partitionable.allocation_weights`,
   capped at each partition's size, rounded by largest remainder
   (deterministic; the total is exactly the budget). A sum budget
   (:class:`~thresher.selectors.base.SumBudget`, e.g. tokens) is split the
   same way in its own unit: each partition's weight is the selector's
   weight times the partition's mean size, capped at the partition's sum
   (its exact integer total, from an aggregate), and the selector meets its
   partition's share by its own rule (rows in its order until the next
   would exceed the share).
4. **Select.** The selector runs on each partition alone (:meth:`Frame.map_groups`),
   on the partition's rows in input order, with the partition's budget and
   a random generator derived from ``(seed, step, partition)`` only.
   Partition 0 draws from the step's own stream ``(seed, step)``, which is
   what the in-memory selection uses, so one partition reproduces it.

Selection groups are the partitions; ``details["clusters"]`` lists each
partition's size, kept rows and mean weight (the report's cluster table).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any, cast

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from thresher.frame import Frame
from thresher.keys import seed_material
from thresher.selectors import Selector
from thresher.selectors.allocation import allocate
from thresher.selectors.base import SumBudget, count_values
from thresher.selectors.kmeans import fit_kmeans, nearest_centroid, seed_from, squared_distances
from thresher.selectors.partition import Partitionable
from thresher.selectors.ranking import PriorityKey, k_smallest
from thresher.selectors.vectors import vector_matrix

ORDER = "thresher_order"
#: Columns added to the rows while they are being partitioned.
PARTITION = "_thresher_partition"
SQ_DISTANCE = "_thresher_sq_distance"
#: The kept rows of a step: input-order key, weight, group.
KEPT_SCHEMA = pa.schema(
    [pa.field(ORDER, pa.int64()), pa.field("weight", pa.float64()), pa.field("group", pa.int64())]
)


@dataclass(frozen=True)
class PartitionJob:
    """Everything a partitioned step needs besides the rows themselves.

    Attributes
    ----------
    selector : Selector
        A selector that is :class:`~thresher.selectors.partition.Partitionable`.
    budget : int, SumBudget or None
        Rows to keep in total (already resolved against the step's rows),
        or a sum budget; None for selectors that define their own size.
    clusters, sample, iterations : int
        Partitions, rows sampled to fit them, k-means iterations.
    seed, step : int
        Run seed and step number: the only sources of randomness.
    embeddings : str
        Column holding the vectors.
    columns : tuple of str
        Other columns the selector reads (scores, label).
    """

    selector: Selector
    budget: int | SumBudget | None
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


def sample_seeds(job: PartitionJob) -> tuple[int, int]:
    """(hash seed of the centroid sample, k-means seed), from ``(seed, step)`` only."""
    rng = np.random.default_rng([job.seed, job.step, 0, 1])  # apart from the partition streams
    return seed_material(job.seed, job.step, 0, 1), seed_from(rng)


# -- exact sums ------------------------------------------------------------------------


def exact_sum_parts(values: NDArray[np.float64]) -> dict[int, int]:
    """Non-negative finite floats as integer mantissas summed per binary exponent (exact)."""
    values = np.asarray(values, dtype=np.float64)
    mantissa, exponent = np.frexp(values)
    integers = (mantissa * (1 << 53)).astype(np.int64)
    exponent = exponent.astype(np.int64) - 53
    sums: dict[int, int] = {}
    for e in np.unique(exponent).tolist():
        chosen = integers[exponent == e]
        total = 0
        for start in range(0, chosen.size, 512):  # 512 x 2**53 fits int64
            total += int(chosen[start : start + 512].sum())
        sums[int(e)] = total
    return sums


def merge_sum_parts(parts: list[dict[int, int]]) -> dict[int, int]:
    merged: dict[int, int] = {}
    for part in parts:
        for e, total in part.items():
            merged[e] = merged.get(e, 0) + total
    return merged


def exact_sum_value(parts: dict[int, int]) -> float:
    """The correctly rounded float of an exact sum (what ``math.fsum`` of the values gives)."""
    if not parts:
        return 0.0
    low = min(parts)
    total = sum(value << (e - low) for e, value in parts.items())
    return float(Fraction(total) * Fraction(2) ** low) if total else 0.0


# -- the steps -----------------------------------------------------------------------


class _SampleRows:
    """Rows of the centroid sample: input-order key and vector."""

    def __init__(self, key: PriorityKey, cuts: Any, embeddings: str) -> None:
        self.key = key
        self.cuts = cuts
        self.embeddings = embeddings

    def __call__(self, table: pa.Table) -> pa.Table:
        keep = self.cuts.keep(*self.key(table))
        return table.filter(pa.array(keep)).select([ORDER, self.embeddings])


class _Assign:
    def __init__(self, centroids: NDArray[np.float32], embeddings: str) -> None:
        self.centroids = centroids
        self.embeddings = embeddings

    def __call__(self, table: pa.Table) -> pa.Table:
        matrix = vector_matrix(table.column(self.embeddings), self.embeddings)
        if table.num_rows == 0:
            labels, sq = np.zeros(0, np.int64), np.zeros(0)
        else:
            labels = nearest_centroid(matrix, self.centroids)
            sq = squared_distances(matrix, self.centroids, labels)
        return table.append_column(PARTITION, pa.array(labels, pa.int64())).append_column(
            SQ_DISTANCE, pa.array(sq, pa.float64())
        )


class _PartitionStats:
    def __call__(self, table: pa.Table) -> dict[int, tuple[int, dict[int, int]]]:
        labels = table.column(PARTITION).to_numpy()
        sq = table.column(SQ_DISTANCE).to_numpy()
        out = {}
        for p in np.unique(labels).tolist():
            mine = labels == p
            out[int(p)] = (int(mine.sum()), exact_sum_parts(sq[mine]))
        return out


class _PartitionSums:
    """Sum of a budget's column per partition (exact: whole numbers in int64)."""

    def __init__(self, column: str) -> None:
        self.column = column

    def __call__(self, table: pa.Table) -> dict[int, int]:
        labels = table.column(PARTITION).to_numpy()
        sizes = count_values(table, self.column)
        return {int(p): int(sizes[labels == p].sum()) for p in np.unique(labels).tolist()}


def _merge_sums(parts: list[dict[int, int]]) -> dict[int, int]:
    merged: dict[int, int] = {}
    for part in parts:
        for p, total in part.items():
            merged[p] = merged.get(p, 0) + total
    return merged


def _merge_stats(
    parts: list[dict[int, tuple[int, dict[int, int]]]],
) -> dict[int, tuple[int, dict[int, int]]]:
    merged: dict[int, tuple[int, dict[int, int]]] = {}
    for part in parts:
        for p, (rows, sums) in part.items():
            before = merged.get(p, (0, {}))
            merged[p] = (before[0] + rows, merge_sum_parts([before[1], sums]))
    return merged


class _SelectGroups:
    """Run the selector on every partition of a call's rows (a ``map_groups`` function)."""

    def __init__(self, job: PartitionJob, budgets: dict[int, int] | None) -> None:
        self.job = job
        self.budgets = budgets

    def __call__(self, table: pa.Table) -> pa.Table:
        parts = []
        labels = table.column(PARTITION).to_numpy()
        for partition in np.unique(labels).tolist():
            rows = table.filter(pa.array(labels == partition)).sort_by(ORDER)
            budget = None if self.budgets is None else self.budgets.get(int(partition), 0)
            parts.append(select_partition(self.job, int(partition), rows, budget))
        if not parts:
            return KEPT_SCHEMA.empty_table()
        return pa.concat_tables(parts)


def select_partition(
    job: PartitionJob, partition: int, rows: pa.Table, budget: int | SumBudget | None
) -> pa.Table:
    """The selector on one partition's rows (in input order): kept order keys, weights, groups.

    ``budget`` is the partition's share: rows, or the total of the job's
    sum budget (an int, wrapped here) when the job has one.
    """
    if budget == 0 or rows.num_rows == 0:
        return KEPT_SCHEMA.empty_table()
    if isinstance(job.budget, SumBudget) and isinstance(budget, int):
        budget = SumBudget(job.budget.column, budget)
    matrix = vector_matrix(rows.column(job.embeddings), job.embeddings)
    names = list(dict.fromkeys([*job.columns, "id", ORDER]))
    chosen = job.selector.select(
        rows.select([n for n in names if n in rows.column_names]),
        matrix,
        budget,
        random_state=partition_random_state(job.seed, job.step, partition),
    )
    order = rows.column(ORDER).to_numpy()
    return pa.table(
        {
            ORDER: pa.array(order[chosen.indices], pa.int64()),
            "weight": pa.array(chosen.weights, pa.float64()),
            "group": pa.array(np.full(chosen.indices.size, partition, dtype=np.int64)),
        },
        schema=KEPT_SCHEMA,
    )


class _KeptPerGroup:
    def __call__(self, table: pa.Table) -> dict[int, tuple[int, dict[int, int]]]:
        groups = table.column("group").to_numpy()
        weights = table.column("weight").to_numpy()
        return {
            int(g): (int((groups == g).sum()), exact_sum_parts(weights[groups == g]))
            for g in np.unique(groups).tolist()
        }


def select_partitioned(rows: Frame, job: PartitionJob, n_rows: int) -> tuple[Frame, dict[str, Any]]:
    """Run a partitioned step (see module docstring) on the ``n_rows`` rows of ``rows``.

    Returns the kept rows (``KEPT_SCHEMA``) and the step's details.
    """
    if not isinstance(job.selector, Partitionable):
        raise ValueError(f"selector {job.selector.name!r} cannot run per partition")
    details: dict[str, Any] = {"partitions": 0, "partition_sample": 0, "clusters": []}
    if n_rows == 0:
        return rows.map_batches(lambda t: KEPT_SCHEMA.empty_table(), KEPT_SCHEMA), details
    centroids, n_sampled = _fit_centroids(rows, job, n_rows)
    assigned_schema = pa.schema(
        [*rows.schema, pa.field(PARTITION, pa.int64()), pa.field(SQ_DISTANCE, pa.float64())]
    )
    assigned = rows.map_batches(_Assign(centroids, job.embeddings), assigned_schema).cache()
    try:
        stats = assigned.aggregate(_PartitionStats(), _merge_stats)
        partitions = np.array(sorted(stats), dtype=np.int64)
        sizes = np.array([stats[p][0] for p in partitions.tolist()], dtype=np.int64)
        costs = np.array([exact_sum_value(stats[p][1]) for p in partitions.tolist()])
        if int(sizes.sum()) != n_rows:
            raise RuntimeError(f"partitioned selection saw {int(sizes.sum())} of {n_rows} rows")
        budgets = _partition_budgets(assigned, job, partitions, sizes, costs, details)
        kept = assigned.map_groups([PARTITION], _SelectGroups(job, budgets), KEPT_SCHEMA).cache()
        per_group = kept.aggregate(_KeptPerGroup(), _merge_stats)
    finally:
        assigned.release()
    details = {
        **{k: v for k, v in details.items() if k in ("requested_sum", "budget_sum")},
        "partitions": int(partitions.size),
        "partition_sample": n_sampled,
        "clusters": [
            _cluster_row(int(p), int(n), per_group.get(int(p)))
            for p, n in zip(partitions.tolist(), sizes.tolist(), strict=True)
        ],
    }
    return kept, details


def _fit_centroids(rows: Frame, job: PartitionJob, n_rows: int) -> tuple[np.ndarray, int]:
    """k-means centroids fit on a seeded sample of ``rows``, and the sample's size."""
    hash_seed, faiss_seed = sample_seeds(job)
    size = min(job.sample, n_rows)
    key = PriorityKey(hash_seed)
    cuts = k_smallest(rows, key, np.array([size]), np.array([n_rows]))
    vector_field = rows.schema.field(job.embeddings)
    sample_schema = pa.schema([pa.field(ORDER, pa.int64()), vector_field])
    sample = (
        rows.map_batches(_SampleRows(key, cuts, job.embeddings), sample_schema)
        .to_table(max_rows=size)
        .sort_by(ORDER)
    )
    matrix = vector_matrix(sample.column(job.embeddings), job.embeddings)
    fitted = fit_kmeans(matrix, job.clusters, seed=faiss_seed, n_iter=job.iterations)
    return fitted.centroids, int(sample.num_rows)


def _partition_budgets(
    assigned: Frame,
    job: PartitionJob,
    partitions: np.ndarray,
    sizes: np.ndarray,
    costs: np.ndarray,
    details: dict[str, Any],
) -> dict[int, int] | None:
    """Each partition's share of the step's budget (rows, or a column's sum), or None."""
    selector = cast(Partitionable, job.selector)  # checked by select_partitioned
    if isinstance(job.budget, SumBudget):
        totals = assigned.aggregate(_PartitionSums(job.budget.column), _merge_sums)
        sums = np.array([totals.get(p, 0) for p in partitions.tolist()], dtype=np.int64)
        mean = np.divide(sums, sizes, out=np.zeros(sizes.size), where=sizes > 0)
        weights = selector.allocation_weights(sizes, costs) * mean
        shares = allocate(min(job.budget.total, int(sums.sum())), weights, sums)
        details["requested_sum"] = int(job.budget.total)
        details["budget_sum"] = job.budget.column
        return dict(zip(partitions.tolist(), shares.tolist(), strict=True))
    if job.budget is None:
        return None
    weights = selector.allocation_weights(sizes, costs)
    return dict(
        zip(partitions.tolist(), allocate(job.budget, weights, sizes).tolist(), strict=True)
    )


def _cluster_row(
    partition: int, size: int, kept: tuple[int, dict[int, int]] | None
) -> dict[str, Any]:
    selected = kept[0] if kept else 0
    mean = exact_sum_value(kept[1]) / selected if kept and selected else 0.0
    return {"cluster": partition, "size": size, "selected": selected, "weight_mean": mean}
