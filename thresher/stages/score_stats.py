"""Statistics of the score columns for the report: ranges, then histograms of kept and dropped.

Computed where the rows are (a :class:`~thresher.frame.Frame`): each batch
gives its ranges or bin counts, the driver merges them; no score column
reaches the driver whole.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

from thresher.frame import Frame
from thresher.io import schema as S
from thresher.selectors.vectors import is_vector_type

#: Bins of each score histogram.
HISTOGRAM_BINS = 40


class _Ranges:
    def __init__(self, columns: list[str]) -> None:
        self.columns = columns

    def __call__(self, table: pa.Table) -> dict[str, tuple[float, float, int]]:
        out = {}
        for column in self.columns:
            values = _numbers(table.column(column))
            out[column] = (
                (float(values.min()), float(values.max()), int(values.size))
                if values.size
                else (math.inf, -math.inf, 0)
            )
        return out


def _merge_ranges(
    parts: list[dict[str, tuple[float, float, int]]],
) -> dict[str, tuple[float, float, int]]:
    merged: dict[str, tuple[float, float, int]] = {}
    for part in parts:
        for column, (low, high, n) in part.items():
            before = merged.get(column, (math.inf, -math.inf, 0))
            merged[column] = (min(before[0], low), max(before[1], high), before[2] + n)
    return merged


class _Histograms:
    def __init__(self, edges: dict[str, list[float]]) -> None:
        self.edges = edges

    def __call__(self, table: pa.Table) -> dict[str, tuple[NDArray[np.int64], NDArray[np.int64]]]:
        keep = np.asarray(pc.is_null(table.column("reason")), dtype=bool)
        out = {}
        for column, edges in self.edges.items():
            values = np.asarray(
                table.column(column).to_numpy(zero_copy_only=False), dtype=np.float64
            )
            finite = np.isfinite(values)
            kept = np.histogram(values[finite & keep], bins=edges)[0]
            dropped = np.histogram(values[finite & ~keep], bins=edges)[0]
            out[column] = (kept.astype(np.int64), dropped.astype(np.int64))
        return out


def _merge_histograms(
    parts: list[dict[str, tuple[NDArray[np.int64], NDArray[np.int64]]]],
) -> dict[str, tuple[NDArray[np.int64], NDArray[np.int64]]]:
    merged: dict[str, tuple[NDArray[np.int64], NDArray[np.int64]]] = {}
    for part in parts:
        for column, (kept, dropped) in part.items():
            if column in merged:
                merged[column] = (merged[column][0] + kept, merged[column][1] + dropped)
            else:
                merged[column] = (kept, dropped)
    return merged


def _numbers(column: pa.ChunkedArray) -> NDArray[np.float64]:
    values = np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64)
    return values[np.isfinite(values)]


def score_histograms(frame: Frame, columns: list[str]) -> dict[str, dict[str, Any]]:
    """Per numeric score: range, count and a histogram of kept and dropped rows (two aggregates)."""
    if not columns:
        return {}
    ranges = frame.aggregate(_Ranges(columns), _merge_ranges)
    edges = {}
    for column, (low, high, n) in ranges.items():
        if n:
            span = high - low if high > low else 1.0
            edges[column] = np.linspace(low, low + span, HISTOGRAM_BINS + 1).tolist()
    counts = frame.aggregate(_Histograms(edges), _merge_histograms) if edges else {}
    result = {}
    for column in columns:
        low, high, n = ranges.get(column, (math.inf, -math.inf, 0))
        if not n or column not in counts:
            continue
        kept, dropped = counts[column]
        result[column] = {
            "min": low,
            "max": high,
            "count": n,
            "median": _median(edges[column], kept + dropped),
            "edges": edges[column],
            "kept": kept.tolist(),
            "dropped": dropped.tolist(),
        }
    return result


def _median(edges: list[float], counts: NDArray[np.int64]) -> float:
    """The median, interpolated within its histogram bin."""
    total = int(counts.sum())
    half = total / 2
    cumulative = np.cumsum(counts)
    at = int(np.searchsorted(cumulative, half))
    before = int(cumulative[at - 1]) if at else 0
    inside = int(counts[at]) or 1
    return edges[at] + (edges[at + 1] - edges[at]) * (half - before) / inside


def numeric_columns(schema: pa.Schema) -> list[str]:
    skip = {S.ID, S.SHARD, S.ROW, S.ORDER, S.LABEL, "reason", "detail", "weight", "group"}
    return [
        f.name
        for f in schema
        if f.name not in skip
        and (pa.types.is_integer(f.type) or pa.types.is_floating(f.type))
        and not is_vector_type(f.type)
    ]
