"""Many range rules in one filter step, each dropping with its own reason.

The heuristic rule sets of LLM pretraining data (Gopher quality and
repetition, C4, FineWeb) are lists of checks made in a fixed order: a
document is removed by the first check it fails, and that check is the
reason. ``rules`` evaluates every rule on a batch at once and keeps a row
when it lies within the bounds of every rule; a dropped row's reason is
``<preset>.<rule>`` of the *first* rule it fails (the stage writes it as
``filter:gopher.hash_word_ratio``), and its detail the value and the bound.

For the report, one aggregation over the rows that reach the step counts,
per rule: the rows failing it whatever the other rules say (``failing``),
the rows it drops, being the first failed (``dropped``: these add up to the
rows the step removes), and the rows failing it and no other rule
(``only``: what disabling that rule alone would bring back).

A NaN, infinite or missing value never reaches the rules in a run: the
decisions drop such a row as ``invalid_score`` before the filters, as for
every step (:mod:`thresher.stages.decide`); ``select`` refuses it.

References
----------
Rae et al., "Scaling Language Models: Methods, Analysis & Insights from
Training Gopher", 2021. Raffel et al., "Exploring the Limits of Transfer
Learning with a Unified Text-to-Text Transformer", JMLR 2020. Penedo et al.,
"The FineWeb Datasets: Decanting the Web for the Finest Text Data at
Scale", 2024.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from thresher._params import Constraints, ListOf, Mapping, Text
from thresher.frame import Frame
from thresher.selectors.base import Budget, FrameSelector, Marks, RandomState
from thresher.selectors.ranking import finite_values

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_RULE_KEYS = ("name", "score", "min", "max")
#: Per-rule counts of the report, in this order (columns of the count table).
COUNTS = ("failing", "dropped", "only")


@dataclass(frozen=True)
class RangeRule:
    """One rule: keep a row when ``min <= row[score] <= max`` (None: that side open)."""

    name: str
    score: str
    min: float | None
    max: float | None

    def bound(self, value: str = "x") -> str:
        """The kept range as people read it: ``50 <= x <= 100000``, ``x <= 0.1``, ``x >= 2``."""
        if self.min is not None and self.max is not None:
            return f"{_number(self.min)} <= {value} <= {_number(self.max)}"
        if self.min is not None:
            return f"{value} >= {_number(self.min)}"
        return f"{value} <= {_number(self.max)}"


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


def range_rule(given: dict[str, Any], owner: str = "rules") -> RangeRule:
    """A rule from its config mapping ``{name, score, min, max}``; ValueError naming the mistake."""
    unknown = sorted(set(given) - set(_RULE_KEYS))
    if unknown:
        raise ValueError(f"{owner}: unknown rule key(s) {unknown}; a rule has {list(_RULE_KEYS)}")
    name, score = given.get("name"), given.get("score")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"{owner}: a rule's `name` must be an identifier, got {name!r}")
    if not isinstance(score, str) or not score:
        raise ValueError(f"{owner}: rule {name!r} needs a `score` column, got {score!r}")
    low, high = given.get("min"), given.get("max")
    for side, value in (("min", low), ("max", high)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | float) or value != value
        ):
            raise ValueError(f"{owner}: rule {name!r}: `{side}` must be a number, got {value!r}")
    if low is None and high is None:
        raise ValueError(f"{owner}: rule {name!r}: give `min`, `max` or both")
    if low is not None and high is not None and low > high:
        raise ValueError(f"{owner}: rule {name!r}: min ({low}) is above max ({high})")
    return RangeRule(name, score, low, high)


class RulesSelector(FrameSelector):
    """Keep rows within the bounds of every rule; a dropped row's reason is its first failed rule.

    Parameters
    ----------
    rules : list of dict
        In order of checks, each ``{name, score, min, max}``: an identifier
        (the reason names it), the score column it reads, and inclusive
        bounds (either may be left out or null, not both).
    preset : str, optional
        The rule set's name (an identifier): reasons read ``<preset>.<rule>``
        and the step is labelled ``rules(<preset>)``. The config's
        ``{preset: gopher}`` filters fill both in (:mod:`thresher.presets`).
    """

    name: ClassVar[str] = "rules"
    requires_budget: ClassVar[bool] = False
    _parameter_constraints: ClassVar[dict[str, Constraints]] = {
        "rules": [ListOf(Mapping(), what="rules ({name, score, min, max})")],
        "preset": [Text(), None],
    }

    def __init__(self, rules: list[dict[str, Any]], preset: str | None = None) -> None:
        self.rules = rules
        self.preset = preset

    def _check_together(self) -> None:
        if self.preset is not None and not _NAME.match(self.preset):
            raise ValueError(f"rules: `preset` must be an identifier, got {self.preset!r}")
        names = [range_rule(rule).name for rule in self.rules]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"rules: rule name(s) {repeated} given twice")

    def range_rules(self) -> list[RangeRule]:
        """The rules, checked, in order."""
        return [range_rule(rule) for rule in self.rules]

    def score_columns(self) -> list[str]:
        return list(dict.fromkeys(str(rule.get("score")) for rule in self.rules))

    def label_columns(self) -> list[str]:
        if self.preset is not None:
            return [self.preset]
        return [str(rule.get("name")) for rule in self.rules]

    def select_frame(
        self, rows: Frame, budget: Budget | None = None, *, random_state: RandomState = None
    ) -> Marks:
        if budget is not None:
            raise ValueError("rules keeps every row within its bounds; leave its budget empty")
        self.validate_params()
        rules = self.range_rules()
        prefix = "" if self.preset is None else f"{self.preset}."
        marks = RuleMarks(rules, [f"{prefix}{rule.name}" for rule in rules])
        counts = rows.select(self.score_columns()).aggregate(marks.counts, _SumCounts(len(rules)))
        marks.details = {
            "preset": self.preset,
            "rules": [
                {
                    "rule": rule.name,
                    "reason": reason,
                    "score": rule.score,
                    "min": rule.min,
                    "max": rule.max,
                    "kept": rule.bound(),
                    **{key: int(n) for key, n in zip(COUNTS, counts[i], strict=True)},
                }
                for i, (rule, reason) in enumerate(zip(rules, marks.labels, strict=True))
            ],
        }
        return marks


class _SumCounts:
    """Add the count tables of the chunks (none: zeros); picklable, for any engine."""

    def __init__(self, n_rules: int) -> None:
        self.n_rules = n_rules

    def __call__(self, parts: list[NDArray[np.int64]]) -> NDArray[np.int64]:
        total = np.zeros((self.n_rules, len(COUNTS)), dtype=np.int64)
        for part in parts:
            total += part
        return total


class RuleMarks(Marks):
    """The rules applied row-wise; each dropped row's reason is the label of its first failed rule.

    ``labels[i]`` is rule ``i``'s name in reasons (``gopher.word_count``).
    """

    def __init__(self, rules: list[RangeRule], labels: list[str]) -> None:
        self.rules = rules
        self.labels = labels
        self.details: dict[str, Any] = {}

    def _values(self, table: pa.Table) -> list[NDArray[np.float64]]:
        return [finite_values(table, rule.score, "rules") for rule in self.rules]

    def _failures(self, values: list[NDArray[np.float64]], n: int) -> NDArray[np.bool_]:
        """Shape (rules, rows): whether each row fails each rule (the bounds are inclusive)."""
        fails = np.zeros((len(self.rules), n), dtype=bool)
        for i, (rule, column) in enumerate(zip(self.rules, values, strict=True)):
            if rule.min is not None:
                fails[i] |= column < rule.min
            if rule.max is not None:
                fails[i] |= column > rule.max
        return fails

    def __call__(
        self, table: pa.Table
    ) -> tuple[NDArray[np.bool_], NDArray[np.float64], NDArray[np.int64]]:
        n = table.num_rows
        keep = ~np.asarray(self._failures(self._values(table), n).any(axis=0), dtype=bool)
        return keep, np.ones(n), np.full(n, -1, dtype=np.int64)

    def reasons(self, table: pa.Table) -> tuple[pa.Array, pa.Array]:
        """Per row: its first failed rule (null where none fails), and the value against its bound."""
        values = self._values(table)
        fails = self._failures(values, table.num_rows)
        first = fails.argmax(axis=0)
        reasons: list[str | None] = [None] * table.num_rows
        details: list[str | None] = [None] * table.num_rows
        for row in np.flatnonzero(fails.any(axis=0)).tolist():
            i = int(first[row])
            rule = self.rules[i]
            reasons[row] = self.labels[i]
            details[row] = f"{rule.score}={values[i][row]:.6g}; kept: {rule.bound(rule.score)}"
        return pa.array(reasons, pa.string()), pa.array(details, pa.string())

    def counts(self, table: pa.Table) -> NDArray[np.int64]:
        """Shape (rules, 3): per rule, the rows ``failing`` it, it ``dropped`` first, failing ``only`` it."""
        fails = self._failures(self._values(table), table.num_rows)
        n_failed = fails.sum(axis=0)
        first = fails.argmax(axis=0)[n_failed > 0]
        counts = np.zeros((len(self.rules), len(COUNTS)), dtype=np.int64)
        counts[:, 0] = fails.sum(axis=1)
        counts[:, 1] = np.bincount(first, minlength=len(self.rules))
        counts[:, 2] = fails[:, n_failed == 1].sum(axis=1)
        return counts
