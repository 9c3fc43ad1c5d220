"""Engines, registered by name: ``local`` (process pool, no JVM) and ``spark``.

Adding one (Ray, Dask) is one module implementing :class:`~thresher.engines.base.Engine`
and :class:`~thresher.frame.Frame`, and one line in :mod:`thresher.engines.registry`
(or a :func:`~thresher.engines.registry.register_engine` call). Engines are
imported only when used, so a run on the local engine never imports Spark.
"""

from __future__ import annotations

from typing import Protocol, cast

from thresher.engines.base import Engine, EngineSettings
from thresher.engines.registry import ENGINES, engine_entry, load, register_engine
from thresher.errors import ConfigError


def engine_class(kind: str) -> type[Engine]:
    """The class of engine ``kind``; ConfigError naming the engines available when unknown."""
    try:
        entry = engine_entry(kind)
    except ValueError as error:
        raise ConfigError(f"engine.kind: {error}") from None
    cls: type[Engine] = load(entry.engine)
    return cls


class _HasEngine(Protocol):
    """A run config: what :func:`make_engine` reads is its ``engine`` section."""

    @property
    def engine(self) -> EngineSettings: ...


def make_engine(config: _HasEngine | EngineSettings) -> Engine:
    """The engine a run config (or its ``engine`` section) asks for."""
    section = cast("EngineSettings", getattr(config, "engine", config))
    return engine_class(section.kind).from_config(section)


def in_memory_engine(driver_max_rows: int) -> Engine:
    """An engine for tables the driver already holds: no worker, nothing started.

    For work on an in-memory table (a selection tried on stored scores):
    frames are Arrow tables in this process, and up to ``driver_max_rows``
    rows may be gathered.
    """
    from thresher.engines.local import LocalEngine

    return LocalEngine(workers=1, driver_max_rows=driver_max_rows)


__all__ = ["ENGINES", "Engine", "in_memory_engine", "make_engine", "register_engine"]
