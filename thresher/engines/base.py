"""The engine contract: everything a stage asks of the machinery that runs it.

A stage never asks which engine it runs on. It asks for two kinds of work:

- **per shard**: :meth:`Engine.map_shards` runs a picklable function on every
  item (a shard, usually) where the data is, each committing its own output,
  and reports each finished item to the stage's progress;
- **whole table**: :meth:`Engine.read` turns stored Parquet files into a
  :class:`Frame`, rows the engine holds where the data is (Spark: a
  DataFrame on the executors; local: Arrow tables in this process), which
  stages transform only through Arrow functions (:meth:`Frame.map_batches`,
  :meth:`Frame.map_groups`), relational operations (:meth:`Frame.join`...)
  and :meth:`Frame.aggregate`, whose result must be small: its size may
  depend on strata, classes or histogram bins, never on the number of rows.

Two algorithms are engine-specific because the best one differs by orders
of magnitude between one machine and a cluster: connected components
(:meth:`Engine.connected_components`) and the candidate pairs of MinHash LSH
(:meth:`Engine.near_duplicate_edges`). A third engine (Ray, Dask) is one
module implementing this class and :class:`Frame`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any, TypeVar

import pyarrow as pa

from thresher.frame import Frame
from thresher.io.fs import Location

if TYPE_CHECKING:
    from thresher.config import EngineConfig
    from thresher.dedup.spec import DedupSpec
    from thresher.progress import StageProgress

T = TypeVar("T")
R = TypeVar("R")

#: Rows a driver may collect by default (``engine.driver_max_rows``).
DRIVER_MAX_ROWS = 2_000_000


class Engine(ABC):
    """Runs the stages' work (see module docstring)."""

    kind: str
    #: Most rows any stage may gather on the driver (a non-partitioned embedding selector).
    driver_max_rows: int = DRIVER_MAX_ROWS
    #: Whether whole-table work (duplicate ids, dedup, selection) holds every row in the
    #: driver's memory (about 0.4 KB per row), so that ``driver_max_rows`` bounds a corpus.
    holds_tables_on_driver: bool = False

    @classmethod
    @abstractmethod
    def from_config(cls, config: EngineConfig) -> Engine:
        """The engine an ``engine`` config section describes."""

    @property
    @abstractmethod
    def parallelism(self) -> int:
        """How many items run at once."""

    @abstractmethod
    def map_shards(
        self,
        fn: Callable[[T], R],
        items: Sequence[T],
        progress: StageProgress | None = None,
        on_done: Callable[[R], None] | None = None,
    ) -> list[R]:
        """``[fn(item) for item in items]``, run where the data is; results in item order.

        Where that is another process, run ``thresher.io.formats.carried(fn)``
        there, so that input formats registered in the driver are known.

        ``on_done`` is called on the driver with each result as its item
        finishes (or, where the engine learns results only at the end of a
        job, with all of them then, while ``progress`` shows the engine's
        own task counts during the job).
        """

    @abstractmethod
    def read(
        self,
        files: Sequence[Location],
        schema: pa.Schema,
        transform: Callable[[pa.Table], pa.Table] | None = None,
    ) -> Frame:
        """The rows of Parquet ``files`` (read where the data is, through the filesystem layer).

        ``schema`` is what the rows have after ``transform`` (applied to each
        file's table; columns of ``schema`` a file lacks are null).
        """

    @abstractmethod
    def from_table(self, table: pa.Table) -> Frame:
        """A frame of rows the driver already holds (small tables only)."""

    @abstractmethod
    def connected_components(self, edges: Frame, scratch: Location) -> Frame:
        """``(doc, root)`` for every node of ``edges`` (``src``, ``dst``: int64).

        ``root`` is the smallest node of the node's component.
        """

    @abstractmethod
    def near_duplicate_edges(
        self, members: Frame, spec: DedupSpec, scratch: Location
    ) -> tuple[Frame, dict[str, Any]]:
        """Verified MinHash LSH edges ``(src, dst)`` among ``members`` (``doc``, signature).

        Returns the edges and counters for the dedup summary.
        """

    def watch(self, progress: StageProgress | None) -> AbstractContextManager[Any]:
        """Report the engine's own task counts to ``progress`` while a whole-table stage runs."""
        return nullcontext()

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release workers (process pool, Spark session)."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
