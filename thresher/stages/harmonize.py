"""Harmonise stage: one type per column across every ingested shard.

Shards are ingested independently (in parallel), so each keeps the types
its producer wrote: a ``url`` column may be an integer in one shard and a
string in another, and ``label`` may be all null in a shard without
labels. Readers that take one schema for many files would refuse such a
corpus or take the first file's types, so after ingest the driver reads
every ingested shard's schema (no data), computes the common schema
(:mod:`thresher.io.drift`), and the engine rewrites the few shards whose
types differ. The footers need not be read at all: each shard's ingest
statistics record its schema and which columns hold values (what votes).
Columns missing from a shard are not added here; later stages conform
each shard to the common schema as they read it. A column no shard has a
value in (an all-quarantined corpus, an all-null column) keeps the type
the shards declare, so that it is not reported as drift. The common
schema is stored in the run directory.

Idempotent: on a resumed run the shards already agree and nothing is
rewritten; a shard's rewrite is one atomic write.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from thresher.io import ingest_index
from thresher.io.drift import common_schema, common_type, conform, voting_columns
from thresher.io.files import parquet_batches, parquet_file, read_schema, write_parquet_atomic
from thresher.io.fs import Location
from thresher.io.sink import ParquetSink
from thresher.run_dir import RunDir
from thresher.stages.base import RunContext, Stage

if TYPE_CHECKING:
    from thresher.engines.base import Engine


def common_schema_path(run: RunDir) -> Location:
    """Where the common schema of the ingested shards is kept (an empty Parquet file)."""
    return run.state / "ingested_schema.parquet"


def harmonize_ingested(
    run: RunDir, stats: list[dict[str, Any]], engine: Engine
) -> dict[int, list[str]]:
    """Rewrite ingested shards to the common column types; return what each rewrite changed.

    ``stats`` are the shards' ingest statistics, which record each ingested
    file's schema and the columns holding values (older run directories
    lack them: their footers are read). A rewritten shard's statistics are
    updated in place, so that the next run finds it conformed without a
    read. The result maps a shard index to the columns whose type changed
    (empty when the corpus has no drift).
    """
    schemas: dict[int, pa.Schema] = {}
    voters: dict[int, set[str]] = {}
    for item in sorted(stats, key=lambda s: int(s["index"])):
        index = int(item["index"])
        if "schema" in item and "valued" in item:
            schemas[index] = ingest_index.decode_schema(item["schema"])
            voters[index] = set(item["valued"])
        else:
            footer = parquet_file(run.ingested_shard(index)).metadata
            schemas[index] = footer.schema.to_arrow_schema()
            voters[index] = voting_columns(footer)
    common = common_schema(schemas.values(), voters.values())
    common = _unvoted_keep_declared(common, list(schemas.values()), set().union(*voters.values()))
    changed = {
        index: drifted
        for index, schema in schemas.items()
        if (drifted := [f.name for f in schema if f.type != common.field(f.name).type])
    }
    if changed:
        engine.map_shards(_Conform(run, common), sorted(changed))
        for item in stats:
            if int(item["index"]) in changed:
                conformed = pa.schema([common.field(f.name) for f in schemas[int(item["index"])]])
                item["schema"] = ingest_index.encode_schema(conformed)
    write_parquet_atomic(common.empty_table(), common_schema_path(run))
    return changed


def _unvoted_keep_declared(
    common: pa.Schema, schemas: list[pa.Schema], voted: set[str]
) -> pa.Schema:
    """A column that no shard votes for keeps the type the shards declare for it.

    Without rows (every record of the corpus quarantined) or with only nulls
    no value votes; the declared types (what ingest wrote: ``int32``
    positions, a Parquet column's own type) are then the best answer, and
    taking them rewrites nothing. Only a column declared with no type but
    null, or with conflicting types, gets the fallback of
    :func:`~thresher.io.drift.common_type`.
    """
    fields = []
    for field in common:
        if field.name not in voted:
            declared = [s.field(field.name).type for s in schemas if field.name in s.names]
            field = pa.field(field.name, common_type(declared))
        fields.append(field)
    return pa.schema(fields)


class _Conform:
    """Rewrite one ingested shard to the common types (a picklable task)."""

    def __init__(self, run: RunDir, common: pa.Schema) -> None:
        self.run = run
        self.common = common

    def __call__(self, index: int) -> int:
        location = self.run.ingested_shard(index)
        source = parquet_file(location)
        with ParquetSink(location, empty_schema=conformed_schema(source, self.common)) as sink:
            for batch in parquet_batches(source):  # a batch at a time, the file replaced whole
                sink.write(conform(pa.Table.from_batches([batch]), self.common, add_missing=False))
        return index


def conformed_schema(source: pq.ParquetFile, common: pa.Schema) -> pa.Schema:
    """The schema of a shard's file conformed to ``common`` (its own columns only)."""
    names = set(source.schema_arrow.names)
    return pa.schema([field for field in common if field.name in names])


def read_common_schema(run: RunDir) -> pa.Schema | None:
    """The common schema written by :func:`harmonize_ingested`, if it ran."""
    path = common_schema_path(run)
    return read_schema(path) if path.is_file() else None


@dataclass(frozen=True)
class Harmonized:
    """Shard key -> the columns whose type a rewrite changed (schema drift)."""

    drift: dict[int, list[str]]


class HarmonizeStage(Stage):
    """Give every column one type across the ingested shards; fold the markers into the index."""

    name = "harmonize"
    shown = False
    timing_key = "ingest"

    def run(self, ctx: RunContext, bar: Any) -> Harmonized:
        ingested = ctx.result("ingest")
        stats = [dict(s) for s in ingested.stats]
        changed = harmonize_ingested(ctx.run, stats, ctx.engine)
        ingest_index.save(ctx.run.ingest_markers, stats)  # one file for the next run to read
        names = {int(s["index"]): s["name"] for s in stats}
        for index, columns in changed.items():
            ctx.logger.warning(
                "%s: column(s) %s had another type than in other shards; converted (schema drift)",
                names.get(index, index),
                columns,
            )
        return Harmonized(changed)
