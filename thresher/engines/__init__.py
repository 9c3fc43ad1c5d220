"""Engines, registered by name: ``local`` (process pool, no JVM) and ``spark``.

Adding one (Ray, Dask) is one module implementing :class:`~thresher.engines.base.Engine`
and :class:`~thresher.frame.Frame`, and one line in :mod:`thresher.engines.registry`.
Engines are imported only when used, so a run on the local engine never imports Spark.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, cast

from thresher.engines.base import Engine
from thresher.engines.registry import ENGINES

if TYPE_CHECKING:
    from thresher.config import EngineConfig, RunConfig


def engine_class(kind: str) -> type[Engine]:
    module, name = ENGINES[kind].split(":")
    cls: type[Engine] = getattr(import_module(module), name)
    return cls


def make_engine(config: RunConfig | EngineConfig) -> Engine:
    """The engine a run config (or its ``engine`` section) asks for."""
    section = cast("EngineConfig", getattr(config, "engine", config))
    return engine_class(section.kind).from_config(section)


__all__ = ["ENGINES", "Engine", "make_engine"]
