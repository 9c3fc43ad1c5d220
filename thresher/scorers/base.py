"""The scorer interface.

A scorer maps an Arrow RecordBatch to one Arrow array of the same length
(one value per document). It is a pure function of the batch once
``setup()`` has run, so the same object runs in a local worker process and
inside Spark's ``mapInArrow`` on an executor: the engine pickles the scorer,
calls ``setup()`` once per worker, then ``score()`` per batch.

Scorers that need a model learn it in ``fit()``, called once per run on the
driver with a :class:`FitContext`; they save their artefacts under
``context.artifact_dir`` and keep only the path, so the pickled scorer stays
small and ``setup()`` loads the model where it runs.

Conventions (scikit-learn style): ``__init__`` stores keyword arguments and
nothing else; state created by ``setup``/``fit`` lives in attributes ending
in ``_``; attributes listed in ``transient_attributes`` (loaded models) are
not pickled.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

import pyarrow as pa

from thresher._params import ParamsMixin

if TYPE_CHECKING:
    from thresher.fitting import FitContext


class Scorer(ParamsMixin, ABC):
    """Base class for scorers; subclasses set ``name``/``input_columns`` and define ``score``."""

    name: ClassVar[str]
    input_columns: ClassVar[tuple[str, ...]] = ("text",)
    output_type: ClassVar[pa.DataType] = pa.float64()
    requires_fit: ClassVar[bool] = False
    transient_attributes: ClassVar[tuple[str, ...]] = ()

    # -- lifecycle -------------------------------------------------------------
    def fit(self, context: FitContext) -> None:
        """Learn what the scorer needs from the corpus (no-op unless ``requires_fit``)."""

    def setup(self) -> None:
        """Load heavy state once per worker. Must be idempotent."""

    @abstractmethod
    def score(self, batch: pa.RecordBatch) -> pa.Array:
        """Return one value per row of ``batch`` (same length, no side effects)."""

    def output_fields(self, column: str) -> list[pa.Field]:
        """Every field this scorer writes; one unless the scorer has several outputs.

        A scorer with several outputs returns a ``pa.StructArray`` from
        ``score`` whose children are, in order, these fields' values (the
        engine matches them by position, so ``score`` need not know the
        configured column). Name extra outputs ``f"{column}_<what>"`` so that
        renaming the scorer's column renames them all.
        """
        return [pa.field(column, self.output_type)]

    def output_field(self, column: str) -> pa.Field:
        """What ``score`` returns: the single output, or a struct of :meth:`output_fields`."""
        fields = self.output_fields(column)
        return fields[0] if len(fields) == 1 else pa.field(column, pa.struct(fields))

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for attribute in self.transient_attributes:
            state.pop(attribute, None)
        return state


def relocate_artifacts(scorer: Scorer, old: str, new: str) -> None:
    """Move a fitted scorer's artefact paths from the directory ``old`` to ``new``.

    Fitted state (attributes ending in ``_``) may hold paths under the
    directory the models were fitted in; on a machine that holds its copy
    of them elsewhere (a worker pulling models from an object store), those
    paths are rewritten, in strings nested in lists, tuples and dicts too.
    """
    prefix = old.rstrip("/")

    def moved(value: Any) -> Any:
        if isinstance(value, str) and (value == prefix or value.startswith(prefix + "/")):
            return new.rstrip("/") + value[len(prefix) :]
        if isinstance(value, list):
            return [moved(v) for v in value]
        if isinstance(value, tuple):
            return tuple(moved(v) for v in value)
        if isinstance(value, dict):
            return {k: moved(v) for k, v in value.items()}
        return value

    for name, value in list(vars(scorer).items()):
        if name.endswith("_") and not name.startswith("__"):
            setattr(scorer, name, moved(value))
