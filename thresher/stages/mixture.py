"""Mixtures: groups (sources) at target shares of one budget, the selector run within each group.

A selector with ``mixture: {by, shares, max_repeat}``
(:class:`thresher.config.MixtureConfig`) splits its budget across the
groups that the ``by`` column's values form, and runs within each group
alone. The rule:

- **Total.** The budget's total ``B``: tokens (the column's sum) for a sum
  budget, else rows: a count as it is, a fraction of the rows reaching the
  step rounded half up.
- **Targets.** Group ``g``'s target ``T_g`` is its share of ``B``, rounded
  by largest remainder (ties to the earlier group in sorted order) so that
  the targets sum to ``B`` exactly. ``A_g`` is what the group holds among
  the rows reaching the step, in the same unit.
- **A group that can meet its target** (``T_g <= A_g``): the selector
  chooses within the group with budget ``T_g`` (the same kind of budget);
  each chosen row is used once (``repeat`` 1).
- **A short group** (``T_g > A_g``): every row of the group is used
  ``full = min(max_repeat, floor(T_g / A_g))`` times. When ``full <
  max_repeat`` and ``R = T_g - full x A_g > 0`` remains, the selector
  chooses within the group with budget ``R``, and the rows it chooses are
  used ``full + 1`` times. When even ``max_repeat`` epochs fall short
  (``max_repeat x A_g < T_g``), every row is used ``max_repeat`` times and
  the shortfall ``T_g - max_repeat x A_g`` is reported; it is not given
  to the other groups (with ``max_repeat: 1`` a short group is capped).
- **Repeats.** Every kept row carries its count in the ``repeat`` column
  (:data:`thresher.io.schema.REPEAT`): the published dataset keeps it and
  every kept sum counts ``repeat x size``. A group's achieved amount is
  the sum of ``repeat x size`` (rows: of ``repeat``) of its kept rows: its
  target, short by less than one document (a sum budget stops before the
  first row that would pass it), or its reported shortfall. A selector
  that splits its budget itself (strata, classes with ``by_label``,
  ``partitions``) falls short by less than one document per such part, as
  it does without a mixture.
- **Drops.** A group's rows the selector does not choose drop with the
  step's ``not_selected:<label>``; so do rows whose group has no share (or
  share 0), with the detail ``mixture: group <g> has no share``, and rows
  whose ``by`` value is null (``mixture: <by> is null``).
- **Independence.** Within a group the selector sees that group's rows
  alone and draws from ``(seed, step, group index)``, the index in the
  sorted order of the groups named in ``shares``: a group's choice does
  not depend on the other groups, the engine or the number of cores.

Groups are the ``by`` values written as text: strings, or integers
(``shares`` names ``7`` as ``"7"``). This module holds the rule's
arithmetic and the row-wise pieces; :mod:`thresher.stages.decide` runs it
on a frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

from thresher.budget import Budget, SumBudget, resolve_copies
from thresher.errors import ConfigError
from thresher.selectors.allocation import allocate
from thresher.selectors.base import Marks

#: The unit of a mixture's total: a sum budget's column, or rows.
TOKENS, ROWS = "tokens", "rows"


@dataclass(frozen=True)
class GroupPlan:
    """One group's part of a mixture (see module docstring).

    Attributes
    ----------
    group : str
        The group's value as text.
    index : int
        Its place in the sorted groups of ``shares`` (its random stream).
    share : float
        Requested share of the total.
    target, available : int
        ``T_g`` and ``A_g`` in the mixture's unit.
    base : int
        Copies every row of the group gets (0: only the rows the selector chooses are kept).
    budget : int
        What the selector chooses within the group (rows or the column's sum),
        each chosen row used ``base + 1`` times; 0: the selector does not run.
    shortfall : int
        ``T_g - max_repeat x A_g`` when positive, else 0.
    """

    group: str
    index: int
    share: float
    target: int
    available: int
    base: int
    budget: int
    shortfall: int


def mixture_total(budget: Budget, rows_in: int) -> tuple[str, int]:
    """The unit and total ``B`` of a mixture's budget, for ``rows_in`` rows reaching the step."""
    if isinstance(budget, SumBudget):
        return TOKENS, int(budget.total)
    return ROWS, resolve_copies(budget, rows_in, selector="mixture")


def targets(shares: list[float], total: int) -> NDArray[np.int64]:
    """Each group's share of ``total``, by largest remainder: whole numbers summing to ``total``."""
    weights = np.asarray(shares, dtype=np.float64)
    return allocate(int(total), weights, np.full(weights.size, int(total), dtype=np.int64))


def plan_mixture(
    shares: dict[str, float], available: dict[str, int], total: int, max_repeat: int
) -> list[GroupPlan]:
    """Every group's target, repeats and selector budget (see module docstring), in sorted order."""
    groups = sorted(shares)
    wanted = targets([shares[g] for g in groups], total)
    plans = []
    for index, (group, target) in enumerate(zip(groups, wanted.tolist(), strict=True)):
        held = int(available.get(group, 0))
        base, budget, shortfall = _repeats(int(target), held, max_repeat)
        plans.append(
            GroupPlan(
                group, index, float(shares[group]), int(target), held, base, budget, shortfall
            )
        )
    return plans


def _repeats(target: int, held: int, max_repeat: int) -> tuple[int, int, int]:
    """``(base, budget, shortfall)`` of a group with ``target`` and ``held`` (same unit)."""
    if target <= held:
        return 0, target, 0
    full = max_repeat if held == 0 else min(max_repeat, target // held)
    rest = target - full * held
    if full < max_repeat and rest > 0:
        return full, rest, 0
    return full, 0, rest


def group_budget(plan: GroupPlan, budget: Budget) -> Budget | None:
    """The budget the selector gets within ``plan``'s group (None: it does not run there)."""
    if plan.budget <= 0:
        return None
    if isinstance(budget, SumBudget):
        return SumBudget(budget.column, plan.budget)
    return int(plan.budget)


def group_random_state(seed: int, step: int, index: int) -> np.random.Generator:
    """The random stream of the group at ``index``: from ``(seed, step, index)`` only."""
    return np.random.default_rng([seed, step, index])


# -- the group column -----------------------------------------------------------------------


def check_group_column(schema: pa.Schema, column: str, by: str) -> None:
    """Refuse a ``by`` column that is missing or holds neither strings nor integers."""
    if column not in schema.names:
        raise ConfigError(
            f"selector.mixture.by: column {by!r} not found; available: {sorted(schema.names)}"
        )
    kind = schema.field(column).type
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    if not (
        pa.types.is_integer(kind) or pa.types.is_string(kind) or pa.types.is_large_string(kind)
    ):
        raise ConfigError(
            f"selector.mixture.by: column {by!r} holds {kind}; groups are strings or integers"
        )


def group_keys(table: pa.Table, column: str) -> pa.Array:
    """Each row's group as text (null where the value is null)."""
    values = table.column(column).combine_chunks()
    if pa.types.is_dictionary(values.type):
        values = values.dictionary_decode()
    return pc.cast(values, pa.string())


def _positions(keys: pa.Array, groups: list[str]) -> NDArray[np.int64]:
    """Each key's position in ``groups``; -1 for a null key or one not among them."""
    found = pc.index_in(keys, value_set=pa.array(groups, pa.string()))
    return np.asarray(pc.fill_null(found, -1).to_numpy(zero_copy_only=False), dtype=np.int64)


class Ungrouped:
    """Rows no share covers: a null ``by`` value, or a group without a positive share.

    Called on a table, gives a mask of those rows and each one's detail.
    """

    def __init__(self, column: str, by: str, shares: dict[str, float]) -> None:
        self.column = column
        self.by = by
        self.groups = sorted(g for g, share in shares.items() if share > 0)

    def __call__(self, table: pa.Table) -> tuple[NDArray[np.bool_], pa.Array]:
        keys = group_keys(table, self.column)
        outside = _positions(keys, self.groups) < 0
        no_share = pc.binary_join_element_wise(
            pa.scalar("mixture: group "), keys, pa.scalar(" has no share"), ""
        )
        detail = pc.if_else(pc.is_null(keys), pa.scalar(f"mixture: {self.by} is null"), no_share)
        return outside, detail


class InGroup:
    """The rows of one group (a ``map_batches`` filter)."""

    def __init__(self, column: str, group: str) -> None:
        self.column = column
        self.group = group

    def __call__(self, table: pa.Table) -> pa.Table:
        keys = group_keys(table, self.column)
        return table.filter(pc.fill_null(pc.equal(keys, pa.scalar(self.group)), False))


class GroupTotals:
    """Per group: its rows, or the sum of ``sizes`` (an aggregate's partial; see :func:`add_totals`)."""

    def __init__(self, column: str, sizes: str | None) -> None:
        self.column = column
        self.sizes = sizes

    def __call__(self, table: pa.Table) -> dict[str, int]:
        keys = np.asarray(group_keys(table, self.column).to_numpy(zero_copy_only=False), object)
        if self.sizes is None:
            amounts = np.ones(table.num_rows, dtype=np.int64)
        else:
            raw = table.column(self.sizes).to_numpy(zero_copy_only=False)
            amounts = np.asarray(raw, dtype=np.float64).astype(np.int64)  # whole (checked)
        out: dict[str, int] = {}
        for group in set(keys.tolist()) - {None}:
            out[str(group)] = int(amounts[keys == group].sum())
        return out


def add_totals(parts: list[dict[str, int]]) -> dict[str, int]:
    merged: dict[str, int] = {}
    for part in parts:
        for group, amount in part.items():
            merged[group] = merged.get(group, 0) + amount
    return merged


# -- the decision -----------------------------------------------------------------------------


class MixtureMarks(Marks):
    """The per-group marks of a frame selector as one rule (see module docstring).

    ``parts`` maps each group with a share to (the selector's marks within
    it, or None where it does not run; the copies every row of the group
    gets). A row is kept when the selector chooses it or its group's base
    is >= 1; its repeat is the base, plus one when chosen.
    """

    def __init__(
        self, column: str, parts: dict[str, tuple[Marks | None, int]], details: dict[str, Any]
    ) -> None:
        self.column = column
        self.parts = parts
        self.groups = sorted(parts)
        self.details = details

    def _chosen(
        self, table: pa.Table
    ) -> tuple[NDArray[np.bool_], NDArray[np.float64], NDArray[np.int64], NDArray[np.int64]]:
        """Per row: chosen by the selector, weight, group, and the group's base copies."""
        position = _positions(group_keys(table, self.column), self.groups)
        n = table.num_rows
        chosen = np.zeros(n, dtype=bool)
        weight = np.ones(n)
        group = np.full(n, -1, dtype=np.int64)
        base = np.zeros(n, dtype=np.int64)
        for i, name in enumerate(self.groups):
            rows = np.flatnonzero(position == i)
            if rows.size == 0:
                continue
            marks, copies = self.parts[name]
            base[rows] = copies
            if marks is None:
                continue
            keep, weights, groups = marks(table.take(pa.array(rows)))
            chosen[rows] = keep
            weight[rows] = np.where(keep, weights, 1.0)
            group[rows] = np.where(keep, groups, -1)
        return chosen, weight, group, base

    def __call__(
        self, table: pa.Table
    ) -> tuple[NDArray[np.bool_], NDArray[np.float64], NDArray[np.int64]]:
        chosen, weight, group, base = self._chosen(table)
        return chosen | (base >= 1), weight, group

    def repeats(self, table: pa.Table) -> NDArray[np.int64]:
        chosen, _, _, base = self._chosen(table)
        return base + chosen.astype(np.int64)


def base_copies(table: pa.Table, column: str, bases: dict[str, int]) -> NDArray[np.int64]:
    """Per row: the copies its group gives every row (0 for a group not in ``bases``)."""
    groups = sorted(bases)
    position = _positions(group_keys(table, column), groups)
    per_group = np.array([bases[g] for g in groups] + [0], dtype=np.int64)
    return per_group[position]  # -1 (no group) reads the trailing 0


# -- what was achieved ----------------------------------------------------------------------


class KeptByGroup:
    """Per group, over the kept rows: ``[rows, largest repeat, sum of repeat x size]``.

    An aggregate's partial (:func:`add_kept`); ``sizes`` None counts rows.
    A row is kept when it has no reason.
    """

    def __init__(self, column: str, sizes: str | None, repeat: str) -> None:
        self.column = column
        self.sizes = sizes
        self.repeat = repeat

    def __call__(self, table: pa.Table) -> dict[str, list[int]]:
        kept = np.asarray(pc.is_null(table.column("reason")), dtype=bool)
        table = table.filter(pa.array(kept))
        keys = np.asarray(group_keys(table, self.column).to_numpy(zero_copy_only=False), object)
        repeat = np.asarray(table.column(self.repeat).to_numpy(zero_copy_only=False), np.int64)
        if self.sizes is None:
            amount = repeat
        else:
            raw = table.column(self.sizes).to_numpy(zero_copy_only=False)
            amount = repeat * np.asarray(raw, dtype=np.float64).astype(np.int64)
        out: dict[str, list[int]] = {}
        for group in set(keys.tolist()) - {None}:
            mine = keys == group
            out[str(group)] = [int(mine.sum()), int(repeat[mine].max()), int(amount[mine].sum())]
        return out


def add_kept(parts: list[dict[str, list[int]]]) -> dict[str, list[int]]:
    merged: dict[str, list[int]] = {}
    for part in parts:
        for group, (rows, largest, amount) in part.items():
            before = merged.get(group, [0, 0, 0])
            merged[group] = [before[0] + rows, max(before[1], largest), before[2] + amount]
    return merged


def mixture_details(
    by: str,
    unit: str,
    column: str | None,
    total: int,
    max_repeat: int,
    plans: list[GroupPlan],
    kept: dict[str, list[int]],
) -> dict[str, Any]:
    """The step's ``mixture`` details: the request, and per group what was achieved."""
    achieved_total = sum(kept.get(p.group, [0, 0, 0])[2] for p in plans)
    groups = []
    for plan in plans:
        rows, largest, achieved = kept.get(plan.group, [0, 0, 0])
        groups.append(
            {
                "group": plan.group,
                "share": plan.share,
                "target": plan.target,
                "available": plan.available,
                "kept_rows": rows,
                "repeat_max": largest,
                "achieved": achieved,
                "achieved_share": achieved / achieved_total if achieved_total else 0.0,
                "shortfall": plan.shortfall,
            }
        )
    return {
        "by": by,
        "unit": unit,
        **({"column": column} if column is not None else {}),
        "total": int(total),
        "max_repeat": int(max_repeat),
        "groups": groups,
    }


def share_text(share: float) -> str:
    """A share as a percentage with 3 significant digits (``60%``, ``12.3%``)."""
    return f"{share * 100:.3g}%" if math.isfinite(share) else "?"
