"""The keeper order: which document of a duplicate cluster is kept.

One total order over documents, the same on both engines: the configured
score keys (each compared as float64, ascending or descending, null and
NaN last), then the id in byte order, then the input position. The keeper
of a cluster is its first member in this order, so it never depends on how
the cluster was found.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

from thresher.dedup.spec import KeeperKey


def keeper_rank(
    table: pa.Table, keys: tuple[KeeperKey, ...], positions: NDArray[np.int64]
) -> NDArray[np.int64]:
    """Rank of every row of ``table`` in the keeper order (0 = kept first).

    ``table`` holds ``id`` and the key columns; ``positions`` are the rows'
    document keys (input order), the last tie-breaker.
    """
    n = table.num_rows
    id_order = np.asarray(pc.sort_indices(table.column("id")))
    id_rank = np.empty(n, dtype=np.int64)
    id_rank[id_order] = np.arange(n, dtype=np.int64)
    sort_keys: list[NDArray[Any]] = [positions, id_rank]
    for key in reversed(keys):
        values = np.asarray(
            table.column(key.column).cast(pa.float64()).to_numpy(zero_copy_only=False),
            dtype=np.float64,
        )
        missing = np.isnan(values)
        values = np.where(missing, 0.0, -values if key.descending else values)
        sort_keys += [values, missing]
    order = np.lexsort(sort_keys)
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n, dtype=np.int64)
    return rank


#: The column of :func:`keeper_sort_key` where the dedup steps carry it.
KEEPER_KEY = "thresher_keeper_key"


def _float_bytes(values: NDArray[np.float64]) -> NDArray[np.uint8]:
    """Big-endian bytes of float64 values whose unsigned byte order is the numeric order."""
    bits = (values + 0.0).view(np.uint64)  # + 0.0: -0.0 becomes 0.0, as numpy compares them
    negative = (bits >> np.uint64(63)).astype(bool)
    bits = np.where(negative, ~bits, bits | np.uint64(1 << 63))
    return bits.astype(">u8").view(np.uint8).reshape(-1, 8)


def keeper_sort_key(
    table: pa.Table, keys: tuple[KeeperKey, ...], positions: NDArray[np.int64]
) -> pa.Array:
    """A binary key per row whose byte order is the keeper order of :func:`keeper_rank`.

    Where rows are compared across tables (a bucket's members on a Spark
    partition, the keeper rounds), ranks computed per table would not agree;
    this key does: per score key a missing flag and the value's
    order-preserving bytes, then the id (0x00 escaped, terminated by two
    0x00, so a prefix sorts first), then the input position.
    """
    n = table.num_rows
    fixed: list[NDArray[np.uint8]] = []
    for key in keys:
        values = np.asarray(
            table.column(key.column).cast(pa.float64()).to_numpy(zero_copy_only=False),
            dtype=np.float64,
        )
        missing = np.isnan(values)
        values = np.where(missing, 0.0, -values if key.descending else values)
        fixed += [missing.astype(np.uint8).reshape(-1, 1), _float_bytes(values)]
    head = np.concatenate(fixed, axis=1) if fixed else np.zeros((n, 0), dtype=np.uint8)
    ids = pc.replace_substring(table.column("id").cast(pa.binary()), b"\x00", b"\x00\xff")
    flipped = np.asarray(positions, dtype=np.int64).view(np.uint64) ^ np.uint64(1 << 63)
    tail = flipped.astype(">u8").view(np.uint8).reshape(-1, 8)
    separator = _fixed(np.zeros((n, 2), dtype=np.uint8))
    parts = [_fixed(head)] if head.shape[1] else []
    parts += [ids, separator, _fixed(tail)]
    return pc.binary_join_element_wise(*parts, pa.scalar(b"", pa.binary()))


def _fixed(rows: NDArray[np.uint8]) -> pa.Array:
    """An ``(n, w)`` byte matrix as a binary column of its rows."""
    n, width = rows.shape
    data = pa.py_buffer(np.ascontiguousarray(rows).tobytes())
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), n, [None, data]).cast(pa.binary())
