"""Frames on Spark plan their groups without running their input (no job before an action)."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest

from thresher.engines.spark import SparkFrame, planned_partitions


def _jobs(spark: Any) -> set[int]:
    return set(spark.sparkContext.statusTracker().getJobIdsForGroup())


def _new_jobs(spark: Any, before: set[int]) -> set[int]:
    """Jobs started since ``before`` was taken.

    The tracker keeps only the latest jobs (``spark.ui.retainedJobs``), so in a long
    session old ids drop out: compare ids above the newest one seen, not whole sets.
    """
    newest = max(before, default=-1)
    return {job for job in _jobs(spark) if job > newest}


@pytest.mark.spark
def test_map_groups_runs_no_job_to_plan_its_partitions(spark_engine: Any) -> None:
    spark = spark_engine.spark
    joined = spark.range(1000).repartition(7, "id").join(spark.range(100), "id")
    frame = SparkFrame(spark_engine, joined, pa.schema([pa.field("id", pa.int64())]))
    before = _jobs(spark)
    grouped = frame.map_groups(["id"], lambda table: table, frame.schema)
    assert not _new_jobs(spark, before)  # a shuffle of an adaptive plan ran to count its partitions
    assert grouped.count() == 100
    assert _new_jobs(spark, before)  # the action does run (the check above could not pass idly)


@pytest.mark.spark
def test_planned_partitions_of_shuffles_and_unions(spark_engine: Any) -> None:
    spark = spark_engine.spark
    shuffled = spark.range(50).repartition(7, "id")
    before = _jobs(spark)
    assert planned_partitions(shuffled) == 7
    assert planned_partitions(shuffled.union(spark.range(5).repartition(3))) == 10
    assert not _new_jobs(spark, before)
    assert shuffled.rdd.getNumPartitions() == 7


class _Mark:
    """A grouped step with a side effect: one empty file per group it is called on."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def __call__(self, table: pa.Table) -> pa.Table:
        import os
        import uuid

        for key in set(table.column("key").to_pylist()):
            open(os.path.join(self.directory, f"{key}-{uuid.uuid4().hex}"), "w").close()
        return table


@pytest.mark.spark
def test_to_table_runs_a_grouped_step_once(spark_engine: Any, tmp_path: Any) -> None:
    spark = spark_engine.spark
    rows = spark.range(40).selectExpr("id", "id % 4 AS key")
    schema = pa.schema([pa.field("id", pa.int64()), pa.field("key", pa.int64())])
    frame = SparkFrame(spark_engine, rows, schema).map_groups(["key"], _Mark(str(tmp_path)), schema)
    assert frame.to_table(max_rows=100).num_rows == 40
    marks = sorted(p.name.split("-")[0] for p in tmp_path.iterdir())
    assert marks == ["0", "1", "2", "3"]  # each group's step ran once (twice: count, then collect)
    with pytest.raises(ValueError, match="40 rows exceed the driver limit of 39"):
        frame.to_table(max_rows=39)
