"""Keep documents written in one of a set of languages, identified confidently enough.

The filter of every multilingual pretraining pipeline: after a language
identifier (the ``language`` scorer) has written each document's top
language and its probability, keep a document when that language is in
``languages`` and its probability is at least ``min_probability`` (FineWeb:
English at 0.65). A row-wise rule on two columns, so it runs where the rows
are on every engine.

References
----------
Penedo et al., "The FineWeb Datasets: Decanting the Web for the Finest Text
Data at Scale", 2024. Lui and Baldwin, "langid.py: An Off-the-shelf Language
Identification Tool", ACL 2012.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

from thresher._params import Constraints, Interval, ListOf, Real, Text
from thresher.frame import Frame, TableFrame
from thresher.selectors.base import (
    Budget,
    FrameSelector,
    Marks,
    RandomState,
    Selection,
    score_values,
    with_row_keys,
)


class LanguageFilterSelector(FrameSelector):
    """Keep rows whose language is in ``languages`` with probability >= ``min_probability``.

    Parameters
    ----------
    languages : list of str
        Language codes to keep, as the ``language`` scorer writes them
        (``en``, ``de``...). The code column is compared as text.
    language : str
        Column holding each row's code (the ``language`` scorer's column).
    probability : str, optional
        Column holding the code's probability; default ``<language>_probability``.
    min_probability : float
        Smallest probability kept, in ``[0, 1]`` for the ``language`` scorer.
    """

    name: ClassVar[str] = "language_filter"
    requires_budget: ClassVar[bool] = False
    _parameter_constraints: ClassVar[dict[str, Constraints]] = {
        "languages": [ListOf(Text(), what="language codes")],
        "language": [Text()],
        "probability": [Text(), None],
        "min_probability": [Interval(Real, None, None)],
    }

    def __init__(
        self,
        languages: list[str],
        language: str = "language",
        probability: str | None = None,
        min_probability: float = 0.0,
    ) -> None:
        self.languages = languages
        self.language = language
        self.probability = probability
        self.min_probability = min_probability

    @property
    def probability_column(self) -> str:
        return self.probability if self.probability is not None else f"{self.language}_probability"

    def score_columns(self) -> list[str]:
        return [self.language, self.probability_column]

    def select_frame(
        self, rows: Frame, budget: Budget | None = None, *, random_state: RandomState = None
    ) -> Marks:
        if budget is not None:
            raise ValueError(
                f"{self.name} keeps every row in its languages; leave its budget empty"
            )
        self.validate_params()
        return _LanguageMarks(
            self.language,
            self.probability_column,
            sorted(set(self.languages)),
            self.min_probability,
        )

    def select(
        self,
        scores: pa.Table,
        embeddings: NDArray[np.floating[Any]] | None = None,
        budget: Budget | None = None,
        *,
        random_state: RandomState = None,
    ) -> Selection:
        """In memory: the same rule (the code column is text, so only the probability is numeric)."""
        if self.language not in scores.column_names:
            raise ValueError(
                f"{self.name}: language column {self.language!r} not found; "
                f"have {scores.column_names}"
            )
        score_values(scores, self.probability_column, selector=self.name)
        table = with_row_keys(scores)
        marks = self.select_frame(TableFrame.of(table), budget, random_state=random_state)
        keep = marks(table)[0]
        return Selection.from_indices(np.flatnonzero(keep), details=marks.details)


class _LanguageMarks(Marks):
    def __init__(self, language: str, probability: str, codes: list[str], minimum: float) -> None:
        self.language = language
        self.probability = probability
        self.codes = codes
        self.minimum = minimum
        self.details: dict[str, Any] = {
            "languages": codes,
            "language": language,
            "probability": probability,
            "min_probability": minimum,
        }

    def __call__(
        self, table: pa.Table
    ) -> tuple[NDArray[np.bool_], NDArray[np.float64], NDArray[np.int64]]:
        from thresher.selectors.ranking import finite_values

        codes = table.column(self.language)
        if codes.type != pa.string():  # large strings, dictionaries, or codes stored as numbers
            codes = pc.cast(codes, pa.string())
        member = pc.fill_null(pc.is_in(codes, value_set=pa.array(self.codes, pa.string())), False)
        keep = np.asarray(member, dtype=bool)
        keep &= finite_values(table, self.probability, "language_filter") >= self.minimum
        n = table.num_rows
        return keep, np.ones(n), np.full(n, -1, dtype=np.int64)
