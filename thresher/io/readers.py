"""The bytes of one input shard, as lines or Arrow tables, hashed as they are read.

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
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import xxhash

from thresher.errors import DamagedInputError, InputError
from thresher.io.shards import Shard

BATCH_ROWS = 8192
_BOM = b"\xef\xbb\xbf"
#: What a damaged (truncated, corrupt) stream raises in the codecs and in pyarrow.
_DAMAGE = (OSError, EOFError, zlib.error, lzma.LZMAError, pa.ArrowException, ValueError)


def damaged(shard: Shard, kind: str, error: BaseException) -> DamagedInputError:
    """The error for a shard whose bytes of the given kind could not be read to their end."""
    cause = f"{type(error).__name__}: {error}".rstrip(": ")
    return DamagedInputError(f"{shard.name}: unreadable {kind} file ({cause})", cause)


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
    """The bytes of one shard, read once through the storage layer and hashed as they go."""

    def __init__(self, shard: Shard) -> None:
        self.shard = shard
        self.digest = xxhash.xxh3_64()
        self.size = 0

    def content(self) -> dict[str, Any]:
        """The digest of every byte read (the whole file, once it was read to its end)."""
        return {"size": self.size, "xxh3_64": self.digest.hexdigest()}

    def data(self) -> bytes:
        """The whole file (Parquet and Arrow readers need random access)."""
        data = _opened(self.shard, self.shard.location.read_bytes)
        self.digest.update(data)
        self.size = len(data)
        return data

    @contextmanager
    def stream(self) -> Iterator[io.BufferedIOBase]:
        """The file as a decompressed binary stream."""
        raw = _HashingReader(
            _opened(self.shard, self.shard.location.open_input_stream), self.digest
        )
        try:
            yield _decompressed(io.BufferedReader(raw, buffer_size=1 << 20), self.shard.compression)
        finally:
            self.size = raw.size
            raw.stream.close()


def _opened(shard: Shard, open_: Callable[[], Any]) -> Any:
    try:
        return open_()
    except FileNotFoundError:
        raise InputError(f"{shard.name}: the file vanished since it was listed") from None


def _decompressed(handle: io.BufferedReader, compression: str | None) -> io.BufferedIOBase:
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
        return io.BufferedReader(_NativeReader(native), buffer_size=1 << 20)
    raise InputError(f"unsupported compression {compression!r}")


def iter_lines(source: Source) -> Iterator[bytes]:
    """Every line of a text shard (a UTF-8 byte-order mark at its start removed)."""
    try:
        with source.stream() as handle:
            first = True
            for line in handle:
                if first:
                    first = False
                    if line.startswith(_BOM):
                        line = line[len(_BOM) :]
                yield line
    except InputError:
        raise
    except _DAMAGE as error:
        raise damaged(source.shard, _kind(source.shard), error) from error


def iter_parquet(source: Source) -> Iterator[pa.Table]:
    """The shard's rows in batches; a damaged row group ends the iteration with DamagedInputError."""
    try:
        parquet = pq.ParquetFile(pa.BufferReader(source.data()))
        for batch in parquet.iter_batches(batch_size=BATCH_ROWS):
            yield pa.Table.from_batches([batch])
    except InputError:
        raise
    except Exception as error:  # pyarrow raises several types for a damaged file
        raise damaged(source.shard, "Parquet", error) from error


def iter_arrow(source: Source) -> Iterator[pa.Table]:
    """The batches of an Arrow IPC file (Feather v2) or stream (``datasets`` Arrow files)."""
    try:
        buffer = pa.BufferReader(source.data())
        try:
            reader: Any = pa.ipc.open_file(buffer)
            batches: Iterator[pa.RecordBatch] = (
                reader.get_batch(i) for i in range(reader.num_record_batches)
            )
        except pa.ArrowInvalid:  # not the file format: the stream format
            buffer.seek(0)
            batches = iter(pa.ipc.open_stream(buffer))
        for batch in batches:
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
        raise damaged(source.shard, _kind(source.shard), error) from error


def _kind(shard: Shard) -> str:
    names = {"jsonl": "JSONL", "csv": "CSV", "tsv": "TSV"}
    kind = names.get(shard.format, shard.format)
    return f"{shard.compression} {kind}" if shard.compression else kind
