"""Schema drift: one column type for tables (chunks, shards) that disagree.

Corpora are written by many producers over time: a column can be an
integer in one shard and a string in the next, or appear in some shards
only. Parquet readers (pyarrow datasets, Spark's ``mergeSchema``) refuse
conflicting types or silently take the first file's schema, so ingest
gives every column one type across the corpus:

- values that are all null (or a shard without rows) do not vote;
- the same type everywhere stays;
- integers of any width become ``int64`` (``float64`` with ``uint64``,
  which ``int64`` cannot hold); integers mixed with floats or decimals
  become ``float64``;
- anything else (a string here and a number there, lists mixed with
  scalars...) becomes ``string``: scalars by Arrow's cast (``12`` becomes
  ``"12"``), nested values as their JSON text.

A column missing from a table is filled with nulls when the table is
conformed to the common schema.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from thresher.tables import CAST_ERRORS


def common_type(types: Sequence[pa.DataType]) -> pa.DataType:
    """The type that every value of ``types`` converts to (see module docstring)."""
    distinct = list(dict.fromkeys(t for t in types if not pa.types.is_null(t)))
    if not distinct:
        return pa.string()
    if len(distinct) == 1:
        return distinct[0]
    if all(pa.types.is_integer(t) and t != pa.uint64() for t in distinct):
        return pa.int64()
    if all(
        pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)
        for t in distinct
    ):
        return pa.float64()
    return pa.string()


def common_schema(
    schemas: Iterable[pa.Schema], voters: Iterable[set[str] | None] | None = None
) -> pa.Schema:
    """One field per column name (in order of first appearance) with its common type.

    ``voters`` gives, per schema, the columns whose type counts (``None``:
    all of them); columns holding only nulls should not vote.
    """
    schemas = list(schemas)
    votes = list(voters) if voters is not None else [None] * len(schemas)
    types: dict[str, list[pa.DataType]] = {}
    for schema, voting in zip(schemas, votes, strict=True):
        for field in schema:
            cast_vote = voting is None or field.name in voting
            types.setdefault(field.name, []).extend([field.type] if cast_vote else [])
    return pa.schema([pa.field(name, common_type(found)) for name, found in types.items()])


def conform(table: pa.Table, schema: pa.Schema, *, add_missing: bool = True) -> pa.Table:
    """``table`` with the columns of ``schema``, in its order and with its types.

    Columns of ``table`` that ``schema`` lacks are an error (a bug: the
    common schema covers every table). Missing columns are filled with
    nulls when ``add_missing``, else left out.
    """
    names = set(schema.names)
    extra = [name for name in table.column_names if name not in names]
    if extra:
        raise ValueError(f"columns {extra} are not in the common schema {schema.names}")
    present = set(table.column_names)
    arrays, fields = [], []
    for field in schema:
        if field.name in present:
            arrays.append(cast_values(table.column(field.name), field.type))
        elif add_missing:
            arrays.append(pa.nulls(table.num_rows, field.type))
        else:
            continue
        fields.append(field)
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def concat_conformed(tables: Sequence[pa.Table]) -> pa.Table:
    """Concatenate tables whose columns or types may differ (see module docstring)."""
    schema = common_schema(t.schema for t in tables)
    return pa.concat_tables([conform(t, schema) for t in tables])


def cast_values(
    values: pa.ChunkedArray | pa.Array, target: pa.DataType
) -> pa.ChunkedArray | pa.Array:
    """Cast to ``target``; nested values that Arrow cannot cast to string become JSON text."""
    if values.type == target:
        return values
    try:
        return pc.cast(values, target, safe=False)
    except CAST_ERRORS:
        if not pa.types.is_string(target):
            raise
    texts = [None if v is None else json.dumps(v, default=str) for v in values.to_pylist()]
    return pa.array(texts, pa.string())


def voting_columns(metadata: pq.FileMetaData) -> set[str]:
    """Top-level columns of a Parquet file that hold at least one non-null value.

    Read from the footer's statistics (no data is read); a column without
    statistics, or a nested one, is assumed to hold values.
    """
    if metadata.num_rows == 0:
        return set()
    schema = metadata.schema.to_arrow_schema()
    nulls: dict[str, int] = {}
    unknown: set[str] = set()
    for group in range(metadata.num_row_groups):
        row_group = metadata.row_group(group)
        for index in range(row_group.num_columns):
            column = row_group.column(index)
            name = column.path_in_schema
            statistics = column.statistics
            if statistics is None or not statistics.has_null_count:
                unknown.add(name)
            else:
                nulls[name] = nulls.get(name, 0) + statistics.null_count
    return {
        field.name
        for field in schema
        if field.name in unknown
        or field.name not in nulls  # nested: its leaves have dotted paths
        or nulls[field.name] < metadata.num_rows
    }
