"""Embedding columns (Arrow lists of numbers) as numpy matrices, checked and vectorised."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray


def vector_matrix(column: pa.Array | pa.ChunkedArray, name: str) -> NDArray[np.float32]:
    """An (n, d) float32 matrix from a list column whose rows all have d numbers.

    Raises ValueError on a null row or on rows of different lengths.
    """
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    n = len(array)
    if n == 0:
        return np.zeros((0, 0), dtype=np.float32)
    if pa.types.is_fixed_size_list(array.type):
        flat = array.flatten().to_numpy(zero_copy_only=False)
        return np.asarray(flat, dtype=np.float32).reshape(n, array.type.list_size)
    if array.null_count:
        raise ValueError(f"embedding column {name!r} has {array.null_count} null rows")
    lengths = pc.list_value_length(array).to_numpy(zero_copy_only=False)
    if lengths.min() != lengths.max():
        raise ValueError(
            f"embedding column {name!r} mixes vector lengths {int(lengths.min())} and "
            f"{int(lengths.max())}"
        )
    flat = array.flatten().to_numpy(zero_copy_only=False)
    return np.asarray(flat, dtype=np.float32).reshape(n, int(lengths[0]))


def valid_vectors(column: pa.Array | pa.ChunkedArray) -> NDArray[np.bool_]:
    """True where a list entry is present, non-empty and holds only finite numbers."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    n = len(array)
    if n == 0:
        return np.zeros(0, dtype=bool)
    lengths = pc.list_value_length(array).to_numpy(zero_copy_only=False)
    valid = ~np.isnan(np.asarray(lengths, dtype=np.float64))  # null rows have a null length
    valid &= np.nan_to_num(np.asarray(lengths, dtype=np.float64), nan=0.0) > 0
    flat = array.flatten()
    if len(flat):
        finite = pc.fill_null(pc.is_finite(flat.cast(pa.float64())), False)
        parents = pc.list_parent_indices(array).to_numpy(zero_copy_only=False)
        bad = np.asarray(parents)[~finite.to_numpy(zero_copy_only=False)]
        valid[bad] = False
    return valid


def embedding_matrix(table: pa.Table, column: str) -> NDArray[np.float32]:
    """The (n, d) float32 matrix of ``table``'s vector ``column`` (ValueError when absent)."""
    if column not in table.column_names:
        raise ValueError(f"embedding column {column!r} not found; have {table.column_names}")
    return vector_matrix(table.column(column), column)


def is_vector_type(kind: pa.DataType) -> bool:
    return (
        pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)
    )
