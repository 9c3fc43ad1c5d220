"""Language identification: each document's most likely language and its probability.

Two backends, each with its model inside its PyPI package (nothing is
downloaded):

- ``py3langid`` (default): langid.py's multinomial naive Bayes over byte
  n-grams (Lui and Baldwin 2012), in the ``py3langid`` fork. thresher runs
  the package's own model (its byte-n-gram automaton and class weights)
  with a numba kernel over a whole batch; it gives py3langid's answer
  (``classify`` with normalised probabilities: the same language, the
  probability to float32 rounding) about ten times faster than
  py3langid's per-document Python loop;
- ``lingua`` (the ``lingua-language-detector`` package, the ``lingua``
  extra): character n-gram models of 75 languages with a rule-based first
  pass, slower and more accurate on short or mixed text.

Outputs, for the column ``<column>`` the run gives this scorer:

- ``<column>``: the top language's code (ISO 639-1 where the backend has
  one, e.g. ``en``, ``de``; ``und`` for an empty text or when the backend
  finds nothing to decide on: no known n-gram, no letter);
- ``<column>_probability``: its probability in ``[0, 1]`` (0 for ``und``).

Only the first ``max_characters`` characters of a document are read: a
language is clear long before the end of a long document, and the cost
stays bounded. Both backends are deterministic.

Filtering: ``language_filter`` keeps a set of languages above a minimum
probability (FineWeb keeps English at >= 0.65); ``threshold`` on
``<column>_probability`` alone keeps confident documents of any language.

References
----------
Lui and Baldwin, "langid.py: An Off-the-shelf Language Identification Tool",
ACL 2012 (System Demonstrations). Penedo et al., "The FineWeb Datasets:
Decanting the Web for the Finest Text Data at Scale", 2024 (language
filtering of a pretraining corpus).
"""

from __future__ import annotations

import math
import unicodedata
from typing import Any, ClassVar

import numba as nb
import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from thresher._params import Constraints, Integral, Interval, ListOf, Options, Text
from thresher.errors import ConfigError
from thresher.io import schema as S
from thresher.scorers.base import Scorer

BACKENDS = ("py3langid", "lingua")
UNDETERMINED = "und"


class LanguageScorer(Scorer):
    """Top language and its probability (see module docstring).

    Parameters
    ----------
    backend : {"py3langid", "lingua"}
        Which classifier to run.
    languages : list of str, optional
        Restrict the answer to these codes (the classifier chooses among
        them only; probabilities are renormalised over them). Every code
        must be one the backend knows.
    max_characters : int
        Read at most this many characters of each document.

    Notes
    -----
    Output: a struct of ``<column>`` (string) and ``<column>_probability``
    (float64), shape (n_rows,).
    """

    name: ClassVar[str] = "language"
    transient_attributes: ClassVar[tuple[str, ...]] = ("model_",)
    _parameter_constraints: ClassVar[dict[str, Constraints]] = {
        "backend": [Options(*BACKENDS)],
        "languages": [ListOf(Text(), what="language codes"), None],
        "max_characters": [Interval(Integral, 1, None)],
    }

    def __init__(
        self,
        backend: str = "py3langid",
        languages: list[str] | None = None,
        max_characters: int = 10_000,
    ) -> None:
        self.backend = backend
        self.languages = languages
        self.max_characters = max_characters

    def output_fields(self, column: str) -> list[pa.Field]:
        return [pa.field(column, pa.string()), pa.field(f"{column}_probability", pa.float64())]

    def setup(self) -> None:
        """Load the backend's model once per worker."""
        if getattr(self, "model_", None) is not None:
            return
        self.validate_params()
        if self.backend == "py3langid":
            self.model_: Any = LangidModel.load(self.languages)
        else:
            self.model_ = LinguaModel.load(self.languages)

    def score(self, batch: pa.RecordBatch) -> pa.Array:
        self.setup()
        texts = batch.column(batch.schema.get_field_index(S.TEXT)).to_pylist()
        codes: list[str] = [UNDETERMINED] * len(texts)
        probabilities = np.zeros(len(texts), dtype=np.float64)
        present = [
            i
            for i, text in enumerate(texts)
            if isinstance(text, str) and not text.isspace() and text
        ]
        if present:
            found, found_p = self.model_.classify(
                [texts[i][: self.max_characters] for i in present]
            )
            for i, code in zip(present, found, strict=True):
                codes[i] = code
            probabilities[present] = found_p
        return pa.StructArray.from_arrays(
            [pa.array(codes, pa.string()), pa.array(probabilities, pa.float64())],
            fields=self.output_fields(self.name),
        )


# -- py3langid's model, batched ------------------------------------------------------------


class LangidModel:
    """py3langid's naive Bayes model run by a numba kernel over a batch.

    The arrays are py3langid's own (``LanguageIdentifier``): the byte
    automaton (``tk_nextmove``, ``tk_row``, ``tk_output``) that finds the
    model's byte n-gram features, the per-feature class log-probabilities
    ``nb_ptc`` (float16 in the package, float32 here) and the class priors
    ``nb_pc``. A document's class scores are ``log1p(feature counts) @ nb_ptc
    + nb_pc``, scaled by ``1 / sqrt(n_bytes)`` and normalised by a softmax,
    as py3langid's ``classify`` does with ``norm_probs=True``.
    """

    def __init__(self, identifier: Any) -> None:
        self.classes = list(identifier.nb_classes)
        self.ptc = np.ascontiguousarray(identifier.nb_ptc, dtype=np.float32)
        self.pc = np.asarray(identifier.nb_pc, dtype=np.float32)
        self.nextmove = np.frombuffer(identifier.tk_nextmove, dtype=_dtype(identifier.tk_nextmove))
        self.row = np.frombuffer(identifier.tk_row, dtype=_dtype(identifier.tk_row))
        self.output = np.asarray(identifier.tk_output, dtype=np.int64)
        self.alias_pairs = [(int(i), int(j)) for i, j in identifier._alias_pairs]

    @classmethod
    def load(cls, languages: list[str] | None = None) -> LangidModel:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier

        identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
        if languages is not None:
            try:
                identifier.set_languages(languages)
            except ValueError as error:
                raise ConfigError(
                    f"language: {error} (py3langid knows {identifier.labels})"
                ) from None
        return cls(identifier)

    def classify(self, texts: list[str]) -> tuple[list[str], NDArray[np.float64]]:
        """Top code and probability of each (non-empty) text."""
        encoded = [_encode(text) for text in texts]
        lengths = np.fromiter((len(b) for b in encoded), dtype=np.int64, count=len(encoded))
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        data = np.frombuffer(b"".join(encoded), dtype=np.uint8)
        scores, fired = _naive_bayes_scores(
            data, offsets, self.nextmove, self.row, self.output, self.ptc, self.pc
        )
        scale = np.asarray([1.0 / math.sqrt(n or 1) for n in lengths.tolist()], dtype=np.float64)
        scores *= scale[:, None].astype(np.float32)
        np.exp(scores - scores.max(axis=1, keepdims=True), out=scores)
        scores /= scores.sum(axis=1, keepdims=True)
        for i, j in self.alias_pairs:  # a label with two columns (a script alias): fold them
            scores[:, i] += scores[:, j]
            scores[:, j] = 0.0
        best = scores.argmax(axis=1)
        probability = scores[np.arange(len(texts)), best].astype(np.float64)
        probability[~fired] = 0.0
        codes = [
            self.classes[k] if f else UNDETERMINED
            for k, f in zip(best.tolist(), fired, strict=True)
        ]
        return codes, probability


def _dtype(values: Any) -> np.dtype[Any]:
    """The numpy dtype of a stdlib ``array.array``."""
    return np.dtype(f"u{values.itemsize}")


def _encode(text: str) -> bytes:
    """py3langid's input: lowercased when all upper case, NFC, UTF-8."""
    if text.isupper():
        text = text.lower()
    return unicodedata.normalize("NFC", text).encode("utf-8", errors="surrogatepass")


@nb.njit(cache=True, nogil=True)
def _naive_bayes_scores(
    data: NDArray[np.uint8],
    offsets: NDArray[np.int64],
    nextmove: NDArray[np.unsignedinteger[Any]],
    row: NDArray[np.unsignedinteger[Any]],
    output: NDArray[np.int64],
    ptc: NDArray[np.float32],
    pc: NDArray[np.float32],
) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
    """Raw class scores per document, ``log1p(counts) @ ptc + pc``, and whether any feature fired."""
    n_docs = offsets.size - 1
    n_classes = pc.size
    scores = np.zeros((n_docs, n_classes), dtype=np.float32)
    fired = np.zeros(n_docs, dtype=np.bool_)
    counts = np.zeros(ptc.shape[0], dtype=np.int64)
    longest = 1
    for i in range(n_docs):
        longest = max(longest, offsets[i + 1] - offsets[i])
    touched = np.empty(longest, dtype=np.int64)
    for i in range(n_docs):
        state = np.int64(0)
        m = 0
        for j in range(offsets[i], offsets[i + 1]):
            state = np.int64(nextmove[(np.int64(row[state]) << 8) + np.int64(data[j])])
            feature = output[state]
            if feature >= 0:
                if counts[feature] == 0:
                    touched[m] = feature
                    m += 1
                counts[feature] += 1
        if m == 0:
            continue  # no feature: nothing to say (py3langid would answer its uniform prior)
        fired[i] = True
        for t in range(m):
            feature = touched[t]
            weight = np.float32(np.log1p(np.float64(counts[feature])))
            counts[feature] = 0
            for c in range(n_classes):
                scores[i, c] += weight * ptc[feature, c]
        for c in range(n_classes):
            scores[i, c] += pc[c]
    return scores, fired


# -- lingua --------------------------------------------------------------------------------


class LinguaModel:
    """lingua's detector (all its languages, or ``languages``), run in parallel over a batch."""

    def __init__(self, detector: Any) -> None:
        self.detector = detector

    @classmethod
    def load(cls, languages: list[str] | None = None) -> LinguaModel:
        try:
            from lingua import IsoCode639_1, LanguageDetectorBuilder
        except ImportError:
            raise ConfigError(
                "language: backend 'lingua' needs the lingua-language-detector package "
                "(pip install 'thresher[lingua]')"
            ) from None
        if languages is None:
            builder = LanguageDetectorBuilder.from_all_languages()
        else:
            try:
                codes = [IsoCode639_1.from_str(code) for code in languages]
            except ValueError:
                raise ConfigError(
                    f"language: lingua does not know every code of {languages}"
                ) from None
            if len(codes) < 2:
                raise ConfigError("language: lingua needs at least two candidate languages")
            builder = LanguageDetectorBuilder.from_iso_codes_639_1(*codes)
        return cls(builder.build())

    def classify(self, texts: list[str]) -> tuple[list[str], NDArray[np.float64]]:
        """Top code and probability of each (non-empty) text."""
        results = self.detector.compute_language_confidence_values_in_parallel(texts)
        codes: list[str] = []
        probabilities = np.zeros(len(texts), dtype=np.float64)
        for i, values in enumerate(results):
            if not values or values[0].value <= 0.0:
                codes.append(UNDETERMINED)
                continue
            codes.append(values[0].language.iso_code_639_1.name.lower())
            probabilities[i] = float(values[0].value)
        return codes, probabilities
