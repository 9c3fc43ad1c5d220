"""One score from several score columns of the run: their mean or their maximum.

``score_combine`` reads score columns that other scorers write (for
instance an ``embedding_classifier`` and a ``fasttext_quality`` column) and
writes their row-wise ``mean`` or ``max``, as Nemotron-CC ensembles its
quality classifiers. The score stage runs it after the scorers it reads
(:func:`thresher.stages.score.dependency_order`). A row with a null or NaN
in any input scores NaN, so a missing score is never hidden by the others:
the selection drops it as ``invalid_score``. Combine scores on one scale
(probabilities with probabilities).

References
----------
Su et al., "Nemotron-CC: Transforming Common Crawl into a Refined
Long-Horizon Pretraining Dataset", 2024 (an ensemble of quality classifiers).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from thresher._params import Constraints, ListOf, Options, Text
from thresher.errors import ScorerError
from thresher.scorers.base import Scorer


class ScoreCombineScorer(Scorer):
    """The row-wise mean or maximum of score columns (see module docstring).

    Parameters
    ----------
    columns : list of str
        Numeric columns written by other scorers of the run (or of the corpus).
    how : {"mean", "max"}
        How they are combined.

    Output: float64, shape (n_rows,); NaN where any input is null or NaN.
    """

    name: ClassVar[str] = "score_combine"
    _parameter_constraints: ClassVar[dict[str, Constraints]] = {
        "columns": [ListOf(Text(), what="column names")],
        "how": [Options("mean", "max")],
    }

    def __init__(self, columns: list[str], how: str = "mean") -> None:
        self.columns = columns
        self.how = how

    @property
    def input_columns(self) -> tuple[str, ...]:  # type: ignore[override]
        return tuple(self.columns)

    def _check_together(self) -> None:
        if len(set(self.columns)) != len(self.columns):
            raise ValueError(f"{self.name}: columns lists a column twice: {self.columns}")

    def score(self, batch: pa.RecordBatch) -> pa.Array:
        values = np.empty((len(self.columns), batch.num_rows), dtype=np.float64)
        for k, name in enumerate(self.columns):
            column = batch.column(batch.schema.get_field_index(name))
            kind = column.type
            if not (
                pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_null(kind)
            ):
                raise ScorerError(f"{self.name}: column {name!r} is not numeric (type {kind})")
            cast = pc.fill_null(column.cast(pa.float64()), np.nan)
            values[k] = np.asarray(cast.to_numpy(zero_copy_only=False), dtype=np.float64)
        if batch.num_rows == 0:
            return pa.array([], pa.float64())
        combined = values.mean(axis=0) if self.how == "mean" else values.max(axis=0)
        combined[np.isnan(values).any(axis=0)] = np.nan
        return pa.array(combined, pa.float64())
