"""A third engine that lives only in the tests: everything in the driver's process, one item at a time.

It implements the engine contract (:class:`thresher.engines.base.Engine`)
and nothing more, to show that the contract is all a stage asks of an
engine: per-shard work runs here in item order, whole-table work on
:class:`~thresher.frame.TableFrame` (lazy Arrow tables, one part per file).
It has no options section, and its registry row names the local engine's
dedup kernels, which work on such frames::

    register_engine("serial", "tests.helpers.serial_engine:SerialEngine", dedup="local")
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, ClassVar, TypeVar

import pyarrow as pa

from thresher.engines.base import Engine
from thresher.frame import Frame, TableFrame
from thresher.io.files import read_parquet, read_schema
from thresher.io.fs import Location
from thresher.tables import conform_to

if TYPE_CHECKING:
    from thresher.config import EngineConfig
    from thresher.progress import StageProgress

T = TypeVar("T")
R = TypeVar("R")


class SerialEngine(Engine):
    """Runs every item in the driver's process, in order; frames are Arrow tables here."""

    kind = "serial"
    holds_tables_on_driver = True
    #: Every engine made, so that a test can tell the work ran on this engine.
    made: ClassVar[list[SerialEngine]] = []

    def __init__(self, driver_max_rows: int | None = None) -> None:
        if driver_max_rows is not None:
            self.driver_max_rows = driver_max_rows
        self.items_run = 0
        self.frames_read = 0
        SerialEngine.made.append(self)

    @classmethod
    def from_config(cls, config: EngineConfig) -> SerialEngine:
        return cls(driver_max_rows=config.driver_max_rows)

    @property
    def parallelism(self) -> int:
        return 1

    def map_shards(
        self,
        fn: Callable[[T], R],
        items: Sequence[T],
        progress: StageProgress | None = None,
        on_done: Callable[[R], None] | None = None,
    ) -> list[R]:
        results = []
        for item in items:
            result = fn(item)
            self.items_run += 1
            if on_done is not None:
                on_done(result)
            results.append(result)
        return results

    def read(
        self,
        files: Sequence[Location],
        schema: pa.Schema,
        transform: Callable[[pa.Table], pa.Table] | None = None,
    ) -> Frame:
        def part(location: Location) -> Callable[[], pa.Table]:
            def load() -> pa.Table:
                present = [c for c in read_schema(location).names if c in schema.names]
                table = read_parquet(location, columns=present or None)
                if transform is not None:
                    table = transform(table)
                return conform_to(table, schema)

            return load

        self.frames_read += 1
        return TableFrame([part(f) for f in files], schema)

    def from_table(self, table: pa.Table) -> Frame:
        return TableFrame.of(table)
