"""The decision writer of the select stage: selection and dropped files per shard, counts, examples.

Each shard's decided rows are written by the engine to
``versions/<v>/selection/`` and ``versions/<v>/dropped/``; what comes back
to the driver is a row of counts, sums and a few example rows per reason.
Kept sums count each kept row ``repeat`` times (:data:`thresher.io.schema.REPEAT`).
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

from thresher.io import schema as S
from thresher.io.files import write_parquet_atomic
from thresher.io.publish import Version
from thresher.keys import id_priority
from thresher.run_dir import shard_file

#: Example rows kept per reason (and for "kept") for the report.
EXAMPLES_PER_REASON = 3
KEPT = "kept"

#: One row per shard that the writer returns to the driver.
SUMMARY_SCHEMA = pa.schema(
    [
        pa.field("shard", pa.int64()),
        pa.field("rows", pa.int64()),
        pa.field("counts", pa.string()),
        pa.field("examples", pa.string()),
        pa.field("sums", pa.string()),
        pa.field("kept_repeated", pa.int64()),
    ]
)


class WriteShards:
    """Write each shard's decisions (a ``map_groups`` function); return one summary row per shard."""

    def __init__(
        self, version: Version, examples_seed: int, summed: list[str] | None = None
    ) -> None:
        self.version = version
        self.seed = examples_seed
        self.summed = summed or []

    def __call__(self, table: pa.Table) -> pa.Table:
        summaries = []
        shards = table.column(S.SHARD).to_numpy()
        for shard in np.unique(shards).tolist():
            rows = table.filter(pa.array(shards == shard)).sort_by(S.ROW)
            keep = np.asarray(pc.is_null(rows.column("reason")), dtype=bool)
            selection = pa.table(
                {
                    S.ID: rows.column(S.ID).cast(pa.string()),
                    S.SHARD: rows.column(S.SHARD).cast(pa.int32()),
                    S.ROW: rows.column(S.ROW).cast(pa.int64()),
                    "keep": pa.array(keep),
                    "weight": rows.column("weight"),
                    "reason": rows.column("reason"),
                    "detail": rows.column("detail"),
                    "group": rows.column("group"),
                    S.REPEAT: dataset_repeats(rows.column(S.REPEAT), keep),
                },
                schema=S.SELECTION_SCHEMA,
            )
            write_parquet_atomic(selection, self.version.selection / shard_file(shard))
            dropped = selection.filter(pa.array(~keep)).select([S.ID, "reason", "detail"])
            write_parquet_atomic(
                dropped.cast(S.DROPPED_SCHEMA), self.version.dropped / shard_file(shard)
            )
            summary = self._summary(int(shard), selection, keep)
            repeat = selection.column(S.REPEAT).to_numpy()
            summary["sums"] = json.dumps(
                {c: column_sums(rows.column(c), keep, repeat) for c in self.summed}
            )
            summary["kept_repeated"] = int(repeat.sum())
            summaries.append(summary)
        if not summaries:
            return SUMMARY_SCHEMA.empty_table()
        return pa.Table.from_pylist(summaries, schema=SUMMARY_SCHEMA)

    def _summary(self, shard: int, selection: pa.Table, keep: NDArray[np.bool_]) -> dict[str, Any]:
        outcome = pc.if_else(
            pa.array(keep), pa.scalar(KEPT), selection.column("reason").combine_chunks()
        )
        outcomes = np.asarray(outcome.to_numpy(zero_copy_only=False), dtype=object)
        priority = id_priority(selection.column(S.ID), self.seed)
        positions = selection.column(S.ROW).to_numpy()
        ids = selection.column(S.ID)
        counts: dict[str, int] = {}
        examples: dict[str, list[list[Any]]] = {}
        for item in pc.value_counts(outcome).to_pylist():
            reason = item["values"]
            mine = np.flatnonzero(outcomes == reason)
            counts[reason] = int(item["counts"])
            best = mine[np.argsort(priority[mine], kind="stable")[:EXAMPLES_PER_REASON]]
            examples[reason] = [
                [int(priority[i]), shard, int(positions[i]), ids[int(i)].as_py()]
                for i in best.tolist()
            ]
        return {
            "shard": shard,
            "rows": selection.num_rows,
            "counts": json.dumps(counts),
            "examples": json.dumps(examples),
        }


def dataset_repeats(repeat: pa.ChunkedArray, keep: NDArray[np.bool_]) -> pa.Array:
    """The decisions' ``repeat`` as written: each row's copies in the dataset (0 when dropped)."""
    values = np.asarray(repeat.to_numpy(zero_copy_only=False), dtype=np.int64)
    return pa.array(np.where(keep, values, 0), pa.int64())


def column_sums(
    column: pa.ChunkedArray, keep: NDArray[np.bool_], repeat: NDArray[np.int64]
) -> list[float]:
    """``[sum of repeat x size over kept rows, sum over all rows, sum over kept rows]``.

    Of a size column (nulls and NaN count 0); ``repeat`` is each row's
    copies in the dataset (0 for a dropped row).
    """
    values = np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64)
    values = np.where(np.isfinite(values), values, 0.0)
    repeated = values[keep] * np.asarray(repeat, dtype=np.float64)[keep]
    return [
        math.fsum(repeated.tolist()),
        math.fsum(values.tolist()),
        math.fsum(values[keep].tolist()),
    ]


def merge_sums(table: pa.Table, repeated: bool = False) -> dict[str, dict[str, int | float]]:
    """Per summed column: ``kept`` and ``ingested`` totals over the shards' summaries.

    ``kept`` counts each kept row ``repeat`` times; with ``repeated`` (the
    selector sets repeat counts), ``kept_unique`` is the sum over the kept
    rows counted once.
    """
    totals: dict[str, list[list[float]]] = {}
    for text in table.column("sums").to_pylist():
        for column, parts in json.loads(text).items():
            totals.setdefault(column, []).append(parts)
    out: dict[str, dict[str, int | float]] = {}
    for column, parts in sorted(totals.items()):
        kept, ingested = math.fsum(p[0] for p in parts), math.fsum(p[1] for p in parts)
        out[column] = {"kept": _whole(kept), "ingested": _whole(ingested)}
        if repeated:
            out[column]["kept_unique"] = _whole(math.fsum(p[2] for p in parts))
    return out


def _whole(value: float) -> int | float:
    return int(value) if value == math.floor(value) else value


def merge_summaries(table: pa.Table) -> tuple[dict[str, int], dict[str, list[dict[str, Any]]]]:
    counts: dict[str, int] = {}
    candidates: dict[str, list[list[Any]]] = {}
    for row in table.to_pylist():
        for reason, n in json.loads(row["counts"]).items():
            counts[reason] = counts.get(reason, 0) + int(n)
        for reason, rows in json.loads(row["examples"]).items():
            candidates.setdefault(reason, []).extend(rows)
    examples = {
        reason: [
            {"shard": shard, "row": position, "id": id_}
            for _, shard, position, id_ in sorted(rows)[:EXAMPLES_PER_REASON]
        ]
        for reason, rows in sorted(candidates.items())
    }
    return counts, examples


def write_empty_shards(version: Version, indices: list[int]) -> None:
    """Empty decisions for shards with no ingested row (every shard has its files)."""
    for index in indices:
        write_parquet_atomic(
            S.SELECTION_SCHEMA.empty_table(), version.selection / shard_file(index)
        )
        write_parquet_atomic(S.DROPPED_SCHEMA.empty_table(), version.dropped / shard_file(index))
