"""The local engine: a pool of worker processes over shards, Arrow tables in this process; no JVM.

Workers are started with ``spawn`` (safe with torch and threads) and each
caps torch's threads to its share of the machine's cores. Frames are
:class:`~thresher.frame.TableFrame`: lazy parts, one per file read.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import TYPE_CHECKING, Any, TypeVar

import pyarrow as pa

from thresher.engines.base import Engine, EngineSettings
from thresher.frame import Frame, TableFrame
from thresher.io.files import read_parquet
from thresher.io.formats import carried
from thresher.io.fs import Location
from thresher.tables import conform_to

if TYPE_CHECKING:
    from thresher.progress import StageProgress

T = TypeVar("T")
R = TypeVar("R")


def _init_worker(threads: int) -> None:
    """Cap the threads of this worker before anything starts a thread pool.

    torch (and numpy's BLAS) read these variables when first imported, so
    torch is not imported here: a run whose scorers do not need it pays
    neither its import time nor its memory in every worker.
    """
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ["MKL_NUM_THREADS"] = str(threads)
    os.environ["THRESHER_WORKER_THREADS"] = str(threads)


class LocalEngine(Engine):
    """Runs per-shard work in ``workers`` processes (default: one per core)."""

    kind = "local"
    holds_tables_on_driver = True

    def __init__(self, workers: int | None = None, driver_max_rows: int | None = None) -> None:
        self.workers = workers or os.cpu_count() or 1
        if driver_max_rows is not None:
            self.driver_max_rows = driver_max_rows
        self._pool: ProcessPoolExecutor | None = None

    @classmethod
    def from_config(cls, config: EngineSettings) -> LocalEngine:
        return cls(workers=config.workers, driver_max_rows=config.driver_max_rows)

    @property
    def parallelism(self) -> int:
        return self.workers

    @property
    def pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            threads = max(1, (os.cpu_count() or 1) // self.workers)
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(threads,),
            )
        return self._pool

    def map_shards(
        self,
        fn: Callable[[T], R],
        items: Sequence[T],
        progress: StageProgress | None = None,
        on_done: Callable[[R], None] | None = None,
    ) -> list[R]:
        work = carried(fn)  # the formats registered in this process, known in the workers
        futures = {self.pool.submit(work, item): i for i, item in enumerate(items)}
        results: list[Any] = [None] * len(items)
        try:
            for future in as_completed(futures):
                result = future.result()
                results[futures[future]] = result
                if on_done is not None:
                    on_done(result)
        except BaseException:
            for future in futures:
                future.cancel()
            raise
        return results

    def read(
        self,
        files: Sequence[Location],
        schema: pa.Schema,
        transform: Callable[[pa.Table], pa.Table] | None = None,
    ) -> Frame:
        names = [f for f in schema.names]

        def part(location: Location) -> Callable[[], pa.Table]:
            def load() -> pa.Table:
                available = _file_columns(location)
                table = read_parquet(location, columns=[c for c in available if c in names] or None)
                if transform is not None:
                    table = transform(table)
                return conform_to(table, schema)

            return load

        return TableFrame([part(f) for f in files], schema)

    def from_table(self, table: pa.Table) -> Frame:
        return TableFrame.of(table)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def _file_columns(location: Location) -> list[str]:
    from thresher.io.files import read_schema

    return read_schema(location).names
