"""Classes of the ``label`` column, counted where the data is, in an order that needs no data order.

Class-balanced selection splits a budget across classes; ties in that split
go to the earlier class. The classes are ordered by label value (numbers
numerically, strings by code point), with a missing label as a class of
its own after every other, so the order is the same on every engine and
partitioning (the first appearance of a class would depend on both).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

from thresher.frame import Frame

LABEL = "label"


def _count(column: str) -> Any:
    def partial(table: pa.Table) -> dict[Any, int]:
        values = table.column(column)
        counts: dict[Any, int] = {}
        if values.null_count:
            counts[None] = values.null_count
        present = pc.drop_null(values)
        if len(present):
            for item in pc.value_counts(present).to_pylist():
                counts[item["values"]] = counts.get(item["values"], 0) + int(item["counts"])
        return counts

    return partial


def _merge(parts: list[dict[Any, int]]) -> dict[Any, int]:
    total: dict[Any, int] = {}
    for part in parts:
        for value, count in part.items():
            total[value] = total.get(value, 0) + count
    return total


@dataclass(frozen=True)
class LabelClasses:
    """The classes of a label column: their values in class order and their sizes."""

    values: tuple[Any, ...]
    sizes: NDArray[np.int64]
    has_null: bool

    @property
    def n_classes(self) -> int:
        return len(self.values) + int(self.has_null)

    @classmethod
    def from_counts(cls, counts: dict[Any, int]) -> LabelClasses:
        values = tuple(sorted(v for v in counts if v is not None))
        sizes = [counts[v] for v in values] + ([counts[None]] if None in counts else [])
        return cls(values, np.asarray(sizes, dtype=np.int64), None in counts)

    def codes(self, labels: pa.Array | pa.ChunkedArray) -> NDArray[np.int64]:
        """The class of each label (a missing label: the last class)."""
        if not self.values:
            return np.zeros(len(labels), dtype=np.int64)
        value_set = pa.array(list(self.values), type=labels.type)
        index = pc.index_in(labels, value_set=value_set)
        return np.asarray(pc.fill_null(index, len(self.values)), dtype=np.int64)


def label_classes(frame: Frame, column: str = LABEL, *, selector: str = "selector") -> LabelClasses:
    """The classes of ``column`` over the frame's rows (one aggregate)."""
    if column not in frame.schema.names:
        raise ValueError(
            f"{selector}: by_label needs a `label` column (set schema.label in the config); "
            f"have {frame.schema.names}"
        )
    return LabelClasses.from_counts(frame.aggregate(_count(column), _merge))


def table_classes(
    table: pa.Table, column: str = LABEL, *, selector: str = "selector"
) -> tuple[NDArray[np.int64], int]:
    """Class codes of an in-memory table's labels, and the number of classes."""
    if column not in table.column_names:
        raise ValueError(
            f"{selector}: by_label needs a `label` column (set schema.label in the config); "
            f"have {table.column_names}"
        )
    classes = LabelClasses.from_counts(_count(column)(table))
    return classes.codes(table.column(column)), classes.n_classes
