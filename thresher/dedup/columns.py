"""Arrow columns of the score table as numpy arrays (signatures, content hashes)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

from thresher.errors import ThresherError


def _combined(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def signature_column(signatures: NDArray[np.uint32], valid: NDArray[np.bool_]) -> pa.Array:
    """A binary column of ``(n, num_perm)`` signatures: ``4 * num_perm`` little-endian bytes each.

    Rows where ``valid`` is False are null.
    """
    n, num_perm = signatures.shape
    width = 4 * num_perm
    data = pa.py_buffer(np.ascontiguousarray(signatures, dtype="<u4").tobytes())
    offsets = pa.py_buffer(np.arange(0, (n + 1) * width, width, dtype=np.int64).tobytes())
    validity = pa.py_buffer(np.packbits(valid, bitorder="little").tobytes())
    nulls = int(n - np.count_nonzero(valid))
    return pa.Array.from_buffers(
        pa.large_binary(), n, [validity if nulls else None, offsets, data], null_count=nulls
    ).cast(pa.binary())


def signature_array(
    column: pa.Array | pa.ChunkedArray, num_perm: int, name: str = "signature"
) -> tuple[NDArray[np.uint32], NDArray[np.bool_]]:
    """``(n, num_perm)`` uint32 signatures and a validity mask from a binary signature column.

    Null rows hold ``2**32 - 1`` everywhere (datasketch's empty value).
    Raises ThresherError when a signature does not have ``num_perm`` values.
    """
    column = _combined(column).cast(pa.large_binary())
    n = len(column)
    width = 4 * num_perm
    valid = (
        np.asarray(column.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
        if column.null_count
        else np.ones(n, dtype=bool)
    )
    filled = pc.fill_null(column, pa.scalar(b"\xff" * width, pa.large_binary()))
    lengths = pc.binary_length(filled).to_numpy()
    if np.any(lengths != width):
        found = int(lengths[lengths != width][0]) // 4
        raise ThresherError(
            f"score column {name!r} holds a signature of {found} values, expected {num_perm}; "
            "was it written by another minhash configuration?"
        )
    if n == 0:
        return np.zeros((0, num_perm), dtype=np.uint32), valid
    offsets = np.frombuffer(filled.buffers()[1], dtype=np.int64)[
        filled.offset : filled.offset + n + 1
    ]
    data = np.frombuffer(filled.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
    return data.view("<u4").reshape(n, num_perm).astype(np.uint32), valid


def hash_array(
    column: pa.Array | pa.ChunkedArray, name: str = "exact"
) -> tuple[NDArray[np.uint64], NDArray[np.bool_]]:
    """``(n, 2)`` uint64 view of 16-byte content hashes, and a validity mask."""
    column = _combined(column).cast(pa.large_binary())
    n = len(column)
    valid = (
        np.asarray(column.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
        if column.null_count
        else np.ones(n, dtype=bool)
    )
    filled = pc.fill_null(column, pa.scalar(b"\0" * 16, pa.large_binary()))
    lengths = pc.binary_length(filled).to_numpy()
    if np.any(lengths != 16):
        raise ThresherError(f"score column {name!r} holds content hashes that are not 16 bytes")
    if n == 0:
        return np.zeros((0, 2), dtype=np.uint64), valid
    offsets = np.frombuffer(filled.buffers()[1], dtype=np.int64)[
        filled.offset : filled.offset + n + 1
    ]
    data = np.frombuffer(filled.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
    return data.view(np.uint64).reshape(n, 2).copy(), valid
