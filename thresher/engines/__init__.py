"""Engines run the per-shard stages: ``local`` (process pool) or ``spark`` (mapInArrow)."""

from __future__ import annotations

from thresher.config import RunConfig
from thresher.engines.base import Engine


def make_engine(config: RunConfig) -> Engine:
    """The engine a run config asks for (Spark is imported only when used)."""
    if config.engine.kind == "local":
        from thresher.engines.local import LocalEngine

        return LocalEngine(workers=config.engine.workers)
    from thresher.engines.spark import SparkEngine

    return SparkEngine(
        config.engine.spark, workers=config.engine.workers, batch_size=config.engine.batch_size
    )


__all__ = ["Engine", "make_engine"]
