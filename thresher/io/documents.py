"""Documents a scorer learns from, named by file: examples for a classifier, targets for DSIR.

One reader for every such list of files, local paths or URIs alike
(through :class:`~thresher.io.fs.Location`): ``.parquet`` (its ``text``
column), ``.jsonl`` / ``.json`` (one object per line with a string
``text`` field, optionally gzipped) and anything else as plain text, one
document per line. Blank documents are skipped; a file that is missing or
cannot be parsed is an error naming the file (and the line), never a
silent skip. :func:`file_fingerprints` tells a changed file without
reading it, so a scorer retrains when its examples change.
"""

from __future__ import annotations

import gzip
import io
import json
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from thresher.errors import ConfigError, InputError
from thresher.io import schema as S
from thresher.io.fs import Location

__all__ = ["file_fingerprints", "read_documents"]

_JSON_LINES = (".jsonl", ".jsonl.gz", ".json", ".json.gz")


def read_documents(paths: list[str], what: str, kind: str = "example") -> list[str]:
    """Every non-blank document of ``paths``, in file order.

    ``what`` and ``kind`` word the errors: ``"{what}: {kind} file not found: ..."``.
    """
    documents: list[str] = []
    for name in paths:
        location = Location.of(str(name))
        if not location.is_file():
            raise ConfigError(f"{what}: {kind} file not found: {name}")
        documents += _documents_of(str(name), location, kind)
    return [d for d in documents if d.strip()]


def _documents_of(name: str, location: Location, kind: str) -> list[str]:
    data = location.read_bytes()
    base = location.name
    try:
        if base.endswith(".parquet"):
            table = pq.read_table(pa.BufferReader(data))
            if S.TEXT not in table.column_names:
                raise InputError(f"{name}: no 'text' column (columns: {table.column_names})")
            return [t for t in table.column(S.TEXT).to_pylist() if isinstance(t, str)]
        if base.endswith(_JSON_LINES):
            raw = gzip.decompress(data) if base.endswith(".gz") else data
            documents = []
            for number, line in enumerate(io.StringIO(raw.decode("utf-8")), 1):
                if not line.strip():
                    continue
                record: Any = json.loads(line)
                text = record.get(S.TEXT) if isinstance(record, dict) else None
                if not isinstance(text, str):
                    raise InputError(f"{name}:{number}: no string 'text' field")
                documents.append(text)
            return documents
        return data.decode("utf-8").splitlines()
    except (UnicodeDecodeError, json.JSONDecodeError, pa.ArrowInvalid, OSError) as error:
        raise InputError(f"{name}: cannot read {kind} documents ({error})") from None


def file_fingerprints(paths: list[str]) -> list[list[Any]]:
    """URI, size and version (or modification time) of each file; None for a missing one."""
    out: list[list[Any]] = []
    for name in paths:
        location = Location.of(str(name))
        entry = location.info()
        if entry is None:
            out.append([location.uri, None, None])
        else:
            out.append([location.uri, entry.size, entry.version or entry.mtime_ns])
    return out
