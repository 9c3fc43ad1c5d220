"""MosaicML Streaming (MDS) shards, written without the ``streaming`` library.

The bytes are those ``streaming.MDSWriter`` writes (mosaicml-streaming
0.13, format version 2, no compression, no hashes), so its
``StreamingDataset`` reads them. A shard file holds:

- the number of samples (uint32), then ``samples + 1`` byte offsets
  (uint32, from the start of the file) of each sample and of the end;
- the writer's configuration as JSON (sorted keys);
- the samples. A sample is the sizes (uint32) of its variable-size
  columns, then every column's bytes, columns in sorted name order.

The encodings are the library's: ``str`` (UTF-8), ``bytes``, ``int64``,
``int32``, ``float64``, ``float32`` (little-endian) and ``json``
(``json.dumps``). A new shard starts when the next sample would take the
shard past ``size_limit``, counted as the library counts it, so the shards
split where its writer would split them.

Each shard file is published whole when it is complete (memory holds one
shard). The dataset becomes visible to readers through ``index.json``
(:func:`write_mds_index`), which the caller writes once every writer has
closed: each writer returns its shards' entries from
:meth:`MDSWriter.close`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import json
import struct
from base64 import b64encode
from collections.abc import Collection
from typing import Any

import numpy as np
import pyarrow as pa

from thresher.io.fs import Location
from thresher.io.sink import PublishedWhole

#: The MDS format version (shards and index).
MDS_VERSION = 2
#: The file that makes an MDS directory a dataset.
INDEX_NAME = "index.json"
#: Fixed-size encodings: their size in bytes and their little-endian numpy dtype.
FIXED_ENCODINGS = {
    "int64": (8, "<i8"),
    "int32": (4, "<i4"),
    "float64": (8, "<f8"),
    "float32": (4, "<f4"),
}
_ARROW_TYPES = {
    "int64": pa.int64(),
    "int32": pa.int32(),
    "float64": pa.float64(),
    "float32": pa.float32(),
}
#: Variable-size encodings (their size is written before the sample's data).
VARIABLE_ENCODINGS = frozenset({"str", "bytes", "json"})
#: Bytes a sample adds to its shard beyond its own (its offset), as the library counts.
_SAMPLE_OVERHEAD = 4
_MAX_UINT32 = (1 << 32) - 1


def mds_encodings(schema: pa.Schema, required: Collection[str]) -> dict[str, str]:
    """The encoding of each column of ``schema``.

    Columns named in ``required`` (never null: the id, the text) keep a
    native encoding: strings ``str``, binaries ``bytes``, integers
    ``int64``, floats ``float64``. Every other column is ``json``, which
    holds nulls, lists and structs without loss (dates and times as ISO
    strings, decimals as strings, binaries as base64).
    """
    encodings = {}
    for field in schema:
        kind = field.type
        encoding = "json"
        if field.name in required:
            if pa.types.is_string(kind) or pa.types.is_large_string(kind):
                encoding = "str"
            elif pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
                encoding = "bytes"
            elif pa.types.is_integer(kind):
                encoding = "int64"
            elif pa.types.is_floating(kind):
                encoding = "float64"
        encodings[field.name] = encoding
    return encodings


class MDSWriter(PublishedWhole):
    """Writes a table's rows as MDS shards ``{prefix}.{j:05d}.mds`` in ``directory``.

    Parameters
    ----------
    directory : Location
        The dataset's directory (any store).
    prefix : str
        The shard names' prefix: writers of one dataset (one per task) use
        distinct prefixes.
    encodings : dict[str, str]
        Column name -> MDS encoding (:func:`mds_encodings`); the tables
        written hold exactly these columns.
    size_limit : int
        A shard's size limit in bytes (a single larger sample gets a shard
        of its own).
    """

    def __init__(
        self,
        directory: Location,
        prefix: str,
        encodings: dict[str, str],
        size_limit: int = 64 << 20,
    ) -> None:
        unknown = {
            name: encoding
            for name, encoding in encodings.items()
            if encoding not in FIXED_ENCODINGS and encoding not in VARIABLE_ENCODINGS
        }
        if unknown:
            raise ValueError(f"unsupported MDS encodings: {unknown}")
        if not 0 < size_limit <= _MAX_UINT32:
            raise ValueError(f"size_limit must lie in (0, 2**32), got {size_limit}")
        self.directory = directory
        self.prefix = prefix
        self.size_limit = size_limit
        self.column_names = sorted(encodings)
        self.column_encodings = [encodings[name] for name in self.column_names]
        self.config: dict[str, Any] = {
            "column_encodings": self.column_encodings,
            "column_names": self.column_names,
            "column_sizes": [
                FIXED_ENCODINGS[e][0] if e in FIXED_ENCODINGS else None
                for e in self.column_encodings
            ],
            "compression": None,
            "format": "mds",
            "hashes": [],
            "size_limit": size_limit,
            "version": MDS_VERSION,
        }
        self._config_bytes = json.dumps(self.config, sort_keys=True).encode("utf-8")
        self._variable = [i for i, e in enumerate(self.column_encodings) if e in VARIABLE_ENCODINGS]
        self._sizes_format = f"<{len(self._variable)}I"
        self._samples: list[bytes] = []
        self._shard_bytes = self._empty_shard_bytes
        #: The ``index.json`` entries of the shards published so far (all of them after close).
        self.shards: list[dict[str, Any]] = []
        self.rows = 0
        self._closed = False

    @property
    def _empty_shard_bytes(self) -> int:
        """What a shard costs before its samples: count, end offset, configuration."""
        return 4 + 4 + len(self._config_bytes)

    # -- writing ---------------------------------------------------------------------------
    def write(self, table: pa.Table | pa.RecordBatch) -> None:
        """Add the rows of ``table`` (in order) as samples."""
        if self._closed:
            raise ValueError("write on a closed MDSWriter")
        if sorted(table.schema.names) != self.column_names:
            raise ValueError(
                f"the table's columns {sorted(table.schema.names)} are not the "
                f"encoded columns {self.column_names}"
            )
        if table.num_rows == 0:
            return
        columns = [
            _encode_column(name, encoding, table.column(name))
            for name, encoding in zip(self.column_names, self.column_encodings, strict=True)
        ]
        for row in range(table.num_rows):
            values = [column[row] for column in columns]
            sizes = struct.pack(self._sizes_format, *(len(values[i]) for i in self._variable))
            self._add(sizes + b"".join(values))
        self.rows += table.num_rows

    def _add(self, sample: bytes) -> None:
        size = len(sample) + _SAMPLE_OVERHEAD
        if self._samples and self.size_limit < self._shard_bytes + size:
            self._flush()
        self._samples.append(sample)
        self._shard_bytes += size

    def _flush(self) -> None:
        """Publish the buffered samples as the next shard."""
        if not self._samples:
            return
        count = len(self._samples)
        start = 4 + 4 * (count + 1) + len(self._config_bytes)
        offsets = np.cumsum([start, *map(len, self._samples)], dtype=np.int64)
        if offsets[-1] > _MAX_UINT32:
            raise ValueError(f"a shard of {offsets[-1]} bytes overflows MDS's uint32 offsets")
        data = b"".join(
            [
                struct.pack("<I", count),
                offsets.astype("<u4").tobytes(),
                self._config_bytes,
                *self._samples,
            ]
        )
        basename = f"{self.prefix}.{len(self.shards):05d}.mds"
        (self.directory / basename).write_bytes(data)
        self.shards.append(
            {
                **self.config,
                "raw_data": {"basename": basename, "bytes": len(data), "hashes": {}},
                "samples": count,
                "zip_data": None,
            }
        )
        self._samples = []
        self._shard_bytes = self._empty_shard_bytes

    # -- publishing ------------------------------------------------------------------------
    def close(self) -> list[dict[str, Any]]:
        """Publish the last shard; return every shard's ``index.json`` entry, in order."""
        if self._closed:
            raise ValueError("MDSWriter is already closed")
        self._flush()
        self._closed = True
        return list(self.shards)

    def abort(self) -> None:
        """Forget the buffered samples and delete the shards already published."""
        self._samples = []
        self._closed = True
        for shard in self.shards:
            with contextlib.suppress(Exception):
                (self.directory / shard["raw_data"]["basename"]).delete()
        self.shards = []


def write_mds_index(directory: Location, shards: list[dict[str, Any]]) -> None:
    """Write ``index.json``, which makes the shards a dataset; write it after every shard."""
    index = {"shards": shards, "version": MDS_VERSION}
    (directory / INDEX_NAME).write_text(json.dumps(index, sort_keys=True))


# -- column encoding -----------------------------------------------------------------------


def _encode_column(name: str, encoding: str, column: pa.ChunkedArray) -> list[bytes]:
    """Each row's bytes of one column in ``encoding``."""
    if encoding == "json":
        return [
            json.dumps(value, default=_json_default).encode("utf-8") for value in column.to_pylist()
        ]
    if column.null_count:
        raise ValueError(f"column {name!r} holds nulls, which MDS encoding {encoding!r} cannot")
    kind = column.type
    if encoding in ("str", "bytes"):
        text = pa.types.is_string(kind) or pa.types.is_large_string(kind)
        binary = pa.types.is_binary(kind) or pa.types.is_large_binary(kind)
        if not (text if encoding == "str" else binary):
            raise ValueError(f"column {name!r} of type {kind} cannot be MDS {encoding!r}")
        return column.cast(pa.large_binary()).to_pylist()
    size, dtype = FIXED_ENCODINGS[encoding]
    numeric = pa.types.is_integer(kind) or (
        encoding.startswith("float") and pa.types.is_floating(kind)
    )
    if not numeric:
        raise ValueError(f"column {name!r} of type {kind} cannot be MDS {encoding!r}")
    try:
        values = column.cast(_ARROW_TYPES[encoding]).to_numpy()
    except pa.ArrowInvalid as error:
        raise ValueError(f"column {name!r} does not fit MDS {encoding!r}: {error}") from None
    data = np.ascontiguousarray(values, dtype=dtype).tobytes()
    return [data[i : i + size] for i in range(0, len(data), size)]


def _json_default(value: Any) -> Any:
    """JSON for the Arrow values ``json`` cannot write: times, decimals, binaries."""
    if isinstance(value, dt.date | dt.time):  # datetime is a date
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes):
        return b64encode(value).decode("ascii")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
