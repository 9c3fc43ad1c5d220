"""Ingest stage: validate one input shard into the run directory (idempotent)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from thresher.config import SchemaConfig
from thresher.errors import RunStateError
from thresher.io.files import read_json, write_json_atomic, write_parquet_atomic
from thresher.io.ingest import ingest_shard
from thresher.io.shards import Shard, fingerprint
from thresher.run_dir import RunDir


def ingest_to_run(shard: Shard, schema: SchemaConfig, run_root: str) -> dict[str, Any]:
    """Ingest ``shard`` into ``run_root`` unless an identical input was ingested already.

    Returns the shard's statistics (also written as its completion marker):
    input rows, ingested rows, quarantined rows by reason, and the input
    file's fingerprint. A marker whose fingerprint differs from the file on
    disk means the input changed under an existing run, which is refused.
    """
    run = RunDir(Path(run_root))
    marker = run.ingest_marker(shard.index)
    current = fingerprint(shard.path)
    if marker.is_file():
        stats: dict[str, Any] = read_json(marker)
        if stats["fingerprint"] == current and stats["name"] == shard.name:
            return stats
        raise RunStateError(
            f"input {shard.name} changed since it was ingested into {run.root}; "
            "rerun with --fresh to start over"
        )
    result = ingest_shard(shard, schema)
    write_parquet_atomic(_without_null_types(result.table), run.ingested_shard(shard.index))
    quarantine_path = run.quarantine_shard(shard.index)
    if result.quarantine.num_rows:
        write_parquet_atomic(result.quarantine, quarantine_path)
    else:
        quarantine_path.unlink(missing_ok=True)
    stats = {
        "index": shard.index,
        "name": shard.name,
        "format": shard.format,
        "fingerprint": current,
        "rows_in": result.rows_in,
        "ingested": result.table.num_rows,
        "quarantined": result.quarantine.num_rows,
        "quarantined_by_reason": result.quarantine_counts(),
    }
    if stats["rows_in"] != stats["ingested"] + stats["quarantined"]:  # a bug, never bad input
        raise AssertionError(f"ingest lost rows of {shard.name}: {stats}")
    write_json_atomic(stats, marker)
    return stats


def _without_null_types(table: pa.Table) -> pa.Table:
    """Store all-null columns as strings: Spark cannot read Parquet's null type."""
    for index, field in enumerate(table.schema):
        if pa.types.is_null(field.type):
            table = table.set_column(
                index, pa.field(field.name, pa.string()), table.column(index).cast(pa.string())
            )
    return table
