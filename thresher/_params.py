"""get_params/repr shared by scorers and selectors (scikit-learn convention)."""

from __future__ import annotations

import inspect
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
