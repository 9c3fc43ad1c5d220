"""The selector interface and the input checks every selector shares.

Selectors follow scikit-learn's conventions: ``__init__`` stores
hyper-parameters and does nothing else; :meth:`~thresher._params.ParamsMixin.check_params`
checks them (the registry calls it when a config is loaded); ``select``
takes the score table, the embeddings, a budget and a ``random_state`` and
returns a :class:`Selection`. Selectors see ids, scores and embeddings,
never text.

Selectors on scalar scores are :class:`FrameSelector`: they decide from
aggregates of a :class:`~thresher.frame.Frame` (counts, histograms, exact
cut points: :mod:`thresher.selectors.ranking`) and return :class:`Marks`, a
row-wise rule that the engine applies where the rows are. Their in-memory
``select`` runs the same code on a table, so the two can never disagree.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from thresher._params import ParamsMixin
from thresher.budget import Budget, SumBudget, resolve_budget
from thresher.frame import Frame, TableFrame
from thresher.keys import seed_material

RandomState = int | np.random.Generator | None


@dataclass
class Selection:
    """The rows a selector keeps.

    Attributes
    ----------
    indices : ndarray of int64, shape (k,)
        Sorted, unique row positions in the score table.
    weights : ndarray of float64, shape (k,)
        Importance weight of each kept row (1.0 unless the method defines
        weights, as sensitivity sampling does).
    groups : ndarray of int64, shape (k,)
        Stratum or cluster of each kept row, -1 when the method has none.
    details : dict
        Method-specific facts for the report (strata, cluster sizes...).
    repeats : ndarray of int64, shape (k,), or None
        How many times each kept row is used (:data:`thresher.io.schema.REPEAT`),
        for selectors that define repeat counts; None: each kept row once.
    """

    indices: NDArray[np.int64]
    weights: NDArray[np.float64]
    groups: NDArray[np.int64]
    details: dict[str, Any] = field(default_factory=dict)
    repeats: NDArray[np.int64] | None = None

    @classmethod
    def from_indices(
        cls,
        indices: NDArray[np.integer[Any]] | list[int],
        weights: NDArray[np.floating[Any]] | None = None,
        groups: NDArray[np.integer[Any]] | None = None,
        details: dict[str, Any] | None = None,
        repeats: NDArray[np.integer[Any]] | None = None,
    ) -> Selection:
        """Build a Selection, sorting rows by index and checking shapes."""
        idx = np.asarray(indices, dtype=np.int64)
        order = np.argsort(idx, kind="stable")
        idx = idx[order]
        if idx.size and np.any(np.diff(idx) == 0):
            raise ValueError("a selection may not contain the same row twice")
        w = np.ones(idx.size) if weights is None else np.asarray(weights, np.float64)[order]
        g = (
            np.full(idx.size, -1, np.int64)
            if groups is None
            else np.asarray(groups, np.int64)[order]
        )
        r = None if repeats is None else np.asarray(repeats, np.int64)[order]
        if w.shape != idx.shape or g.shape != idx.shape or (r is not None and r.shape != idx.shape):
            raise ValueError("indices, weights, groups and repeats must have the same length")
        return cls(idx, w, g, details or {}, r)

    def __len__(self) -> int:
        return int(self.indices.size)


class Selector(ParamsMixin, ABC):
    """Base class: subclasses set ``name`` and implement ``select``."""

    name: ClassVar[str]
    #: False for selectors that define their own size (``threshold``).
    requires_budget: ClassVar[bool] = True
    #: True for selectors that need an embedding matrix.
    requires_embeddings: ClassVar[bool] = False
    #: True for selectors whose weights are importance weights (the dataset gets the column).
    defines_weights: ClassVar[bool] = False
    #: True for selectors that set repeat counts (:data:`thresher.io.schema.REPEAT`): the
    #: dataset gets the column, and their budgets count each kept row ``repeat`` times.
    defines_repeats: ClassVar[bool] = False
    #: True for selectors that take a budget or none (``requires_budget`` False).
    optional_budget: ClassVar[bool] = False

    @abstractmethod
    def select(
        self,
        scores: pa.Table,
        embeddings: NDArray[np.floating[Any]] | None = None,
        budget: Budget | None = None,
        *,
        random_state: RandomState = None,
    ) -> Selection:
        """Choose rows of ``scores`` (and of ``embeddings``, row-aligned)."""

    def score_columns(self) -> list[str]:
        """Score-table columns this selector reads (checked for NaN before selection)."""
        return []

    def label_columns(self) -> list[str]:
        """What the step's label names in parentheses: its score columns unless it says otherwise."""
        return self.score_columns()


#: Columns every frame a selector sees has: the id, and the input-order key.
ID = "id"
ORDER = "thresher_order"


class Marks(ABC):
    """A step's decision as a row-wise rule: picklable, applied where the rows are.

    ``details`` holds method-specific facts for the report (strata, bounds...).
    """

    details: dict[str, Any]

    @abstractmethod
    def __call__(
        self, table: pa.Table
    ) -> tuple[NDArray[np.bool_], NDArray[np.float64], NDArray[np.int64]]:
        """Per row of ``table``: kept, importance weight, group (-1 for none)."""

    def repeats(self, table: pa.Table) -> NDArray[np.int64]:
        """Per row of ``table``: how many times the row is used when kept (:data:`~thresher.io.schema.REPEAT`).

        1 for every row unless the selector defines repeat counts
        (``Selector.defines_repeats``); applied to the rows the step keeps.
        """
        return np.ones(table.num_rows, dtype=np.int64)

    def reasons(self, table: pa.Table) -> tuple[pa.Array, pa.Array] | None:
        """Per row of ``table``: the reason and detail it gets if dropped, when the rule says.

        None (the default): every row the step drops gets the step's own
        reason and description. Otherwise two string arrays of the table's
        length (null where a row is kept); the stage prefixes each reason as
        it prefixes a step's label (``filter:``, ``not_selected:``).
        """
        return None


class FrameSelector(Selector):
    """A selector that decides from aggregates of a frame (see module docstring)."""

    @abstractmethod
    def select_frame(
        self, rows: Frame, budget: Budget | None = None, *, random_state: RandomState = None
    ) -> Marks:
        """The rule choosing among ``rows`` (which have ``id``, ``thresher_order``, scores, label)."""

    def select(
        self,
        scores: pa.Table,
        embeddings: NDArray[np.floating[Any]] | None = None,
        budget: Budget | None = None,
        *,
        random_state: RandomState = None,
    ) -> Selection:
        for column in self.score_columns():
            score_values(scores, column, selector=self.name)  # refuse NaN and missing columns
        table = with_row_keys(scores)
        marks = self.select_frame(TableFrame.of(table), budget, random_state=random_state)
        keep, weight, group = marks(table)
        repeats = marks.repeats(table)[keep] if self.defines_repeats else None
        return Selection.from_indices(
            np.flatnonzero(keep),
            weights=weight[keep],
            groups=group[keep],
            details=marks.details,
            repeats=repeats,
        )


def with_row_keys(table: pa.Table) -> pa.Table:
    """``table`` with an ``id`` and an input-order key, from the row positions when absent."""
    n = table.num_rows
    if ORDER not in table.column_names:
        table = table.append_column(ORDER, pa.array(np.arange(n, dtype=np.int64)))
    if ID not in table.column_names:
        table = table.append_column(ID, pa.array([str(i) for i in range(n)], pa.string()))
    return table


def hash_seed(random_state: RandomState) -> int:
    """The 64-bit seed of a selector's hash priorities, drawn from ``random_state``.

    A Generator gives its next draw (so the stage's ``(seed, step)`` stream
    decides it); an int is mixed as it is; None draws fresh entropy.
    """
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(0, 2**63, dtype=np.int64))
    if random_state is None:
        return int(np.random.default_rng().integers(0, 2**63, dtype=np.int64))
    return seed_material(int(random_state))


# -- shared input checks ------------------------------------------------------------


def count_values(table: pa.Table, column: str, *, selector: str = "selector") -> NDArray[np.int64]:
    """A sum budget's column as int64, refusing null, NaN, infinite, negative or fractional values.

    The pipeline drops such rows as ``invalid_score`` before any selector
    runs (:mod:`thresher.stages.decide`); a direct caller gets this error.
    """
    if column not in table.column_names:
        raise ValueError(
            f"{selector}: budget column {column!r} not found; have {table.column_names}"
        )
    array = table.column(column)
    if array.null_count:
        raise ValueError(f"{selector}: budget column {column!r} has {array.null_count} nulls")
    try:
        values = np.asarray(array.to_numpy(zero_copy_only=False), dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{selector}: budget column {column!r} is not numeric") from None
    bad = ~valid_counts(values)
    if bad.any():
        raise ValueError(
            f"{selector}: budget column {column!r} has {int(bad.sum())} values that are not "
            "whole non-negative numbers (NaN, infinite, negative or fractional)"
        )
    return values.astype(np.int64)


def valid_counts(values: NDArray[Any]) -> NDArray[np.bool_]:
    """True where a value can be summed by a budget: finite, >= 0, whole, below 2**53."""
    values = np.asarray(values, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return (
            np.isfinite(values) & (values >= 0) & (values < 2.0**53) & (values == np.floor(values))
        )


def sum_limit(
    budget: Budget | None, table: pa.Table, *, selector: str = "selector"
) -> tuple[int, NDArray[np.int64] | None]:
    """The most rows a selector may need to order, and the sizes of a sum budget.

    For a count or a fraction: the resolved row count and None. For a
    :class:`SumBudget`: the largest number of rows whose sum can stay within
    the total (the smallest sizes first), so an ordering of that many rows
    always reaches the point where :func:`fitting_prefix` stops, and the
    sizes themselves.
    """
    n = table.num_rows
    if not isinstance(budget, SumBudget):
        return resolve_budget(budget, n, selector=selector), None
    sizes = count_values(table, budget.column, selector=selector)
    cumulative = np.cumsum(np.sort(sizes, kind="stable"))
    return int(np.searchsorted(cumulative, budget.total, side="right")), sizes


def fitting_prefix(
    order: NDArray[np.integer[Any]], sizes: NDArray[np.int64] | None, budget: Budget | None
) -> NDArray[np.int64]:
    """The rows of ``order`` taken by a sum budget's rule (all of them for a row budget).

    ``order`` lists rows in the selector's order; the result is its longest
    prefix whose sizes sum to at most the total (the rows before the first
    one that would exceed it).
    """
    rows: NDArray[np.int64] = np.asarray(order, dtype=np.int64)
    if sizes is None or not isinstance(budget, SumBudget):
        return rows
    running = np.cumsum(sizes[rows])
    return rows[: int(np.searchsorted(running, budget.total, side="right"))]


def score_values(
    scores: pa.Table, column: str, *, selector: str = "selector"
) -> NDArray[np.float64]:
    """A score column as float64, refusing missing columns and non-finite values."""
    if column not in scores.column_names:
        raise ValueError(
            f"{selector}: score column {column!r} not found; have {scores.column_names}"
        )
    values = scores.column(column).to_numpy(zero_copy_only=False)
    try:
        values = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{selector}: score column {column!r} is not numeric") from None
    if values.ndim != 1:
        raise ValueError(f"{selector}: score column {column!r} must hold one number per row")
    if not np.all(np.isfinite(values)):
        bad = int(np.count_nonzero(~np.isfinite(values)))
        raise ValueError(f"{selector}: score column {column!r} has {bad} NaN/inf values")
    return values


def check_embeddings(
    embeddings: NDArray[Any] | None, n_rows: int, *, selector: str = "selector"
) -> NDArray[np.float32]:
    """Check an (n_rows, d) finite embedding matrix and return it as float32."""
    if embeddings is None:
        raise ValueError(f"{selector}: needs embeddings (configure a scorer that writes one)")
    matrix = np.asarray(embeddings, dtype=np.float32)
    if matrix.ndim != 2 or matrix.shape[0] != n_rows:
        raise ValueError(
            f"{selector}: embeddings must have shape ({n_rows}, d), got {matrix.shape}"
        )
    if not np.all(np.isfinite(matrix)):
        raise ValueError(f"{selector}: embeddings contain NaN/inf")
    return matrix


def check_random_state(random_state: RandomState) -> np.random.Generator:
    """A numpy Generator from a seed, a Generator or None."""
    if isinstance(random_state, np.random.Generator):
        return random_state
    return np.random.default_rng(random_state)
