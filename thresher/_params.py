"""Parameters of scorers and selectors: get_params, repr, and the checks ``check_params`` uses.

Scikit-learn's convention: constructor arguments are stored as given, as
attributes of the same name, and checked in one place
(:meth:`ParamsMixin.check_params`), which the registries call when a config
is loaded, so that a bad value is reported with its field before any work.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any


class ParamsMixin:
    """Constructor arguments are stored as attributes of the same name."""

    def get_params(self) -> dict[str, Any]:
        """Constructor arguments as stored."""
        names = [
            p.name
            for p in inspect.signature(type(self).__init__).parameters.values()
            if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]
        return {name: getattr(self, name) for name in names}

    def check_params(self) -> None:
        """Refuse bad hyper-parameter values (ValueError naming the parameter).

        Called by the registry when a config is loaded, so a mistake is
        reported before any work starts; the default checks nothing.
        """

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"


# -- checks (each raises ValueError naming the owner and the parameter) -------------------


def check_int(owner: str, name: str, value: Any, minimum: int = 1, optional: bool = False) -> None:
    """``value`` is an int (not a bool) of at least ``minimum`` (or None when ``optional``)."""
    if value is None and optional:
        return
    import numpy as np

    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{owner}: {name} must be an integer >= {minimum}, got {value!r}")


def check_number(owner: str, name: str, value: Any, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{owner}: {name} must be a number, got {value!r}")


def check_bool(owner: str, name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{owner}: {name} must be true or false, got {value!r}")


def check_choice(owner: str, name: str, value: Any, choices: Sequence[str]) -> None:
    if not isinstance(value, str) or value not in choices:
        allowed = " or ".join(repr(c) for c in choices)
        raise ValueError(f"{owner}: {name} must be {allowed}, got {value!r}")


def check_str(owner: str, name: str, value: Any, optional: bool = False) -> None:
    """``value`` is a non-empty string (a column, a path, a label), or None when ``optional``."""
    if value is None and optional:
        return
    if not isinstance(value, str) or not value:
        raise ValueError(f"{owner}: {name} must be a non-empty string, got {value!r}")


def check_mapping(owner: str, name: str, value: Any, optional: bool = True) -> None:
    if value is None and optional:
        return
    if not isinstance(value, dict):
        raise ValueError(f"{owner}: {name} must be a mapping, got {value!r}")


def check_device(owner: str, value: Any) -> None:
    if not isinstance(value, str) or not (
        value in ("auto", "cpu", "cuda") or value.startswith("cuda:")
    ):
        raise ValueError(f"{owner}: device must be auto, cpu or cuda[:N], got {value!r}")
