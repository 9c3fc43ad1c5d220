"""The dedup kernels on Spark: :mod:`thresher.dedup.spark`'s DataFrame functions as frame work.

:data:`KERNELS` is what the ``spark`` engine's registry row names
(:mod:`thresher.dedup.kernels`). It unwraps the engine's frames into
DataFrames, runs :mod:`thresher.dedup.spark` on them and wraps the results
back (on the engine of the frames it was given), so that module works on
DataFrames alone and never imports the engine.
"""

from __future__ import annotations

from typing import Any

from thresher.dedup.spec import DedupSpec
from thresher.engines.base import Engine
from thresher.engines.spark import SparkFrame, user_errors
from thresher.frame import Frame
from thresher.io.fs import Location


class SparkKernels:
    """Dedup kernels on Spark DataFrames: LSH by shuffled band keys, then rounds of joins."""

    def near_duplicate_edges(
        self, engine: Engine, members: Frame, spec: DedupSpec, scratch: Location
    ) -> tuple[Frame, dict[str, Any]]:
        from thresher.dedup.spark import near_duplicate_edges
        from thresher.dedup.steps import EDGES_SCHEMA

        assert isinstance(members, SparkFrame)
        spark = members.engine
        with user_errors():
            edges, stats = near_duplicate_edges(spark.spark, members.df, spec)
            return SparkFrame(spark, edges, EDGES_SCHEMA), stats

    def connected_components(self, engine: Engine, edges: Frame, scratch: Location) -> Frame:
        from thresher.dedup.spark import connected_components
        from thresher.dedup.steps import COMPONENTS_SCHEMA, EDGES_SCHEMA

        assert isinstance(edges, SparkFrame)
        spark = edges.engine

        def checkpoint(df: Any, name: str) -> Any:
            return SparkFrame(spark, df, EDGES_SCHEMA).checkpoint(scratch / name).df

        with user_errors():
            return SparkFrame(spark, connected_components(edges.df, checkpoint), COMPONENTS_SCHEMA)

    def keeper_clusters(
        self, engine: Engine, edges: Frame, keys: Frame, scratch: Location
    ) -> Frame:
        from thresher.dedup.spark import keeper_assignment
        from thresher.dedup.steps import KEEPERS_SCHEMA

        assert isinstance(edges, SparkFrame) and isinstance(keys, SparkFrame)
        spark = edges.engine

        def checkpoint(df: Any, name: str) -> Any:
            schema = _arrow_schema_of(df)
            return SparkFrame(spark, df, schema).checkpoint(scratch / name).df

        with user_errors():
            assigned = keeper_assignment(edges.df, keys.df, checkpoint)
            return SparkFrame(spark, assigned, KEEPERS_SCHEMA)


def _arrow_schema_of(df: Any) -> Any:
    """The Arrow schema of a DataFrame of long and binary columns (the keeper rounds' frames)."""
    import pyarrow as pa

    types = {"bigint": pa.int64(), "binary": pa.binary(), "int": pa.int32()}
    return pa.schema([pa.field(name, types[kind]) for name, kind in df.dtypes])


#: The kernels the Spark engine's registry row names.
KERNELS = SparkKernels()
