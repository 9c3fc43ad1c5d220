"""Whole-file reads and atomic writes on any store: readers never see a partial file.

Every function takes a :class:`~thresher.io.fs.Location` (or a local path
or URI, converted with :meth:`Location.of`). A write makes the file
visible complete or not at all (:meth:`Location.write_bytes`); anything
spanning several files is committed by a marker written last
(:mod:`thresher.io.publish`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from thresher.errors import RunStateError
from thresher.io.fs import Location
from thresher.redact import shown

PathLike = Location | Path | str


def _at(target: PathLike) -> Location:
    return target if isinstance(target, Location) else Location.of(target)


def write_parquet_atomic(
    table: pa.Table, target: PathLike, row_group_size: int | None = None
) -> None:
    """Write a Parquet file atomically (zstd).

    ``row_group_size`` (rows) lets readers that filter on a sorted column
    skip the row groups they do not need, through the groups' statistics.
    """
    location = _at(target)
    if location.is_local:  # straight to a temporary file, then one rename: no copy in memory
        location.parent.mkdir()
        tmp = location.temporary_sibling().uri
        try:
            pq.write_table(table, tmp, compression="zstd", row_group_size=row_group_size)
            os.replace(tmp, location.uri)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd", row_group_size=row_group_size)
    location.write_bytes(sink.getvalue())


def write_json_atomic(data: Any, target: PathLike) -> None:
    """Write JSON atomically (sorted keys, indented: diffable)."""
    _at(target).write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def write_text_atomic(text: str, target: PathLike) -> None:
    _at(target).write_text(text)


def read_json(target: PathLike) -> Any:
    """Read a JSON file written by :func:`write_json_atomic` (FileNotFoundError when absent)."""
    location = _at(target)
    if location.is_local:
        return json.loads(Path(location.uri).read_text(encoding="utf-8"))
    return json.loads(location.read_text())


def read_json_or(target: PathLike, default: Any) -> Any:
    """``read_json``, or ``default`` when the file does not exist."""
    try:
        return read_json(target)
    except FileNotFoundError:
        return default


#: Reading a column chunk a page at a time: what a batch costs, not its row group.
READ_BUFFER = 1 << 20


def parquet_file(target: PathLike) -> pq.ParquetFile:
    """A Parquet file opened for reading its footer or its batches, a batch's worth at a time.

    ``pre_buffer`` is off: pyarrow's pre-buffering keeps every range it read
    until the file is closed, so iterating over a file held all of it.
    """
    location = _at(target)
    source = location.uri if location.is_local else location.open_input_file()
    return pq.ParquetFile(source, pre_buffer=False, buffer_size=READ_BUFFER)


def parquet_batches(
    parquet: pq.ParquetFile, batch_bytes: int = 32 << 20, columns: list[str] | None = None
) -> Iterator[pa.RecordBatch]:
    """The file's rows in batches of about ``batch_bytes`` (sized from each row group's footer)."""
    metadata = parquet.metadata
    for group in range(metadata.num_row_groups):
        row_group = metadata.row_group(group)
        if row_group.num_rows == 0:
            continue
        per_row = max(1, row_group.total_byte_size // row_group.num_rows)
        rows = max(1, min(1 << 16, batch_bytes // per_row))
        yield from parquet.iter_batches(batch_size=rows, row_groups=[group], columns=columns)


def read_parquet(target: PathLike, columns: list[str] | None = None) -> pa.Table:
    location = _at(target)
    if location.is_local:
        return pq.read_table(location.uri, columns=columns)
    with location.open_input_file() as handle:
        return pq.read_table(handle, columns=columns)


def read_schema(target: PathLike) -> pa.Schema:
    return parquet_file(target).schema_arrow


def data_files(directory: PathLike) -> list[Location]:
    """Parquet files below ``directory`` (hidden and ``_`` entries skipped), sorted by path."""
    root = _at(directory)
    found = []
    for entry in root.list_files(recursive=True):
        relative = entry.location.relative_to(root)
        if relative.endswith(".parquet") and not any(
            part.startswith((".", "_")) for part in relative.split("/")
        ):
            found.append(entry.location)
    return found


def read_parquet_files(files: list[Location], columns: list[str] | None = None) -> pa.Table:
    """Read and concatenate Parquet files (types unified); FileNotFoundError when there are none."""
    if not files:
        raise FileNotFoundError("no Parquet files to read")
    tables = [read_parquet(f, columns=columns) for f in files]
    return pa.concat_tables(tables, promote_options="permissive")


def read_parquet_dir(directory: PathLike, columns: list[str] | None = None) -> pa.Table:
    """Every Parquet file under ``directory``; FileNotFoundError naming it when there is none."""
    files = data_files(directory)
    if not files:
        raise FileNotFoundError(f"no Parquet files under {directory}")
    return read_parquet_files(files, columns)


def check_contained(root: PathLike) -> None:
    """Refuse a local run directory holding a symbolic link that leads outside it, at any depth.

    Everything thresher writes goes under ``root``; a link such as ``data``,
    ``scores`` or ``versions/<v>/data`` pointing elsewhere would make a run
    write, publish or (with ``--fresh``) delete files outside the run
    directory, and a linked file would be read in as if the run had
    written it. Links that stay inside (the ``data`` link to the current
    version) are fine. Object stores have no links.

    One pass over the tree with ``os.scandir``, whose entries say whether
    they are links without a ``stat`` call; only links are resolved, and
    linked directories are not entered. A run directory of 10^5 files
    costs one directory listing per directory, about a tenth of a second,
    once per run, before the lock is taken; thresher creates every
    directory it writes to after that, inside the checked tree.
    """
    location = _at(root)
    if not location.is_local or not os.path.isdir(location.uri):
        return
    real_root = Path(location.uri).resolve()
    pending = [location.uri]
    while pending:
        directory = pending.pop()
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            if entry.is_symlink():
                _check_link(Path(entry.path), real_root, location)
            elif entry.is_dir(follow_symlinks=False):
                pending.append(entry.path)


def _check_link(link: Path, real_root: Path, root: Location) -> None:
    destination = link.resolve()
    if destination != real_root and real_root not in destination.parents:
        raise RunStateError(
            f"{shown(link)} is a symbolic link to {shown(destination)}, outside the run "
            f"directory {shown(root)}; thresher writes only inside its run directory: remove the "
            "link or choose another run_dir"
        )
