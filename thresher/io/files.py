"""Atomic file and directory writes: readers never see a partial output."""

from __future__ import annotations

import ctypes
import errno
import functools
import json
import os
import shutil
import sys
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from thresher.errors import RunStateError


def _temporary_sibling(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")


def write_parquet_atomic(table: pa.Table, path: Path, row_group_size: int | None = None) -> None:
    """Write a Parquet file under a temporary name, then rename it into place.

    ``row_group_size`` (rows) lets readers that filter on a sorted column
    skip the row groups they do not need, through the groups' statistics.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_sibling(path)
    try:
        pq.write_table(table, tmp, compression="zstd", row_group_size=row_group_size)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json_atomic(data: Any, path: Path) -> None:
    """Write JSON under a temporary name, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_sibling(path)
    try:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(text: str, path: Path) -> None:
    """Write a text file under a temporary name, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_sibling(path)
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def publish_directory(staging: Path, target: Path) -> None:
    """Replace ``target`` by the complete directory ``staging``, atomically.

    On Linux the two directories are swapped with one ``renameat2`` call
    (``RENAME_EXCHANGE``), so at every instant ``target`` holds either the
    previous complete directory or the new one, whatever kills the process
    and when; the previous copy is deleted afterwards. Where the file
    system cannot swap (another OS, NFS), the old target is renamed aside
    first, leaving one rename during which ``target`` is absent; a process
    killed there leaves the old copy next to it, and
    :func:`recover_published` (run by the next run) puts it back.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    retired = target.with_name(f"{_RETIRED_PREFIX.format(name=target.name)}{uuid.uuid4().hex[:8]}")
    if not target.exists():
        os.replace(staging, target)
    elif _exchange(staging, target):
        os.replace(staging, retired)  # the old copy, now under the staging name
    else:
        _replace_by_renames(staging, target, retired)
    shutil.rmtree(retired, ignore_errors=True)


_RETIRED_PREFIX = ".{name}.retired-"


def _replace_by_renames(staging: Path, target: Path, retired: Path) -> None:
    """Fallback of :func:`publish_directory`: move the old target aside, then move in the new."""
    os.replace(target, retired)
    try:
        os.replace(staging, target)
    except BaseException:
        os.replace(retired, target)
        raise


def recover_published(target: Path) -> None:
    """Repair what a process killed inside :func:`publish_directory` left behind.

    A retired copy next to a missing ``target`` is the previous published
    directory (the fallback was killed between its renames): it is put
    back. Retired copies next to an existing ``target`` are deleted.
    """
    retired = sorted(
        target.parent.glob(f"{_RETIRED_PREFIX.format(name=target.name)}*"),
        key=lambda p: p.stat().st_mtime_ns,
    )
    if retired and not target.exists():
        os.replace(retired.pop(), target)
    for path in retired:
        shutil.rmtree(path, ignore_errors=True)


def _exchange(first: Path, second: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2``); False where that is not supported."""
    function = _renameat2()
    if function is None:
        return False
    if function(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE):
        code = ctypes.get_errno()
        if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV):
            return False  # this file system (or kernel) cannot swap
        raise OSError(code, f"cannot swap {first} and {second}: {os.strerror(code)}")
    return True


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


@functools.cache
def _renameat2() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):  # a C library without it (glibc < 2.28)
        return None
    function.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    ]
    function.restype = ctypes.c_int
    return function


def check_contained(root: Path) -> None:
    """Refuse a run directory whose entries lead outside it (symbolic links).

    Everything thresher writes goes under ``root``; an entry such as a
    ``data`` symlink pointing elsewhere would make a run write, publish or
    (with ``--fresh``) delete files outside the run directory.
    """
    if not root.is_dir():
        return
    real_root = root.resolve()
    for entry in sorted(root.iterdir()):
        if not entry.is_symlink():
            continue
        destination = entry.resolve()
        if destination != real_root and real_root not in destination.parents:
            raise RunStateError(
                f"{entry} is a symbolic link to {destination}, outside the run directory "
                f"{root}; thresher writes only inside its run directory: remove the link "
                "or choose another run_dir"
            )


def read_parquet_dir(path: Path, columns: list[str] | None = None) -> pa.Table:
    """Read every Parquet file under ``path`` (hidden and ``_`` files skipped)."""
    files = sorted(
        p
        for p in path.rglob("*.parquet")
        if not any(part.startswith((".", "_")) for part in p.relative_to(path).parts)
    )
    if not files:
        raise FileNotFoundError(f"no Parquet files under {path}")
    tables = [pq.read_table(f, columns=columns) for f in files]
    return pa.concat_tables(tables, promote_options="permissive")


def read_json(path: Path) -> Any:
    """Read a JSON file written by :func:`write_json_atomic`."""
    return json.loads(path.read_text(encoding="utf-8"))
