"""Bounded reads of a run's tables for the report: score samples and example documents.

A report must stay fast and small on a run of any size, so nothing here
loads a whole table: score files are read one at a time (only the needed
columns) and sampled as they are read; the selection table is streamed in
batches and joined to the sample by row position; example documents are
chosen per reason with a streaming "n smallest hash priorities" rule and
their text is read only from the shards that hold them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from numpy.typing import NDArray

from thresher.io import schema as S
from thresher.run_dir import RunDir

#: Columns of a score table that are not scores.
NON_SCORE_COLUMNS = frozenset({S.ID, S.SHARD, S.ROW, S.LABEL})
_BATCH_ROWS = 65_536


def parquet_files(directory: Path) -> list[Path]:
    """Parquet files under ``directory`` (hidden and ``_`` names skipped), sorted."""
    if not directory.is_dir():
        return []
    return sorted(
        p
        for p in directory.rglob("*.parquet")
        if not any(part.startswith((".", "_")) for part in p.relative_to(directory).parts)
    )


def _position_key(shards: NDArray[Any], rows: NDArray[Any]) -> NDArray[np.int64]:
    """One int64 per row position (shard in the high bits, row in the low 40)."""
    return (shards.astype(np.int64) << 40) | rows.astype(np.int64)


def _priority(keys: NDArray[np.int64], seed: int) -> NDArray[np.uint64]:
    """A deterministic pseudo-random priority per key (splitmix64 of key + seed)."""
    with np.errstate(over="ignore"):
        z = keys.astype(np.uint64) + np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def score_columns(run: RunDir) -> list[str]:
    """Numeric one-value-per-row score columns of a run, in table order."""
    files = parquet_files(run.scores)
    if not files:
        return []
    schema = pq.read_schema(files[0])
    return [
        f.name
        for f in schema
        if f.name not in NON_SCORE_COLUMNS
        and (pa.types.is_integer(f.type) or pa.types.is_floating(f.type))
    ]


def sample_scores(run: RunDir, columns: list[str], max_rows: int, seed: int) -> pd.DataFrame:
    """Up to ``max_rows`` rows of the score table with ``keep`` and ``reason`` attached.

    Each score file is read alone (only ``columns`` and the positions) and
    sampled at the same rate, so memory is bounded by one shard plus the
    sample. Rows without a selection decision (a score-only run) get
    ``keep = NA``.
    """
    files = parquet_files(run.scores)
    total = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    rate = 1.0 if total <= max_rows else max_rows / total
    rng = np.random.default_rng(seed)
    parts = []
    for path in files:
        available = pq.read_schema(path).names
        wanted = [S.SHARD, S.ROW, *[c for c in columns if c in available]]
        table = pq.read_table(path, columns=wanted)
        if rate < 1.0:
            size = min(table.num_rows, round(rate * table.num_rows))
            table = table.take(np.sort(rng.choice(table.num_rows, size=size, replace=False)))
        parts.append(table.to_pandas())
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=[S.SHARD, S.ROW])
    for column in columns:
        if column not in frame.columns:
            frame[column] = np.nan
    keys = _position_key(frame[S.SHARD].to_numpy(), frame[S.ROW].to_numpy())
    decisions = _decisions_for(run, keys)
    frame["keep"] = pd.array(decisions["keep"].reindex(keys).to_numpy(), dtype="boolean")
    frame["reason"] = decisions["reason"].reindex(keys).to_numpy()
    return frame


def _decisions_for(run: RunDir, keys: NDArray[np.int64]) -> pd.DataFrame:
    """``keep`` and ``reason`` of the rows at ``keys`` (index: key), streamed from selection."""
    path = run.selection / "selection.parquet"
    empty = pd.DataFrame({"keep": pd.Series(dtype="boolean"), "reason": pd.Series(dtype=object)})
    if not path.is_file() or keys.size == 0:
        return empty
    wanted = np.unique(keys)
    found = []
    for batch in pq.ParquetFile(path).iter_batches(
        batch_size=_BATCH_ROWS, columns=[S.SHARD, S.ROW, "keep", "reason"]
    ):
        batch_keys = _position_key(
            batch.column(0).to_numpy(zero_copy_only=False),
            batch.column(1).to_numpy(zero_copy_only=False),
        )
        hit = np.isin(batch_keys, wanted)
        if hit.any():
            found.append(
                pd.DataFrame(
                    {
                        "keep": batch.column(2).to_numpy(zero_copy_only=False)[hit],
                        "reason": np.asarray(batch.column(3).to_pylist(), dtype=object)[hit],
                    },
                    index=batch_keys[hit],
                )
            )
    if not found:
        return empty
    result = pd.concat(found)
    return result[~result.index.duplicated(keep="first")]


# -- example documents -------------------------------------------------------------


def truncate(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, saying how much was cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… [{len(text) - limit:,} more characters]"


def example_rows(run: RunDir, per_reason: int, seed: int) -> pd.DataFrame:
    """Up to ``per_reason`` rows for every selection outcome (``kept`` or a drop reason).

    Columns: ``outcome, id, thresher_shard, thresher_row, detail``. The
    choice is the ``per_reason`` smallest hash priorities of each outcome,
    so it is deterministic and independent of how the table is batched.
    """
    path = run.selection / "selection.parquet"
    empty = pd.DataFrame(columns=["outcome", S.ID, S.SHARD, S.ROW, "detail", "priority"])
    if not path.is_file():
        return empty
    best: pd.DataFrame | None = None
    columns = [S.ID, S.SHARD, S.ROW, "keep", "reason", "detail"]
    for batch in pq.ParquetFile(path).iter_batches(batch_size=_BATCH_ROWS, columns=columns):
        frame = batch.to_pandas()
        frame["outcome"] = frame["reason"].where(~frame["keep"], "kept")
        keys = _position_key(frame[S.SHARD].to_numpy(), frame[S.ROW].to_numpy())
        frame["priority"] = _priority(keys, seed)
        frame = frame.drop(columns=["keep", "reason"])
        pool = frame if best is None else pd.concat([best, frame], ignore_index=True)
        best = (
            pool.sort_values("priority", kind="stable")
            .groupby("outcome", sort=False)
            .head(per_reason)
            .reset_index(drop=True)
        )
    if best is None:  # a selection with no rows (an empty corpus)
        return empty
    return best.sort_values(["outcome", "priority"], kind="stable").reset_index(drop=True)


def document_texts(run: RunDir, rows: pd.DataFrame, limit: int) -> list[str]:
    """The (truncated) text of each row of ``rows``, read from the ingested shards.

    Records without a text column (feature-vector corpora) are shown as the
    JSON of their columns.
    """
    texts: dict[tuple[int, int], str] = {}
    for shard, group in rows.groupby(S.SHARD):
        path = run.ingested_shard(int(shard))
        if not path.is_file():
            continue
        names = pq.read_schema(path).names
        columns = [S.ROW, S.TEXT] if S.TEXT in names else None  # no text: show every column
        table = pq.read_table(
            path, columns=columns, filters=[(S.ROW, "in", [int(r) for r in group[S.ROW]])]
        )
        for record in table.to_pylist():
            key = (int(shard), int(record[S.ROW]))
            texts[key] = _document_text(record, limit)
    return [
        texts.get((int(s), int(r)), "(document not found in the ingested shard)")
        for s, r in zip(rows[S.SHARD], rows[S.ROW], strict=True)
    ]


def _document_text(record: dict[str, Any], limit: int) -> str:
    text = record.get(S.TEXT)
    if isinstance(text, str):
        return truncate(text, limit)
    shown = {k: v for k, v in record.items() if k not in S.POSITION_COLUMNS}
    return truncate(json.dumps(shown, default=str, ensure_ascii=False), limit)


def quarantine_examples(run: RunDir, per_reason: int, limit: int) -> pd.DataFrame:
    """Up to ``per_reason`` quarantined rows per reason (``shard, row, id, reason, detail, raw``)."""
    files = parquet_files(run.quarantine)
    picked: dict[str, list[dict[str, Any]]] = {}
    for path in files:
        for record in _records(path, ["shard", "row", "id", "reason", "detail", "raw"]):
            chosen = picked.setdefault(str(record["reason"]), [])
            if len(chosen) < per_reason:
                record["raw"] = truncate(str(record.get("raw") or ""), limit)
                chosen.append(record)
    rows = [r for reason in sorted(picked) for r in picked[reason]]
    return pd.DataFrame(rows, columns=["shard", "row", "id", "reason", "detail", "raw"])


def _records(path: Path, columns: list[str]) -> Iterator[dict[str, Any]]:
    available = pq.read_schema(path).names
    for batch in pq.ParquetFile(path).iter_batches(
        batch_size=4096, columns=[c for c in columns if c in available]
    ):
        yield from batch.to_pylist()
