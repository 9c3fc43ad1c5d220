"""Signal scorers of the published heuristic rule sets: Gopher quality and repetition, C4, FineWeb.

Each scorer computes every signal of its rule set in one compiled pass per
document (:mod:`thresher.scorers.quality_kernels`) and writes them as float64
columns: the main column ``<column>`` first, then ``<column>_<signal>``. The
definitions are datatrove 0.10.1's (``GopherQualityFilter``,
``GopherRepetitionFilter``, ``C4QualityFilter`` with its defaults,
``FineWebQualityFilter``); the rule table that turns them into keep/drop
decisions is :mod:`thresher.scorers.quality_rules`. "Words" are the tokens of
spaCy's blank English tokenizer, which datatrove uses and thresher reproduces
without spaCy (see :mod:`thresher.scorers.quality_tokens`); lengths are in code
points, as Python's ``len``.

``gopher_quality`` (column: words that are not only punctuation)
    ``mean_word_length`` (mean length of those words), ``hash_ratio``
    (``text.count("#")`` / words, all words), ``ellipsis_ratio``
    (``"..."`` and ``"…"`` occurrences / words), ``bullet_lines`` and
    ``ellipsis_lines`` (share of ``text.splitlines()`` starting with ``•`` or
    ``-`` after ``lstrip``, ending in ``...`` or ``…`` after ``rstrip``),
    ``alpha_words`` (share of words with a character for which
    ``str.isalpha``), ``stop_words`` (how many of the, be, to, of, and, that,
    have, with occur as words, case-sensitive).
``gopher_repetition`` (column: ``dup_line_fraction``)
    Paragraphs are ``text.strip()`` split at runs of two or more ``\\n``,
    lines are ``text`` split at runs of ``\\n``. ``dup_*_fraction``: share of
    paragraphs (lines) equal to an earlier one; ``dup_*_char_fraction``: their
    characters / the text's. ``top_<n>gram``: characters of the most frequent
    word n-gram (words joined by a space) times its count / the text's
    characters (ties: the first seen; 0 with fewer than ``n`` words).
    ``dup_<n>gram``: characters of repeated n-grams (words joined without a
    space) found left to right, skipping past each repeat, / the text's.
``c4_quality`` (column: sentences in the lines C4 keeps)
    C4's line loop over ``text.splitlines()``: each line is stripped, loses
    citation marks (``[1]``, ``[edit]``, ``[citation needed]``) and is kept
    when it has no word over 1000 characters, ends in ``. ? ! " '`` but not
    ``...``, has at least 3 words, does not mention "javascript" and holds no
    cookie or terms-of-use phrase. ``lorem_ipsum`` and ``curly_bracket`` are 1
    when a line that reaches that check (C4 drops the whole page there)
    contains "lorem ipsum" (any case) or ``{``, else 0. Informational:
    ``terminal_punct_lines``, ``javascript_lines``, ``policy_lines``, the
    shares of lines that, stripped and without citations, end in terminal
    punctuation, mention javascript, hold a policy phrase. The sentence count
    of a line is spaCy's sentencizer rule over its tokens; the count goes on
    past a line that fails a page-level check (the page is dropped anyway).
``fineweb_quality`` (column: ``line_punct_ratio``)
    Over the non-blank lines of ``text.split("\\n")`` (not stripped):
    ``line_punct_ratio`` (share ending in a terminal punctuation mark),
    ``short_line_ratio`` (share of at most 30 characters),
    ``char_dup_ratio`` (characters of lines equal to an earlier one /
    characters of the text other than ``\\n``), ``list_ratio`` (``\\n`` count
    / words).

Missing values: a null text gives null signals. Where datatrove divides by
zero (it never reaches those divisions: an empty document fails an earlier
check, e.g. fewer than 50 words) the signal is NaN (0/0) or infinity, and a
NaN fails every rule. An empty text gives: ``gopher_quality`` 0 words, NaN
ratios (datatrove: too few words); ``gopher_repetition`` 0 for
``dup_para_fraction`` and ``dup_line_fraction``, NaN for the character fractions and the n-gram signals
(datatrove: dropped as empty);
``c4_quality`` 0 sentences (too few sentences); ``fineweb_quality`` all NaN
(datatrove: dropped as empty).

References
----------
Rae et al., "Scaling Language Models: Methods, Analysis & Insights from
Training Gopher", 2021 (appendix A). Raffel et al., "Exploring the Limits of
Transfer Learning with a Unified Text-to-Text Transformer", JMLR 2020 (the C4
filters). Penedo et al., "The FineWeb Datasets: Decanting the Web for the
Finest Text Data at Scale", 2024.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from thresher._params import Constraints
from thresher.io import schema as S
from thresher.scorers import quality_kernels as K
from thresher.scorers.base import Scorer

#: Scorer name -> its kernel: texts -> (n_rows, n_outputs) float64.
_KERNELS: dict[str, Callable[[pa.Array], NDArray[np.float64]]] = {
    "gopher_quality": K.gopher_quality,
    "gopher_repetition": K.gopher_repetition,
    "c4_quality": K.c4_quality,
    "fineweb_quality": K.fineweb_quality,
}


class _QualitySignalScorer(Scorer):
    """A rule set's signals: kernel output columns -> ``<column>`` and ``<column>_<signal>``.

    Notes
    -----
    Output: a struct of float64 fields, shape (n_rows,); null where the text
    is null.
    """

    _parameter_constraints: ClassVar[dict[str, Constraints]] = {}
    #: The signals (output suffixes), in output order.
    signals: ClassVar[tuple[str, ...]]
    #: Kernel output column of the main column, then of each signal.
    _columns: ClassVar[tuple[int, ...]]

    def output_fields(self, column: str) -> list[pa.Field]:
        return [pa.field(column, pa.float64())] + [
            pa.field(f"{column}_{signal}", pa.float64()) for signal in self.signals
        ]

    def score(self, batch: pa.RecordBatch) -> pa.Array:
        texts = batch.column(batch.schema.get_field_index(S.TEXT))
        values = _KERNELS[self.name](texts)
        missing = np.asarray(texts.is_null()) if texts.null_count else None
        arrays = [pa.array(values[:, k], pa.float64(), mask=missing) for k in self._columns]
        return pa.StructArray.from_arrays(arrays, fields=self.output_fields(self.name))


class GopherQualityScorer(_QualitySignalScorer):
    """Gopher's quality signals (Rae et al. 2021); column: words other than punctuation."""

    name: ClassVar[str] = "gopher_quality"
    signals: ClassVar[tuple[str, ...]] = K.GOPHER_QUALITY_OUTPUTS[1:]
    _columns: ClassVar[tuple[int, ...]] = tuple(range(len(K.GOPHER_QUALITY_OUTPUTS)))


class GopherRepetitionScorer(_QualitySignalScorer):
    """Gopher's repetition signals (Rae et al. 2021); column: ``dup_line_fraction``."""

    name: ClassVar[str] = "gopher_repetition"
    signals: ClassVar[tuple[str, ...]] = K.GOPHER_REPETITION_OUTPUTS
    _columns: ClassVar[tuple[int, ...]] = (
        K.GOPHER_REPETITION_OUTPUTS.index("dup_line_fraction"),
        *range(len(K.GOPHER_REPETITION_OUTPUTS)),
    )


class C4QualityScorer(_QualitySignalScorer):
    """C4's page and line rules (Raffel et al. 2020); column: sentences in the lines kept."""

    name: ClassVar[str] = "c4_quality"
    signals: ClassVar[tuple[str, ...]] = K.C4_OUTPUTS[1:]
    _columns: ClassVar[tuple[int, ...]] = tuple(range(len(K.C4_OUTPUTS)))


class FineWebQualityScorer(_QualitySignalScorer):
    """FineWeb's quality signals (Penedo et al. 2024); column: ``line_punct_ratio``."""

    name: ClassVar[str] = "fineweb_quality"
    signals: ClassVar[tuple[str, ...]] = K.FINEWEB_OUTPUTS
    _columns: ClassVar[tuple[int, ...]] = (0, *range(len(K.FINEWEB_OUTPUTS)))
