"""Materialise stage: write the kept rows of each shard as one Parquet file of the new version.

Every engine runs :class:`MaterializeShard` once per shard where the data
is: it reads the shard's decisions (``versions/<v>/selection/shard-NNNNN.parquet``)
and its ingested rows batch by batch (a task holds a batch, not the
shard), checks that they agree, gives every part file the
corpus's common schema (schema drift, see :mod:`thresher.stages.harmonize`),
adds the importance weights when the selector defines them and the repeat
counts (:data:`thresher.io.schema.REPEAT`) when it sets them, redacts the
personal data the config names from the text (``materialize.redact``:
:mod:`thresher.pii`, with a column of counts per row), restores the user's
column names and writes ``versions/<v>/data/part-NNNNN.parquet``.

Redaction happens here and nowhere else: what is published changes, while
the ingested shards, the scores, the decisions and the drop audit keep the
text as it came in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from thresher.config import MaterializeConfig, SchemaConfig
from thresher.errors import ConfigError, InputError
from thresher.io import schema as S
from thresher.io.drift import conform
from thresher.io.files import parquet_batches, parquet_file, read_parquet, write_parquet_atomic
from thresher.io.publish import Version
from thresher.io.sink import ParquetSink
from thresher.pii import KINDS, PLACEHOLDERS, counts_type, redact
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


@dataclass(frozen=True)
class Redaction:
    """What the published text is redacted of (:mod:`thresher.pii`), and the counts column."""

    kinds: tuple[str, ...]
    column: str

    @classmethod
    def of(cls, config: MaterializeConfig | None) -> Redaction | None:
        """The redaction a config asks for; None when it asks for none."""
        if config is None or not config.redact:
            return None
        return cls(tuple(kind for kind in KINDS if kind in config.redact), config.column)

    def apply(self, table: pa.Table) -> tuple[pa.Table, dict[str, int], int]:
        """``table`` with its text redacted and the counts column appended.

        Also the total per kind, and how many rows had anything redacted.
        """
        where = table.schema.get_field_index(S.TEXT)
        text, counts = redact(table.column(where), self.kinds)
        table = table.set_column(where, table.schema.field(where), text)
        per_kind = [counts.field(kind).to_numpy(zero_copy_only=False) for kind in self.kinds]
        totals = {
            kind: int(column.sum()) for kind, column in zip(self.kinds, per_kind, strict=True)
        }
        documents = int((np.sum(per_kind, axis=0) > 0).sum())
        return table.append_column(self.column, counts), totals, documents

    def check_free(self, names: list[str]) -> None:
        """ConfigError when the dataset already has a column named like the counts column."""
        if self.column in names:
            raise ConfigError(
                f"materialize.column: the dataset already has a column {self.column!r}; "
                "set materialize.column to another name"
            )


@dataclass(frozen=True)
class ShardWritten:
    """One shard's part file: rows written, and the redactions in their text per kind."""

    rows: int
    redactions: dict[str, int]
    redacted_documents: int


class MaterializeShard:
    """Write one shard's kept rows into ``version`` (a picklable per-shard task)."""

    def __init__(
        self,
        run: RunDir,
        version: Version,
        schema: SchemaConfig,
        weighted: bool,
        repeated: bool = False,
        redaction: Redaction | None = None,
    ) -> None:
        self.run = run
        self.version = version
        self.schema = schema
        self.weighted = weighted
        self.repeated = repeated
        self.redaction = redaction
        self.common = read_common_schema(run)
        if redaction is not None and self.common is not None:
            redaction.check_free(output_columns(self.common.empty_table(), schema).column_names)

    def __call__(self, index: int) -> ShardWritten:
        found = dict.fromkeys(self.redaction.kinds if self.redaction is not None else (), 0)
        redacted_documents = 0
        columns = [S.ROW, "keep", "weight", *([S.REPEAT] if self.repeated else [])]
        decisions = read_parquet(self.version.selection / shard_file(index), columns=columns)
        kept = decisions.filter(decisions.column("keep")).sort_by(S.ROW)
        if kept.num_rows == 0:
            return ShardWritten(0, found, 0)
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
                if self.redaction is not None:
                    if self.common is None:  # else checked once, in __init__
                        self.redaction.check_free(output_columns(table, self.schema).column_names)
                    table, totals, documents = self.redaction.apply(table)
                    for kind, total in totals.items():
                        found[kind] += total
                    redacted_documents += documents
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
        return ShardWritten(written, found, redacted_documents)


def with_repeats(table: pa.Table, repeats: pa.Array) -> pa.Table:
    """``table`` (output names) with the kept rows' ``repeat``; an input column of that name is refused."""
    if S.REPEAT in table.column_names:
        raise InputError(
            f"the input has a column named {S.REPEAT!r}, the column the dataset's repeat "
            "counts are written to; rename it or leave it out of schema.passthrough"
        )
    return table.append_column(S.REPEAT, repeats.cast(pa.int64()))


def write_empty_part(
    run: RunDir,
    version: Version,
    schema: SchemaConfig,
    weighted: bool,
    repeated: bool = False,
    redaction: Redaction | None = None,
) -> None:
    """Write a part file with no rows, so that an empty dataset still has its columns."""
    common = read_common_schema(run)
    if common is None:
        return
    table = common.empty_table()
    if weighted:
        table = table.append_column(S.IMPORTANCE_WEIGHT, pa.array([], pa.float64()))
    if redaction is not None:
        table = table.append_column(redaction.column, pa.array([], counts_type(redaction.kinds)))
    out = output_columns(table, schema)
    if repeated:
        out = with_repeats(out, pa.array([], pa.int64()))
    write_parquet_atomic(out, version.data / "part-empty.parquet")


@dataclass(frozen=True)
class Materialized:
    """Rows written to the new version's ``data/``, and what their text was redacted of.

    ``redactions`` is None when the config asks for no redaction, else the
    manifest's section: the counts column, the placeholders, the total per
    kind and the number of published documents with at least one.
    """

    rows: int
    redactions: dict[str, Any] | None = None


class MaterializeStage(ShardStage):
    """Write each shard's kept rows into the new version (see module docstring)."""

    name = "materialize"
    retries = 1

    def __init__(self, schema: SchemaConfig, config: MaterializeConfig | None = None) -> None:
        self.schema = schema
        self.redaction = Redaction.of(config)

    def totals(self, ctx: RunContext) -> dict[str, int]:
        return {"shards": len(ctx.result("ingest").stats), "docs": ctx.result("select").kept}

    def items(self, ctx: RunContext) -> list[int]:
        return ctx.result("ingest").indices

    def task(self, ctx: RunContext) -> MaterializeShard:
        selected = ctx.result("select")
        return MaterializeShard(
            ctx.run,
            selected.version,
            self.schema,
            selected.weighted,
            repeated=selected.repeated,
            redaction=self.redaction,
        )

    def documents(self, result: Any) -> int:
        return int(result.rows)

    def collect(self, ctx: RunContext, reused: list[Any], fresh: list[Any]) -> Materialized:
        selected = ctx.result("select")
        written = sum(part.rows for part in fresh)
        if written == 0:  # readers still find the columns of an empty dataset
            write_empty_part(
                ctx.run,
                selected.version,
                self.schema,
                selected.weighted,
                repeated=selected.repeated,
                redaction=self.redaction,
            )
        (selected.version.data / "_SUCCESS").write_bytes(b"")
        return Materialized(written, self._summary(fresh))

    def _summary(self, parts: list[ShardWritten]) -> dict[str, Any] | None:
        if self.redaction is None:
            return None
        return redaction_summary(self.redaction, parts)


def redaction_summary(redaction: Redaction, parts: list[ShardWritten]) -> dict[str, Any]:
    """The manifest's ``redactions`` section from the shards' counts."""
    return {
        "column": redaction.column,
        "placeholders": {kind: PLACEHOLDERS[kind] for kind in redaction.kinds},
        "counts": {kind: sum(part.redactions[kind] for part in parts) for kind in redaction.kinds},
        "documents": sum(part.redacted_documents for part in parts),
    }
