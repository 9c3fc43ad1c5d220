"""Arrow table helpers: conforming a table to a schema, joining tables of any column types."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

#: What a failed ``cast`` raises, whichever way it fails: a value that does not parse,
#: a cast Arrow does not implement, or types it refuses outright.
CAST_ERRORS = (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError)


def conform_to(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with exactly ``schema``'s columns, in order: missing ones null, others cast."""
    if table.schema.equals(schema):
        return table
    columns = []
    for field in schema:
        if field.name in table.column_names:
            column = table.column(field.name)
            columns.append(column if column.type == field.type else column.cast(field.type))
        else:
            columns.append(pa.nulls(table.num_rows, field.type))
    return pa.Table.from_arrays(columns, schema=schema)


def join_tables(left: pa.Table, right: pa.Table, on: Sequence[str], how: str) -> pa.Table:
    """A join of two tables whose other columns may be of any type (lists, binaries).

    Only the keys and row numbers go through Arrow's hash join; the rows are
    then taken by number, in left-row order (then right-row order).
    """
    keys = list(on)
    left_index = left.select(keys).append_column("__left", pa.array(np.arange(left.num_rows)))
    right_index = right.select(keys).append_column("__right", pa.array(np.arange(right.num_rows)))
    kind = {
        "inner": "inner",
        "left": "left outer",
        "left_anti": "left anti",
        "left_semi": "left semi",
    }[how]
    joined = left_index.join(right_index, keys=keys, join_type=kind, use_threads=False)
    if how in ("left_anti", "left_semi"):
        return _left_rows(left, np.sort(joined.column("__left").to_numpy()))
    joined = joined.sort_by([("__left", "ascending"), ("__right", "ascending")])
    left_rows = joined.column("__left")
    right_rows = joined.column("__right")
    out = _left_rows(left, left_rows.to_numpy())
    clash = sorted((set(right.column_names) - set(keys)) & set(left.column_names))
    if clash:
        raise ValueError(f"join: both sides have the column(s) {clash}")
    for name in right.column_names:
        if name in keys:
            continue
        out = out.append_column(right.schema.field(name), right.column(name).take(right_rows))
    return out


def _left_rows(left: pa.Table, rows: np.ndarray) -> pa.Table:
    """``left``'s rows by number (ascending). When each row appears once at most, a filter
    (or ``left`` itself): ``take`` would copy every kept value of wide binary columns."""
    rows = np.asarray(rows, dtype=np.int64)
    if rows.size and np.all(rows[1:] > rows[:-1]):
        if rows.size == left.num_rows:
            return left
        mask = np.zeros(left.num_rows, dtype=bool)
        mask[rows] = True
        return left.filter(pa.array(mask))
    return left.take(pa.array(rows))
