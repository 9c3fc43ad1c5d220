"""One Parquet file written batch by batch, and published whole.

A task holds a batch, never a file: ingest, scoring and materialisation
hand their output to a :class:`ParquetSink` one batch at a time. The sink
buffers at most one row group (``row_group_bytes``) and writes it to a
local part file; :meth:`ParquetSink.close` makes the target appear
complete, by one rename on a local disk or one upload on an object store
(visible only once it completes), so readers never see a partial file.

Batches may disagree in schema (JSON lines infer a type per chunk: a
column all null in one chunk, an integer in the next): each run of batches
with one schema goes to its own part, and ``close`` conforms the parts to
their common schema (:mod:`thresher.io.drift`), batch by batch. Local disk
holds the parts; memory holds one row group.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from abc import ABC, abstractmethod
from types import TracebackType
from typing import Any, Self

import pyarrow as pa
import pyarrow.parquet as pq

from thresher.io.drift import common_schema, conform
from thresher.io.fs import Location

#: A row group is written once the buffered batches hold this many bytes.
ROW_GROUP_BYTES = 64 << 20
#: ... or this many rows.
ROW_GROUP_ROWS = 1 << 20
_COPY_CHUNK = 16 << 20


class PublishedWhole(ABC):
    """A writer whose output appears whole at :meth:`close` and not at all after :meth:`abort`.

    Used as a context manager, it closes when the block succeeds and aborts
    when it raises, so a failed task publishes nothing.
    """

    @abstractmethod
    def close(self) -> Any:
        """Publish what was written, whole; return what the writer reports."""

    @abstractmethod
    def abort(self) -> None:
        """Discard what was written; nothing is published."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class ParquetSink(PublishedWhole):
    """Writes tables to ``target`` (zstd Parquet); see module docstring.

    Parameters
    ----------
    target : Location
        The file to publish (any store).
    empty_schema : pyarrow.Schema, optional
        The schema of the file written when no row arrives (default: no
        file is written and :meth:`close` returns 0 without publishing).
    row_group_rows : int, optional
        Rows per row group (readers that filter on a sorted column skip
        row groups through their statistics); default: by bytes.
    null_as_string : bool
        Store columns whose type is still null at the end as strings
        (Spark cannot read Parquet's null type).
    """

    def __init__(
        self,
        target: Location,
        *,
        empty_schema: pa.Schema | None = None,
        row_group_rows: int | None = None,
        row_group_bytes: int = ROW_GROUP_BYTES,
        null_as_string: bool = False,
    ) -> None:
        self.target = target
        self.empty_schema = empty_schema
        self.row_group_rows = row_group_rows or ROW_GROUP_ROWS
        self.row_group_bytes = row_group_bytes
        self.null_as_string = null_as_string
        self.rows = 0
        #: The published file's schema (set by :meth:`close`).
        self.schema: pa.Schema | None = None
        #: Columns holding at least one non-null value (what votes on a column's type).
        self.valued: set[str] = set()
        self._parts: list[tuple[str, pa.Schema]] = []
        self._writer: pq.ParquetWriter | None = None
        self._buffer: list[pa.Table] = []
        self._buffered_rows = 0
        self._buffered_bytes = 0
        self._scratch: str | None = None

    # -- writing ---------------------------------------------------------------------------
    def write(self, data: pa.Table | pa.RecordBatch) -> None:
        """Add rows (a table or a batch) to the file."""
        table = pa.Table.from_batches([data]) if isinstance(data, pa.RecordBatch) else data
        if table.num_rows == 0:
            return
        if self._buffer and not table.schema.equals(self._buffer[0].schema):
            self._flush()
            self._close_part()
        self.valued.update(
            name
            for name, column in zip(table.column_names, table.columns, strict=True)
            if column.null_count < table.num_rows
        )
        self._buffer.append(table)
        self._buffered_rows += table.num_rows
        self._buffered_bytes += table.get_total_buffer_size()
        self.rows += table.num_rows
        if (
            self._buffered_bytes >= self.row_group_bytes
            or self._buffered_rows >= self.row_group_rows
        ):
            self._flush()

    def _flush(self) -> None:
        """Write the buffered tables as row groups of the current part."""
        if not self._buffer:
            return
        schema = self._buffer[0].schema
        if self._writer is None or not self._writer.schema.equals(schema):
            self._close_part()
            path = self._new_part_path()
            self._writer = pq.ParquetWriter(path, schema, compression="zstd")
            self._parts.append((path, schema))
        table = pa.concat_tables(self._buffer) if len(self._buffer) > 1 else self._buffer[0]
        self._writer.write_table(table, row_group_size=self.row_group_rows)
        self._buffer, self._buffered_rows, self._buffered_bytes = [], 0, 0

    def _close_part(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _new_part_path(self) -> str:
        if self.target.is_local:  # beside the target: the last step is one rename
            self.target.parent.mkdir()
            return self.target.temporary_sibling().uri
        if self._scratch is None:
            self._scratch = tempfile.mkdtemp(prefix="thresher-sink-")
        return os.path.join(self._scratch, f"part-{uuid.uuid4().hex}.parquet")

    # -- publishing ------------------------------------------------------------------------
    def close(self) -> int:
        """Publish the file (see module docstring); return its number of rows."""
        try:
            self._flush()
            self._close_part()
            if not self._parts:
                if self.empty_schema is not None:
                    self.schema = self._final_types(self.empty_schema)
                    self._publish_table(self.schema.empty_table())
                return 0
            schemas = [schema for _, schema in self._parts]
            same = all(schema.equals(schemas[0]) for schema in schemas)
            final = self._final_types(schemas[0] if same else common_schema(schemas))
            self.schema = final
            if len(self._parts) == 1 and schemas[0].equals(final):
                self._publish_file(self._parts[0][0])
            else:
                self._publish_conformed(final)
            return self.rows
        finally:
            self._discard()

    def _final_types(self, schema: pa.Schema) -> pa.Schema:
        if not self.null_as_string:
            return schema
        return pa.schema(
            [pa.field(f.name, pa.string()) if pa.types.is_null(f.type) else f for f in schema]
        )

    def _publish_file(self, path: str) -> None:
        if self.target.is_local:
            os.replace(path, self.target.uri)
            return
        with open(path, "rb") as source, self._remote_stream() as stream:
            while chunk := source.read(_COPY_CHUNK):
                stream.write(chunk)

    def _publish_conformed(self, schema: pa.Schema) -> None:
        parts = [path for path, _ in self._parts]

        def write_all(where: str | pa.NativeFile) -> None:
            with pq.ParquetWriter(where, schema, compression="zstd") as writer:
                for path in parts:
                    part = pq.ParquetFile(path, pre_buffer=False)
                    for group in range(part.num_row_groups):
                        table = conform(part.read_row_group(group), schema)
                        writer.write_table(table, row_group_size=self.row_group_rows)

        if self.target.is_local:
            tmp = self._new_part_path()
            self._parts.append((tmp, schema))  # removed by _discard if anything fails
            write_all(tmp)
            os.replace(tmp, self.target.uri)
        else:
            with self._remote_stream() as stream:
                write_all(stream)

    def _publish_table(self, table: pa.Table) -> None:
        path = self._new_part_path()
        self._parts.append((path, table.schema))
        pq.write_table(table, path, compression="zstd")
        self._publish_file(path)

    def _remote_stream(self) -> contextlib.AbstractContextManager[pa.NativeFile]:
        location = self.target
        return location.store.guard(
            location, lambda: location.fs.open_output_stream(location.path, compression=None)
        )

    # -- clean-up --------------------------------------------------------------------------
    def abort(self) -> None:
        """Forget everything written (nothing is published)."""
        with contextlib.suppress(Exception):
            self._close_part()
        self._buffer = []
        self._discard()

    def _discard(self) -> None:
        for path, _ in self._parts:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        self._parts = []
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None
