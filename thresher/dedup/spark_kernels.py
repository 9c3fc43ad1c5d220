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
    """Dedup kernels on Spark DataFrames: LSH by shuffled band keys, large-star / small-star."""

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


#: The kernels the Spark engine's registry row names.
KERNELS = SparkKernels()
