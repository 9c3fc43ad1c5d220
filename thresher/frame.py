"""Frames: rows held where the data is, touched only through Arrow functions.

A :class:`Frame` is what every whole-table stage works on (dedup, selection,
the statistics of the report), whatever engine holds the rows: a Spark
DataFrame on executors, or Arrow tables in this process
(:class:`TableFrame`). Stages transform it only through Arrow functions
(:meth:`Frame.map_batches`, :meth:`Frame.map_groups`), relational operations
(:meth:`Frame.join`...) and :meth:`Frame.aggregate`, whose result must be
small: its size may depend on strata, classes or histogram bins, never on
the number of rows. So an algorithm written against a Frame runs the same on
one machine and on a cluster, and keeps nothing per row on the driver.

:class:`TableFrame` is lazy: a list of parts (one per file read), each
computed when needed, so that a chain of row-wise steps ending in an
aggregate streams the files one at a time; grouping and joining gather all
parts into one table. It also serves the selectors' in-memory API.
"""

from __future__ import annotations

import functools
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Literal, TypeVar

import pyarrow as pa
import pyarrow.compute as pc

from thresher.io.fs import Location
from thresher.tables import conform_to, join_tables

T = TypeVar("T")
JoinKind = Literal["inner", "left", "left_anti", "left_semi"]
Part = Callable[[], pa.Table]


def _row_count(table: pa.Table) -> int:
    return int(table.num_rows)


def _total(counts: list[int]) -> int:
    return sum(counts)


def _rows_where(column: str, table: pa.Table) -> pa.Table:
    """Rows whose ``column`` is true (the table itself when every row is: no copy)."""
    mask = table.column(column).fill_null(False)
    return table if pc.all(mask).as_py() in (True, None) else table.filter(mask)


def _same(table: pa.Table) -> pa.Table:
    return table


class Frame(ABC):
    """Rows held by an engine; see the module docstring for what may be done with them."""

    @property
    @abstractmethod
    def schema(self) -> pa.Schema:
        """The Arrow schema of the rows."""

    @abstractmethod
    def map_batches(self, fn: Callable[[pa.Table], pa.Table], schema: pa.Schema) -> Frame:
        """Apply ``fn`` to the rows in chunks of any size; it returns rows of ``schema``.

        ``fn`` may drop or add rows, but must treat each row alone.
        """

    @abstractmethod
    def map_groups(
        self, keys: Sequence[str], fn: Callable[[pa.Table], pa.Table], schema: pa.Schema
    ) -> Frame:
        """Apply ``fn`` to whole groups: every row sharing the ``keys`` values is in the same call.

        A call may hold several groups (``fn`` separates them) and sees its
        rows in no particular order (``fn`` sorts them).
        """

    @abstractmethod
    def aggregate(self, partial: Callable[[pa.Table], T], combine: Callable[[list[T]], T]) -> T:
        """``combine`` of ``partial`` over chunks of the rows; ``combine`` must be associative."""

    @abstractmethod
    def join(self, other: Frame, on: Sequence[str], how: JoinKind = "inner") -> Frame: ...

    @abstractmethod
    def union(self, other: Frame) -> Frame:
        """Rows of both frames (columns matched by name; a missing column is null)."""

    @abstractmethod
    def select(self, columns: Sequence[str]) -> Frame: ...

    @abstractmethod
    def where(self, column: str) -> Frame:
        """Rows whose boolean ``column`` is true."""

    @abstractmethod
    def count(self) -> int: ...

    @abstractmethod
    def cache(self) -> Frame:
        """Keep the rows where they are computed (recomputing a chain is the default)."""

    @abstractmethod
    def release(self) -> None:
        """Drop what :meth:`cache` kept."""

    @abstractmethod
    def to_table(self, max_rows: int) -> pa.Table:
        """The rows as one table on the driver; refused (ValueError) beyond ``max_rows``."""

    @abstractmethod
    def write(self, directory: Location) -> list[Location]:
        """Write the rows as Parquet files under ``directory`` (where the rows are); return them.

        Only the files returned hold the rows: a failed attempt's file, if
        any, is not among them, so a caller records the list (in a file
        written last) and readers read only what it names.
        """


class TableFrame(Frame):
    """Rows in this process, as lazily computed parts (see module docstring)."""

    def __init__(self, parts: list[Part], schema: pa.Schema) -> None:
        self._parts = parts
        self._schema = schema

    @classmethod
    def of(cls, table: pa.Table) -> TableFrame:
        return cls([lambda: table], table.schema)

    @property
    def schema(self) -> pa.Schema:
        return self._schema

    def _tables(self) -> list[pa.Table]:
        return [part() for part in self._parts]

    def _whole(self) -> pa.Table:
        tables = [t for t in self._tables() if t.num_rows] or [self._schema.empty_table()]
        return pa.concat_tables(
            [conform_to(t, self._schema) for t in tables], promote_options="permissive"
        )

    def map_batches(self, fn: Callable[[pa.Table], pa.Table], schema: pa.Schema) -> Frame:
        def chain(part: Part) -> Part:
            return lambda: conform_to(fn(part()), schema)

        return TableFrame([chain(p) for p in self._parts], schema)

    def map_groups(
        self, keys: Sequence[str], fn: Callable[[pa.Table], pa.Table], schema: pa.Schema
    ) -> Frame:
        result = conform_to(fn(self._whole()), schema)
        return TableFrame([lambda: result], schema)

    def aggregate(self, partial: Callable[[pa.Table], T], combine: Callable[[list[T]], T]) -> T:
        return combine([partial(table) for table in self._tables()])

    def join(self, other: Frame, on: Sequence[str], how: JoinKind = "inner") -> Frame:
        assert isinstance(other, TableFrame)
        joined = join_tables(self._whole(), other._whole(), list(on), how)
        return TableFrame([lambda: joined], joined.schema)

    def union(self, other: Frame) -> Frame:
        assert isinstance(other, TableFrame)
        schema = pa.unify_schemas([self._schema, other._schema], promote_options="permissive")
        return TableFrame([*self._parts, *other._parts], schema).map_batches(lambda t: t, schema)

    def select(self, columns: Sequence[str]) -> Frame:
        names = list(columns)
        schema = pa.schema([self._schema.field(c) for c in names])
        return self.map_batches(lambda t: t.select(names), schema)

    def where(self, column: str) -> Frame:
        return self.map_batches(functools.partial(_rows_where, column), self._schema)

    def count(self) -> int:
        return self.aggregate(_row_count, _total)

    def cache(self) -> Frame:
        tables = self._tables()
        return TableFrame([functools.partial(_same, t) for t in tables], self._schema)

    def release(self) -> None:
        return None

    def to_table(self, max_rows: int) -> pa.Table:
        table = self._whole()
        if table.num_rows > max_rows:
            raise ValueError(f"{table.num_rows} rows exceed the driver limit of {max_rows}")
        return table

    def write(self, directory: Location) -> list[Location]:
        from thresher.io.files import write_parquet_atomic

        written = []
        for number, table in enumerate(self._tables()):
            if table.num_rows:
                target = directory / f"part-{number:05d}-{uuid.uuid4().hex[:8]}.parquet"
                write_parquet_atomic(conform_to(table, self._schema), target)
                written.append(target)
        return written
