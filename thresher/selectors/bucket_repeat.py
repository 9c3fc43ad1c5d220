"""Quality buckets with repeat counts: drop the low buckets, upsample the high ones.

Nemotron-CC sorts documents into buckets by a quality score and builds its
training mix from the buckets with a repeat count each: the lowest buckets
are left out, the highest are seen several times (e.g. repeats 0, 0, 1, 2, 3
from the lowest bucket to the highest). :class:`BucketRepeatSelector` does
that under one budget that counts every copy; the kept rows carry their
count in the ``repeat`` column (:data:`thresher.io.schema.REPEAT`), which the
published dataset keeps so that a trainer can upsample.

References
----------
Su, Kong, Lin, Jennings, Norick, Kliegl, Patwary, Shoeybi and Catanzaro,
"Nemotron-CC: Transforming Common Crawl into a Refined Long-Horizon
Pretraining Dataset", 2024.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from thresher._params import Constraints, Integral, Interval, ListOf, Real
from thresher.budget import resolve_copies
from thresher.frame import Frame
from thresher.io.schema import TOKEN_COLUMN
from thresher.selectors.base import (
    ORDER,
    Budget,
    FrameSelector,
    Marks,
    RandomState,
    SumBudget,
    count_values,
    valid_counts,
)
from thresher.selectors.ranked import ScoreColumn
from thresher.selectors.ranking import (
    Cuts,
    ScoreKey,
    descending,
    finite_values,
    float_key,
    group_sizes,
    group_sums,
    k_smallest,
    order_bits,
    sum_cuts,
)


class BucketRepeatSelector(ScoreColumn, FrameSelector):
    """Sort rows into quality buckets and keep each bucket ``repeats[i]`` times.

    **Buckets.** ``buckets`` is either a number ``B`` of equal-count
    quantile buckets or a list of ascending edges ``e_1 < ... < e_m``
    (``m + 1`` buckets). Rows are ranked best first: by score, highest
    first, ties by input order (the earlier row first). With ``B`` quantile
    buckets, bucket ``i`` (0 the lowest) holds the rows whose rank from the
    lowest, in the reverse of that order, lies in ``[floor(i n / B),
    floor((i + 1) n / B))`` of the ``n`` rows: bucket sizes differ by at most
    one, and tied scores may fall in two buckets, split by input order.
    With edges, bucket ``i`` holds the scores in ``[e_i, e_(i+1))``
    (bucket 0 everything below ``e_1``, the last everything from ``e_m`` up).

    **Repeats.** ``repeats`` has one count per bucket, from the lowest to the
    highest: 0 drops the bucket (its rows get the step's reason), ``r >= 1``
    keeps its rows with ``repeat = r``. The kept rows' ``group`` is their
    bucket.

    **Budget** (optional). Without one, every row of a bucket with
    ``repeat >= 1`` is kept. With one, every kept row counts ``repeat``
    times: a row counts ``repeat`` against a count or a fraction (a count is
    a number of copies, not capped at the rows there are; a fraction is of
    the rows reaching the step, rounded half up), and ``repeat`` times its
    size against a sum budget (``{tokens: N}``). Rows are taken in one order,
    from the highest bucket with ``repeat >= 1`` down, within a bucket by
    score, highest first, ties by input order, and the selection **stops
    before the first row whose copies would make the running count exceed
    the budget**: rows after it, even in lower buckets with a smaller
    repeat, are not taken. The kept copies are never over the budget.

    The step's details give the buckets (``edges``; for quantile buckets,
    the lowest score of each bucket above the first), ``repeats``, the
    budget in copies, and per bucket its score range, rows, kept rows, kept
    copies and, with a sum budget or a ``token_count`` column, its sum, the
    kept sum and the kept sum times ``repeat``.

    Parameters
    ----------
    score : str
        Quality score column (higher is better).
    buckets : int or list of float
        Number of equal-count quantile buckets (>= 1), or ascending edges.
    repeats : list of int
        One count >= 0 per bucket, lowest bucket first; at least one > 0.

    References
    ----------
    Su et al., "Nemotron-CC: Transforming Common Crawl into a Refined
    Long-Horizon Pretraining Dataset", 2024.
    """

    name: ClassVar[str] = "bucket_repeat"
    requires_budget: ClassVar[bool] = False
    optional_budget: ClassVar[bool] = True
    defines_repeats: ClassVar[bool] = True

    _parameter_constraints: ClassVar[dict[str, Constraints]] = {
        "buckets": [
            Interval(Integral, 1, None),
            ListOf(Interval(Real, None, None), what="ascending bucket edges"),
        ],
        "repeats": [ListOf(Interval(Integral, 0, None), what="repeat counts (integers >= 0)")],
    }

    def __init__(self, score: str, buckets: int | list[float], repeats: list[int]) -> None:
        self.score = score
        self.buckets = buckets
        self.repeats = repeats

    @property
    def n_buckets(self) -> int:
        """How many buckets: the number given, or one more than the edges."""
        return len(self.buckets) + 1 if isinstance(self.buckets, list) else int(self.buckets)

    def _check_together(self) -> None:
        if isinstance(self.buckets, list):
            edges = np.asarray(self.buckets, dtype=np.float64)
            if not np.all(np.isfinite(edges)):
                raise ValueError(f"{self.name}: buckets edges must be finite, got {self.buckets}")
            if np.any(np.diff(edges) <= 0):
                raise ValueError(
                    f"{self.name}: buckets edges must be strictly ascending, got {self.buckets}"
                )
        if len(self.repeats) != self.n_buckets:
            raise ValueError(
                f"{self.name}: repeats needs one count per bucket ({self.n_buckets}), "
                f"got {len(self.repeats)}"
            )
        if not any(self.repeats):
            raise ValueError(f"{self.name}: every repeat is 0, which keeps nothing")

    def select_frame(
        self, rows: Frame, budget: Budget | None = None, *, random_state: RandomState = None
    ) -> Marks:
        self.validate_params()
        n = rows.count()
        repeats = np.asarray(self.repeats, dtype=np.int64)
        key = _BucketKey(self.score, self._bucketing(rows, n), self.name)
        if isinstance(budget, SumBudget):
            sizes, units = group_sums(rows, key, budget.column, self.n_buckets)
            total = int(budget.total)
        else:
            sizes = group_sizes(rows, key, self.n_buckets)
            units = sizes
            total = -1 if budget is None else resolve_copies(budget, n, selector=self.name)
        whole, partial, share = _take_from_the_top(repeats, units, total)
        if isinstance(budget, SumBudget):
            cuts = _sum_cuts(rows, key, budget.column, whole, partial, share, sizes, units)
        else:
            targets = np.where(whole, sizes, 0)
            if partial is not None:
                targets[partial] = share
            cuts = k_smallest(rows, key, targets, sizes)
        marks = _BucketMarks(key, cuts, repeats, {})
        marks.details = self._details(rows, marks, budget, total, partial)
        return marks

    def _bucketing(self, rows: Frame, n: int) -> _Edges | _Quantiles:
        """The bucket of each row: from the edges, or from one exact cut per inner quantile edge.

        Cut ``i`` keeps the best ``n - floor(i n / B)`` rows (those of
        buckets ``>= i``); the ``B - 1`` cuts are found in one descent over
        the rows taken once per cut (:class:`_PerCut`).
        """
        if isinstance(self.buckets, list):
            return _Edges(self.score, [float(e) for e in self.buckets], self.name)
        b = int(self.buckets)
        ranked = ScoreKey(self.score, True, selector=self.name)  # best first
        above = np.array([n - (i * n) // b for i in range(1, b)], dtype=np.int64)
        copies = pa.schema(
            [
                pa.field(self.score, pa.float64()),
                pa.field(ORDER, pa.int64()),
                pa.field(_CUT, pa.int64()),
            ]
        )
        per_cut = rows.map_batches(_PerCut(self.score, b - 1), copies)
        key = _CutKey(ScoreKey(self.score, True, selector=self.name))
        cuts = k_smallest(per_cut, key, above, np.full(b - 1, n, dtype=np.int64))
        return _Quantiles(ranked, cuts)

    def _details(
        self, rows: Frame, marks: _BucketMarks, budget: Budget | None, total: int, stop: int | None
    ) -> dict[str, Any]:
        column = budget.column if isinstance(budget, SumBudget) else None
        if column is None and TOKEN_COLUMN in rows.schema.names:
            column = TOKEN_COLUMN
        stats = rows.aggregate(
            _BucketStats(marks, self.score, column, strict=isinstance(budget, SumBudget)),
            _CombineStats(self.n_buckets),
        )
        repeats = [int(r) for r in self.repeats]
        per_bucket = []
        for i in range(self.n_buckets):
            low, high = float(stats["low"][i]), float(stats["high"][i])
            bucket: dict[str, Any] = {
                "bucket": i,
                "repeat": repeats[i],
                "min_score": low if math.isfinite(low) else None,
                "max_score": high if math.isfinite(high) else None,
                "rows": int(stats["rows"][i]),
                "kept": int(stats["kept"][i]),
                "kept_repeated": int(stats["kept"][i]) * repeats[i],
            }
            if column is not None:
                bucket["sum"] = int(stats["sum"][i])
                bucket["kept_sum"] = int(stats["kept_sum"][i])
                bucket["kept_sum_repeated"] = int(stats["kept_sum"][i]) * repeats[i]
            per_bucket.append(bucket)
        if isinstance(self.buckets, list):
            edges: list[float | None] = [float(e) for e in self.buckets]
        else:
            edges = [b["min_score"] for b in per_bucket[1:]]
        details: dict[str, Any] = {
            "score": self.score,
            "buckets": "edges" if isinstance(self.buckets, list) else "quantiles",
            "edges": edges,
            "repeats": repeats,
            "kept": sum(b["kept"] for b in per_bucket),
            "kept_repeated": sum(b["kept_repeated"] for b in per_bucket),
            "stopped_in_bucket": stop,
        }
        if isinstance(budget, SumBudget):
            details["budget_sum"] = budget.column
            details["requested_sum"] = int(budget.total)
            details["kept_sum"] = sum(b["kept_sum_repeated"] for b in per_bucket)
            details["kept_sum_unique"] = sum(b["kept_sum"] for b in per_bucket)
        elif budget is not None:
            details["requested_copies"] = total
        if column is not None:
            details["sum_column"] = column
        details["per_bucket"] = per_bucket
        return details


def _take_from_the_top(
    repeats: NDArray[np.int64], units: NDArray[np.int64], total: int
) -> tuple[NDArray[np.bool_], int | None, int]:
    """Which buckets are taken whole, the bucket the budget stops in, and its share there.

    ``units`` are each bucket's rows (a count budget) or size sum (a sum
    budget); ``total`` is the budget in copies (-1: no budget). Buckets are
    visited from the highest down, skipping those with repeat 0: a bucket
    whose ``repeat x units`` fits in what is left is taken whole; in the
    first that does not, the rows taken in order are those whose units sum
    to at most ``left // repeat`` (so ``repeat x`` their sum fits), and
    nothing after it is taken.
    """
    whole = np.zeros(repeats.size, dtype=bool)
    left = total
    for bucket in range(repeats.size - 1, -1, -1):
        repeat = int(repeats[bucket])
        if repeat == 0:
            continue
        need = repeat * int(units[bucket])
        if total < 0 or need <= left:
            whole[bucket] = True
            left -= need
        else:
            return whole, bucket, left // repeat
    return whole, None, 0


def _sum_cuts(
    rows: Frame,
    key: _BucketKey,
    column: str,
    whole: NDArray[np.bool_],
    partial: int | None,
    share: int,
    sizes: NDArray[np.int64],
    sums: NDArray[np.int64],
) -> Cuts:
    """Cuts keeping the whole buckets and, in ``partial``, the rows whose sizes fit in ``share``."""
    totals = sums.copy()
    if partial is not None:
        totals[partial] = share
    cuts, _, _ = sum_cuts(rows, key, column, totals, sizes, sums)
    mode = np.where(whole, 1, 0).astype(np.int8)
    if partial is not None:
        mode[partial] = cuts.mode[partial]
    return Cuts(mode, cuts.bits, cuts.high, cuts.low)


class _Edges:
    """Bucket of each row from explicit edges: ``i`` when ``e_i <= score < e_(i+1)``."""

    def __init__(self, score: str, edges: list[float], selector: str) -> None:
        self.score = score
        self.edges = np.asarray(edges, dtype=np.float64)
        self.selector = selector

    def __call__(self, table: pa.Table) -> NDArray[np.int64]:
        values = finite_values(table, self.score, self.selector)
        return np.searchsorted(self.edges, values, side="right").astype(np.int64)


class _Quantiles:
    """Bucket of each row from the quantile cuts: how many of them keep it (cut ``i``: buckets >= i)."""

    def __init__(self, ranked: ScoreKey, cuts: Cuts) -> None:
        self.ranked = ranked
        self.cuts = cuts

    def __call__(self, table: pa.Table) -> NDArray[np.int64]:
        _, primary, secondary = self.ranked(table)
        bucket = np.zeros(table.num_rows, dtype=np.int64)
        for cut in range(self.cuts.mode.size):
            group = np.full(table.num_rows, cut, dtype=np.int64)
            bucket += self.cuts.keep(group, primary, secondary)
        return bucket


#: The cut a copy of a row counts for (:class:`_PerCut`).
_CUT = "_thresher_cut"


class _PerCut:
    """Each row's score and order key once per quantile cut, tagged with the cut's number."""

    def __init__(self, score: str, n_cuts: int) -> None:
        self.score = score
        self.n_cuts = n_cuts

    def __call__(self, table: pa.Table) -> pa.Table:
        n = table.num_rows
        return pa.table(
            {
                self.score: np.tile(finite_values(table, self.score, "bucket_repeat"), self.n_cuts),
                ORDER: np.tile(
                    np.asarray(table.column(ORDER).to_numpy(zero_copy_only=False), np.int64),
                    self.n_cuts,
                ),
                _CUT: np.repeat(np.arange(self.n_cuts, dtype=np.int64), n),
            }
        )


class _CutKey:
    """The best-first order, each copy of a row in the group of its cut."""

    def __init__(self, ranked: ScoreKey) -> None:
        self.ranked = ranked

    def __call__(
        self, table: pa.Table
    ) -> tuple[NDArray[np.int64], NDArray[np.uint64], NDArray[np.uint64]]:
        _, primary, secondary = self.ranked(table)
        cut = np.asarray(table.column(_CUT).to_numpy(zero_copy_only=False), np.int64)
        return cut, primary, secondary


class _BucketKey:
    """The order rows are taken in: buckets as groups; in each, score descending, then input order."""

    def __init__(self, score: str, bucketing: _Edges | _Quantiles, selector: str) -> None:
        self.score = score
        self.bucketing = bucketing
        self.selector = selector

    def __call__(
        self, table: pa.Table
    ) -> tuple[NDArray[np.int64], NDArray[np.uint64], NDArray[np.uint64]]:
        primary = descending(float_key(finite_values(table, self.score, self.selector)))
        order = np.asarray(table.column(ORDER).to_numpy(zero_copy_only=False), np.int64)
        return self.bucketing(table), primary, order_bits(order)


class _BucketMarks(Marks):
    """Keep the rows the cuts keep; each kept row's group is its bucket, its repeat the bucket's."""

    def __init__(
        self, key: _BucketKey, cuts: Cuts, repeats: NDArray[np.int64], details: dict[str, Any]
    ) -> None:
        self.key = key
        self.cuts = cuts
        self.repeat_counts = repeats
        self.details = details

    def __call__(
        self, table: pa.Table
    ) -> tuple[NDArray[np.bool_], NDArray[np.float64], NDArray[np.int64]]:
        bucket, primary, secondary = self.key(table)
        keep = self.cuts.keep(bucket, primary, secondary)
        return keep, np.ones(table.num_rows), bucket

    def repeats(self, table: pa.Table) -> NDArray[np.int64]:
        bucket = self.key.bucketing(table)
        return self.repeat_counts[bucket]


class _BucketStats:
    """Per bucket: rows, kept rows, score range and (with ``column``) the sum and the kept sum.

    ``strict``: the column is the budget's, whose values must all be
    counts; otherwise a value that is not a whole non-negative number counts 0.
    """

    def __init__(self, marks: _BucketMarks, score: str, column: str | None, strict: bool) -> None:
        self.marks = marks
        self.score = score
        self.column = column
        self.strict = strict

    def __call__(self, table: pa.Table) -> dict[str, NDArray[Any]]:
        n_buckets = self.marks.repeat_counts.size
        keep, _, bucket = self.marks(table)
        values = finite_values(table, self.score, "bucket_repeat")
        low = np.full(n_buckets, np.inf)
        high = np.full(n_buckets, -np.inf)
        np.minimum.at(low, bucket, values)
        np.maximum.at(high, bucket, values)
        sizes = np.zeros(table.num_rows, dtype=np.int64)
        if self.column is not None:
            if self.strict:
                sizes = count_values(table, self.column, selector="bucket_repeat")
            else:
                raw = table.column(self.column).to_numpy(zero_copy_only=False)
                numeric = np.asarray(raw, dtype=np.float64)
                numeric = np.where(np.isnan(numeric), -1.0, numeric)
                sizes = np.where(valid_counts(numeric), numeric, 0).astype(np.int64)
        return {
            "rows": np.bincount(bucket, minlength=n_buckets).astype(np.int64),
            "kept": np.bincount(bucket[keep], minlength=n_buckets).astype(np.int64),
            "sum": _sums(bucket, sizes, n_buckets),
            "kept_sum": _sums(bucket[keep], sizes[keep], n_buckets),
            "low": low,
            "high": high,
        }


def _sums(bucket: NDArray[np.int64], sizes: NDArray[np.int64], n_buckets: int) -> NDArray[np.int64]:
    out = np.zeros(n_buckets, dtype=np.int64)
    np.add.at(out, bucket, sizes)
    return out


class _CombineStats:
    """Add the counts and sums of :class:`_BucketStats` partials; the smallest low, largest high."""

    def __init__(self, n_buckets: int) -> None:
        self.n_buckets = n_buckets

    def __call__(self, parts: list[dict[str, NDArray[Any]]]) -> dict[str, NDArray[Any]]:
        zeros = np.zeros(self.n_buckets, dtype=np.int64)
        out: dict[str, NDArray[Any]] = {
            **{name: zeros for name in ("rows", "kept", "sum", "kept_sum")},
            "low": np.full(self.n_buckets, np.inf),
            "high": np.full(self.n_buckets, -np.inf),
        }
        for part in parts:
            for name in ("rows", "kept", "sum", "kept_sum"):
                out[name] = out[name] + part[name]
            out["low"] = np.minimum(out["low"], part["low"])
            out["high"] = np.maximum(out["high"], part["high"])
        return out
