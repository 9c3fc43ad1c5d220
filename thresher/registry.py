"""Registries: a kind of component (scorer, selector) by name, built and checked in one place.

A :class:`Registry` maps names to classes (it is a read-only mapping) and
builds an object from a name and a parameter mapping: it refuses an unknown
name, an unknown or missing parameter, and a bad value (the class's declared
constraints, :meth:`thresher._params.ParamsMixin.check_params`), each with a
:class:`RegistryError` that says which field of a config entry is wrong
(``name`` or ``params``), so config validation reports ``scorers[2].params:
...`` without knowing the kind.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, ClassVar, Generic, Literal, Protocol, TypeVar

from thresher._params import constructor_params, required_params
from thresher.errors import ThresherError


class Registered(Protocol):
    """What a registry holds: a class with a registry ``name`` whose objects check their parameters."""

    name: ClassVar[str]

    def check_params(self) -> None: ...


T = TypeVar("T", bound=Registered)


class RegistryError(ValueError):
    """A name or parameters a registry refuses; ``field`` is the config entry's bad field."""

    def __init__(self, field: Literal["name", "params"], message: str) -> None:
        super().__init__(message)
        self.field = field


class Registry(Mapping[str, type[T]], Generic[T]):
    """Classes of one kind by name; :meth:`make` builds a checked object.

    Parameters
    ----------
    kind : str
        What the classes are ("scorer", "selector"), for messages.
    classes : iterable of classes
        Each with a class attribute ``name``, unique within the registry.
    """

    def __init__(self, kind: str, classes: Iterable[type[T]]) -> None:
        self.kind = kind
        self._classes: dict[str, type[T]] = {}
        for cls in classes:
            if cls.name in self._classes:
                raise ValueError(f"two {kind}s are registered as {cls.name!r}")
            self._classes[cls.name] = cls

    def __getitem__(self, name: str) -> type[T]:
        return self._classes[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._classes)

    def __len__(self) -> int:
        return len(self._classes)

    def names(self) -> str:
        """The registered names, sorted, for messages."""
        return ", ".join(sorted(self._classes))

    def make(self, name: str, params: dict[str, Any] | None = None) -> T:
        """An object of the class registered as ``name``, its parameters checked.

        Raises
        ------
        RegistryError
            ``field="name"`` for an unknown name; ``field="params"`` for an
            unknown or missing parameter or a value the class refuses (its
            message names the parameter).
        """
        if name not in self._classes:
            raise RegistryError("name", f"unknown {self.kind} {name!r}; available: {self.names()}")
        cls = self._classes[name]
        given = dict(params or {})
        accepted = constructor_params(cls)
        unknown = sorted(set(given) - set(accepted))
        if unknown:
            known = ", ".join(accepted) or "none"
            raise RegistryError(
                "params",
                f"{self.kind} {name!r} has no parameter {', '.join(map(repr, unknown))} "
                f"(its parameters: {known})",
            )
        missing = [p for p in required_params(cls) if p not in given]
        if missing:
            raise RegistryError(
                "params", f"{self.kind} {name!r} needs {', '.join(map(repr, missing))} in params"
            )
        instance = cls(**given)
        try:
            instance.check_params()
        except (ValueError, ThresherError) as error:
            raise RegistryError("params", str(error)) from None
        return instance
