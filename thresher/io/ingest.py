"""Read one input shard into thresher's canonical table, quarantining bad rows.

A shard becomes two tables: the usable rows (columns ``id``, ``text``,
optional ``features`` and ``label``, the pass-through columns, and the
position columns ``thresher_shard``/``thresher_row``) and the quarantine
(one row per unusable record, with a reason, and the record's id whenever
it could be read). ``rows_in`` counts every record read, so
``rows_in == len(table) + len(quarantine)`` always holds.

The rules, one per class of input (every format goes through the same ones):

- **Text encodings.** A ``text``, ``id`` or ``label`` column may be any Arrow
  string type: plain, large, view or dictionary-encoded (a pandas
  categorical). A binary column is read as UTF-8 text, since that is what a
  binary text column holds in practice; a value that is not valid UTF-8 is
  quarantined as ``invalid_utf8``. Numbers in an id column become their
  decimal text; an id of any other type (a list, a struct) is ``invalid_id``.
  Invalid UTF-8 in a pass-through string column is replaced by U+FFFD (it is
  copied, never read).
- **JSON lines** are parsed one by one, so that one broken line costs one
  record; blank lines are not records. A UTF-8 byte-order mark at the start
  of a file is dropped. A ``\\uXXXX`` escape of a lone surrogate decodes to
  no valid Unicode: its record is quarantined as ``invalid_utf8``, naming
  the field (crawled text holds such escapes; they cannot be written out).
- **CSV and TSV** need a header row; a row with another number of fields is
  ``malformed_row``, its ``row`` being its row in the file (the header is 1).
- A text longer than ``schema.max_text_bytes`` (UTF-8) is ``text_too_long``:
  one such blob (a dump, a base64 file) would otherwise dominate a scoring
  batch. Columns whose inferred type changes between chunks of one shard get
  one common type (:mod:`thresher.io.drift`).
- With ``schema.features`` set, a record also needs a feature vector: a list
  of finite numbers (list, large list or fixed-size list; a JSON array in
  JSONL), stored as ``features: list<float32>``. Null, empty or non-numeric
  vectors, non-finite values (also values beyond float32's range) and
  vectors whose length differs from the shard's first valid one are
  ``invalid_features``. With ``schema.text`` null, text is not read at all.
- **A damaged file** (truncated or corrupt compression, a cut Parquet or
  Arrow file) stops the run naming it, or with ``on_unreadable="skip"``
  keeps the records read before the damage (every complete line of a cut
  gzip file) and reports the file as skipped (:attr:`IngestResult.unreadable`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from thresher import reasons as R
from thresher.errors import DamagedInputError, InputError
from thresher.io import schema as S
from thresher.io.drift import concat_conformed
from thresher.io.formats import input_format
from thresher.io.readers import BATCH_ROWS as JSONL_CHUNK_LINES
from thresher.io.readers import (
    InvalidRows,
    OverlongLine,
    ReadLimits,
    Source,
    iter_arrow,
    iter_delimited,
    iter_lines,
    iter_parquet,
    too_large,
)
from thresher.io.schema import Roles
from thresher.io.shards import Shard

RAW_PREVIEW_CHARS = 2000
#: Longest ``detail`` (and id) kept in a quarantine row.
DETAIL_CHARS = 500
#: Quarantined rows kept in memory before they are written.
QUARANTINE_BATCH_ROWS = 4096
_QUARANTINE_COLUMNS = ("row", "id", "reason", "detail", "raw")
#: JSON nested deeper than this is quarantined (deeper values break writers and readers).
MAX_JSON_DEPTH = 64
_FLOAT32_MAX = float(np.finfo(np.float32).max)


class TableWriter(Protocol):
    """Where ingest puts tables as it makes them (a :class:`~thresher.io.sink.ParquetSink`)."""

    def write(self, data: pa.Table) -> None: ...


class RecordLog(Protocol):
    """What a format's reader may ask of ingest while it reads one shard.

    Attributes
    ----------
    limits : ReadLimits
        The ``input.*`` limits (a reader's batch stays under ``batch_bytes``).
    """

    limits: ReadLimits

    def check(self, table: pa.Table) -> Iterator[pa.Table]:
        """The records of ``table`` (as read: the file's column names) as canonical rows.

        Every rule of the module docstring is applied (ids, text, features,
        sizes); unusable records are quarantined with their reason. A reader
        yields what this yields.
        """
        ...

    def skip(self, row: int, reason: str, detail: str, raw: Any = None) -> None:
        """Count, and quarantine with ``reason``, a record that cannot be read at all.

        ``row`` is its position in the file (a line number); ``reason`` one
        of :mod:`thresher.reasons` (``malformed_row``...); ``raw`` its text.
        """
        ...


class FormatReader(Protocol):
    """The reader of an input format (a row of :data:`thresher.io.formats.FORMATS`).

    ``reader(source, schema, log)`` reads one shard's bytes from ``source``
    (:class:`~thresher.io.readers.Source`: ``source.stream()`` gives them
    decompressed and hashed; ``source.random_access()`` for a random-access
    format) in bounded batches, and for each batch of records as a table
    (columns named as in the file; ``schema`` says which ones hold the
    id, the text, the label) yields from ``log.check(table)``. A record it
    cannot turn into a row goes to ``log.skip``. A damaged file raises
    :class:`~thresher.errors.DamagedInputError` after yielding what it read
    before the damage (:func:`thresher.io.readers.damaged`).
    """

    def __call__(self, source: Source, schema: Roles, log: RecordLog) -> Iterator[pa.Table]: ...


class _Collected:
    """A writer that keeps the tables (small inputs: evaluation sets, tests)."""

    def __init__(self) -> None:
        self.tables: list[pa.Table] = []

    def write(self, data: pa.Table) -> None:
        self.tables.append(data)


@dataclass
class IngestCounts:
    """What reading one shard found: records in, ingested, quarantined by reason, its bytes.

    ``format`` and ``compression`` are what the content said (the name is a
    hint). ``unreadable`` is set when the file was damaged and skipped after
    the records read before the damage: ``{"error": ..., "rows_read": n}``.
    """

    shard: Shard
    rows_in: int
    ingested: int
    quarantined_by_reason: dict[str, int]
    content: dict[str, Any]
    format: str
    compression: str | None = None
    unreadable: dict[str, Any] | None = None

    @property
    def quarantined(self) -> int:
        return sum(self.quarantined_by_reason.values())


@dataclass
class IngestResult:
    """A shard read into memory: usable rows, quarantined rows, the input count, the digest.

    ``unreadable`` is set when the file was damaged and skipped after the
    records read before the damage: ``{"error": ..., "rows_read": n}``.
    """

    shard: Shard
    rows_in: int
    table: pa.Table
    quarantine: pa.Table
    content: dict[str, Any] = field(default_factory=dict)
    unreadable: dict[str, Any] | None = None

    def quarantine_counts(self) -> dict[str, int]:
        if self.quarantine.num_rows == 0:
            return {}
        counts = self.quarantine.column("reason").value_counts().to_pylist()
        return {item["values"]: item["counts"] for item in counts}


class _ShardLog:
    """What reading one shard has found so far: records seen, quarantined rows, vector length.

    Quarantined rows are kept in columns and handed to the quarantine writer
    every :data:`QUARANTINE_BATCH_ROWS` rows, so that a file of bad lines
    costs a bounded amount of memory.
    """

    def __init__(self, shard: Shard, out: TableWriter, limits: ReadLimits, schema: Roles) -> None:
        self.shard = shard
        self.out = out
        self.limits = limits
        self.schema = schema
        self.rows_in = 0
        self.ingested = 0
        self.by_reason: dict[str, int] = {}
        self._columns: dict[str, list[Any]] = {name: [] for name in _QUARANTINE_COLUMNS}
        # Length of the shard's first valid feature vector: every other must match it.
        self.features_length: int | None = None
        # Pass-through columns met so far (refused past schema.max_passthrough_columns).
        self.passthrough: dict[str, None] = {}

    def count(self, n: int = 1) -> None:
        """``n`` more records read; refuse the shard past ``input.max_rows``."""
        self.rows_in += n
        limit = self.limits.max_rows
        if limit is not None and self.rows_in > limit:
            statement = f"has more than input.max_rows ({limit:,}) records"
            raise too_large(self.shard, statement, "max_rows")

    def check(self, table: pa.Table) -> Iterator[pa.Table]:
        """The records of ``table`` checked by the rules every format shares (:func:`_tabular`)."""
        return _tabular(table, self.schema, self)

    def skip(self, row: int, reason: str, detail: str, raw: Any = None) -> None:
        """Count a record that cannot be read at all and quarantine it."""
        self.count()
        self.add(row, reason, detail, _preview(raw))

    def add(
        self, row: int, reason: str, detail: str, raw: str | None, id_: str | None = None
    ) -> None:
        if raw is not None and len(raw) > RAW_PREVIEW_CHARS:
            raw = raw[:RAW_PREVIEW_CHARS] + "…"
        if len(detail) > DETAIL_CHARS:
            detail = detail[:DETAIL_CHARS] + "…"
        if id_ is not None and len(id_) > DETAIL_CHARS:
            id_ = id_[:DETAIL_CHARS] + "…"
        for name, value in zip(_QUARANTINE_COLUMNS, (row, id_, reason, detail, raw), strict=True):
            self._columns[name].append(value)
        self.by_reason[reason] = self.by_reason.get(reason, 0) + 1
        if len(self._columns["row"]) >= QUARANTINE_BATCH_ROWS:
            self.flush()

    def flush(self) -> None:
        """Hand the quarantined rows collected so far to the writer."""
        n = len(self._columns["row"])
        if n == 0:
            return
        arrays = [pa.array([self.shard.name] * n, pa.string())] + [
            pa.array(self._columns[name], S.QUARANTINE_SCHEMA.field(name).type)
            for name in _QUARANTINE_COLUMNS
        ]
        self.out.write(pa.Table.from_arrays(arrays, schema=S.QUARANTINE_SCHEMA))
        self._columns = {name: [] for name in _QUARANTINE_COLUMNS}

    def note_passthrough(self, names: Iterable[str], schema: Roles) -> None:
        """Remember pass-through column names; refuse a shard with more than the cap."""
        self.passthrough.update(dict.fromkeys(names))
        cap = schema.max_passthrough_columns
        if cap is not None and len(self.passthrough) > cap:
            raise InputError(
                f"{self.shard.name}: holds more than {cap:,} distinct pass-through columns "
                f"(schema.max_passthrough_columns; first ones: {list(self.passthrough)[:5]}); "
                "list the columns to keep in schema.passthrough, or raise "
                "schema.max_passthrough_columns"
            )


def ingest_stream(
    shard: Shard,
    schema: Roles,
    rows_out: TableWriter,
    quarantine_out: TableWriter,
    *,
    on_unreadable: str = "fail",
    limits: ReadLimits | None = None,
) -> IngestCounts:
    """Read and validate one shard batch by batch (see module docstring).

    Usable rows go to ``rows_out`` and quarantined rows to
    ``quarantine_out``, one bounded table at a time (their types may differ
    between tables of one shard: see :mod:`thresher.io.drift`).
    ``on_unreadable`` is ``fail`` (a damaged file raises InputError naming
    it) or ``skip`` (keep what was read before the damage and say so).
    """
    limits = limits or ReadLimits()
    log = _ShardLog(shard, quarantine_out, limits, schema)
    source = Source(shard, limits)
    fmt, compression = source.kind()
    try:
        read: FormatReader = input_format(fmt).read_function()
    except InputError as error:
        raise InputError(f"{shard.name}: {error}") from None
    unreadable = None
    try:
        for table in read(source, schema, log):
            if table.num_rows:
                log.ingested += table.num_rows
                rows_out.write(table)
    except DamagedInputError as error:
        if on_unreadable != "skip":
            raise
        unreadable = {"error": error.cause, "rows_read": log.rows_in}
    log.flush()
    return IngestCounts(
        shard,
        log.rows_in,
        log.ingested,
        dict(sorted(log.by_reason.items())),
        source.content(),
        fmt,
        compression,
        unreadable,
    )


def ingest_shard(
    shard: Shard,
    schema: Roles,
    on_unreadable: str = "fail",
    limits: ReadLimits | None = None,
) -> IngestResult:
    """Read and validate one shard into memory (small inputs; runs use :func:`ingest_stream`)."""
    rows, quarantine = _Collected(), _Collected()
    counts = ingest_stream(
        shard, schema, rows, quarantine, on_unreadable=on_unreadable, limits=limits
    )
    # Chunks may infer different types for a column: give them one.
    table = concat_conformed(rows.tables) if rows.tables else empty_canonical(schema)
    quarantined = (
        pa.concat_tables(quarantine.tables)
        if quarantine.tables
        else S.QUARANTINE_SCHEMA.empty_table()
    )
    return IngestResult(
        shard, counts.rows_in, table, quarantined, counts.content, counts.unreadable
    )


# -- tables: Parquet, Arrow, CSV/TSV -----------------------------------------------------


def parquet_records(source: Source, schema: Roles, log: RecordLog) -> Iterator[pa.Table]:
    """The ``parquet`` format: row groups in bounded batches (:func:`thresher.io.readers.iter_parquet`)."""
    for table in iter_parquet(source):
        yield from log.check(table)


def arrow_records(source: Source, schema: Roles, log: RecordLog) -> Iterator[pa.Table]:
    """The ``arrow`` format: Arrow IPC file or stream, memory-mapped."""
    for table in iter_arrow(source):
        yield from log.check(table)


def _delimited_reader(delimiter: str) -> FormatReader:
    def read(source: Source, schema: Roles, log: RecordLog) -> Iterator[pa.Table]:
        invalid = InvalidRows()
        text_columns = [c for c in (schema.id, schema.text) if c is not None]
        try:
            for table in iter_delimited(source, delimiter, text_columns, invalid):
                yield from log.check(table)
                _quarantine_invalid_rows(invalid, log)
        finally:
            _quarantine_invalid_rows(invalid, log)

    return read


#: The ``csv`` and ``tsv`` formats: a header row, then rows of as many fields.
csv_records = _delimited_reader(",")
tsv_records = _delimited_reader("\t")


def _quarantine_invalid_rows(invalid: InvalidRows, log: RecordLog) -> None:
    for number, text in invalid.rows:
        where = f"row {number} of the file (the header is 1)" if number is not None else "a row"
        log.skip(
            -1 if number is None else number,
            R.MALFORMED_ROW,
            f"{where} does not have the header's number of fields",
            text,
        )
    invalid.rows.clear()


def _next_rows(log: _ShardLog, n: int) -> np.ndarray:
    rows = np.arange(log.rows_in, log.rows_in + n, dtype=np.int64)
    log.count(n)
    return rows


def _tabular(table: pa.Table, schema: Roles, log: _ShardLog) -> Iterator[pa.Table]:
    """One batch read from a table, in slices of at most ``input.batch_bytes`` decoded bytes.

    Each row is measured before any value is decoded (a dictionary-encoded
    column stores a repeated value once, however many rows repeat it): a
    row over ``input.max_record_bytes`` is quarantined as
    ``record_too_large`` and never decoded.
    """
    rows = _next_rows(log, table.num_rows)
    sizes = row_sizes(table)
    limit = log.limits.max_record_bytes
    if limit is not None and len(sizes) and int(sizes.max()) > limit:
        over = sizes > limit
        for index in np.flatnonzero(over):
            detail = (
                f"a row of {int(sizes[index]):,} bytes, more than input.max_record_bytes "
                f"({limit:,})"
            )
            preview = _row_preview(table, schema, int(index))
            log.add(
                int(rows[index]),
                R.RECORD_TOO_LARGE,
                detail,
                preview,
                _small_id(table, int(index), schema, log.shard),
            )
        table, rows, sizes = table.filter(pa.array(~over)), rows[~over], sizes[~over]
    for start, stop in byte_slices(sizes, log.limits.batch_bytes):
        yield _tabular_chunk(table.slice(start, stop - start), rows[start:stop], schema, log)


def row_sizes(table: pa.Table) -> np.ndarray:
    """Decoded bytes of each row's variable-width values (strings, binaries, lists of numbers).

    A dictionary-encoded column is measured through its dictionary, without
    decoding it.
    """
    sizes = np.zeros(table.num_rows, dtype=np.int64)
    for column in table.columns:
        offset = 0
        for chunk in column.chunks:
            sizes[offset : offset + len(chunk)] += _value_sizes(chunk)
            offset += len(chunk)
    return sizes


def _value_sizes(array: pa.Array) -> np.ndarray:
    kind = array.type
    if pa.types.is_dictionary(kind):
        if not _is_string_like(kind.value_type):
            return np.zeros(len(array), dtype=np.int64)
        lengths = pc.binary_length(array.dictionary)
        per_row = pc.take(lengths, array.indices)
        return np.asarray(pc.fill_null(per_row, 0), dtype=np.int64)
    if pa.types.is_string_view(kind) or pa.types.is_binary_view(kind):
        array = array.cast(pa.large_binary())  # no length kernel for views
        kind = array.type
    if _is_string_like(kind) and not pa.types.is_fixed_size_binary(kind):
        return np.asarray(pc.fill_null(pc.binary_length(array), 0), dtype=np.int64)
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        value = kind.value_type
        width = value.bit_width // 8 if pa.types.is_primitive(value) else 8
        lengths = np.asarray(pc.fill_null(pc.list_value_length(array), 0), dtype=np.int64)
        return lengths * max(width, 1)
    return np.zeros(len(array), dtype=np.int64)


def byte_slices(sizes: np.ndarray, batch_bytes: int) -> Iterator[tuple[int, int]]:
    """(start, stop) of consecutive slices of at most ``batch_bytes`` (one row at least)."""
    n = len(sizes)
    if n == 0:
        return
    if int(sizes.sum()) <= batch_bytes:
        yield 0, n
        return
    ends = np.cumsum(sizes)
    start = 0
    while start < n:
        before = int(ends[start - 1]) if start else 0
        stop = int(np.searchsorted(ends, before + batch_bytes, side="right"))
        stop = max(stop, start + 1)
        yield start, stop
        start = stop


def _row_preview(table: pa.Table, schema: Roles, index: int) -> str | None:
    """The first characters of a row's text (or first column), never decoding all of it."""
    name = schema.text if schema.text in table.column_names else table.column_names[0]
    value = table.column(name).slice(index, 1).combine_chunks()
    if pa.types.is_dictionary(value.type):
        position = value.indices[0].as_py()
        if position is None:
            return None
        value = value.dictionary.slice(position, 1)
    if not _is_string_like(value.type) or pa.types.is_fixed_size_binary(value.type):
        return None
    if pa.types.is_string_view(value.type) or pa.types.is_binary_view(value.type):
        value = value.cast(pa.large_binary())
    head = pc.binary_slice(value.view(_binary_view_of(value.type)), 0, RAW_PREVIEW_CHARS * 4)
    found = head[0].as_py()
    return None if found is None else found.decode("utf-8", errors="replace")[:RAW_PREVIEW_CHARS]


def _binary_view_of(kind: pa.DataType) -> pa.DataType:
    """The binary type with the same layout as a string or binary type."""
    if pa.types.is_large_string(kind) or pa.types.is_large_binary(kind):
        return pa.large_binary()
    return pa.binary()


def _small_id(table: pa.Table, index: int, schema: Roles, shard: Shard) -> str | None:
    """The id of one row when it is small enough to read (ids of a quarantined huge row)."""
    if schema.id is None or schema.id not in table.column_names:
        return None
    one = table.slice(index, 1)
    if int(row_sizes(one.select([schema.id]))[0]) > DETAIL_CHARS:
        return None
    ids, problems = _ids(one, np.zeros(1, dtype=np.int64), schema, shard)
    return None if problems else ids[0].as_py()


def _tabular_chunk(table: pa.Table, rows: np.ndarray, schema: Roles, log: _ShardLog) -> pa.Table:
    """Check one batch of a tabular shard; quarantine what is unusable (ids kept)."""
    columns = table.column_names
    ids, id_problems = _ids(table, rows, schema, log.shard)
    missing = _missing_role_column(schema, columns)
    if missing is not None:
        reason, column = missing
        detail = f"shard has no column {column!r} (columns: {columns})"
        for index, row in enumerate(rows):
            log.add(int(row), reason, detail, None, ids[index].as_py())
        return empty_canonical(schema)
    keep = np.ones(table.num_rows, dtype=bool)

    def quarantine(index: int, reason: str, detail: str, raw: Any) -> None:
        if keep[index]:  # one reason per record
            log.add(int(rows[index]), reason, detail, _preview(raw), ids[index].as_py())
            keep[index] = False

    preview = table.column(schema.text) if schema.text is not None else None
    for index, (reason, detail) in id_problems.items():
        quarantine(index, reason, detail, None if preview is None else _shown(preview[index]))
    if schema.id is not None and schema.id in columns and _is_string_like(table[schema.id].type):
        table = _set(table, schema.id, ids)  # plain strings from here on
    if schema.text is not None:
        original = table.column(schema.text)
        text, bad = _as_strings(original.combine_chunks(), R.TEXT_NOT_STRING)
        for index, reason in bad.items():
            quarantine(index, reason, f"column {schema.text!r}", _shown(original[index]))
        table = _set(table, schema.text, text)
        for index, size in _too_long(text, schema.max_text_bytes, keep).items():
            quarantine(index, R.TEXT_TOO_LONG, _size_detail(size, schema), text[index].as_py())
    if schema.label is not None and schema.label in columns:
        original = table.column(schema.label)
        if _is_string_like(original.type):
            label, bad = _as_strings(original.combine_chunks(), R.INVALID_UTF8)
            for index in bad:
                quarantine(
                    index, R.INVALID_UTF8, f"column {schema.label!r}", _shown(original[index])
                )
            table = _set(table, schema.label, label)
    table = _plain_passthrough(table, {schema.id, schema.text, schema.label, schema.features})
    return _finish(table.filter(pa.array(keep)), rows[keep], log.shard, schema, log)


def _set(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    return table.set_column(table.schema.get_field_index(name), name, values)


def _missing_role_column(schema: Roles, columns: list[str]) -> tuple[str, str] | None:
    """(reason, column) when a shard lacks the text or features column the schema needs."""
    if schema.text is not None and schema.text not in columns:
        return R.MISSING_TEXT_COLUMN, schema.text
    if schema.features is not None and schema.features not in columns:
        return R.MISSING_FEATURES_COLUMN, schema.features
    return None


# -- strings ------------------------------------------------------------------------------


def _is_string_like(kind: pa.DataType) -> bool:
    if pa.types.is_dictionary(kind):
        return _is_string_like(kind.value_type)
    return (
        pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_string_view(kind)
        or _is_binary_like(kind)
    )


def _is_binary_like(kind: pa.DataType) -> bool:
    return (
        pa.types.is_binary(kind)
        or pa.types.is_large_binary(kind)
        or pa.types.is_binary_view(kind)
        or pa.types.is_fixed_size_binary(kind)
    )


def _as_strings(array: pa.Array, not_string: str) -> tuple[pa.Array, dict[int, str]]:
    """``array`` as plain UTF-8 strings, plus {row: reason} for values that are not text.

    Any string encoding is read; binary values are decoded as UTF-8 (invalid
    ones are ``invalid_utf8``); values of other types get ``not_string``.
    """
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    kind = array.type
    if pa.types.is_null(kind):
        return pa.nulls(len(array), pa.string()), {}
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind):
        try:
            array.validate(full=True)
            return array.cast(pa.string()), {}
        except pa.ArrowInvalid:
            array = array.cast(pa.large_binary()) if not pa.types.is_string(kind) else array
            array = array.view(pa.binary()) if pa.types.is_string(array.type) else array
            kind = array.type
    if _is_binary_like(kind):
        try:
            return array.cast(pa.string()), {}  # casting checks UTF-8
        except pa.ArrowInvalid:
            return _decode_each(array)
    bad = {int(i): not_string for i in np.flatnonzero(np.asarray(array.is_valid()))}
    return pa.nulls(len(array), pa.string()), bad


def _decode_each(array: pa.Array) -> tuple[pa.Array, dict[int, str]]:
    values: list[str | None] = []
    bad: dict[int, str] = {}
    for index, value in enumerate(array.to_pylist()):
        if value is None:
            values.append(None)
            continue
        try:
            values.append(value.decode("utf-8"))
        except UnicodeDecodeError:
            values.append(None)
            bad[index] = R.INVALID_UTF8
    return pa.array(values, pa.string()), bad


def _plain_passthrough(table: pa.Table, roles: set[str | None]) -> pa.Table:
    """Decode dictionaries and views of pass-through columns; repair their invalid UTF-8."""
    columns = list(table.columns)
    changed = False
    for index, (name, column) in enumerate(zip(table.column_names, table.columns, strict=True)):
        if name in roles:
            continue
        original = column
        kind = column.type
        if pa.types.is_dictionary(kind):
            column = pa.chunked_array([c.dictionary_decode() for c in column.chunks])
            kind = column.type
        if pa.types.is_string_view(kind):
            column = column.cast(pa.large_string())
        elif pa.types.is_binary_view(kind):
            column = column.cast(pa.large_binary())
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            column = _repair_utf8(column)
        if column is not original:
            columns[index] = column
            changed = True
    return pa.table(columns, names=table.column_names) if changed else table


def _repair_utf8(column: pa.ChunkedArray) -> pa.ChunkedArray:
    try:
        column.validate(full=True)
        return column
    except pa.ArrowInvalid:
        raw = column.cast(pa.large_binary()) if pa.types.is_large_string(column.type) else column
        values = [
            None if v is None else v.decode("utf-8", errors="replace")
            for v in pa.chunked_array(
                [c.view(pa.binary()) if pa.types.is_string(c.type) else c for c in raw.chunks]
            ).to_pylist()
        ]
        return pa.chunked_array([pa.array(values, pa.string())])


def _ids(
    table: pa.Table, rows: np.ndarray, schema: Roles, shard: Shard
) -> tuple[pa.Array, dict[int, tuple[str, str]]]:
    """The records' ids as strings, plus {row: (reason, detail)} for unusable ones.

    Without an id column an id is derived from the shard's name and the row.
    """
    if schema.id is None or schema.id not in table.column_names:
        return pa.array([f"{shard.name}:{r}" for r in rows], pa.string()), {}
    column = table.column(schema.id).combine_chunks()
    kind = column.type.value_type if pa.types.is_dictionary(column.type) else column.type
    if _is_string_like(kind) or pa.types.is_null(kind):
        ids, bad = _as_strings(column, R.INVALID_ID)
        return ids, {i: (r, f"column {schema.id!r} is not valid UTF-8") for i, r in bad.items()}
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        return pc.cast(column, pa.string()), {}
    if pa.types.is_boolean(kind) or pa.types.is_temporal(kind):
        return pc.cast(column, pa.string()), {}
    detail = f"column {schema.id!r} has type {kind}, not a string or a number"
    bad_ids = {
        int(i): (R.INVALID_ID, detail) for i in np.flatnonzero(np.asarray(column.is_valid()))
    }
    return pa.nulls(len(column), pa.string()), bad_ids


# -- JSONL ----------------------------------------------------------------------------------


def jsonl_records(source: Source, schema: Roles, log: _ShardLog) -> Iterator[pa.Table]:
    """The ``jsonl`` format: each line checked alone (one broken line costs one record).

    The one built-in reader that checks its records itself rather than
    through ``log.check``: a line is parsed into a record, not a table row.
    """
    records: list[dict[str, Any]] = []
    rows: list[int] = []
    size = 0
    limit = log.limits.max_record_bytes
    try:
        for line_number, line in enumerate(iter_lines(source)):
            if isinstance(line, OverlongLine):
                log.count()
                detail = (
                    f"a line of {line.size:,} bytes, more than input.max_record_bytes ({limit:,})"
                )
                shown = line.head.decode("utf-8", errors="replace")
                log.add(line_number, R.RECORD_TOO_LARGE, detail, _preview(shown))
                continue
            if not line.strip():
                continue
            log.count()
            record = _parse_line(line, line_number, schema, log)
            if record is None:
                continue
            records.append(record)
            rows.append(line_number)
            size += len(line)
            if len(records) >= JSONL_CHUNK_LINES or size >= log.limits.batch_bytes:
                yield _records_to_canonical(records, rows, log.shard, schema, log)
                records, rows, size = [], [], 0
    finally:  # on damage too: the complete lines before it are kept
        if records:
            yield _records_to_canonical(records, rows, log.shard, schema, log)


def _parse_line(
    line: bytes, line_number: int, schema: Roles, log: _ShardLog
) -> dict[str, Any] | None:
    """The record a line holds, or None after quarantining it."""
    try:
        decoded = line.decode("utf-8")
    except UnicodeDecodeError as error:
        raw = line[: RAW_PREVIEW_CHARS * 4].decode("utf-8", errors="backslashreplace")
        log.add(line_number, R.INVALID_UTF8, str(error), _preview(raw.rstrip("\n")))
        return None
    shown = decoded.rstrip("\r\n")
    try:
        record = json.loads(decoded)
    except json.JSONDecodeError as error:
        log.add(line_number, R.MALFORMED_JSON, str(error), _preview(shown))
        return None
    except RecursionError:  # nested deeper than Python's stack allows
        record = None
    if record is None or _deeper_than(record, MAX_JSON_DEPTH, decoded):
        detail = f"JSON nested deeper than {MAX_JSON_DEPTH} levels"
        log.add(line_number, R.MALFORMED_JSON, detail, _preview(shown))
        return None
    if not isinstance(record, dict):
        log.add(line_number, R.MALFORMED_JSON, "a line must hold a JSON object", _preview(shown))
        return None
    id_text = _record_id(record, schema)
    id_value = None if schema.id is None else record.get(schema.id)
    if isinstance(id_value, dict | list):
        detail = (
            f"field {schema.id!r} is a JSON {type(id_value).__name__}, not a string or a number"
        )
        log.add(line_number, R.INVALID_ID, detail, _preview(shown))
        return None
    if "\\u" in decoded:  # only a \\uXXXX escape can produce a lone surrogate
        where = _lone_surrogate(record)
        if where is not None:
            detail = f"field {where!r} holds a \\u escape of a lone surrogate, which is no Unicode"
            log.add(line_number, R.INVALID_UTF8, detail, _preview(shown), id_text)
            return None
    text = None if schema.text is None else record.get(schema.text)
    if text is not None and not isinstance(text, str):
        detail = f"field {schema.text!r} is {type(text).__name__}"
        log.add(line_number, R.TEXT_NOT_STRING, detail, _preview(shown), id_text)
        return None
    size = _text_bytes(text, schema.max_text_bytes)
    if size is not None:
        log.add(line_number, R.TEXT_TOO_LONG, _size_detail(size, schema), _preview(text), id_text)
        return None
    problem = None if schema.features is None else _json_features_problem(record, schema)
    if problem is not None:
        log.add(line_number, R.INVALID_FEATURES, problem, _preview(shown), id_text)
        return None
    return record


def _deeper_than(value: Any, limit: int, text: str) -> bool:
    """Whether a parsed JSON value nests lists and objects more than ``limit`` levels deep."""
    if text.count("[") + text.count("{") <= limit:
        return False  # cannot nest deeper than it has brackets
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                return True
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def _record_id(record: dict[str, Any], schema: Roles) -> str | None:
    value = None if schema.id is None else record.get(schema.id)
    if value is None or isinstance(value, dict | list):
        return None
    return value if isinstance(value, str) else json.dumps(value)


def _lone_surrogate(value: Any, path: str = "") -> str | None:
    """The path of the first string (key or value) holding a lone surrogate, or None."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path or "(value)"
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            where = _lone_surrogate(key, f"{path}.{key!a}" if path else repr(key)[1:-1])
            if where is None:
                where = _lone_surrogate(item, f"{path}.{key}" if path else key)
            if where is not None:
                return where
    elif isinstance(value, list):
        for position, item in enumerate(value):
            where = _lone_surrogate(item, f"{path}[{position}]")
            if where is not None:
                return where
    return None


def _records_to_canonical(
    records: list[dict[str, Any]],
    rows: list[int],
    shard: Shard,
    schema: Roles,
    log: _ShardLog,
) -> pa.Table:
    """The records as a table; a column per key, in one pass over every key of every record.

    Keys present in few records (sparse metadata) cost their own values
    only, not a value per record; with a list of pass-through columns, the
    other keys are not read at all.
    """
    n = len(records)
    roles = {schema.text, schema.features}
    wanted = (
        None
        if schema.passthrough == "all"
        else {*schema.passthrough, schema.id, schema.label} - {None}
    )
    positions: dict[str, list[int]] = {}
    values: dict[str, list[Any]] = {}
    for position, record in enumerate(records):
        for key, value in record.items():
            if key in roles or (wanted is not None and key not in wanted):
                continue
            found = values.get(key)
            if found is None:
                positions[key], values[key] = [position], [value]
            else:
                positions[key].append(position)
                found.append(value)
    if wanted is None:
        log.note_passthrough((k for k in values if k not in (schema.id, schema.label)), schema)
    columns = {key: _spread(_to_arrow(found), positions[key], n) for key, found in values.items()}
    if schema.text is not None:
        columns[schema.text] = pa.array([r.get(schema.text) for r in records], pa.string())
    if schema.features is not None:
        vectors = [r.get(schema.features) for r in records]
        columns[schema.features] = pa.array(vectors, pa.list_(pa.float64()))
    return _finish(pa.table(columns), np.asarray(rows, dtype=np.int64), shard, schema, log)


def _spread(values: pa.Array, positions: list[int], n: int) -> pa.Array:
    """``values`` placed at ``positions`` of an array of ``n`` rows, null elsewhere."""
    if len(positions) == n:
        return values
    indices = np.full(n, -1, dtype=np.int64)
    indices[positions] = np.arange(len(positions), dtype=np.int64)
    return pc.take(values, pa.array(indices, mask=indices < 0))


def _json_features_problem(record: dict[str, Any], schema: Roles) -> str | None:
    """Why a JSON record's feature vector is unusable (null is left to the shared check)."""
    assert schema.features is not None
    value = record.get(schema.features)
    if value is None:
        return None
    if not isinstance(value, list):
        return f"{schema.features!r} is {type(value).__name__}, not a list of numbers"
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int | float):
            return f"{schema.features!r} holds a non-numeric value ({type(item).__name__})"
        try:
            finite = math.isfinite(float(item)) and abs(float(item)) <= _FLOAT32_MAX
        except OverflowError:
            finite = False
        if not finite:
            return f"{schema.features!r} holds a non-finite value (in float32)"
    return None


def _to_arrow(values: list[Any]) -> pa.Array:
    """Infer an Arrow array; values of mixed types become strings (others as their JSON text)."""
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return pa.array(
            [
                v if v is None or isinstance(v, str) else json.dumps(v, ensure_ascii=False)
                for v in values
            ],
            pa.string(),
        )


def _text_bytes(text: str | None, limit: int | None) -> int | None:
    """The UTF-8 size of ``text`` when it exceeds ``limit`` (None when it does not)."""
    if text is None or limit is None or len(text) <= limit // 4:
        return None
    size = len(text.encode("utf-8", errors="surrogatepass"))
    return size if size > limit else None


def _too_long(text: pa.Array, limit: int | None, candidates: np.ndarray) -> dict[int, int]:
    """{row: UTF-8 size} of the candidate rows whose text exceeds ``limit`` bytes."""
    if limit is None or len(text) == 0:
        return {}
    sizes = np.asarray(pc.fill_null(pc.binary_length(text), 0), dtype=np.int64)
    return {int(i): int(sizes[i]) for i in np.flatnonzero(candidates & (sizes > limit))}


def _size_detail(size: int, schema: Roles) -> str:
    return (
        f"{schema.text!r} holds {size:,} bytes, more than schema.max_text_bytes "
        f"({schema.max_text_bytes:,})"
    )


# -- shared ---------------------------------------------------------------------------------


def _finish(
    table: pa.Table, rows: np.ndarray, shard: Shard, schema: Roles, log: _ShardLog
) -> pa.Table:
    """Check text, features and id, build canonical columns, quarantine the rest."""
    text = table.column(schema.text) if schema.text is not None else None
    has_id = schema.id is not None and schema.id in table.column_names
    ids, id_problems = _ids(table, rows, schema, shard)

    missing_text = np.zeros(table.num_rows, dtype=bool)
    empty_text = np.zeros(table.num_rows, dtype=bool)
    if text is not None:
        missing_text = np.asarray(pc.is_null(text)).astype(bool)
        empty_text = ~missing_text & np.asarray(
            pc.fill_null(pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(text)), 0), False)
        ).astype(bool)
    features: pa.Array | None = None
    feature_problems: dict[int, str] = {}
    if schema.features is not None:
        features, feature_problems = _features_column(
            table.column(schema.features), ~(missing_text | empty_text), log
        )
    invalid_features = np.zeros(table.num_rows, dtype=bool)
    invalid_features[list(feature_problems)] = True
    usable = ~missing_text & ~empty_text & ~invalid_features
    invalid_id = np.zeros(table.num_rows, dtype=bool)
    invalid_id[list(id_problems)] = True
    invalid_id &= usable
    missing_id = np.asarray(pc.is_null(ids)).astype(bool) & usable & ~invalid_id
    preview = text if text is not None else table.column(schema.features or S.FEATURES)
    for mask, reason, detail in (
        (missing_text, R.MISSING_TEXT, f"{schema.text!r} is null or absent"),
        (empty_text, R.EMPTY_TEXT, f"{schema.text!r} is empty or whitespace"),
        (invalid_features, R.INVALID_FEATURES, None),
        (invalid_id, None, None),
        (missing_id, R.MISSING_ID, f"{schema.id!r} is null"),
    ):
        for index in np.flatnonzero(mask):
            position = int(index)
            raw = _preview(preview[position].as_py())
            if mask is invalid_id:
                why_reason, why = id_problems[position]
            else:
                assert reason is not None  # only the id problems carry their own reason
                why_reason = reason
                why = detail if detail is not None else feature_problems[position]
            log.add(int(rows[index]), why_reason, why, raw, ids[position].as_py())
    keep = usable & ~invalid_id & ~missing_id

    out: dict[str, pa.ChunkedArray | pa.Array] = {S.ID: ids}
    role_names: set[str] = set()
    if text is not None and schema.text is not None:
        out[S.TEXT] = text
        role_names.add(schema.text)
    if features is not None and schema.features is not None:
        out[S.FEATURES] = features
        role_names.add(schema.features)
    if has_id and schema.id is not None:
        role_names.add(schema.id)
    if schema.label is not None:
        role_names.add(schema.label)
        out[S.LABEL] = (
            table.column(schema.label)
            if schema.label in table.column_names
            else pa.nulls(table.num_rows)
        )
    passthrough = _passthrough_names(table.column_names, role_names, schema)
    if schema.passthrough == "all":
        log.note_passthrough(passthrough, schema)
    present = set(table.column_names)
    for name in passthrough:
        if name in out or name in S.POSITION_COLUMNS:
            raise InputError(
                f"{shard.name}: pass-through column {name!r} collides with a name thresher uses "
                f"internally; rename it or leave it out of schema.passthrough"
            )
        out[name] = table.column(name) if name in present else pa.nulls(table.num_rows)
    out[S.SHARD] = pa.array(np.full(table.num_rows, shard.index, dtype=np.int32))
    out[S.ROW] = pa.array(rows, pa.int64())
    return pa.table(out).filter(pa.array(keep))


def _features_column(
    column: pa.ChunkedArray, candidates: np.ndarray, log: _ShardLog
) -> tuple[pa.Array, dict[int, str]]:
    """The feature vectors as list<float32>, plus {row: why} for unusable ones.

    ``candidates`` marks rows not already quarantined for another reason; the
    first of them with a usable vector fixes the shard's vector length (kept
    on ``log`` across chunks) when no earlier chunk did.
    """
    array = column.combine_chunks()
    n = len(array)
    problems: dict[int, str] = {}
    null = np.asarray(array.is_null()).astype(bool)
    kind = array.type
    is_list = (
        pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)
    )
    numeric = is_list and (
        pa.types.is_integer(kind.value_type)
        or pa.types.is_floating(kind.value_type)
        or pa.types.is_decimal(kind.value_type)
    )
    if not numeric:
        for index in range(n):
            problems[index] = (
                "null or absent" if null[index] else f"not a list of numbers (type {kind})"
            )
        return pa.nulls(n, pa.list_(pa.float32())), problems
    lengths = np.asarray(pc.fill_null(pc.list_value_length(array), 0), dtype=np.int64)
    flat = pc.list_flatten(array)
    parents = np.asarray(pc.list_parent_indices(array), dtype=np.int64)
    values = np.asarray(pc.fill_null(flat.cast(pa.float64()), np.nan), dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        as_float32 = values.astype(np.float32)
    non_finite = np.zeros(n, dtype=bool)
    non_finite[parents[~np.isfinite(as_float32)]] = True
    for index in range(n):
        if null[index]:
            problems[index] = "null or absent"
        elif lengths[index] == 0:
            problems[index] = "empty vector"
        elif non_finite[index]:
            problems[index] = "holds a null, NaN, infinite or beyond-float32 value"
    usable = candidates & ~null & (lengths > 0) & ~non_finite
    if log.features_length is None and usable.any():
        log.features_length = int(lengths[np.flatnonzero(usable)[0]])
    expected = log.features_length
    for position in np.flatnonzero(usable & (lengths != expected)):
        problems[int(position)] = (
            f"length {lengths[position]}, but the shard's first valid vector has length {expected}"
        )
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    vectors = pa.ListArray.from_arrays(
        pa.array(offsets, pa.int32()), pa.array(as_float32, pa.float32()), mask=pa.array(null)
    )
    return vectors, problems


def _passthrough_names(columns: list[str], role_names: set[str], schema: Roles) -> list[str]:
    if schema.passthrough == "all":
        return [c for c in columns if c not in role_names]
    return [c for c in schema.passthrough if c not in role_names]


def empty_canonical(schema: Roles) -> pa.Table:
    fields = [pa.field(S.ID, pa.string())]
    if schema.text is not None:
        fields.append(pa.field(S.TEXT, pa.string()))
    if schema.features is not None:
        fields.append(pa.field(S.FEATURES, pa.list_(pa.float32())))
    if schema.label is not None:
        fields.append(pa.field(S.LABEL, pa.null()))
    fields += [pa.field(S.SHARD, pa.int32()), pa.field(S.ROW, pa.int64())]
    return pa.schema(fields).empty_table()


def _shown(value: pa.Scalar) -> Any:
    """A scalar as Python, its invalid UTF-8 shown escaped."""
    try:
        return value.as_py()
    except UnicodeDecodeError:
        return value.cast(pa.binary()).as_py().decode("utf-8", errors="backslashreplace")


def _preview(value: Any) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else repr(value)
    return text[:RAW_PREVIEW_CHARS]
