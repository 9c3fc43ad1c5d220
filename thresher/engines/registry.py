"""The engines a run config may name: where each one's class, options and dedup kernels live.

One row per engine, every part named by a ``"module:attribute"`` string and
imported only when needed, so that :mod:`thresher.config` checks an engine
name and its options section without importing the engine (Spark's engine
imports pyspark):

- ``engine``: the class implementing :class:`thresher.engines.base.Engine`;
- ``options``: the pydantic model of the engine's own config section
  (``engine.<name>:`` in a run config), or None when it takes none. Config
  validation imports it, so it lives in a light module
  (:mod:`thresher.engines.spark_options`);
- ``dedup``: the engine's dedup kernels (:mod:`thresher.dedup.kernels`),
  or the name of another engine whose kernels it uses (an engine whose
  frames are :class:`~thresher.frame.TableFrame` uses ``"local"``).

A new engine is one module and one line: a row below, or
:func:`register_engine` from code that runs before the engine is made.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from typing import Any

from thresher.errors import ConfigError


@dataclass(frozen=True)
class EngineEntry:
    """Where one engine's parts live (see module docstring)."""

    engine: str
    options: str | None = None
    dedup: str | None = None


#: Engine name -> its parts; the modules are imported only when used.
ENGINES: dict[str, EngineEntry] = {
    "local": EngineEntry(
        "thresher.engines.local:LocalEngine",
        dedup="thresher.dedup.local:KERNELS",
    ),
    "spark": EngineEntry(
        "thresher.engines.spark:SparkEngine",
        options="thresher.engines.spark_options:SparkConfig",
        dedup="thresher.dedup.spark_kernels:KERNELS",
    ),
}
_BUILT_IN = frozenset(ENGINES)


def register_engine(
    name: str, engine: str, *, options: str | None = None, dedup: str | None = None
) -> None:
    """Add an engine (see module docstring for the parts); a name is registered once.

    Examples
    --------
    >>> register_engine("serial", "my_package.serial:SerialEngine", dedup="local")
    """
    if name in ENGINES:
        raise ValueError(f"engine {name!r} is registered already ({ENGINES[name].engine})")
    for part in (engine, options, dedup):
        if part is not None and ":" in part:
            _split(part)
    ENGINES[name] = EngineEntry(engine, options, dedup)


def unregister_engine(name: str) -> None:
    """Remove an engine added by :func:`register_engine` (the built-in ones stay)."""
    if name in _BUILT_IN:
        raise ValueError(f"engine {name!r} is built in")
    ENGINES.pop(name, None)


def engine_names() -> list[str]:
    """The registered engine names, sorted."""
    return sorted(ENGINES)


def unknown_engine(name: object) -> str:
    """The message for an engine name that is not registered."""
    return f"unknown engine {name!r}; available: {', '.join(engine_names())}"


def either(names: list[str]) -> str:
    """``a``, ``a or b``, ``a, b or c``: names as a choice in a sentence."""
    return " or ".join([", ".join(names[:-1]), names[-1]] if len(names) > 2 else names)


def check_engine(name: str, where: str = "engine") -> str:
    """``name`` when it is a registered engine, else ConfigError naming those available."""
    if name not in ENGINES:
        raise ConfigError(f"{where} must be {either(engine_names())}, got {name!r}")
    return name


def engine_entry(name: str) -> EngineEntry:
    """The parts of engine ``name``; ValueError naming the engines available when unknown."""
    entry = ENGINES.get(name)
    if entry is None:
        raise ValueError(unknown_engine(name))
    return entry


def options_model(name: str) -> Any:
    """The pydantic model of engine ``name``'s config section, or None when it takes none."""
    reference = engine_entry(name).options
    return None if reference is None else load(reference)


def load(reference: str) -> Any:
    """The attribute a ``"module:attribute"`` string names (its module imported now)."""
    module, attribute = _split(reference)
    return getattr(import_module(module), attribute)


def _split(reference: str) -> tuple[str, str]:
    module, _, attribute = reference.partition(":")
    if not module or not attribute:
        raise ValueError(f"{reference!r} must be 'module:attribute'")
    return module, attribute
