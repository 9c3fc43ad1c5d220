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

Nothing else: the two algorithms whose best form differs by orders of
magnitude between one machine and a cluster (connected components, the
candidate pairs of MinHash LSH) are dedup kernels, chosen by the engine's
registry row (:mod:`thresher.dedup.kernels`). A third engine (Ray, Dask) is
one module implementing this class and :class:`Frame`, and one row in
:mod:`thresher.engines.registry`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import pyarrow as pa

from thresher.frame import Frame
from thresher.io.fs import Location

if TYPE_CHECKING:
    from thresher.progress import StageProgress

T = TypeVar("T")
R = TypeVar("R")

#: Rows a driver may collect by default (``engine.driver_max_rows``).
DRIVER_MAX_ROWS = 2_000_000


class EngineSettings(Protocol):
    """What an engine is made from: the ``engine`` section of a run config.

    :class:`thresher.config.EngineConfig` is one (it documents each field);
    the engines read it through this protocol, so that they never import the
    configuration module that names them.
    """

    @property
    def kind(self) -> str: ...

    @property
    def workers(self) -> int | None: ...

    @property
    def batch_size(self) -> int: ...

    @property
    def driver_max_rows(self) -> int: ...

    def options(self, kind: str | None = None) -> Any:
        """The options section of engine ``kind`` (default: this section's), or None."""
        ...


class Engine(ABC):
    """Runs the stages' work (see module docstring)."""

    #: The engine's name in the registry (:mod:`thresher.engines.registry`).
    kind: str
    #: Most rows any stage may gather on the driver (a non-partitioned embedding selector).
    driver_max_rows: int = DRIVER_MAX_ROWS
    #: Whether whole-table work (duplicate ids, dedup, selection) holds every row in the
    #: driver's memory (about 0.4 KB per row), so that ``driver_max_rows`` bounds a corpus.
    holds_tables_on_driver: bool = False

    @classmethod
    @abstractmethod
    def from_config(cls, config: EngineSettings) -> Engine:
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

    def watch(self, progress: StageProgress | None) -> AbstractContextManager[Any]:
        """Report the engine's own task counts to ``progress`` while a whole-table stage runs."""
        return nullcontext()

    def log_to(self, log_file: Path) -> bool:
        """Send the engine's own driver log to ``log_file``; whether it will (default: no log).

        For runs nobody watches (a deployment's flow run): an engine with a
        log of its own (Spark's JVM) writes it there instead of the
        worker's console. Called before the engine's first use.
        """
        return False

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release workers (process pool, Spark session)."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
