"""Gopher-style text statistics: cheap quality signals that need no model.

References
----------
Rae et al., "Scaling Language Models: Methods, Analysis & Insights from
Training Gopher", 2021 (appendix A, "MassiveText quality filters").
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from thresher.scorers.base import Scorer


def _text(batch: pa.RecordBatch) -> pa.Array:
    return batch.column(batch.schema.get_field_index("text"))


def _word_counts(text: pa.Array) -> np.ndarray:
    return np.asarray(pc.fill_null(pc.count_substring_regex(text, r"\S+"), 0), dtype=np.float64)


class WordCountScorer(Scorer):
    """Number of whitespace-separated words (Gopher keeps 50 to 100,000)."""

    name: ClassVar[str] = "word_count"

    def score(self, batch: pa.RecordBatch) -> pa.Array:
        return pa.array(_word_counts(_text(batch)), pa.float64())


class AlphaFractionScorer(Scorer):
    """Fraction of non-whitespace characters that are letters (any script).

    Gibberish, markup and tables of numbers score low.
    """

    name: ClassVar[str] = "alpha_fraction"

    def score(self, batch: pa.RecordBatch) -> pa.Array:
        text = _text(batch)
        letters = np.asarray(
            pc.fill_null(pc.count_substring_regex(text, r"\pL"), 0), dtype=np.float64
        )
        visible = np.asarray(
            pc.fill_null(pc.count_substring_regex(text, r"\S"), 0), dtype=np.float64
        )
        with np.errstate(invalid="ignore", divide="ignore"):
            fraction = np.where(visible > 0, letters / np.maximum(visible, 1), 0.0)
        return pa.array(fraction, pa.float64())


class MeanWordLengthScorer(Scorer):
    """Mean number of characters per word (Gopher keeps 3 to 10)."""

    name: ClassVar[str] = "mean_word_length"

    def score(self, batch: pa.RecordBatch) -> pa.Array:
        text = _text(batch)
        visible = np.asarray(
            pc.fill_null(pc.count_substring_regex(text, r"\S"), 0), dtype=np.float64
        )
        words = _word_counts(text)
        return pa.array(np.where(words > 0, visible / np.maximum(words, 1), 0.0), pa.float64())


class RepeatedLineFractionScorer(Scorer):
    """Fraction of non-empty lines that repeat an earlier line of the same document.

    Boilerplate (menus, footers, spam templates) repeats lines; Gopher drops
    documents above 0.30.
    """

    name: ClassVar[str] = "repeated_line_fraction"

    def score(self, batch: pa.RecordBatch) -> pa.Array:
        values = np.zeros(batch.num_rows, dtype=np.float64)
        for index, document in enumerate(_text(batch).to_pylist()):
            if not document:
                continue
            lines = [line.strip() for line in document.splitlines() if line.strip()]
            if lines:
                values[index] = 1.0 - len(set(lines)) / len(lines)
        return pa.array(values, pa.float64())
