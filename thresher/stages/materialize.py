"""Materialise stage: write the kept rows of each shard as one Parquet file of the new version.

Every engine runs :class:`MaterializeShard` once per shard where the data
is: it reads the shard's decisions (``versions/<v>/selection/shard-NNNNN.parquet``)
and its ingested rows, checks that they agree, gives every part file the
corpus's common schema (schema drift, see :mod:`thresher.stages.harmonize`),
adds the importance weights when the selector defines them, restores the
user's column names and writes ``versions/<v>/data/part-NNNNN.parquet``.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from thresher.config import SchemaConfig
from thresher.io import schema as S
from thresher.io.drift import conform
from thresher.io.files import read_parquet, write_parquet_atomic
from thresher.io.publish import Version
from thresher.run_dir import RunDir, shard_file
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


def part_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


class MaterializeShard:
    """Write one shard's kept rows into ``version`` (a picklable per-shard task); returns the count."""

    def __init__(self, run: RunDir, version: Version, schema: SchemaConfig, weighted: bool) -> None:
        self.run = run
        self.version = version
        self.schema = schema
        self.weighted = weighted
        self.common = read_common_schema(run)

    def __call__(self, index: int) -> int:
        decisions = read_parquet(
            self.version.selection / shard_file(index), columns=[S.ROW, "keep", "weight"]
        )
        kept = decisions.filter(decisions.column("keep")).sort_by(S.ROW)
        if kept.num_rows == 0:
            return 0
        table = read_parquet(self.run.ingested_shard(index))
        if self.common is not None:  # every part file gets every column
            table = conform(table, self.common)
        table = table.filter(pc.is_in(table.column(S.ROW), value_set=kept.column(S.ROW)))
        table = table.sort_by(S.ROW)
        if table.num_rows != kept.num_rows:
            raise AssertionError(
                f"shard {index}: the selection keeps {kept.num_rows} rows, the ingested shard "
                f"has {table.num_rows} of them"
            )
        if self.weighted:
            table = table.append_column(S.IMPORTANCE_WEIGHT, kept.column("weight"))
        write_parquet_atomic(
            output_columns(table, self.schema), self.version.data / part_name(index)
        )
        return table.num_rows


def write_empty_part(run: RunDir, version: Version, schema: SchemaConfig, weighted: bool) -> None:
    """Write a part file with no rows, so that an empty dataset still has its columns."""
    common = read_common_schema(run)
    if common is None:
        return
    table = common.empty_table()
    if weighted:
        table = table.append_column(S.IMPORTANCE_WEIGHT, pa.array([], pa.float64()))
    write_parquet_atomic(output_columns(table, schema), version.data / "part-empty.parquet")
