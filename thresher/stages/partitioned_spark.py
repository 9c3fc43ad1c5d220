"""Partitioned selection as Spark jobs: embeddings never travel to the driver, except the sample.

The steps are those of :mod:`thresher.stages.partitioned`, which also
supplies every piece of arithmetic, so the Spark engine selects the same
rows as the in-memory algorithm. The driver writes the positions of the
rows reaching the step (and which of them form the centroid sample) to a
staging Parquet file; executors join it with the score shards, assign
partitions (``mapInArrow``), summarise each partition and run the selector
per partition (``groupBy(partition).applyInArrow``). Only the sample's
vectors, one row of statistics per partition and the kept rows' positions
and weights come back to the driver.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from thresher.io import schema as S
from thresher.io.files import write_parquet_atomic
from thresher.run_dir import RunDir
from thresher.selectors import Selection
from thresher.stages import partitioned as P


def score_files(run: RunDir) -> list[str]:
    """Parquet files of every committed score shard."""
    files = sorted(
        str(p)
        for p in run.scores.rglob("*.parquet")
        if not any(part.startswith((".", "_")) for part in p.relative_to(run.scores).parts)
    )
    if not files:
        raise FileNotFoundError(f"no score shards under {run.scores}")
    return files


def invalid_vector_rows(spark: Any, run_root: str, column: str) -> pa.Table:
    """(shard, row) of score rows whose ``column`` vector is null, empty or not finite."""
    from pyspark.sql.types import IntegerType, LongType, StructField, StructType

    frame = spark.read.option("mergeSchema", "true").parquet(*score_files(RunDir(Path(run_root))))
    frame = frame.select(S.SHARD, S.ROW, column)

    def invalid(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            bad = ~P.valid_vectors(batch.column(2))
            yield pa.RecordBatch.from_arrays(
                [batch.column(0).filter(pa.array(bad)), batch.column(1).filter(pa.array(bad))],
                names=[S.SHARD, S.ROW],
            )

    schema = StructType([StructField(S.SHARD, IntegerType()), StructField(S.ROW, LongType())])
    return frame.mapInArrow(invalid, schema).toArrow()


def select_partitioned_spark(
    spark: Any, job: P.PartitionJob, scores: pa.Table, run_root: str
) -> Selection:
    """Partitioned selection over the score shards of ``run_root``.

    Parameters
    ----------
    scores : pa.Table
        The rows reaching the step, in input order; only their positions
        (``thresher_shard``, ``thresher_row``) are used.
    """
    n = scores.num_rows
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return P.assemble(job, empty, empty, 0, empty, np.zeros(0), empty)
    run = RunDir(Path(run_root))
    sample, faiss_seed = P.plan_sample(n, job)
    in_sample = np.zeros(n, dtype=bool)
    in_sample[sample] = True
    staging = run.staging / f"partitioned-{job.step}-{uuid.uuid4().hex[:8]}"
    active = pa.table(
        {
            S.SHARD: scores.column(S.SHARD).cast(pa.int32()),
            S.ROW: scores.column(S.ROW).cast(pa.int64()),
            P.POSITION: pa.array(np.arange(n, dtype=np.int64)),
            P.SAMPLE: pa.array(in_sample),
        }
    )
    write_parquet_atomic(active, staging / "active.parquet")
    assigned = None
    try:
        columns = [S.SHARD, S.ROW, *job.columns, job.embeddings]
        frame = spark.read.option("mergeSchema", "true").parquet(*score_files(run))
        rows = frame.select(*columns).join(
            spark.read.parquet(str(staging / "active.parquet")), on=[S.SHARD, S.ROW], how="inner"
        )
        rows = rows.drop(S.SHARD, S.ROW)
        centroids = _fit_on_sample(rows, job, faiss_seed, sample.size)
        assigned = _assign(rows.drop(P.SAMPLE), job, centroids).persist()
        partitions, sizes, costs = _statistics(assigned)
        if int(sizes.sum()) != n:
            raise RuntimeError(f"partitioned selection saw {int(sizes.sum())} of {n} rows")
        budgets = P.allocate_partitions(job, sizes, costs)
        kept = _select(assigned, job, partitions, budgets)
    finally:
        if assigned is not None:
            assigned.unpersist()
        shutil.rmtree(staging, ignore_errors=True)
    return P.assemble(
        job,
        partitions,
        sizes,
        int(sample.size),
        kept.column("position").to_numpy(),
        kept.column("weight").to_numpy(),
        kept.column("partition").to_numpy(),
    )


def _fit_on_sample(rows: Any, job: P.PartitionJob, faiss_seed: int, expected: int) -> np.ndarray:
    from pyspark.sql import functions as F

    table = rows.filter(F.col(P.SAMPLE)).select(P.POSITION, job.embeddings).toArrow()
    if table.num_rows != expected:
        raise RuntimeError(f"centroid sample: expected {expected} rows, got {table.num_rows}")
    table = table.sort_by(P.POSITION)
    return P.fit_partitions(
        P.vector_matrix(table.column(job.embeddings), job.embeddings), faiss_seed, job
    )


def _assign(rows: Any, job: P.PartitionJob, centroids: np.ndarray) -> Any:
    from pyspark.sql.types import DoubleType, LongType, StructField, StructType

    column = job.embeddings

    def assign(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            matrix = P.vector_matrix(batch.column(batch.schema.get_field_index(column)), column)
            labels, sq = P.assign(matrix, centroids)
            yield pa.RecordBatch.from_arrays(
                [*batch.columns, pa.array(labels), pa.array(sq)],
                names=[*batch.schema.names, P.PARTITION, P.SQ_DISTANCE],
            )

    schema = StructType(
        [
            *rows.schema.fields,
            StructField(P.PARTITION, LongType(), False),
            StructField(P.SQ_DISTANCE, DoubleType(), False),
        ]
    )
    return rows.mapInArrow(assign, schema)


def _statistics(assigned: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    def summarise(table: pa.Table) -> pa.Table:
        return pa.table(
            {
                "partition": [table.column(P.PARTITION)[0].as_py()],
                "rows": [table.num_rows],
                "cost": [P.partition_cost(table.column(P.SQ_DISTANCE).to_numpy())],
            }
        )

    stats = (
        assigned.select(P.PARTITION, P.SQ_DISTANCE)
        .groupBy(P.PARTITION)
        .applyInArrow(summarise, "partition long, rows long, cost double")
        .toArrow()
        .sort_by("partition")
    )
    return (
        stats.column("partition").to_numpy().astype(np.int64),
        stats.column("rows").to_numpy().astype(np.int64),
        stats.column("cost").to_numpy().astype(np.float64),
    )


def _select(
    assigned: Any, job: P.PartitionJob, partitions: np.ndarray, budgets: np.ndarray | None
) -> pa.Table:
    budget_of = (
        None if budgets is None else dict(zip(partitions.tolist(), budgets.tolist(), strict=True))
    )
    column = job.embeddings

    def select_group(table: pa.Table) -> pa.Table:
        table = table.sort_by(P.POSITION)
        partition = int(table.column(P.PARTITION)[0].as_py())
        positions, weights = P.select_partition(
            job,
            partition,
            table,
            table.column(P.POSITION).to_numpy(),
            P.vector_matrix(table.column(column), column),
            None if budget_of is None else int(budget_of[partition]),
        )
        return pa.table(
            {
                "position": pa.array(positions, pa.int64()),
                "weight": pa.array(weights, pa.float64()),
                "partition": pa.array(np.full(positions.size, partition), pa.int64()),
            }
        )

    return (
        assigned.groupBy(P.PARTITION)
        .applyInArrow(select_group, "position long, weight double, partition long")
        .toArrow()
    )
