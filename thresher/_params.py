"""Parameters of scorers and selectors: declared once per class, checked once per object.

Scikit-learn's convention: constructor arguments are stored as given, as
attributes of the same name, and nothing else happens in ``__init__``. Each
class declares what every constructor parameter may be in one class
attribute, ``_parameter_constraints`` (parameter name -> the constraints it
may satisfy, ``None`` standing for the value ``None``), as scikit-learn's
``utils/_param_validation.py`` does::

    _parameter_constraints = {
        "n_clusters": [Interval(Integral, 1, None)],
        "keep": [Options("hard", "easy")],
        "epoch": [Interval(Integral, 1, None), None],
    }

:meth:`ParamsMixin.check_params` checks every parameter against its
declaration, then the rules that tie several parameters together
(:meth:`ParamsMixin._check_together`, a small hook). The registry calls it
when it builds an object (a config is loaded), so a bad value is reported
with its field before any work; the API edges (``select``, ``fit``,
``setup``) call :meth:`ParamsMixin.validate_params`, which checks an object
built directly in Python once and is free afterwards (and after a pickle).
A refused value raises ``ValueError("<owner>: <param> must be ..., got ...")``.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Sequence
from numbers import Integral, Real
from typing import Any, ClassVar, Literal

#: What a parameter may be: constraints, any one of which a valid value satisfies.
Constraints = Sequence["Constraint | None"]

__all__ = [
    "Bool",
    "Constraint",
    "Device",
    "Integral",
    "Interval",
    "ListOf",
    "Mapping",
    "Options",
    "ParamsMixin",
    "Real",
    "Text",
    "check_value",
    "constructor_params",
    "required_params",
]


class Constraint(ABC):
    """One kind of valid value; ``str()`` says what it is ("an integer >= 1")."""

    @abstractmethod
    def is_satisfied_by(self, value: Any) -> bool:
        """Whether ``value`` is of this kind."""

    @abstractmethod
    def __str__(self) -> str:
        """What a valid value is, as the error message says it."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self}>"


def _is_number(value: Any, kind: type) -> bool:
    """``value`` is an instance of ``numbers.Integral`` or ``numbers.Real``, booleans excluded."""
    return isinstance(value, kind) and not isinstance(value, bool)


class Interval(Constraint):
    """A number of ``kind`` (``Integral`` or ``Real``) between ``low`` and ``high``.

    Either bound may be None (open on that side); ``closed`` says which
    bounds are included (``"both"``, ``"left"``, ``"right"``, ``"neither"``).
    A ``Real`` interval takes integers too.
    """

    def __init__(
        self,
        kind: type[Integral] | type[Real],
        low: float | None,
        high: float | None,
        *,
        closed: Literal["both", "left", "right", "neither"] = "both",
    ) -> None:
        if kind not in (Integral, Real):
            raise TypeError(f"an Interval's kind is Integral or Real, got {kind!r}")
        if low is not None and high is not None and low > high:
            raise ValueError(f"an Interval's low ({low}) is above its high ({high})")
        self.kind = kind
        self.low = low
        self.high = high
        self.closed = closed

    @property
    def low_closed(self) -> bool:
        return self.closed in ("both", "left")

    @property
    def high_closed(self) -> bool:
        return self.closed in ("both", "right")

    def is_satisfied_by(self, value: Any) -> bool:
        if not _is_number(value, self.kind):
            return False
        if self.low is not None and not (
            value >= self.low if self.low_closed else value > self.low
        ):
            return False
        return self.high is None or bool(
            value <= self.high if self.high_closed else value < self.high
        )

    def __str__(self) -> str:
        what = "an integer" if self.kind is Integral else "a number"
        if self.low is None and self.high is None:
            return what
        if self.high is None:
            return f"{what} {'>=' if self.low_closed else '>'} {self.low}"
        if self.low is None:
            return f"{what} {'<=' if self.high_closed else '<'} {self.high}"
        left = "[" if self.low_closed else "("
        right = "]" if self.high_closed else ")"
        return f"{what} in {left}{self.low}, {self.high}{right}"


class Options(Constraint):
    """One of a few strings."""

    def __init__(self, *options: str) -> None:
        if not options or not all(isinstance(o, str) for o in options):
            raise TypeError("Options takes one or more strings")
        self.options = options

    def is_satisfied_by(self, value: Any) -> bool:
        return isinstance(value, str) and value in self.options

    def __str__(self) -> str:
        return " or ".join(repr(option) for option in self.options)


class Bool(Constraint):
    """``True`` or ``False`` (not a number, not a string)."""

    def is_satisfied_by(self, value: Any) -> bool:
        return isinstance(value, bool)

    def __str__(self) -> str:
        return "true or false"


class Text(Constraint):
    """A non-empty string (a column, a path, a label), or any string with ``allow_empty``."""

    def __init__(self, *, allow_empty: bool = False) -> None:
        self.allow_empty = allow_empty

    def is_satisfied_by(self, value: Any) -> bool:
        return isinstance(value, str) and (self.allow_empty or bool(value))

    def __str__(self) -> str:
        return "a string" if self.allow_empty else "a non-empty string"


class Mapping(Constraint):
    """A mapping (a nested group of settings, checked further by its owner)."""

    def is_satisfied_by(self, value: Any) -> bool:
        return isinstance(value, dict)

    def __str__(self) -> str:
        return "a mapping"


class ListOf(Constraint):
    """A non-empty list whose items each satisfy one of ``items``.

    ``what`` names the items in the message ("file paths", "language codes").
    """

    def __init__(self, *items: Constraint, what: str) -> None:
        if not items:
            raise TypeError("ListOf takes one or more item constraints")
        self.items = items
        self.what = what

    def is_satisfied_by(self, value: Any) -> bool:
        return (
            isinstance(value, list)
            and bool(value)
            and all(any(c.is_satisfied_by(item) for c in self.items) for item in value)
        )

    def __str__(self) -> str:
        return f"a non-empty list of {self.what}"


class Device(Constraint):
    """A device name: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""

    def is_satisfied_by(self, value: Any) -> bool:
        return isinstance(value, str) and (
            value in ("auto", "cpu", "cuda") or value.startswith("cuda:")
        )

    def __str__(self) -> str:
        return "auto, cpu or cuda[:N]"


def _describe(constraint: Constraint | None) -> str:
    return "null" if constraint is None else str(constraint)


def check_value(owner: str, name: str, value: Any, constraints: Constraints) -> None:
    """Refuse ``value`` unless it satisfies one of ``constraints`` (None: the value None)."""
    for constraint in constraints:
        if constraint is None:
            if value is None:
                return
        elif constraint.is_satisfied_by(value):
            return
    allowed = " or ".join(_describe(c) for c in constraints)
    raise ValueError(f"{owner}: {name} must be {allowed}, got {value!r}")


def check_entry(where: str, own: Any, constraints: dict[str, Constraints]) -> None:
    """Refuse a list entry of settings (e.g. one of ``classifiers``) unless every key is known and valid.

    ``own`` must be a mapping whose keys are among ``constraints`` and whose
    values satisfy them (ValueError starting with ``where``).
    """
    if not isinstance(own, dict):
        raise ValueError(f"{where}: must be a mapping, got {own!r}")
    unknown = sorted(set(own) - set(constraints))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; known: {', '.join(constraints)}")
    for key, value in own.items():
        check_value(where, key, value, constraints[key])


def constructor_params(cls: type) -> list[str]:
    """The names of ``cls.__init__``'s parameters (``self`` and ``*args``/``**kwargs`` left out)."""
    return [
        p.name
        for p in inspect.signature(cls.__init__).parameters.values()  # type: ignore[misc]
        if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]


def required_params(cls: type) -> list[str]:
    """The constructor parameters of ``cls`` that have no default."""
    return [
        p.name
        for p in inspect.signature(cls.__init__).parameters.values()  # type: ignore[misc]
        if p.name != "self"
        and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        and p.default is p.empty
    ]


class ParamsMixin:
    """Constructor arguments stored as attributes of the same name, declared and checked once."""

    #: Parameter name -> the constraints a valid value satisfies (see module docstring).
    #: A class declares its own parameters; those its bases declare are inherited.
    _parameter_constraints: ClassVar[dict[str, Constraints]] = {}

    @classmethod
    def parameter_constraints(cls) -> dict[str, Constraints]:
        """Every declaration of the class and its bases (a subclass's own wins)."""
        merged: dict[str, Constraints] = {}
        for klass in reversed(cls.__mro__):
            merged.update(klass.__dict__.get("_parameter_constraints", {}))
        return merged

    def get_params(self) -> dict[str, Any]:
        """Constructor arguments as stored."""
        return {name: getattr(self, name) for name in constructor_params(type(self))}

    @property
    def _params_owner(self) -> str:
        """The name error messages start with (the registry name when there is one)."""
        name = getattr(type(self), "name", None)
        return name if isinstance(name, str) else type(self).__name__

    def check_params(self) -> None:
        """Refuse bad parameter values (ValueError naming the owner and the parameter).

        Every parameter against its declared constraints, in the order of
        the constructor's arguments, then :meth:`_check_together`. Called by
        the registry when it builds the object.
        """
        params = self.get_params()
        declared = self.parameter_constraints()
        for name, value in params.items():
            if name in declared:
                check_value(self._params_owner, name, value, declared[name])
        self._check_together()
        self._params_checked = _snapshot(params)

    def _check_together(self) -> None:
        """Rules across parameters, after each has passed its own (none by default)."""

    def validate_params(self) -> None:
        """:meth:`check_params` unless these very values were checked already (then free).

        For the API edges (``select``, ``fit``, ``setup``): an object built by
        the registry, or checked once, is not checked again, also after a
        pickle; changed values are checked again.
        """
        if self.__dict__.get("_params_checked") != _snapshot(self.get_params()):
            self.check_params()

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"


def _snapshot(params: dict[str, Any]) -> str:
    """The parameter values as text: equal text, equal values (nested lists and dicts included)."""
    return repr(params)
