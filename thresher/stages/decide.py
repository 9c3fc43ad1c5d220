"""Decisions: from the score rows to keep or drop, with a reason, for every ingested row.

Order of decisions, each recorded as a reason on the rows it drops
(:mod:`thresher.reasons`):

1. ``contaminated``: with ``decontaminate`` configured, a row sharing an
   n-gram with an evaluation set (detail ``set=<name>; ngram=<n-gram>``),
   first, so that no other reason hides a contaminated row;
2. ``duplicate_id``: a row whose id appeared earlier in input order;
3. ``duplicate``: with ``dedup`` configured, a member of a duplicate cluster
   that is not its keeper (detail ``keeper=<id of the kept document>; similarity=<its similarity to it>``);
4. ``invalid_score``: a NaN/inf/missing value in a score (or vector) a step
   reads, or a value a sum budget cannot count (negative, fractional) in
   its column;
5. each filter in order (``filter:<name>(<score>)``; a ``rules`` step gives
   each row the reason of the first rule it fails, ``filter:<preset>.<rule>``);
6. the selector, which meets the budget (``not_selected:<name>(<score>)``);
   with a ``mixture``, within each group at its target share of the budget,
   a short group's rows repeated (:mod:`thresher.stages.mixture`).

Each step sees only the rows that survived the previous ones and draws its
randomness from ``(seed, step number)``. Everything runs on a
:class:`~thresher.frame.Frame` (on Spark, on the executors): duplicate ids
by grouping on the id, dedup drops by a join, steps on scalar scores as
exact rules from aggregates (:class:`~thresher.selectors.base.FrameSelector`),
embedding steps with ``partitions`` per partition
(:mod:`thresher.stages.partitioned`). Only an embedding step without
``partitions`` gathers its rows on the driver, up to
``engine.driver_max_rows``: the config check refuses it earlier for a
larger corpus. Every embedding step records the log-det diversity of its
kept rows and of a random subset of the same size
(:mod:`thresher.stages.diversity`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

from thresher import reasons as R
from thresher.config import MixtureConfig, RunConfig, SelectorConfig
from thresher.frame import Frame
from thresher.io import schema as S
from thresher.keys import seed_material
from thresher.profiling import timed
from thresher.selectors import Selector, make_selector
from thresher.selectors.base import Budget, FrameSelector, Marks, SumBudget, resolve_budget
from thresher.selectors.vectors import is_vector_type, valid_vectors, vector_matrix
from thresher.stages import mixture as M
from thresher.stages.diversity import diversity_seed, frame_diversity, table_diversity
from thresher.stages.partitioned import KEPT_SCHEMA, PartitionJob, select_partitioned

if TYPE_CHECKING:
    from thresher.engines.base import Engine

DECISION_FIELDS = [
    pa.field("reason", pa.string()),
    pa.field("detail", pa.string()),
    pa.field("weight", pa.float64()),
    pa.field("group", pa.int64()),
    pa.field(S.REPEAT, pa.int64()),
]
_DETAIL = "_thresher_detail"
_WEIGHT = "_thresher_weight"
_GROUP = "_thresher_group"


def step_label(step: SelectorConfig, selector: Selector) -> str:
    columns = selector.label_columns()
    return f"{step.name}({', '.join(columns)})" if columns else step.name


def describe(step: SelectorConfig) -> str:
    params = ", ".join(f"{k}={v}" for k, v in sorted(step.params.items()))
    budget = "" if step.budget is None else f"; budget={budget_text(step)}"
    return f"{step.name}({params}){budget}"


def budget_text(step: SelectorConfig) -> str:
    """A step's budget as people read it: ``0.3``, ``1000`` or ``token_count<=2000000``."""
    budget = step.budget_json()
    if isinstance(budget, dict):
        return f"{budget['sum']}<={budget['total']}"
    return str(budget)


def sum_budget_columns(steps: list[tuple[SelectorConfig, Selector]]) -> list[str]:
    """Columns the steps' sum budgets count (read by the decisions, checked as counts)."""
    columns = [
        step.budget_json()["sum"] for step, _ in steps if isinstance(step.budget_json(), dict)
    ]
    return list(dict.fromkeys(columns))


def configured_steps(config: RunConfig) -> list[tuple[SelectorConfig, Selector]]:
    """The filters, then the selector, each with a selector built from its config."""
    return [(s, make_selector(s.name, s.params)) for s in [*config.filters, config.selector]]


@dataclass(frozen=True)
class SelectionSpec:
    """What deciding every row needs from a run's config (selectors built once).

    ``deduplicated`` and ``decontaminated`` say whether the run has a dedup
    and a decontaminate section, whose results the decisions read.
    """

    steps: tuple[tuple[SelectorConfig, Selector], ...]
    seed: int
    deduplicated: bool = False
    decontaminated: bool = False
    #: The input's name of the label column (a mixture's ``by`` may name it).
    label: str | None = None

    @classmethod
    def of(cls, config: RunConfig) -> SelectionSpec:
        return cls(
            tuple(configured_steps(config)),
            config.seed,
            config.dedup is not None,
            config.decontaminate is not None,
            config.schema_.label,
        )

    @property
    def mixture(self) -> MixtureConfig | None:
        """The final selector's mixture, if it has one."""
        return self.steps[-1][0].mixture

    @property
    def mixture_column(self) -> str | None:
        """The decision rows' column holding a mixture's groups (``label`` for the label)."""
        mixture = self.mixture
        if mixture is None:
            return None
        return S.LABEL if mixture.by in (S.LABEL, self.label) else mixture.by

    @property
    def weighted(self) -> bool:
        """Whether the final selector defines importance weights."""
        return bool(self.steps[-1][1].defines_weights)

    @property
    def repeated(self) -> bool:
        """Whether the final step sets repeat counts (:data:`thresher.io.schema.REPEAT`).

        Its selector's own, or a mixture's (a short group's rows repeated).
        """
        return bool(self.steps[-1][1].defines_repeats) or self.mixture is not None

    @property
    def budget(self) -> Any:
        """The final selector's budget as recorded (a number or a sum budget's JSON)."""
        return self.steps[-1][0].budget_json()


def needs_vectors(step: SelectorConfig, selector: Selector) -> bool:
    return selector.requires_embeddings or step.partitions is not None


# -- row-wise pieces (picklable: they run where the rows are) ------------------------------


class _Start:
    """Every row active: no reason, weight 1, no group, repeat 1."""

    def __call__(self, table: pa.Table) -> pa.Table:
        n = table.num_rows
        return (
            table.append_column(DECISION_FIELDS[0], pa.nulls(n, pa.string()))
            .append_column(DECISION_FIELDS[1], pa.nulls(n, pa.string()))
            .append_column(DECISION_FIELDS[2], pa.array(np.ones(n)))
            .append_column(DECISION_FIELDS[3], pa.array(np.full(n, -1, dtype=np.int64)))
            .append_column(DECISION_FIELDS[4], pa.array(np.ones(n, dtype=np.int64)))
        )


def _active(table: pa.Table) -> NDArray[np.bool_]:
    return np.asarray(pc.is_null(table.column("reason")), dtype=bool)


class _Active:
    def __call__(self, table: pa.Table) -> pa.Table:
        return table.filter(pa.array(_active(table)))


def _set(table: pa.Table, name: str, values: pa.Array | pa.ChunkedArray) -> pa.Table:
    return table.set_column(table.schema.get_field_index(name), table.schema.field(name), values)


def _drop(
    table: pa.Table,
    rows: NDArray[np.bool_],
    reason: str | pa.Array,
    detail: str | pa.Array | pa.ChunkedArray | None,
) -> pa.Table:
    """Give ``reason`` and ``detail`` (each one value, or one per row) to the active ``rows``."""
    rows = rows & _active(table)
    if not rows.any():
        return table
    mask = pa.array(rows)
    reasons = table.column("reason").combine_chunks()
    own = reason if isinstance(reason, pa.Array) else pa.scalar(reason, pa.string())
    table = _set(table, "reason", pc.if_else(mask, own, reasons))
    if isinstance(detail, pa.ChunkedArray):
        given: Any = detail.combine_chunks().cast(pa.string())
    elif isinstance(detail, pa.Array):
        given = detail
    else:
        given = pa.scalar(detail, pa.string())
    details = table.column("detail").combine_chunks()
    return _set(table, "detail", pc.if_else(mask, given, details))


class _FirstOfId:
    """For rows grouped by id: the later occurrences (input order), with the first one's place."""

    def __init__(self, names: dict[int, str]) -> None:
        self.names = names

    def __call__(self, table: pa.Table) -> pa.Table:
        table = table.sort_by([(S.ID, "ascending"), (S.ORDER, "ascending")])
        ids = table.column(S.ID).to_numpy(zero_copy_only=False)
        if ids.size == 0:
            return _DUPLICATE_SCHEMA.empty_table()
        later = np.zeros(ids.size, dtype=bool)
        later[1:] = ids[1:] == ids[:-1]
        first = np.maximum.accumulate(np.where(~later, np.arange(ids.size), 0))
        rows = np.flatnonzero(later)
        shards = table.column(S.SHARD).to_numpy()
        positions = table.column(S.ROW).to_numpy()
        detail = [
            f"id first seen at shard {self.names.get(int(shards[f]), shards[f])} row {positions[f]}"
            for f in first[rows].tolist()
        ]
        return pa.table(
            {
                S.ORDER: pa.array(table.column(S.ORDER).to_numpy()[rows], pa.int64()),
                _DETAIL: pa.array(detail, pa.string()),
            },
            schema=_DUPLICATE_SCHEMA,
        )


_DUPLICATE_SCHEMA = pa.schema([pa.field(S.ORDER, pa.int64()), pa.field(_DETAIL, pa.string())])


class _DropJoined:
    """Drop the active rows a left join matched (``_thresher_detail`` set), with that detail."""

    def __init__(self, reason: str, schema: pa.Schema) -> None:
        self.reason = reason
        self.schema = schema

    def __call__(self, table: pa.Table) -> pa.Table:
        matched = np.asarray(pc.is_valid(table.column(_DETAIL)), dtype=bool)
        return _drop(table, matched, self.reason, table.column(_DETAIL)).select(self.schema.names)


class _DropInvalid:
    """Drop active rows whose value in any of ``columns`` is null, NaN or infinite.

    Values in ``counts`` (the columns of sum budgets) must also be whole
    and non-negative: a budget cannot count a negative or fractional size.
    """

    def __init__(self, columns: list[str], counts: list[str] | None = None) -> None:
        self.columns = columns
        self.counts = counts or []

    def __call__(self, table: pa.Table) -> pa.Table:
        for column in self.columns:
            bad = ~finite_rows(table.column(column))
            if bad.any():
                table = _drop(table, bad, R.INVALID_SCORE, f"{column} is null, NaN or infinite")
        for column in self.counts:
            bad = ~countable_rows(table.column(column))
            if bad.any():
                table = _drop(
                    table,
                    bad,
                    R.INVALID_SCORE,
                    f"{column} is null, NaN, negative or fractional (a budget counts it)",
                )
        return table


def countable_rows(column: pa.ChunkedArray | pa.Array) -> NDArray[np.bool_]:
    """True where a sum budget can count the value: present, finite, whole and >= 0."""
    from thresher.selectors.base import valid_counts

    present = np.asarray(pc.is_valid(column), dtype=bool)
    try:
        numeric = np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64)
    except (TypeError, ValueError):
        return np.zeros(len(column), dtype=bool)
    return present & valid_counts(np.where(present, numeric, 0.0))


def finite_rows(column: pa.ChunkedArray | pa.Array) -> NDArray[np.bool_]:
    """True where a score (or every element of an embedding) is present and finite."""
    if is_vector_type(column.type):
        return valid_vectors(column)
    values = column.to_numpy(zero_copy_only=False)
    try:
        numeric = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        return np.asarray(pc.is_valid(column), dtype=bool)
    return np.isfinite(numeric)


class _ApplyMarks:
    """A step's rule on the active rows: the others keep; the rest drop with the step's reason."""

    def __init__(self, marks: Marks, reason: str, detail: str, final: bool) -> None:
        self.marks = marks
        self.reason = reason
        self.detail = detail
        self.final = final

    def __call__(self, table: pa.Table) -> pa.Table:
        active = _active(table)
        if not active.any():
            return table
        rows = np.flatnonzero(active)
        chosen = table.take(pa.array(rows))
        keep, weight, group = self.marks(chosen)
        dropped = np.zeros(table.num_rows, dtype=bool)
        dropped[rows[~keep]] = True
        own = self.marks.reasons(chosen) if not keep.all() else None
        if own is None:
            table = _drop(table, dropped, self.reason, self.detail)
        else:  # the rule's reason per row, prefixed as the step's would be
            wrap = R.not_selected if self.final else R.filtered
            reasons = [self.reason if r is None else wrap(r) for r in own[0].to_pylist()]
            table = _drop(
                table,
                dropped,
                _spread(pa.array(reasons, pa.string()), rows, table.num_rows),
                _spread(own[1], rows, table.num_rows),
            )
        if self.final:
            table = _set_kept(table, rows[keep], weight[keep], group[keep])
        return table


def _spread(values: pa.Array, rows: NDArray[np.int64], n: int) -> pa.Array:
    """``values`` (one per row of ``rows``) at those positions of ``n`` rows, null elsewhere."""
    positions = np.full(n, len(values), dtype=np.int64)  # one past the end: null
    positions[rows] = np.arange(len(rows))
    return pa.concat_arrays([values, pa.nulls(1, values.type)]).take(pa.array(positions))


class _ApplyKept:
    """A step's kept rows (joined in as weight/group columns) on the active rows."""

    def __init__(self, reason: str, detail: str, final: bool, schema: pa.Schema) -> None:
        self.reason = reason
        self.detail = detail
        self.final = final
        self.schema = schema

    def __call__(self, table: pa.Table) -> pa.Table:
        kept = np.asarray(pc.is_valid(table.column(_WEIGHT)), dtype=bool)
        table = _drop(table, ~kept, self.reason, self.detail)
        if self.final:
            rows = np.flatnonzero(kept & _active(table))
            weights = table.column(_WEIGHT).to_numpy(zero_copy_only=False)[rows]
            groups = table.column(_GROUP).to_numpy(zero_copy_only=False)[rows]
            table = _set_kept(table, rows, weights, groups)
        return table.select(self.schema.names)


def _set_kept(
    table: pa.Table, rows: NDArray[np.int64], weights: NDArray[Any], groups: NDArray[Any]
) -> pa.Table:
    weight = table.column("weight").to_numpy().copy()
    group = table.column("group").to_numpy().copy()
    weight[rows] = np.asarray(weights, dtype=np.float64)
    group[rows] = np.asarray(groups, dtype=np.int64)
    table = _set(table, "weight", pa.array(weight))
    return _set(table, "group", pa.array(group))


# -- repeat counts (selectors that upsample: thresher.io.schema.REPEAT) ------------------


class _SetRepeats:
    """The final step's repeat count (its marks' ``repeats``) on the rows it kept."""

    def __init__(self, marks: Marks) -> None:
        self.marks = marks

    def __call__(self, table: pa.Table) -> pa.Table:
        rows = np.flatnonzero(_active(table))
        if rows.size == 0:
            return table
        counts = np.asarray(self.marks.repeats(table.take(pa.array(rows))), dtype=np.int64)
        if np.any(counts < 1):
            raise AssertionError("a kept row must be used at least once (repeat >= 1)")
        repeat = table.column(S.REPEAT).to_numpy().copy()
        repeat[rows] = counts
        return _set(table, S.REPEAT, pa.array(repeat, pa.int64()))


# -- the pipeline --------------------------------------------------------------------------


def decide(
    rows: Frame,
    spec: SelectionSpec,
    engine: Engine,
    shard_names: dict[int, str],
    duplicates: Frame | None,
    contaminated: Frame | None = None,
) -> tuple[Frame, list[dict[str, Any]]]:
    """Decide every row (see module docstring); returns the rows with decisions, and step details.

    ``rows`` has ``id``, positions, ``thresher_order``, the label and the
    columns the steps read; ``duplicates`` (the non-keepers of the dedup
    clusters: ``thresher_order`` and their detail) is None without dedup;
    ``contaminated`` (the same columns for the rows sharing an n-gram with
    an evaluation set) is None without decontamination.
    """
    schema = pa.schema([*rows.schema, *DECISION_FIELDS])
    start = rows.map_batches(_Start(), schema).cache()
    frame = _dropped_before_steps(start, schema, shard_names, duplicates, contaminated)
    read: list[str] = []
    for step, selector in spec.steps:
        read += selector.score_columns()
        if needs_vectors(step, selector):
            read.append(step.embeddings)
    checked = [c for c in dict.fromkeys(read) if c in schema.names]
    counted = [c for c in sum_budget_columns(list(spec.steps)) if c in schema.names]
    frame = frame.map_batches(_DropInvalid(checked, counted), schema).cache()
    frame.count()  # computed once, so that the start rows can be let go
    start.release()
    details: list[dict[str, Any]] = []
    for number in range(len(spec.steps)):
        frame, step_details = _decide_step(frame, schema, spec, number, engine)
        details.append(step_details)
    return frame, details


def _dropped_before_steps(
    start: Frame,
    schema: pa.Schema,
    shard_names: dict[int, str],
    duplicates: Frame | None,
    contaminated: Frame | None,
) -> Frame:
    """The rows with the drops that come before any step: contaminated, repeated ids, duplicates."""
    repeated = start.select([S.ID, S.ORDER, S.SHARD, S.ROW]).map_groups(
        [S.ID], _FirstOfId(shard_names), _DUPLICATE_SCHEMA
    )
    frame = start
    if contaminated is not None:
        frame = frame.join(contaminated, [S.ORDER], "left").map_batches(
            _DropJoined(R.CONTAMINATED, schema), schema
        )
    frame = frame.join(repeated, [S.ORDER], "left").map_batches(
        _DropJoined(R.DUPLICATE_ID, schema), schema
    )
    if duplicates is not None:
        frame = frame.join(duplicates, [S.ORDER], "left").map_batches(
            _DropJoined(R.DUPLICATE, schema), schema
        )
    return frame


def _decide_step(
    frame: Frame, schema: pa.Schema, spec: SelectionSpec, number: int, engine: Engine
) -> tuple[Frame, dict[str, Any]]:
    """Apply step ``number`` to the rows still active; the new frame and the step's details."""
    step, selector = spec.steps[number]
    final = number == len(spec.steps) - 1
    if final and step.mixture is not None:
        return _decide_mixture(frame, schema, spec, number, engine)
    label = step_label(step, selector)
    reason = R.not_selected(label) if final else R.filtered(label)
    active = frame.map_batches(_Active(), schema)
    rows_in = active.count()
    random_state = np.random.default_rng([spec.seed, number])
    with timed("selector"):  # benchmarks only (thresher.profiling); free when off
        if step.partitions is None and isinstance(selector, FrameSelector):
            marks = selector.select_frame(active, step.selector_budget(), random_state=random_state)
            chosen = frame.map_batches(_ApplyMarks(marks, reason, describe(step), final), schema)
            if final and selector.defines_repeats:
                chosen = chosen.map_batches(_SetRepeats(marks), schema)
            step_details = marks.details
        else:
            kept, step_details = _kept_rows(
                active,
                rows_in,
                spec.seed,
                number,
                step,
                selector,
                engine,
                random_state,
                step.selector_budget(),
            )
            joined = frame.join(_as_kept_columns(kept), [S.ORDER], "left")
            chosen = joined.map_batches(_ApplyKept(reason, describe(step), final, schema), schema)
        chosen = chosen.cache()
        survivors = chosen.map_batches(_Active(), schema).count()
    frame.release()
    return chosen, {
        "step": label,
        "role": "selector" if final else "filter",
        "params": step.params,
        "budget": step.budget_json(),
        "rows_in": int(rows_in),
        "kept": int(survivors),
        "details": step_details,
    }


_KEPT_COLUMNS = pa.schema(
    [pa.field(S.ORDER, pa.int64()), pa.field(_WEIGHT, pa.float64()), pa.field(_GROUP, pa.int64())]
)


def _as_kept_columns(kept: Frame) -> Frame:
    return kept.map_batches(
        lambda t: pa.table(
            {S.ORDER: t.column(S.ORDER), _WEIGHT: t.column("weight"), _GROUP: t.column("group")},
            schema=_KEPT_COLUMNS,
        ),
        _KEPT_COLUMNS,
    )


def _kept_rows(
    active: Frame,
    rows_in: int,
    seed: int,
    number: int,
    step: SelectorConfig,
    selector: Selector,
    engine: Engine,
    random_state: np.random.Generator,
    budget: Budget | None,
) -> tuple[Frame, dict[str, Any]]:
    """The kept rows of an embedding step: per partition, or gathered on the driver.

    ``budget`` is the step's (or, in a mixture, the group's); ``seed`` and
    ``number`` seed the partitions and the diversity samples. The details
    get the kept rows' ``diversity`` (:mod:`thresher.stages.diversity`).
    """
    label = [S.LABEL] if S.LABEL in active.schema.names else []
    summed = [budget.column] if isinstance(budget, SumBudget) else []
    columns = tuple(dict.fromkeys([*selector.score_columns(), *label, *summed]))
    if budget is not None and not isinstance(budget, SumBudget):
        budget = resolve_budget(budget, rows_in, selector=step.name)
    if step.partitions is not None:
        job = PartitionJob(
            selector=selector,
            budget=budget,
            clusters=step.partitions.clusters,
            sample=step.partitions.sample,
            iterations=step.partitions.iterations,
            seed=seed,
            step=number,
            embeddings=step.embeddings,
            columns=columns,
        )
        kept, details = select_partitioned(active, job, rows_in)
        n_kept = sum(cluster["selected"] for cluster in details["clusters"])
        diversity = frame_diversity(
            active, kept, rows_in, n_kept, step.embeddings, diversity_seed(seed, number)
        )
        return kept, {**details, "diversity": diversity}
    needed = list(dict.fromkeys([S.ID, S.ORDER, *columns, step.embeddings]))
    try:
        table = active.select(needed).to_table(max_rows=engine.driver_max_rows)
    except ValueError as error:
        raise ValueError(
            f"{step.name}: {error}; add `partitions` to this step to run it where the data is"
        ) from None
    table = table.sort_by(S.ORDER)
    matrix = (
        vector_matrix(table.column(step.embeddings), step.embeddings) if table.num_rows else None
    )
    chosen = selector.select(
        table.drop_columns([step.embeddings]), matrix, budget, random_state=random_state
    )
    kept = pa.table(
        {
            S.ORDER: pa.array(table.column(S.ORDER).to_numpy()[chosen.indices], pa.int64()),
            "weight": pa.array(chosen.weights, pa.float64()),
            "group": pa.array(chosen.groups, pa.int64()),
        },
        schema=KEPT_SCHEMA,
    )
    diversity = table_diversity(table, matrix, chosen.indices, diversity_seed(seed, number))
    return engine.from_table(kept), {**chosen.details, "diversity": diversity}


# -- mixtures (thresher.stages.mixture) ----------------------------------------------------

_REPEAT = "_thresher_repeat"
_MIXTURE_KEPT = pa.schema([*_KEPT_COLUMNS, pa.field(_REPEAT, pa.int64())])


class _DropUngrouped:
    """Drop the active rows no share covers (a null group, a group without a share)."""

    def __init__(self, ungrouped: M.Ungrouped, reason: str) -> None:
        self.ungrouped = ungrouped
        self.reason = reason

    def __call__(self, table: pa.Table) -> pa.Table:
        rows, detail = self.ungrouped(table)
        return _drop(table, rows, self.reason, detail)


class _AsMixtureKept:
    """A group's kept rows (``KEPT_SCHEMA``) as the mixture's columns, each used ``copies`` times."""

    def __init__(self, copies: int) -> None:
        self.copies = copies

    def __call__(self, table: pa.Table) -> pa.Table:
        n = table.num_rows
        return pa.table(
            {
                S.ORDER: table.column(S.ORDER),
                _WEIGHT: table.column("weight"),
                _GROUP: table.column("group"),
                _REPEAT: pa.array(np.full(n, self.copies, dtype=np.int64)),
            },
            schema=_MIXTURE_KEPT,
        )


class _ApplyMixtureKept:
    """The mixture's kept rows of an embedding selector (joined in), and its groups' base copies."""

    def __init__(
        self, reason: str, detail: str, schema: pa.Schema, column: str, bases: dict[str, int]
    ) -> None:
        self.reason = reason
        self.detail = detail
        self.schema = schema
        self.column = column
        self.bases = bases

    def __call__(self, table: pa.Table) -> pa.Table:
        chosen = np.asarray(pc.is_valid(table.column(_WEIGHT)), dtype=bool)
        base = M.base_copies(table, self.column, self.bases)
        table = _drop(table, ~(chosen | (base >= 1)), self.reason, self.detail)
        rows = np.flatnonzero(_active(table))
        if rows.size:
            mine = chosen[rows]
            weights = table.column(_WEIGHT).to_numpy(zero_copy_only=False)[rows]
            groups = table.column(_GROUP).to_numpy(zero_copy_only=False)[rows]
            copies = table.column(_REPEAT).to_numpy(zero_copy_only=False)[rows]
            table = _set_kept(
                table,
                rows,
                np.where(mine, weights, 1.0),
                np.where(mine, groups, -1),
            )
            repeat = table.column(S.REPEAT).to_numpy().copy()
            repeat[rows] = np.where(mine, copies, base[rows]).astype(np.int64)
            table = _set(table, S.REPEAT, pa.array(repeat, pa.int64()))
        return table.select(self.schema.names)


def _decide_mixture(
    frame: Frame, schema: pa.Schema, spec: SelectionSpec, number: int, engine: Engine
) -> tuple[Frame, dict[str, Any]]:
    """The final step with a mixture (:mod:`thresher.stages.mixture`); the frame and details."""
    step, selector = spec.steps[number]
    mixture = step.mixture
    column = spec.mixture_column
    assert mixture is not None and column is not None
    M.check_group_column(schema, column, mixture.by)
    label = step_label(step, selector)
    reason = R.not_selected(label)
    budget = step.selector_budget()
    assert budget is not None  # the config refuses a mixture without one
    rows_in = frame.map_batches(_Active(), schema).count()
    unit, total = M.mixture_total(budget, rows_in)
    sizes = budget.column if isinstance(budget, SumBudget) else None
    ungrouped = M.Ungrouped(column, mixture.by, mixture.shares)
    grouped = frame.map_batches(_DropUngrouped(ungrouped, reason), schema).cache()
    active = grouped.map_batches(_Active(), schema)
    available = active.aggregate(M.GroupTotals(column, sizes), M.add_totals)
    every = M.plan_mixture(mixture.shares, available, total, mixture.max_repeat)
    plans = [p for p in every if p.share > 0]  # the others' rows were dropped above
    per_group: dict[str, Any] = {}
    with timed("selector"):
        if step.partitions is None and isinstance(selector, FrameSelector):
            parts: dict[str, tuple[Marks | None, int]] = {}
            for plan in plans:
                marks = None
                within = M.group_budget(plan, budget)
                if within is not None:
                    rows = active.map_batches(M.InGroup(column, plan.group), schema)
                    marks = selector.select_frame(
                        rows,
                        within,
                        random_state=M.group_random_state(spec.seed, number, plan.index),
                    )
                    per_group[plan.group] = marks.details
                parts[plan.group] = (marks, plan.base)
            rule = M.MixtureMarks(column, parts, per_group)
            chosen = grouped.map_batches(
                _ApplyMarks(rule, reason, describe(step), True), schema
            ).map_batches(_SetRepeats(rule), schema)
        else:
            kept = engine.from_table(_MIXTURE_KEPT.empty_table())
            for plan in plans:
                within = M.group_budget(plan, budget)
                if within is None:
                    continue
                rows = active.map_batches(M.InGroup(column, plan.group), schema)
                group_kept, per_group[plan.group] = _kept_rows(
                    rows,
                    rows.count(),
                    seed_material(spec.seed, number, plan.index),
                    number,
                    step,
                    selector,
                    engine,
                    M.group_random_state(spec.seed, number, plan.index),
                    within,
                )
                kept = kept.union(
                    group_kept.map_batches(_AsMixtureKept(plan.base + 1), _MIXTURE_KEPT)
                )
            bases = {p.group: p.base for p in plans}
            chosen = grouped.join(kept, [S.ORDER], "left").map_batches(
                _ApplyMixtureKept(reason, describe(step), schema, column, bases), schema
            )
        chosen = chosen.cache()
        survivors = chosen.map_batches(_Active(), schema).count()
    grouped.release()
    frame.release()
    achieved = chosen.aggregate(M.KeptByGroup(column, sizes, S.REPEAT), M.add_kept)
    details = {
        "mixture": M.mixture_details(
            mixture.by, unit, sizes, total, mixture.max_repeat, every, achieved
        ),
        "groups": per_group,
    }
    return chosen, {
        "step": label,
        "role": "selector",
        "params": step.params,
        "budget": step.budget_json(),
        "rows_in": int(rows_in),
        "kept": int(survivors),
        "details": details,
    }
