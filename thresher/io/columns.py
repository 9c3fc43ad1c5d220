"""The column names of an input file, read cheaply: no record is decoded beyond the first few.

What a config check needs to tell whether ``schema.text`` (or another role
column) exists before any work starts:

- **Parquet**: the footer (on an object store, a ranged read of the end);
- **Arrow IPC**: the file footer, or the first message of a stream;
- **CSV and TSV**: the header row;
- **JSONL**: the union of the keys of the first :data:`PROBE_RECORDS` records
  that parse, found in at most :data:`PROBE_BYTES` of decompressed text.

A compressed text file is decompressed only as far as these reads go.
Anything the probe cannot read (a damaged file, a first record longer than
the probe) gives ``None``: the ingest stage is the authority on such a file
and reports it with its name.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pyarrow as pa

from thresher.io.files import parquet_file
from thresher.io.formats import FORMATS
from thresher.io.fs import Location
from thresher.io.readers import Source
from thresher.io.shards import Shard

#: Records of a JSONL file whose keys are read.
PROBE_RECORDS = 200
#: Decompressed bytes read at most from the start of a text file.
PROBE_BYTES = 4 << 20
_CHUNK = 64 << 10
_BOM = b"\xef\xbb\xbf"


def file_columns(location: Location, fmt: str) -> list[str] | None:
    """The column names of one input file of format ``fmt`` (None when they cannot be read).

    The format's registry row names its probe (:data:`thresher.io.formats.FORMATS`);
    a format without one gives None.
    """
    entry = FORMATS.get(fmt)
    probe = None if entry is None else entry.columns_function()
    if probe is None:
        return None
    try:
        return probe(location)
    except Exception:  # a damaged or unreadable file: the ingest stage reports it
        return None


def parquet_columns(location: Location) -> list[str]:
    """The columns of a Parquet file, from its footer."""
    return list(parquet_file(location).schema_arrow.names)


def arrow_columns(location: Location) -> list[str]:
    """The columns of an Arrow IPC file (its footer) or stream (its first message)."""
    with location.open_input_file() as handle:
        try:
            return list(pa.ipc.open_file(handle).schema.names)
        except pa.ArrowInvalid:  # not the file format: the stream format
            handle.seek(0)
            return list(pa.ipc.open_stream(handle).schema.names)


def _head(location: Location, fmt: str, enough: Any) -> bytes:
    """The first decompressed bytes of a text file: until ``enough(data)`` or the probe's end."""
    shard = Shard(0, location.uri, location.name, fmt, options=location.options)
    data = b""
    with Source(shard).stream() as handle:
        while len(data) < PROBE_BYTES and not enough(data):
            chunk = handle.read(_CHUNK)
            if not chunk:
                break
            data += chunk
    return data.removeprefix(_BOM)


def jsonl_columns(location: Location) -> list[str] | None:
    """The keys of the first records of a JSON lines file (see module docstring)."""
    data = _head(location, "jsonl", lambda d: d.count(b"\n") >= PROBE_RECORDS)
    lines = data.split(b"\n")
    if len(data) >= PROBE_BYTES:
        lines = lines[:-1]  # cut by the probe
    names: dict[str, None] = {}
    parsed = 0
    for line in lines:
        if parsed >= PROBE_RECORDS:
            break
        try:
            record = json.loads(line)
        except ValueError:  # a blank, broken or cut line: ingest quarantines it
            continue
        if isinstance(record, dict):
            parsed += 1
            names.update(dict.fromkeys(record))
    return list(names) if parsed else None


def csv_columns(location: Location) -> list[str] | None:
    """The header row of a CSV file."""
    return _header(location, ",")


def tsv_columns(location: Location) -> list[str] | None:
    """The header row of a TSV file."""
    return _header(location, "\t")


def _header(location: Location, delimiter: str) -> list[str] | None:
    fmt = "csv" if delimiter == "," else "tsv"
    data = _head(location, fmt, lambda d: b"\n" in d)
    text = data.decode("utf-8", errors="replace")
    row = next(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter), None)
    return row or None
