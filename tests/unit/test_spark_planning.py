"""Frames on Spark plan their groups without running their input (no job before an action)."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest

from thresher.engines.spark import SparkFrame, planned_partitions


def _jobs(spark: Any) -> set[int]:
    return set(spark.sparkContext.statusTracker().getJobIdsForGroup())


@pytest.mark.spark
def test_map_groups_runs_no_job_to_plan_its_partitions(spark_engine: Any) -> None:
    spark = spark_engine.spark
    joined = spark.range(1000).repartition(7, "id").join(spark.range(100), "id")
    frame = SparkFrame(spark_engine, joined, pa.schema([pa.field("id", pa.int64())]))
    before = _jobs(spark)
    grouped = frame.map_groups(["id"], lambda table: table, frame.schema)
    assert _jobs(spark) == before  # a shuffle of an adaptive plan ran to count its partitions
    assert grouped.count() == 100
    assert _jobs(spark) > before  # the action does run (the check above could not pass idly)


@pytest.mark.spark
def test_planned_partitions_of_shuffles_and_unions(spark_engine: Any) -> None:
    spark = spark_engine.spark
    shuffled = spark.range(50).repartition(7, "id")
    before = _jobs(spark)
    assert planned_partitions(shuffled) == 7
    assert planned_partitions(shuffled.union(spark.range(5).repartition(3))) == 10
    assert _jobs(spark) == before
    assert shuffled.rdd.getNumPartitions() == 7
