"""Values a parameter must refuse, shared by the conformance suites.

:func:`invalid_values` generates them from a parameter's declaration
(``_parameter_constraints``, :mod:`thresher._params`), as scikit-learn's
common tests do: for each constraint, the values just past its edges and
values of other kinds, worked out from what the constraint says (its bounds,
options, kind) rather than from its own check, so that a check that lets a
bad value through fails the suites. :func:`bad_value` is the older rule, a
value of the wrong kind for a given valid value.
"""

from __future__ import annotations

from numbers import Integral
from typing import Any

from thresher._params import (
    Bool,
    Constraint,
    Constraints,
    Device,
    Interval,
    ListOf,
    Mapping,
    Options,
    Text,
)


def bad_value(value: object) -> object:
    """A value of the wrong kind for a parameter whose valid value is ``value``."""
    if isinstance(value, bool):
        return "maybe"
    if isinstance(value, int | float):
        return "lots"
    if isinstance(value, str):
        return 12345
    if isinstance(value, dict):
        return "not-a-mapping"
    return [["not", "valid"]]  # None (optional) and lists


#: Values that are no number, refused by every numeric constraint.
_NOT_NUMBERS: list[Any] = [None, True, "lots", [["not", "valid"]], {"a": 1}]


def _interval_misses(interval: Interval) -> list[Any]:
    """Numbers outside ``interval`` by its bounds, a fraction for an integer one, and non-numbers."""
    step = 1 if interval.kind is Integral else 0.5
    values: list[Any] = []
    if interval.low is not None:
        values.append(interval.low - step)
        if not interval.low_closed:
            values.append(interval.low)
    if interval.high is not None:
        values.append(interval.high + step)
        if not interval.high_closed:
            values.append(interval.high)
    if interval.kind is Integral:
        if interval.low is not None:
            values.append(interval.low + 0.5)
        elif interval.high is not None:
            values.append(interval.high - 0.5)
        else:
            values.append(0.5)
    return values + _NOT_NUMBERS


def _misses(constraint: Constraint) -> list[Any]:
    """Values ``constraint`` refuses by its definition: just past its edges, and of other kinds."""
    if isinstance(constraint, Interval):
        return _interval_misses(constraint)
    if isinstance(constraint, Options):
        words = ["not-an-option:" + "|".join(constraint.options), ""]
        return [w for w in words if w not in constraint.options] + [None, True, 12345]
    if isinstance(constraint, Bool):
        return [1, 0, "true", "maybe", None]
    if isinstance(constraint, Text):
        return ([] if constraint.allow_empty else [""]) + [12345, None, True, ["a"]]
    if isinstance(constraint, Mapping):
        return [[("key", "value")], "not-a-mapping", None, 12345]
    if isinstance(constraint, ListOf):
        items = [[miss] for item in constraint.items for miss in _misses(item)]
        bad_items = [
            item for item in items if not any(c.is_satisfied_by(item[0]) for c in constraint.items)
        ]
        return [[], ("a",), "a", None, 12345, *bad_items]
    if isinstance(constraint, Device):
        return ["tpu", "CPU", "cuda0", "", None, 3]
    raise TypeError(f"no invalid values known for {constraint!r}")


def invalid_values(constraints: Constraints) -> list[Any]:
    """Values that no constraint of a declaration allows (None in it allows None).

    Each constraint's own misses are by its definition (its bounds, its
    options, its kind), not by its check; a miss is kept when the other
    constraints of the declaration refuse it too.
    """
    refused: dict[str, Any] = {}
    for constraint in constraints:
        if constraint is None:
            continue
        others = [c for c in constraints if c is not constraint]
        for value in _misses(constraint):
            if any(value is None if c is None else c.is_satisfied_by(value) for c in others):
                continue
            refused.setdefault(f"{type(value).__name__}:{value!r}", value)
    return list(refused.values())
