"""Bounded reads of a run's files for the report: example documents and quarantined rows.

The rows shown were chosen at selection (:mod:`thresher.stages.select`
keeps, per outcome, the rows with the smallest seeded hash of their id);
here only their texts and details are read, each from the one shard file
that holds it, with a row filter. Quarantined examples are read from the
quarantine files, one at a time, until every reason has its examples.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from thresher.io import schema as S
from thresher.io.files import data_files, parquet_file, read_schema
from thresher.io.fs import Location
from thresher.run_dir import RunDir, shard_file


def truncate(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, saying how much was cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… [{len(text) - limit:,} more characters]"


def shard_label(run: RunDir, index: int) -> str:
    """A shard as the report names it: its input name."""
    return run.shard_names().get(index, f"shard {index}")


def _rows_of(location: Location, rows: list[int], columns: list[str] | None) -> pa.Table:
    """The given rows of a shard file, reading only the row groups that hold them.

    Files are in row order with statistics per row group, so a few example
    rows cost a row group each, not the file.
    """
    source = parquet_file(location)
    wanted = pa.array(sorted(set(rows)), pa.int64())
    position = source.schema_arrow.get_field_index(S.ROW)
    found = []
    for group in range(source.metadata.num_row_groups):
        if not _may_hold(source.metadata.row_group(group), position, rows):
            continue
        table = source.read_row_group(group, columns=columns)
        found.append(table.filter(pc.is_in(table.column(S.ROW), value_set=wanted)))
    if not found:
        return (
            source.schema_arrow.empty_table()
            if columns is None
            else source.schema_arrow.empty_table().select(columns)
        )
    return pa.concat_tables(found)


def _may_hold(row_group: Any, position: int, rows: list[int]) -> bool:
    """Whether a row group's statistics of the row column admit one of ``rows``."""
    statistics = row_group.column(position).statistics if position >= 0 else None
    if statistics is None or not statistics.has_min_max:
        return True
    low, high = statistics.min, statistics.max
    return any(low <= row <= high for row in rows)


def document_texts(run: RunDir, rows: list[dict[str, Any]], limit: int) -> list[str]:
    """The (truncated) text of each chosen row (``shard``, ``row``), from the ingested shards.

    Records without a text column (feature-vector corpora) are shown as the
    JSON of their columns.
    """
    texts: dict[tuple[int, int], str] = {}
    by_shard: dict[int, list[int]] = {}
    for record in rows:
        by_shard.setdefault(int(record["shard"]), []).append(int(record["row"]))
    for shard, positions in by_shard.items():
        location = run.ingested_shard(shard)
        if not location.is_file():
            continue
        names = read_schema(location).names
        columns = [S.ROW, S.TEXT] if S.TEXT in names else None  # no text: show every column
        for record in _rows_of(location, positions, columns).to_pylist():
            texts[(shard, int(record[S.ROW]))] = _document_text(record, limit)
    return [
        texts.get((int(r["shard"]), int(r["row"])), "(document not found in the ingested shard)")
        for r in rows
    ]


def decision_details(run: RunDir, rows: list[dict[str, Any]]) -> list[str | None]:
    """The recorded ``detail`` of each chosen row's decision (from the published selection)."""
    version = run.current()
    if version is None:
        return [None] * len(rows)
    found: dict[tuple[int, int], str | None] = {}
    by_shard: dict[int, list[int]] = {}
    for record in rows:
        by_shard.setdefault(int(record["shard"]), []).append(int(record["row"]))
    for shard, positions in by_shard.items():
        location = version.selection / shard_file(shard)
        if not location.is_file():
            continue
        for record in _rows_of(location, positions, [S.ROW, "detail"]).to_pylist():
            found[(shard, int(record[S.ROW]))] = record["detail"]
    return [found.get((int(r["shard"]), int(r["row"]))) for r in rows]


def _document_text(record: dict[str, Any], limit: int) -> str:
    text = record.get(S.TEXT)
    if isinstance(text, str):
        return truncate(text, limit)
    shown = {k: v for k, v in record.items() if k not in S.POSITION_COLUMNS}
    return truncate(json.dumps(shown, default=str, ensure_ascii=False), limit)


def quarantine_examples(run: RunDir, per_reason: int, limit: int) -> pd.DataFrame:
    """Up to ``per_reason`` quarantined rows per reason (``shard, row, id, reason, detail, raw``).

    Stops reading as soon as every reason the ingest statistics count has
    its examples: a million bad lines cost a few batches, not a million rows.
    """
    columns = ["shard", "row", "id", "reason", "detail", "raw"]
    expected = {
        reason
        for stats in run.stored_ingest_stats()
        for reason in stats.get("quarantined_by_reason", {})
    }
    picked: dict[str, list[dict[str, Any]]] = {}
    for location in data_files(run.quarantine):
        for record in _needed(location, columns, picked, per_reason):
            record["raw"] = truncate(str(record.get("raw") or ""), limit)
            picked.setdefault(str(record["reason"]), []).append(record)
        if expected and all(len(picked.get(reason, [])) >= per_reason for reason in expected):
            break
    rows = [r for reason in sorted(picked) for r in picked[reason]]
    return pd.DataFrame(rows, columns=columns)


def _needed(
    location: Location, columns: list[str], picked: dict[str, list[Any]], per_reason: int
) -> Iterator[dict[str, Any]]:
    """The records of a quarantine file whose reason still lacks examples (in file order)."""
    source = parquet_file(location)
    available = source.schema_arrow.names
    for batch in source.iter_batches(
        batch_size=4096, columns=[c for c in columns if c in available]
    ):
        reasons = batch.column(batch.schema.get_field_index("reason")).to_pylist()
        wanted = []
        counts = {reason: len(found) for reason, found in picked.items()}
        for index, reason in enumerate(reasons):
            if counts.get(reason, 0) < per_reason:
                counts[reason] = counts.get(reason, 0) + 1
                wanted.append(index)
        if wanted:
            yield from batch.take(pa.array(wanted, pa.int64())).to_pylist()
