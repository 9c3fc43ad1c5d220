"""Budgets: how much a selector keeps, in every form a config, the CLI or the API writes it.

A :data:`Budget` is what selectors take:

- a **count** (``int >= 0``): that many rows, capped at the rows there are;
- a **fraction** (``float`` in ``(0, 1]``) of the rows, rounded half up;
- a **sum** (:class:`SumBudget`): rows whose column (tokens) sums to at most
  a total (``int > 0``).

Written forms: a number (``1000``, ``0.3``, or the same as text, as YAML
reads ``1e3``), ``{tokens: N}`` (shorthand for ``{sum: token_count,
total: N}``), ``{sum: <column>, total: N}``; on the command line
``1000``, ``0.3``, ``tokens=N`` and ``COLUMN=N``. :func:`parse_budget`
turns any of them into a :data:`Budget` (the config and the API),
:func:`budget_from_text` turns command-line text into the config's form,
:func:`resolve_budget` resolves a count or a fraction into rows for a selector
called directly (:func:`resolve_copies` into row copies for a selector with
repeat counts), and :func:`budget_json` writes a budget back (statistics,
the manifest).

A selector that repeats rows (upsampling: each kept row carries a
``repeat`` count, :data:`thresher.io.schema.REPEAT`) spends its budget on
copies: a kept row counts ``repeat`` times against a count or a fraction,
and ``repeat`` times its size against a :class:`SumBudget`. Every kept sum
thresher reports (statistics, the manifest) counts ``repeat x size`` too. The rules live here alone; the config (and the API) and a
selector called directly word a refused budget in their own long-standing
terms (:data:`_CONFIG_MESSAGES`, :data:`_SELECTOR_MESSAGES`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from thresher.io.schema import TOKEN_COLUMN as TOKEN_COLUMN  # where it used to be

_TEXT_FORMS = (
    "a count (e.g. 1000), a fraction (e.g. 0.3), tokens=N or COLUMN=N (a sum of that column)"
)

#: What is wrong with a count or a fraction (see :func:`_problem`).
Problem = Literal["boolean", "kind", "negative", "fraction"]

#: The config's and the API's words for each problem (the value fills ``{value}``).
_CONFIG_MESSAGES: dict[Problem, str] = {
    "boolean": "budget must be a count or a fraction, not a boolean",
    "kind": (
        "budget must be a count (int), a fraction (float), {{tokens: N}} or "
        "{{sum: <column>, total: N}}; got {value!r}"
    ),
    "negative": "a count budget must be >= 0, got {value}",
    "fraction": "a fraction budget must be in (0, 1], got {value}",
}
#: A selector's words for each problem (a selector called directly, after its name).
_SELECTOR_MESSAGES: dict[Problem, str] = {
    "boolean": "budget must be an int count or a float fraction, got {value!r}",
    "kind": "budget must be an int count or a float fraction, got {value!r}",
    "negative": "budget must be >= 0, got {value}",
    "fraction": "a fraction budget must be in (0, 1], got {value}",
}


@dataclass(frozen=True)
class SumBudget:
    """A budget on the sum of a column (tokens, bytes) instead of a number of rows.

    Every budgeted selector meets it by one rule: **take rows in the
    selector's own order (its rank, priority, greedy or sampling order) and
    stop before the first row that would make the running sum exceed**
    ``total``. The kept sum is never over the total, and the shortfall is
    less than the size of the row that stopped the selection. A row that
    the selector repeats (its ``repeat`` count, :data:`thresher.io.schema.REPEAT`)
    counts ``repeat`` times its size. Stratified
    and partitioned selection first split ``total`` across their groups
    (classes, strata, partitions) by the groups' sums, then apply the rule
    within each group.

    Attributes
    ----------
    column : str
        A column of whole, non-negative counts (``token_count`` for tokens).
        Rows whose value is null, NaN, infinite, negative or fractional are
        refused by the selectors; the pipeline drops them first as ``invalid_score``.
    total : int
        The largest sum to keep (> 0).
    """

    column: str
    total: int

    def __post_init__(self) -> None:
        if not _is_column(self.column):
            raise ValueError(f"a sum budget needs a column name, got {self.column!r}")
        if not _is_whole(self.total, numpy=True):
            raise ValueError(f"a sum budget's total must be an int, got {self.total!r}")
        if self.total <= 0:
            raise ValueError(f"a sum budget's total must be > 0, got {self.total}")

    def describe(self) -> dict[str, Any]:
        """The budget as JSON data (statistics, manifest): ``{"sum": column, "total": N}``."""
        return {"sum": self.column, "total": int(self.total)}


#: What a selector takes as its budget.
Budget = int | float | SumBudget


def _is_column(value: Any) -> bool:
    """A sum budget's column: a non-empty string."""
    return isinstance(value, str) and bool(value)


def _is_whole(value: Any, *, numpy: bool) -> bool:
    """An int (a numpy integer too with ``numpy``), not a boolean."""
    kinds = (int, np.integer) if numpy else (int,)
    return not isinstance(value, bool) and isinstance(value, kinds)


def _problem(value: Any, *, numpy: bool) -> Problem | None:
    """What is wrong with ``value`` as a count (int >= 0) or a fraction (float in (0, 1]).

    The one rule for row budgets. ``numpy``: numpy integers and floats
    count too (a selector called directly); the config takes Python numbers.
    """
    if isinstance(value, bool):
        return "boolean"
    if _is_whole(value, numpy=numpy):
        return "negative" if value < 0 else None
    if isinstance(value, (float, np.floating) if numpy else float):
        return None if 0.0 < value <= 1.0 else "fraction"
    return "kind"


def _number(text: str) -> int | float:
    """``text`` as a number: a float when it has a point or an exponent, else an int."""
    return float(text) if any(c in text for c in ".eE") else int(text)


def parse_budget(value: Any) -> Budget | None:
    """A budget from config or API data, in any of its forms (ValueError saying what is wrong).

    None stays None (a selector that defines its own size); a
    :class:`SumBudget` is taken as it is.
    """
    if value is None or isinstance(value, SumBudget):
        return value
    if isinstance(value, dict):
        return _sum_budget(value)
    if isinstance(value, str):  # a number written as text (YAML reads 1e3 as one)
        try:
            value = _number(value)
        except ValueError:
            raise ValueError(_CONFIG_MESSAGES["kind"].format(value=value)) from None
    problem = _problem(value, numpy=False)
    if problem is not None:
        raise ValueError(_CONFIG_MESSAGES[problem].format(value=value))
    return value


def _sum_budget(value: dict[str, Any]) -> SumBudget:
    """``{tokens: N}`` or ``{sum: column, total: N}`` as a SumBudget (ValueError naming the key)."""
    keys = set(value)
    if keys == {"tokens"}:
        column, total, field = TOKEN_COLUMN, value["tokens"], "tokens"
    elif keys == {"sum", "total"}:
        column, total, field = value["sum"], value["total"], "total"
    else:
        raise ValueError(
            f"a sum budget is {{tokens: N}} or {{sum: <column>, total: N}}; got keys {sorted(keys)}"
        )
    if not _is_column(column):
        raise ValueError(f"sum: must name a column, got {column!r}")
    if not _is_whole(total, numpy=False):
        raise ValueError(f"{field}: must be a whole number, got {total!r}")
    if total <= 0:
        raise ValueError(f"{field}: must be > 0, got {total}")
    return SumBudget(column, total)


def budget_from_text(text: str) -> int | float | dict[str, Any]:
    """The config value a command-line budget stands for (checked by :func:`parse_budget`).

    ``1000`` and ``0.3`` are numbers, ``tokens=N`` is ``{tokens: N}``,
    ``COLUMN=N`` is ``{sum: COLUMN, total: N}`` (``_`` may group digits).
    """
    try:
        if "=" in text:
            column, _, total = text.partition("=")
            value = int(total.replace("_", ""))
            column = column.strip()
            return {"tokens": value} if column == "tokens" else {"sum": column, "total": value}
        return _number(text)
    except ValueError:
        raise ValueError(f"must be {_TEXT_FORMS}, got {text!r}") from None


def resolve_budget(budget: Budget | None, n_rows: int, *, selector: str = "selector") -> int:
    """A count or a fraction as a number of rows, capped at ``n_rows``.

    A fraction rounds half up: 0.5 of 5 rows is 3. A :class:`SumBudget` has
    no row count (selectors resolve it from the sizes of their rows).
    """
    if isinstance(budget, SumBudget):
        raise ValueError(f"{selector}: a sum budget ({budget.column}) has no row count")
    if budget is None:
        raise ValueError(f"{selector}: a budget is required (a count or a fraction)")
    problem = _problem(budget, numpy=True)
    if problem is not None:
        raise ValueError(f"{selector}: " + _SELECTOR_MESSAGES[problem].format(value=budget))
    if isinstance(budget, int | np.integer):
        return int(min(budget, n_rows))
    return int(min(n_rows, math.floor(budget * n_rows + 0.5)))


def resolve_copies(budget: Budget | None, n_rows: int, *, selector: str = "selector") -> int:
    """A count or a fraction as a number of row copies, for a selector with repeat counts.

    A count is taken as it is: repeated rows may fill more copies than there
    are rows, so it is not capped at ``n_rows``. A fraction is of the
    ``n_rows`` rows, rounded half up as in :func:`resolve_budget`. The same
    refusals as :func:`resolve_budget`.
    """
    count = resolve_budget(budget, n_rows, selector=selector)
    if isinstance(budget, int | np.integer):
        return int(budget)
    return count


def budget_json(budget: Budget | None) -> Any:
    """A budget as JSON data: a number, ``{"sum": column, "total": N}`` or None."""
    return budget.describe() if isinstance(budget, SumBudget) else budget
