"""DSIR's importance weight: how much more likely a document is under the target than the corpus.

Data Selection with Importance Resampling (Xie et al. 2023) fits two
bag-of-n-grams models over hashed word n-gram features
(:mod:`thresher.models.hashed_ngrams`: unigrams and bigrams into 10,000
buckets by default): one on a target set of documents (the user's
``target_files``), one on the raw corpus (a uniform sample of
``n_documents`` ingested rows). Both are additively smoothed
(``smoothing = 1``: add-one). A document's log importance weight is the sum
over its n-grams of ``log p_target(bucket) - log p_raw(bucket)``.

This scorer writes that log weight (float64; 0 for a document without a
word); the ``dsir`` selector resamples by it (Gumbel top-k at the budget).
The models are fitted once, on the driver; the fitted log-ratio vector
(``n_buckets`` floats) travels to the workers, so scoring is one pass of a
numba kernel over each batch's text.

Target files: ``.jsonl`` / ``.jsonl.gz`` (a ``text`` field per line),
``.parquet`` (a ``text`` column) or ``.txt`` (one document per line).

References
----------
Xie, Santurkar, Ma and Liang, "Data Selection for Language Models via
Importance Resampling", NeurIPS 2023.
"""

from __future__ import annotations

import json
from typing import ClassVar

import numpy as np
import pyarrow as pa

from thresher._params import Constraints, Integral, Interval, ListOf, Real, Text
from thresher.errors import InputError, ScorerError
from thresher.fitting import FitContext
from thresher.io import schema as S
from thresher.io.documents import read_documents
from thresher.scorers.base import Scorer

_MODEL_FILE = "dsir.npy"
_SUMMARY_FILE = "dsir.json"


class DSIRScorer(Scorer):
    """Log importance weight ``log p_target(x) - log p_raw(x)`` of each document.

    Parameters
    ----------
    target_files : list of str
        Documents of the target distribution (see module docstring).
    n_buckets : int
        Hash buckets of the n-gram features (the paper: 10,000).
    ngrams : int
        Longest n-gram counted (2: unigrams and bigrams, as in the paper).
    n_documents : int
        Corpus rows sampled to fit the raw model.
    smoothing : float
        Pseudo-count added to every bucket of both models (1: add-one).

    Notes
    -----
    Output: float64, shape (n_rows,).
    """

    name: ClassVar[str] = "dsir"
    requires_fit: ClassVar[bool] = True
    transient_attributes: ClassVar[tuple[str, ...]] = ("log_ratio_",)
    _parameter_constraints: ClassVar[dict[str, Constraints]] = {
        "target_files": [ListOf(Text(), what="file paths")],
        "n_buckets": [Interval(Integral, 1, None)],
        "ngrams": [Interval(Integral, 1, 5)],
        "n_documents": [Interval(Integral, 1, None)],
        "smoothing": [Interval(Real, 0, None, closed="neither")],
    }

    def __init__(
        self,
        target_files: list[str],
        n_buckets: int = 10_000,
        ngrams: int = 2,
        n_documents: int = 100_000,
        smoothing: float = 1.0,
    ) -> None:
        self.target_files = target_files
        self.n_buckets = n_buckets
        self.ngrams = ngrams
        self.n_documents = n_documents
        self.smoothing = smoothing

    # -- lifecycle -----------------------------------------------------------------
    def fit(self, context: FitContext) -> None:
        """Fit the target and raw bag-of-n-grams models; save their log ratio."""
        from thresher.models.hashed_ngrams import bucket_counts, smoothed_log_probabilities

        self.validate_params()
        targets = read_documents(self.target_files, what=self.name, kind="target")
        if not targets:
            raise InputError(f"{self.name}: the target files hold no document")
        sample = context.sample(self.n_documents, [S.TEXT], context.seed)
        if S.TEXT not in sample.column_names or sample.num_rows == 0:
            raise InputError(f"{self.name}: the corpus sample holds no text to fit the raw model")
        target_counts = bucket_counts(
            pa.array(targets, pa.large_string()), self.n_buckets, self.ngrams
        )
        raw_counts = bucket_counts(sample.column(S.TEXT), self.n_buckets, self.ngrams)
        log_ratio = smoothed_log_probabilities(target_counts, self.smoothing) - (
            smoothed_log_probabilities(raw_counts, self.smoothing)
        )
        path = context.artifact_dir / _MODEL_FILE
        np.save(path, log_ratio, allow_pickle=False)
        summary = {
            "n_target_documents": len(targets),
            "n_target_ngrams": int(target_counts.sum()),
            "n_raw_documents": int(sample.num_rows),
            "n_raw_ngrams": int(raw_counts.sum()),
            "n_buckets": self.n_buckets,
            "ngrams": self.ngrams,
            "smoothing": self.smoothing,
        }
        (context.artifact_dir / _SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
        self.model_file_ = str(path)

    def setup(self) -> None:
        """Load the log-ratio vector once per worker."""
        if getattr(self, "log_ratio_", None) is not None:
            return
        path = getattr(self, "model_file_", None)
        if path is None:
            raise ScorerError(f"{self.name}: not fitted (call fit)")
        values = np.load(path, allow_pickle=False)
        if values.shape != (self.n_buckets,) or not np.all(np.isfinite(values)):
            raise ScorerError(f"{self.name}: {path} does not hold {self.n_buckets} finite values")
        self.log_ratio_ = values

    def score(self, batch: pa.RecordBatch) -> pa.Array:
        from thresher.models.hashed_ngrams import bucket_sums

        self.setup()
        texts = batch.column(batch.schema.get_field_index(S.TEXT))
        sums, _ = bucket_sums(texts, self.log_ratio_, self.ngrams)
        return pa.array(sums, pa.float64())
