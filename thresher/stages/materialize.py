"""Materialise stage (local engine): write the kept rows of each shard as Parquet.

The Spark engine does the same with a join (``thresher.engines.spark``);
both restore the user's column names with :func:`output_columns`.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from thresher.config import SchemaConfig
from thresher.io import schema as S
from thresher.io.drift import conform
from thresher.run_dir import RunDir
from thresher.stages.harmonize import read_common_schema


def output_names(schema: SchemaConfig) -> dict[str, str]:
    """Canonical column -> the name it has in the pruned dataset."""
    names = {S.ID: schema.id or S.ID}
    if schema.text is not None:
        names[S.TEXT] = schema.text
    if schema.label is not None:
        names[S.LABEL] = schema.label
    if schema.features is not None:
        names[S.FEATURES] = schema.features
    return names


def output_columns(table: pa.Table, schema: SchemaConfig) -> pa.Table:
    """Drop thresher's position columns and give role columns their configured names."""
    renames = output_names(schema)
    table = table.drop_columns([c for c in S.POSITION_COLUMNS if c in table.column_names])
    return table.rename_columns([renames.get(c, c) for c in table.column_names])


def kept_rows(run: RunDir, shard_index: int) -> pa.Table:
    """Rows of one shard that the selection keeps: row position and weight, in row order."""
    dataset = ds.dataset(run.selection / "selection.parquet", format="parquet")
    kept = dataset.to_table(
        columns=[S.ROW, "weight"], filter=(ds.field(S.SHARD) == shard_index) & ds.field("keep")
    )
    return kept.sort_by(S.ROW)


def materialize_shard(
    run_root: str, shard_index: int, schema: SchemaConfig, weighted: bool, out_dir: str
) -> int:
    """Write the kept rows of one ingested shard to ``out_dir``; return how many."""
    run = RunDir(Path(run_root))
    kept = kept_rows(run, shard_index)
    if kept.num_rows == 0:
        return 0
    table = pq.read_table(run.ingested_shard(shard_index))
    common = read_common_schema(run)
    if common is not None:  # every part file gets every column (schema drift, see harmonize)
        table = conform(table, common)
    table = table.filter(pc.is_in(table.column(S.ROW), value_set=kept.column(S.ROW)))
    table = table.sort_by(S.ROW)
    if table.num_rows != kept.num_rows:
        raise AssertionError(f"shard {shard_index}: selection and ingested rows disagree")
    if weighted:
        table = table.append_column(S.IMPORTANCE_WEIGHT, kept.column("weight"))
    out = Path(out_dir) / f"part-{shard_index:05d}.parquet"
    pq.write_table(output_columns(table, schema), out, compression="zstd")
    return table.num_rows


def write_empty_part(run_root: str, schema: SchemaConfig, weighted: bool, out_dir: str) -> None:
    """Write a part file with no rows, so that an empty dataset still has its columns."""
    common = read_common_schema(RunDir(Path(run_root)))
    if common is None:
        return
    table = common.empty_table()
    if weighted:
        table = table.append_column(S.IMPORTANCE_WEIGHT, pa.array([], pa.float64()))
    out = Path(out_dir) / "part-empty.parquet"
    pq.write_table(output_columns(table, schema), out, compression="zstd")
