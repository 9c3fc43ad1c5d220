"""The bytes of one input shard, as bounded lines or bounded Arrow batches, hashed as read.

What a file is comes from its content, the name being a hint: the first
bytes tell a Parquet file (``PAR1``), an Arrow IPC file (``ARROW1``) or
stream, and a gzip, zstd, bzip2 or xz stream, so that gzip content named
``.jsonl`` is decompressed and a plain file named ``.gz`` is read as it is
(:func:`sniff`). Text formats (JSON lines, CSV, TSV) are told by the name.

Memory is bounded by a batch, never by the file (:class:`ReadLimits`):

- text shards are streamed; a line longer than ``max_record_bytes`` is
  never held whole: it is skipped in bounded reads and reported as an
  :class:`OverlongLine` (ingest quarantines it and moves on);
- Parquet files are read row group by row group in batches sized from the
  footer's byte counts, through a buffered reader (pages, not column
  chunks, in memory); a string column stored as dictionary indices (a
  repeated value is stored once, however large) is read as a dictionary,
  so that ingest can measure each row before decoding it;
- Arrow IPC files are memory-mapped (a local copy first on an object store);
- a shard whose data passes ``max_shard_bytes`` once decompressed, or
  ``max_rows`` rows, is refused naming the file and the setting
  (:class:`ShardTooLargeError`): a decompression bomb costs a bounded read.

Each reader yields what it could read before any damage and then raises
:class:`DamagedInputError` (a truncated or corrupt file), so that the ingest
stage can either stop the run or keep the rows read so far and list the file
as skipped (``input.on_unreadable``). A file that cannot be opened at all
raises :class:`~thresher.errors.InputError` at once.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import re
import shutil
import tempfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import xxhash

from thresher.errors import DamagedInputError, InputError
from thresher.io.shards import Shard

#: Most rows in one batch of any format (a batch is also bounded in bytes).
BATCH_ROWS = 8192
_BOM = b"\xef\xbb\xbf"
_READ_CHUNK = 1 << 20
#: What a damaged (truncated, corrupt) stream raises in the codecs and in pyarrow.
_DAMAGE = (OSError, EOFError, zlib.error, lzma.LZMAError, pa.ArrowException, ValueError)
#: A string column chunk stored with fewer bytes per value than this holds dictionary
#: indices: its decoded size is unknown until decoded, so it is read as a dictionary.
_INDEX_BYTES_PER_VALUE = 16

_COMPRESSION_MAGIC = (
    (b"\x1f\x8b", "gzip"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\xfd7zXZ\x00", "xz"),
)
_BZIP2_MAGIC = re.compile(rb"BZh[1-9]1AY&SY")
_PARQUET_MAGIC = b"PAR1"
_ARROW_FILE_MAGIC = b"ARROW1"
_ARROW_STREAM_MAGIC = b"\xff\xff\xff\xff"
SNIFF_BYTES = 16
#: The first bytes of an over-long line kept for its quarantine preview.
HEAD_BYTES = 4096


@dataclass(frozen=True)
class ReadLimits:
    """What one shard may cost a task (``input.*`` settings).

    Attributes
    ----------
    max_record_bytes : int or None
        A JSON line or a table row larger than this is quarantined, never
        held whole (None: no limit).
    max_shard_bytes : int or None
        Refuse a shard holding more data than this once decompressed
        (None: no limit).
    max_rows : int or None
        Refuse a shard with more records than this (None: no limit).
    batch_bytes : int
        The bytes of one batch read from a table (Parquet, Arrow).
    """

    max_record_bytes: int | None = 64 << 20
    max_shard_bytes: int | None = 64 << 30
    max_rows: int | None = None
    batch_bytes: int = 32 << 20


class ShardTooLargeError(InputError):
    """A shard passes a size limit of :class:`ReadLimits` (a bomb, or a file to split)."""


def too_large(shard: Shard, statement: str, setting: str) -> ShardTooLargeError:
    """The refusal of a shard past a limit: what it holds, the setting, what to do."""
    return ShardTooLargeError(
        f"{shard.name}: {statement}; a decompression bomb or a file to split: split it into "
        f"smaller shards, or raise input.{setting} if it is what you expect"
    )


def damaged(shard: Shard, kind: str, error: BaseException) -> DamagedInputError:
    """The error for a shard whose bytes of the given kind could not be read to their end."""
    cause = f"{type(error).__name__}: {error}".rstrip(": ")
    return DamagedInputError(f"{shard.name}: unreadable {kind} file ({cause})", cause)


def sniff(head: bytes) -> tuple[str | None, str | None]:
    """(container, compression) that a file's first bytes tell; None where they tell nothing.

    The container is ``parquet`` or ``arrow``; the compression ``gzip``,
    ``zstd``, ``bz2`` or ``xz``. Text formats have no magic bytes.
    """
    if head.startswith(_PARQUET_MAGIC):
        return "parquet", None
    if head.startswith((_ARROW_FILE_MAGIC, _ARROW_STREAM_MAGIC)):
        return "arrow", None
    for magic, codec in _COMPRESSION_MAGIC:
        if head.startswith(magic):
            return None, codec
    if _BZIP2_MAGIC.match(head):
        return None, "bz2"
    return None, None


class _HashingReader(io.RawIOBase):
    """A raw stream over a store's input stream that hashes every byte it reads."""

    def __init__(self, stream: Any, digest: Any) -> None:
        self.stream = stream
        self.digest = digest
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.stream.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        self.digest.update(data)
        self.size += n
        return n


class _CountingReader(io.RawIOBase):
    """A raw stream that refuses to give more than ``limit`` bytes (decompressed data)."""

    def __init__(self, stream: Any, limit: int | None, refuse: Callable[[], Exception]) -> None:
        self.stream = stream
        # One read of the stream below per call: a codec's buffered read(n) gathers several
        # and loses them all when the stream is cut, read1 gives what it has.
        self._read_once = getattr(stream, "read1", stream.read)
        self.limit = limit
        self.refuse = refuse
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._read_once(len(buffer))
        n = len(data)
        self.size += n
        if self.limit is not None and self.size > self.limit:
            raise self.refuse()
        buffer[:n] = data
        return n


class _NativeReader(io.RawIOBase):
    """A Python raw stream over a pyarrow stream (for the codecs only pyarrow has)."""

    def __init__(self, stream: pa.NativeFile) -> None:
        self.stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.stream.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class Source:
    """The bytes of one shard, read through the storage layer and hashed as they go."""

    def __init__(self, shard: Shard, limits: ReadLimits | None = None) -> None:
        self.shard = shard
        self.limits = limits or ReadLimits()
        self.digest = xxhash.xxh3_64()
        self.size = 0
        self._head: bytes | None = None

    def content(self) -> dict[str, Any]:
        """The digest of every byte read (the whole file, once it was read to its end)."""
        return {"size": self.size, "xxh3_64": self.digest.hexdigest()}

    def head(self) -> bytes:
        """The file's first bytes (read once)."""
        if self._head is None:
            with _opened(self.shard, self.shard.location.open_input_stream) as stream:
                self._head = bytes(stream.read(SNIFF_BYTES))
        return self._head

    def kind(self) -> tuple[str, str | None]:
        """(format, compression) of the shard: its content first, its name for text formats."""
        container, compression = sniff(self.head())
        if container is not None:
            return container, None
        return self.shard.format, compression

    @contextmanager
    def stream(self) -> Iterator[io.BufferedIOBase]:
        """The file as a decompressed binary stream, refused past ``max_shard_bytes``."""
        raw = _HashingReader(
            _opened(self.shard, self.shard.location.open_input_stream), self.digest
        )
        compression = self.kind()[1]
        limit = self.limits.max_shard_bytes
        once = " once decompressed" if compression else ""

        def refuse() -> ShardTooLargeError:
            statement = f"its data passes input.max_shard_bytes ({limit:,} bytes){once}"
            return too_large(self.shard, statement, "max_shard_bytes")

        try:
            buffered = io.BufferedReader(raw, buffer_size=_READ_CHUNK)
            counted = _CountingReader(_decompressed(buffered, compression), limit, refuse)
            yield io.BufferedReader(counted, buffer_size=_READ_CHUNK)
        finally:
            self.size = raw.size
            raw.stream.close()

    @contextmanager
    def random_access(self, memory_map: bool = False) -> Iterator[pa.NativeFile]:
        """The file opened for random access (what Parquet and Arrow readers need).

        A local file is hashed in one streaming pass, then opened; a remote
        one is copied to a local temporary file as it is hashed. Neither is
        held in memory.
        """
        location = self.shard.location
        if location.is_local:
            with self.stream_raw() as handle:
                while handle.read(_READ_CHUNK):
                    pass
            with _open_local(location.uri, memory_map) as opened:
                yield opened
            return
        scratch = tempfile.mkdtemp(prefix="thresher-input-")
        try:
            path = os.path.join(scratch, "shard")
            with self.stream_raw() as handle, open(path, "wb") as copy:
                shutil.copyfileobj(handle, copy, _READ_CHUNK)
            with _open_local(path, memory_map) as opened:
                yield opened
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    @contextmanager
    def stream_raw(self) -> Iterator[io.BufferedIOBase]:
        """The file's bytes as stored (not decompressed), hashed as they are read."""
        self.digest = xxhash.xxh3_64()
        raw = _HashingReader(
            _opened(self.shard, self.shard.location.open_input_stream), self.digest
        )
        try:
            yield io.BufferedReader(raw, buffer_size=_READ_CHUNK)
        finally:
            self.size = raw.size
            raw.stream.close()


def _open_local(path: str, memory_map: bool) -> pa.NativeFile:
    return pa.memory_map(path) if memory_map else pa.OSFile(path)


def _opened(shard: Shard, open_: Callable[[], Any]) -> Any:
    try:
        return open_()
    except FileNotFoundError:
        raise InputError(f"{shard.name}: the file vanished since it was listed") from None


def _decompressed(handle: Any, compression: str | None) -> Any:
    if compression is None:
        return handle
    if compression == "gzip":
        return gzip.GzipFile(fileobj=handle, mode="rb")
    if compression == "bz2":
        return bz2.BZ2File(handle, mode="rb")
    if compression == "xz":
        return lzma.LZMAFile(handle, mode="rb")
    if compression == "zstd":
        native = pa.CompressedInputStream(pa.PythonFile(handle, mode="r"), "zstd")
        return _NativeReader(native)
    raise InputError(f"unsupported compression {compression!r}")


# -- lines ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class OverlongLine:
    """A line longer than ``max_record_bytes``: its size and its first bytes (never all of it)."""

    size: int
    head: bytes


def iter_lines(source: Source) -> Iterator[bytes | OverlongLine]:
    """Every line of a text shard (a UTF-8 byte-order mark at its start removed).

    A line longer than ``max_record_bytes`` is read in bounded pieces and
    given as an :class:`OverlongLine`.
    """
    limit = source.limits.max_record_bytes
    try:
        with source.stream() as handle:
            first = True
            while True:
                line = handle.readline() if limit is None else handle.readline(limit + 1)
                if not line:
                    return
                if first:
                    first = False
                    if line.startswith(_BOM):
                        line = line[len(_BOM) :]
                if limit is not None and len(line) > limit and not _ends_line(line, limit):
                    yield _skip_rest(handle, line)
                else:
                    yield line
    except InputError:
        raise
    except _DAMAGE as error:
        raise damaged(source.shard, _kind(source), error) from error


def _ends_line(line: bytes, limit: int) -> bool:
    """Whether a read of ``limit + 1`` bytes is a line of at most ``limit`` bytes and its newline."""
    return len(line) == limit + 1 and line.endswith(b"\n")


def _skip_rest(handle: io.BufferedIOBase, start: bytes) -> OverlongLine:
    """Read past the rest of an over-long line, a bounded piece at a time."""
    head = start[:HEAD_BYTES]
    size = len(start)
    piece = start
    while not piece.endswith(b"\n"):
        piece = handle.readline(_READ_CHUNK)
        if not piece:
            break
        size += len(piece)
    return OverlongLine(size, head)


# -- tables ---------------------------------------------------------------------------------


def iter_parquet(source: Source) -> Iterator[pa.Table]:
    """The shard's rows in bounded batches; a damaged row group ends it with DamagedInputError."""
    limits = source.limits
    with source.random_access() as handle:
        try:
            # pre_buffer off: pyarrow keeps every pre-buffered range until the file closes
            parquet = pq.ParquetFile(handle, buffer_size=_READ_CHUNK, pre_buffer=False)
            metadata = parquet.metadata
        except Exception as error:  # pyarrow raises several types for a damaged file
            raise damaged(source.shard, "Parquet", error) from error
        _check_totals(source.shard, limits, metadata)
        try:
            for group in range(metadata.num_row_groups):
                yield from _row_group_batches(handle, parquet, metadata, group, limits)
        except InputError:
            raise
        except Exception as error:
            raise damaged(source.shard, "Parquet", error) from error


def _check_totals(shard: Shard, limits: ReadLimits, metadata: pq.FileMetaData) -> None:
    """Refuse, from the footer alone, a Parquet file past the row or byte limit."""
    if limits.max_rows is not None and metadata.num_rows > limits.max_rows:
        statement = (
            f"has {metadata.num_rows:,} rows, more than input.max_rows ({limits.max_rows:,})"
        )
        raise too_large(shard, statement, "max_rows")
    size = sum(metadata.row_group(g).total_byte_size for g in range(metadata.num_row_groups))
    if limits.max_shard_bytes is not None and size > limits.max_shard_bytes:
        statement = (
            f"holds {size:,} bytes of data uncompressed, more than input.max_shard_bytes "
            f"({limits.max_shard_bytes:,})"
        )
        raise too_large(shard, statement, "max_shard_bytes")


def _row_group_batches(
    handle: pa.NativeFile,
    parquet: pq.ParquetFile,
    metadata: pq.FileMetaData,
    group: int,
    limits: ReadLimits,
) -> Iterator[pa.Table]:
    row_group = metadata.row_group(group)
    if row_group.num_rows == 0:
        return
    names = set(metadata.schema.to_arrow_schema().names)
    indexed = []
    for position in range(row_group.num_columns):
        column = row_group.column(position)
        if (
            column.path_in_schema in names
            and column.physical_type == "BYTE_ARRAY"
            and column.has_dictionary_page
            and column.total_uncompressed_size < _INDEX_BYTES_PER_VALUE * max(column.num_values, 1)
        ):
            indexed.append(column.path_in_schema)
    reader = parquet
    if indexed:  # read as dictionaries: ingest measures each row before decoding it
        reader = pq.ParquetFile(
            handle,
            metadata=metadata,
            read_dictionary=indexed,
            buffer_size=_READ_CHUNK,
            pre_buffer=False,
        )
    per_row = max(1, row_group.total_byte_size // row_group.num_rows)
    rows = max(1, min(BATCH_ROWS, limits.batch_bytes // per_row))
    for batch in reader.iter_batches(batch_size=rows, row_groups=[group], use_threads=False):
        yield pa.Table.from_batches([batch])


def iter_arrow(source: Source) -> Iterator[pa.Table]:
    """The batches of an Arrow IPC file (Feather v2) or stream (``datasets`` Arrow files)."""
    with source.random_access(memory_map=True) as handle:
        try:
            try:
                reader: Any = pa.ipc.open_file(handle)
                batches: Iterator[pa.RecordBatch] = (
                    reader.get_batch(i) for i in range(reader.num_record_batches)
                )
            except pa.ArrowInvalid:  # not the file format: the stream format
                handle.seek(0)
                batches = iter(pa.ipc.open_stream(handle))
            limit = source.limits.max_shard_bytes
            size = 0
            for batch in batches:
                size += batch.get_total_buffer_size()
                if limit is not None and size > limit:
                    statement = f"its data passes input.max_shard_bytes ({limit:,} bytes)"
                    raise too_large(source.shard, statement, "max_shard_bytes")
                for start in range(0, batch.num_rows, BATCH_ROWS):
                    yield pa.Table.from_batches([batch.slice(start, BATCH_ROWS)])
        except InputError:
            raise
        except Exception as error:
            raise damaged(source.shard, "Arrow IPC", error) from error


class InvalidRows:
    """Collects the rows a CSV reader could not split into the header's columns."""

    def __init__(self) -> None:
        self.rows: list[tuple[int | None, str]] = []

    def __call__(self, row: Any) -> str:
        self.rows.append((row.number, row.text))
        return "skip"


def iter_delimited(
    source: Source, delimiter: str, text_columns: list[str], invalid: InvalidRows
) -> Iterator[pa.Table]:
    """The rows of a CSV or TSV shard with a header; ``text_columns`` are read as strings.

    UTF-8 is checked later, per value, so that one bad value costs one row;
    rows with another number of fields than the header go to ``invalid``.
    """
    try:
        with source.stream() as handle:
            try:
                reader = pcsv.open_csv(
                    handle,
                    read_options=pcsv.ReadOptions(use_threads=False, block_size=1 << 22),
                    parse_options=pcsv.ParseOptions(
                        delimiter=delimiter, newlines_in_values=True, invalid_row_handler=invalid
                    ),
                    convert_options=pcsv.ConvertOptions(
                        column_types=dict.fromkeys(text_columns, pa.string()), check_utf8=False
                    ),
                )
            except pa.ArrowInvalid as error:
                if "Empty CSV file" in str(error):
                    return  # a zero-byte file holds no record
                raise
            for batch in reader:
                yield pa.Table.from_batches([batch])
    except InputError:
        raise
    except _DAMAGE as error:
        raise damaged(source.shard, _kind(source), error) from error


def _kind(source: Source) -> str:
    names = {"jsonl": "JSONL", "csv": "CSV", "tsv": "TSV"}
    fmt, compression = source.kind()
    kind = names.get(fmt, fmt)
    return f"{compression} {kind}" if compression else kind
