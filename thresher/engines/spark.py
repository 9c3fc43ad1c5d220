"""The Spark engine: the same scorer objects inside ``mapInArrow``; materialise as a join.

``local[*]`` by default, or any master URL (standalone, Kubernetes). Paths
in the run directory must be visible to every executor (a shared or
distributed file system), as for any Spark job.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from thresher import errors
from thresher.config import SchemaConfig, SparkConfig
from thresher.dedup.spec import DedupSpec
from thresher.engines.base import Engine
from thresher.io import schema as S
from thresher.io.files import write_parquet_atomic
from thresher.io.shards import Shard
from thresher.run_dir import RunDir
from thresher.stages.ingest import ingest_to_run
from thresher.stages.materialize import output_names
from thresher.stages.score import (
    BoundScorer,
    commit_directory,
    input_columns,
    score_batches,
    score_schema,
)

if TYPE_CHECKING:
    from thresher.selectors import Selection
    from thresher.stages.partitioned import PartitionJob

_PARTITION = "thresher_p"
_THRESHER_ERROR = re.compile(r"thresher\.[\w.]*?(\w+Error): (.+)")
_MAX_WAVES = 8


class SparkEngine(Engine):
    """Runs stages as Spark jobs on a session built from ``SparkConfig``."""

    kind = "spark"

    def __init__(
        self, config: SparkConfig, workers: int | None = None, batch_size: int = 1024
    ) -> None:
        self.config = config
        self.workers = workers
        self.batch_size = batch_size
        self._spark: Any = None
        self._owns_session = False

    @property
    def spark(self) -> Any:
        if self._spark is None:
            from pyspark.sql import SparkSession

            # Python workers must run this interpreter (where thresher is installed);
            # pyspark's RDD API reads only the environment variable.
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
            self._owns_session = SparkSession.getActiveSession() is None
            builder = SparkSession.builder.appName(self.config.app_name)
            master = self.config.master or (None if _under_spark_submit() else "local[*]")
            if master is not None:
                builder = builder.master(master)
            defaults = {
                "spark.pyspark.python": sys.executable,
                "spark.pyspark.driver.python": sys.executable,
                "spark.sql.execution.arrow.maxRecordsPerBatch": str(self.batch_size),
                "spark.sql.session.timeZone": "UTC",
                # Lets adaptive execution coalesce the shuffles of cached frames too
                # (dedup persists several): 200 near-empty tasks each otherwise.
                "spark.sql.optimizer.canChangeCachedPlanOutputPartitioning": "true",
            }
            for key, value in {**defaults, **self.config.conf}.items():
                builder = builder.config(key, value)
            self._spark = builder.getOrCreate()
            if self._owns_session:
                self._spark.sparkContext.setLogLevel("WARN")
        return self._spark

    @property
    def parallelism(self) -> int:
        return int(self.spark.sparkContext.defaultParallelism)

    # -- stages ------------------------------------------------------------------
    def ingest(
        self, shards: list[Shard], schema: SchemaConfig, run_root: str
    ) -> list[dict[str, Any]]:
        if not shards:
            return []
        rdd = self.spark.sparkContext.parallelize(shards, numSlices=len(shards))
        with _user_errors():
            return list(rdd.map(lambda shard: ingest_to_run(shard, schema, run_root)).collect())

    def score(
        self, shard_indices: list[int], scorers: list[BoundScorer], run_root: str, batch_size: int
    ) -> list[dict[str, Any]]:
        run = RunDir(Path(run_root))
        pending = [i for i in shard_indices if not run.scores_shard(i).is_dir()]
        done = [{"index": i, "skipped": True} for i in shard_indices if i not in pending]
        wave_size = _wave_size(len(pending), self.parallelism)
        for start in range(0, len(pending), wave_size):
            wave = pending[start : start + wave_size]
            self._score_wave(wave, scorers, run, batch_size)
            done += [{"index": i, "skipped": False} for i in wave]
        return sorted(done, key=lambda item: item["index"])

    def _score_wave(
        self, wave: list[int], scorers: list[BoundScorer], run: RunDir, batch_size: int
    ) -> None:
        from pyspark.sql import functions as F
        from pyspark.sql.pandas.types import from_arrow_schema

        files = [str(run.ingested_shard(i)) for i in wave]
        arrow_schema = pa.unify_schemas(
            [pq.read_schema(f) for f in files], promote_options="permissive"
        )
        has_label = S.LABEL in arrow_schema.names
        out_schema = score_schema(scorers, arrow_schema.field(S.LABEL).type if has_label else None)
        columns = [c for c in input_columns(scorers, has_label) if c in arrow_schema.names]

        def score_partition(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
            yield from score_batches(batches, scorers, out_schema)

        staging = run.staging / f"scores-wave-{uuid.uuid4().hex[:8]}"
        self.spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(batch_size))
        frame = self.spark.read.option("mergeSchema", "true").parquet(*files).select(*columns)
        scored = frame.mapInArrow(score_partition, from_arrow_schema(out_schema))
        with _user_errors():
            (
                scored.withColumn(_PARTITION, F.col(S.SHARD))
                .write.mode("overwrite")
                .partitionBy(_PARTITION)
                .parquet(str(staging))
            )
        for index in wave:
            produced = staging / f"{_PARTITION}={index}"
            if not produced.is_dir():  # a shard with no ingested rows
                write_parquet_atomic(out_schema.empty_table(), produced / "part-0.parquet")
            commit_directory(produced, run.scores_shard(index))
        shutil.rmtree(staging, ignore_errors=True)

    def materialize(
        self,
        shard_indices: list[int],
        schema: SchemaConfig,
        weighted: bool,
        run_root: str,
        out_dir: str,
    ) -> int:
        from pyspark.sql import functions as F

        run = RunDir(Path(run_root))
        files = [str(run.ingested_shard(i)) for i in shard_indices]
        corpus = self.spark.read.option("mergeSchema", "true").parquet(*files)
        kept = (
            self.spark.read.parquet(str(run.selection / "selection.parquet"))
            .filter(F.col("keep"))
            .select(S.SHARD, S.ROW, "weight")
        )
        joined = corpus.join(kept, on=[S.SHARD, S.ROW], how="inner")
        joined = joined.withColumnsRenamed(output_names(schema))
        if weighted:
            joined = joined.withColumnRenamed("weight", S.IMPORTANCE_WEIGHT)
        else:
            joined = joined.drop("weight")
        joined = joined.drop(*S.POSITION_COLUMNS)
        partitions = max(1, min(len(shard_indices), 4 * self.parallelism))
        with _user_errors():
            joined.repartition(partitions).write.mode("overwrite").parquet(out_dir)
            return int(self.spark.read.parquet(out_dir).count())

    # -- partitioned selection -------------------------------------------------------
    remote_selection = True

    def select_partitioned(
        self,
        job: PartitionJob,
        scores: pa.Table,
        embeddings: Any,
        run_root: str,
    ) -> Selection:
        """Partitioned selection as Spark jobs over the score shards (see ``partitioned_spark``)."""
        from thresher.stages.partitioned_spark import select_partitioned_spark

        with _user_errors():
            return select_partitioned_spark(self.spark, job, scores, run_root)

    def invalid_vector_rows(self, run_root: str, column: str) -> pa.Table:
        """(shard, row) of score rows whose vector ``column`` is null, empty or not finite."""
        from thresher.stages.partitioned_spark import invalid_vector_rows

        with _user_errors():
            return invalid_vector_rows(self.spark, run_root, column)

    def dedup(
        self, shard_indices: list[int], spec: DedupSpec, run_root: str, out_dir: str
    ) -> dict[str, Any]:
        """Dedup as Spark jobs (``thresher.dedup.spark``); no edge or signature reaches the driver."""
        from thresher.dedup.spark import dedup_spark

        with _user_errors():
            return dedup_spark(self.spark, shard_indices, spec, run_root, out_dir)

    def close(self) -> None:
        if self._spark is not None and self._owns_session:
            self._spark.stop()
        self._spark = None


@contextmanager
def _user_errors() -> Iterator[None]:
    """Re-raise a thresher error raised inside a Spark worker as itself, not a Java trace."""
    try:
        yield
    except Exception as error:
        match = _THRESHER_ERROR.search(str(error))
        if match is None:
            raise
        cls = getattr(errors, match.group(1), None)
        if not (isinstance(cls, type) and issubclass(cls, errors.ThresherError)):
            cls = errors.ThresherError
        raise cls(match.group(2).strip()) from error


def _wave_size(pending: int, parallelism: int) -> int:
    """Shards per scoring job: two per core at least, and no more than ``_MAX_WAVES`` jobs.

    Each wave is one Spark job whose shards commit together when it ends, so a
    killed run redoes one wave at most; each job also costs about half a
    second of scheduling and commit, which adds up over hundreds of shards.
    A whole number of shards per core keeps the cores busy to the wave's end.
    """
    per_core = max(2, -(-pending // (_MAX_WAVES * parallelism)))
    return max(1, per_core * parallelism)


def _under_spark_submit() -> bool:
    """True when spark-submit launched this driver (it then provides the master)."""
    return "PYSPARK_GATEWAY_PORT" in os.environ
