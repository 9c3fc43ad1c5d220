"""Materialise stage: write the kept rows of each shard as one Parquet file of the new version.

Every engine runs :class:`MaterializeShard` once per shard where the data
is: it reads the shard's decisions (``versions/<v>/selection/shard-NNNNN.parquet``)
and its ingested rows batch by batch (a task holds a batch, not the
shard), checks that they agree, gives every part file the
corpus's common schema (schema drift, see :mod:`thresher.stages.harmonize`),
adds the importance weights when the selector defines them and the repeat
counts (:data:`thresher.io.schema.REPEAT`) when it sets them, restores the
user's column names and writes ``versions/<v>/data/part-NNNNN.parquet``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from thresher.config import SchemaConfig
from thresher.errors import InputError
from thresher.io import schema as S
from thresher.io.drift import conform
from thresher.io.files import parquet_batches, parquet_file, read_parquet, write_parquet_atomic
from thresher.io.publish import Version
from thresher.io.sink import ParquetSink
from thresher.run_dir import RunDir, shard_file
from thresher.stages.base import RunContext, ShardStage
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

    def __init__(
        self,
        run: RunDir,
        version: Version,
        schema: SchemaConfig,
        weighted: bool,
        repeated: bool = False,
    ) -> None:
        self.run = run
        self.version = version
        self.schema = schema
        self.weighted = weighted
        self.repeated = repeated
        self.common = read_common_schema(run)

    def __call__(self, index: int) -> int:
        columns = [S.ROW, "keep", "weight", *([S.REPEAT] if self.repeated else [])]
        decisions = read_parquet(self.version.selection / shard_file(index), columns=columns)
        kept = decisions.filter(decisions.column("keep")).sort_by(S.ROW)
        if kept.num_rows == 0:
            return 0
        kept_rows = np.asarray(kept.column(S.ROW), dtype=np.int64)
        weights = kept.column("weight").combine_chunks() if self.weighted else None
        repeats = kept.column(S.REPEAT).combine_chunks() if self.repeated else None
        written = 0
        with ParquetSink(self.version.data / part_name(index)) as sink:
            for batch in parquet_batches(parquet_file(self.run.ingested_shard(index))):
                rows = np.asarray(batch.column(batch.schema.get_field_index(S.ROW)))
                # Both are in row order: the kept rows of this batch are a run of kept_rows.
                where = np.searchsorted(kept_rows, rows)
                hit = (where < len(kept_rows)) & (
                    kept_rows[np.minimum(where, len(kept_rows) - 1)] == rows
                )
                if not hit.any():
                    continue
                table = pa.Table.from_batches([batch]).filter(pa.array(hit))
                if self.common is not None:  # every part file gets every column
                    table = conform(table, self.common)
                if weights is not None:
                    weight = weights.slice(written, table.num_rows)
                    table = table.append_column(S.IMPORTANCE_WEIGHT, weight)
                out = output_columns(table, self.schema)
                if repeats is not None:
                    out = with_repeats(out, repeats.slice(written, table.num_rows))
                sink.write(out)
                written += table.num_rows
        if written != kept.num_rows:
            raise AssertionError(
                f"shard {index}: the selection keeps {kept.num_rows} rows, the ingested shard "
                f"has {written} of them"
            )
        return written


def with_repeats(table: pa.Table, repeats: pa.Array) -> pa.Table:
    """``table`` (output names) with the kept rows' ``repeat``; an input column of that name is refused."""
    if S.REPEAT in table.column_names:
        raise InputError(
            f"the input has a column named {S.REPEAT!r}, the column the dataset's repeat "
            "counts are written to; rename it or leave it out of schema.passthrough"
        )
    return table.append_column(S.REPEAT, repeats.cast(pa.int64()))


def write_empty_part(
    run: RunDir, version: Version, schema: SchemaConfig, weighted: bool, repeated: bool = False
) -> None:
    """Write a part file with no rows, so that an empty dataset still has its columns."""
    common = read_common_schema(run)
    if common is None:
        return
    table = common.empty_table()
    if weighted:
        table = table.append_column(S.IMPORTANCE_WEIGHT, pa.array([], pa.float64()))
    out = output_columns(table, schema)
    if repeated:
        out = with_repeats(out, pa.array([], pa.int64()))
    write_parquet_atomic(out, version.data / "part-empty.parquet")


@dataclass(frozen=True)
class Materialized:
    """Rows written to the new version's ``data/``."""

    rows: int


class MaterializeStage(ShardStage):
    """Write each shard's kept rows into the new version (see module docstring)."""

    name = "materialize"
    retries = 1

    def __init__(self, schema: SchemaConfig) -> None:
        self.schema = schema

    def totals(self, ctx: RunContext) -> dict[str, int]:
        return {"shards": len(ctx.result("ingest").stats), "docs": ctx.result("select").kept}

    def items(self, ctx: RunContext) -> list[int]:
        return ctx.result("ingest").indices

    def task(self, ctx: RunContext) -> MaterializeShard:
        selected = ctx.result("select")
        return MaterializeShard(
            ctx.run, selected.version, self.schema, selected.weighted, selected.repeated
        )

    def documents(self, result: Any) -> int:
        return int(result)

    def collect(self, ctx: RunContext, reused: list[Any], fresh: list[Any]) -> Materialized:
        selected = ctx.result("select")
        written = sum(fresh)
        if written == 0:  # readers still find the columns of an empty dataset
            write_empty_part(
                ctx.run, selected.version, self.schema, selected.weighted, selected.repeated
            )
        (selected.version.data / "_SUCCESS").write_bytes(b"")
        return Materialized(written)
