"""The two dedup algorithms that depend on the engine, chosen by the engine's registry row.

The candidate pairs of MinHash LSH and the clusters (keeper-centred, or
connected components) are best done differently on one machine (bands
spilled to disk and sorted; one greedy pass or union-find) and on a cluster
(band keys shuffled; rounds of joins), by orders of magnitude. They are no part of the engine contract: each engine's
row in :mod:`thresher.engines.registry` names its kernels (``dedup``), an
object with the two methods of :class:`DedupKernels`, or another engine
whose kernels it uses. The dedup stage asks :func:`kernels_for` for those
of the engine it runs on.

- ``local`` (:mod:`thresher.dedup.local`): frames of Arrow tables in this
  process (:class:`~thresher.frame.TableFrame`); any engine whose frames are
  such tables can use them;
- ``spark`` (:mod:`thresher.dedup.spark_kernels`): Spark DataFrames.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from thresher.engines.registry import ENGINES, engine_entry, load
from thresher.errors import ConfigError

if TYPE_CHECKING:
    from thresher.dedup.spec import DedupSpec
    from thresher.engines.base import Engine
    from thresher.frame import Frame
    from thresher.io.fs import Location


class DedupKernels(Protocol):
    """What an engine's dedup kernels do (both run where the engine's frames are)."""

    def near_duplicate_edges(
        self, engine: Engine, members: Frame, spec: DedupSpec, scratch: Location
    ) -> tuple[Frame, dict[str, Any]]:
        """Verified MinHash LSH edges ``(src, dst)`` among ``members`` (``doc``, signature).

        Returns the edges and counters for the dedup summary.
        """
        ...

    def connected_components(self, engine: Engine, edges: Frame, scratch: Location) -> Frame:
        """``(doc, root)`` for every node of ``edges`` (``src``, ``dst``: int64).

        ``root`` is the smallest node of the node's component.
        """
        ...

    def keeper_clusters(
        self, engine: Engine, edges: Frame, keys: Frame, scratch: Location
    ) -> Frame:
        """``(doc, keeper)`` for every node of ``edges`` that another node claims.

        The greedy in keeper order (:func:`thresher.dedup.graph.greedy_keepers`):
        ``keys`` holds every node's keeper-order key (``thresher_order``,
        ``thresher_keeper_key``, binary, compared as unsigned bytes).
        """
        ...


def kernels_for(engine: Engine) -> DedupKernels:
    """The dedup kernels of ``engine`` (its registry row's ``dedup``)."""
    return kernels_of(engine.kind)


def kernels_of(kind: str) -> DedupKernels:
    """The dedup kernels the engine registered as ``kind`` uses (following a name to its row)."""
    seen = [kind]
    reference = engine_entry(kind).dedup
    while reference is not None and ":" not in reference:
        if reference in seen or reference not in ENGINES:
            raise ConfigError(
                f"engine {seen[-1]!r} takes its dedup kernels from {reference!r}, which is "
                f"{'a loop' if reference in seen else 'no registered engine'}"
            )
        seen.append(reference)
        reference = ENGINES[reference].dedup
    if reference is None:
        raise ConfigError(
            f"engine {kind!r} has no dedup kernels; register it with dedup='local' (frames of "
            "Arrow tables in this process) or with kernels of its own"
        )
    kernels: DedupKernels = load(reference)
    return kernels
