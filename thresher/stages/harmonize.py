"""Harmonise stage: one type per column across every ingested shard.

Shards are ingested independently (in parallel), so each keeps the types
its producer wrote: a ``url`` column may be an integer in one shard and a
string in another, and ``label`` may be all null in a shard without
labels. Spark's ``mergeSchema`` refuses such a corpus and pyarrow datasets
take the first file's schema, so after ingest the driver reads every
ingested shard's footer (no data), computes the common schema
(:mod:`thresher.io.drift`), and rewrites the few shards whose types
differ. Columns missing from a shard are not added here; the local
materialisation fills them with nulls and Spark's ``mergeSchema`` does the
same. The common schema is stored in the run directory for later stages.

Idempotent: on a resumed run the shards already agree and nothing is
rewritten; a shard's rewrite is atomic (temporary file and rename).
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from thresher.io.drift import common_schema, conform, voting_columns
from thresher.io.files import write_parquet_atomic
from thresher.run_dir import RunDir


def common_schema_path(run: RunDir) -> Path:
    """Where the common schema of the ingested shards is kept (an empty Parquet file)."""
    return run.state / "ingested_schema.parquet"


def harmonize_ingested(run_root: str, shard_indices: list[int]) -> dict[int, list[str]]:
    """Rewrite ingested shards to the common column types; return what each rewrite changed.

    The result maps a shard index to the columns whose type changed (empty
    when the corpus has no drift).
    """
    run = RunDir(Path(run_root))
    paths = {index: str(run.ingested_shard(index)) for index in sorted(shard_indices)}
    footers = {index: pq.ParquetFile(path).metadata for index, path in paths.items()}
    schemas = {index: footer.schema.to_arrow_schema() for index, footer in footers.items()}
    common = common_schema((schemas[i] for i in paths), (voting_columns(footers[i]) for i in paths))
    changed: dict[int, list[str]] = {}
    for index, schema in schemas.items():
        drifted = [f.name for f in schema if f.type != common.field(f.name).type]
        if not drifted:
            continue
        table = conform(pq.read_table(paths[index]), common, add_missing=False)
        write_parquet_atomic(table, Path(paths[index]))
        changed[index] = drifted
    write_parquet_atomic(common.empty_table(), common_schema_path(run))
    return changed


def read_common_schema(run: RunDir) -> pa.Schema | None:
    """The common schema written by :func:`harmonize_ingested`, if it ran."""
    path = common_schema_path(run)
    return pq.read_schema(path) if path.is_file() else None
