"""Ingest stage: validate one input shard into the run directory (idempotent).

A shard is done when its marker (``_state/ingest/shard-NNNNN.json``) exists:
it is written last, after the ingested rows and the quarantine, and holds
the input's listing fingerprint (size and version or modification time),
the digest of its bytes and the row counts. A re-run compares the marker
with the listing on the driver (:func:`pending_shards`), so an unchanged
shard costs no task, and an input that changed under an existing run is
refused with its name.

A damaged file skipped under ``input.on_unreadable: skip`` is done too (with
the rows read before the damage); when it changes later (a repaired
upload), :func:`renew_repaired` gives it a new key, so that the next run
ingests and scores it like a new shard instead of refusing it.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pyarrow as pa

from thresher.config import SchemaConfig
from thresher.errors import RunStateError
from thresher.io.files import read_json_or, write_json_atomic, write_parquet_atomic
from thresher.io.ingest import ingest_shard
from thresher.io.shards import Shard, ShardRegistry
from thresher.run_dir import RunDir


class IngestShard:
    """The per-shard ingest task (picklable).

    It lives here, not in the flow's module, because Prefect may load that
    module from its file under another name, which Spark's workers could
    not import to unpickle it.
    """

    def __init__(self, schema: SchemaConfig, run: RunDir, on_unreadable: str = "fail") -> None:
        self.schema = schema
        self.run = run
        self.on_unreadable = on_unreadable

    def __call__(self, shard: Shard) -> dict[str, Any]:
        return ingest_to_run(shard, self.schema, self.run, self.on_unreadable)


def ingest_to_run(
    shard: Shard, schema: SchemaConfig, run: RunDir, on_unreadable: str = "fail"
) -> dict[str, Any]:
    """Ingest ``shard`` into ``run`` unless it was ingested already; return its statistics.

    The statistics (also the completion marker): input rows, ingested rows,
    quarantined rows by reason, the listing fingerprint, the content digest
    and, for a damaged file that was skipped, ``unreadable`` (its error and
    the rows read before the damage).
    """
    marker = run.ingest_marker(shard.index)
    stored = read_json_or(marker, None)
    if stored is not None:
        check_unchanged(shard, stored, run)
        return {**stored, "reused": True}
    result = ingest_shard(shard, schema, on_unreadable)
    write_parquet_atomic(_without_null_types(result.table), run.ingested_shard(shard.index))
    quarantine_path = run.quarantine_shard(shard.index)
    if result.quarantine.num_rows:
        write_parquet_atomic(result.quarantine, quarantine_path)
    else:
        quarantine_path.delete()
    stats = {
        "index": shard.index,
        "name": shard.name,
        "format": shard.format,
        "fingerprint": shard.fingerprint,
        "content": result.content,
        "rows_in": result.rows_in,
        "ingested": result.table.num_rows,
        "quarantined": result.quarantine.num_rows,
        "quarantined_by_reason": result.quarantine_counts(),
    }
    if result.unreadable is not None:
        stats["unreadable"] = result.unreadable
    if stats["rows_in"] != stats["ingested"] + stats["quarantined"]:  # a bug, never bad input
        raise AssertionError(f"ingest lost rows of {shard.name}: {stats}")
    write_json_atomic(stats, marker)
    return {**stats, "reused": False}


def check_unchanged(shard: Shard, stored: dict[str, Any], run: RunDir) -> None:
    """Refuse an input whose listing differs from what its marker recorded."""
    if stored.get("name") != shard.name or (
        shard.fingerprint is not None and stored.get("fingerprint") != shard.fingerprint
    ):
        raise RunStateError(
            f"input {shard.name} changed since it was ingested into {run.root}; restore it, "
            "or rerun with --fresh to start over"
        )


def renew_repaired(
    shards: list[Shard], registry: ShardRegistry, run: RunDir, run_id: str
) -> tuple[list[Shard], list[str]]:
    """Give a new key to each shard skipped as unreadable whose file changed since.

    Its old rows, quarantine, scores and marker are deleted; under the new
    key it is pending like a new shard. Returns the shards and the renewed names.
    """
    out, renewed = [], []
    for shard in shards:
        if registry.was_unreadable(shard.name):
            stored = read_json_or(run.ingest_marker(shard.index), None)
            if stored is not None and stored.get("fingerprint") != shard.fingerprint:
                for location in (
                    run.ingest_marker(shard.index),
                    run.ingested_shard(shard.index),
                    run.quarantine_shard(shard.index),
                    run.scores_shard(shard.index),
                ):
                    location.delete()
                shard = replace(shard, index=registry.renew(shard.name, run_id))
                renewed.append(shard.name)
        out.append(shard)
    return out, renewed


def pending_shards(shards: list[Shard], run: RunDir) -> tuple[list[Shard], list[dict[str, Any]]]:
    """The shards still to ingest, and the stored statistics of the others (checked unchanged).

    Runs on the driver from the markers alone: no task, no byte of input read.
    """
    pending, done = [], []
    for shard in shards:
        stored = read_json_or(run.ingest_marker(shard.index), None)
        if stored is None:
            pending.append(shard)
        else:
            check_unchanged(shard, stored, run)
            done.append({**stored, "reused": True})
    return pending, done


def _without_null_types(table: pa.Table) -> pa.Table:
    """Store all-null columns as strings: Spark cannot read Parquet's null type."""
    for index, field in enumerate(table.schema):
        if pa.types.is_null(field.type):
            table = table.set_column(
                index, pa.field(field.name, pa.string()), table.column(index).cast(pa.string())
            )
    return table
