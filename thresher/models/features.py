"""Document features for proxy models: hashed n-grams, a numeric column, or LM states.

A proxy classifier (:mod:`thresher.models.proxy`) needs a fixed-length
vector per document. Four sources, chosen by :class:`FeatureConfig`:

``hashed_ngrams``
    Word 1..n-grams hashed into ``dim`` buckets with a sign bit (the
    "hashing trick" of Weinberger et al.), raw counts, each row L2-normalised.
    No vocabulary, nothing to fit, the same vector for a document on every
    worker and in every batch. Rows are kept sparse (:class:`SparseRows`).
``features``
    The canonical ``features`` column (schema role ``features``: pixels,
    precomputed embeddings), standardised with a mean and scale fitted on
    the proxy's training sample.
``lm``
    Mean-pooled final hidden states of the reference LM
    (:meth:`thresher.models.lm.ReferenceLM.embed`), trained once per run and
    shared with the perplexity scorer (equal ``lm`` settings train one LM).
``sentence_transformer``
    Unit-norm sentence embeddings of a packaged sentence-transformers model
    (:mod:`thresher.models.sentence`; all-MiniLM-L6-v2 unless ``model_path``
    names another), loaded once per process, nothing to fit.

References
----------
Weinberger, Dasgupta, Langford, Smola and Attenberg, "Feature Hashing for
Large Scale Multitask Learning", ICML 2009.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field

from thresher.errors import ScorerError
from thresher.io import schema as S
from thresher.io.localize import local_model

if TYPE_CHECKING:
    from thresher.fitting import FitContext

FeatureSource = Literal["hashed_ngrams", "features", "lm", "sentence_transformer"]
# Per process: one loaded LM per (directory, device), shared by the scorers of a worker,
# and the embeddings of the last batch (the scorers of a run score the same batch in turn).
_LOADED_LMS: dict[tuple[str, str], Any] = {}
_LAST_EMBEDDING: dict[str, tuple[tuple[Any, ...], NDArray[np.float32]]] = {}
_TOKEN = re.compile(r"\w+")
_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


class FeatureConfig(BaseModel):
    """Which document features a proxy model reads.

    ``dim`` and ``ngrams`` apply to ``hashed_ngrams``. For ``lm``: ``lm``
    holds the reference LM's parameters (passed to ``fit_reference_lm``), or
    ``model_path`` names an LM directory to load instead (a thresher LM or a
    local Hugging Face checkpoint). For ``sentence_transformer``:
    ``model_path`` (default: the packaged all-MiniLM-L6-v2) and
    ``batch_size`` documents per forward pass.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: FeatureSource = "hashed_ngrams"
    dim: int = Field(default=4096, ge=2, le=2**22)
    ngrams: int = Field(default=2, ge=1, le=5)
    lm: dict[str, Any] = Field(default_factory=dict)
    model_path: str | None = None
    batch_size: int = Field(default=64, ge=1, le=65536)

    @property
    def input_column(self) -> str:
        """The canonical column the features come from."""
        return S.FEATURES if self.source == "features" else S.TEXT


@dataclass(frozen=True)
class SparseRows:
    """Rows of a sparse matrix in CSR form (float32 values, int64 column indices)."""

    indptr: NDArray[np.int64]
    indices: NDArray[np.int64]
    values: NDArray[np.float32]
    dim: int

    def __len__(self) -> int:
        return len(self.indptr) - 1

    def take(self, rows: NDArray[np.int64]) -> SparseRows:
        """The given rows, in the given order."""
        rows = np.asarray(rows, dtype=np.int64)
        starts = self.indptr[rows]
        lengths = self.indptr[rows + 1] - starts
        indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        # position j of output row i reads input position starts[i] + j
        gather = np.arange(int(indptr[-1]), dtype=np.int64) + np.repeat(
            starts - indptr[:-1], lengths
        )
        return SparseRows(indptr, self.indices[gather], self.values[gather], self.dim)

    def dense(self) -> NDArray[np.float32]:
        """The rows as a dense ``(n, dim)`` float32 array."""
        out = np.zeros((len(self), self.dim), dtype=np.float32)
        row_of = np.repeat(np.arange(len(self)), np.diff(self.indptr))
        out[row_of, self.indices] = self.values
        return out


Matrix = NDArray[np.float32] | SparseRows


def n_rows(matrix: Matrix) -> int:
    """Number of rows of a dense or sparse feature matrix."""
    return len(matrix) if isinstance(matrix, SparseRows) else int(matrix.shape[0])


def take_rows(matrix: Matrix, rows: NDArray[np.int64]) -> Matrix:
    """Rows of a dense or sparse feature matrix."""
    return matrix.take(rows) if isinstance(matrix, SparseRows) else matrix[rows]


def _mix(h: NDArray[np.uint64]) -> NDArray[np.uint64]:
    """splitmix64 finaliser: spreads every input bit over the 64 output bits."""
    with np.errstate(over="ignore"):
        h = h ^ (h >> np.uint64(30))
        h = (h * np.uint64(0xBF58476D1CE4E5B9)) & _MASK64
        h = h ^ (h >> np.uint64(27))
        h = (h * np.uint64(0x94D049BB133111EB)) & _MASK64
        return h ^ (h >> np.uint64(31))


def hashed_ngrams(texts: list[str | None], dim: int, ngrams: int = 2) -> SparseRows:
    """Signed hashed bag of word 1..``ngrams``-grams, each row L2-normalised.

    Words are lower-cased ``\\w+`` runs. A word hashes with xxh64; an n-gram
    combines its words' hashes position by position and mixes the result
    (with the n-gram order as salt, so unigrams and bigrams fall in
    unrelated buckets). Bucket = hash mod ``dim``; the top bit gives the
    sign, so collisions cancel in expectation instead of adding up. A
    document with no word is an all-zero row.

    Parameters
    ----------
    texts
        ``n`` documents (None counts as empty).
    dim
        Number of buckets (columns).
    ngrams
        Largest n-gram order (1 = words only).

    Returns
    -------
    SparseRows
        ``n`` rows of width ``dim``; values float32, sorted column indices.
    """
    cache: dict[str, int] = {}
    word_hashes: list[int] = []
    n_words = np.zeros(len(texts), dtype=np.int64)
    for row, text in enumerate(texts):
        if not text:
            continue
        words = _TOKEN.findall(text.lower())
        for word in words:
            if word not in cache:
                cache[word] = xxhash.xxh64_intdigest(word.encode("utf-8"))
        word_hashes.extend(map(cache.__getitem__, words))
        n_words[row] = len(words)
    hashes = np.asarray(word_hashes, dtype=np.uint64)
    docs = np.repeat(np.arange(len(texts), dtype=np.int64), n_words)
    keys_parts: list[NDArray[np.uint64]] = []
    docs_parts: list[NDArray[np.int64]] = []
    for order in range(1, ngrams + 1):
        if hashes.size < order:
            break
        count = hashes.size - order + 1
        combined = np.full(count, np.uint64(order), dtype=np.uint64)
        with np.errstate(over="ignore"):
            for offset in range(order):
                combined = _mix(combined ^ hashes[offset : offset + count])
        same_doc = docs[:count] == docs[order - 1 : order - 1 + count]
        keys_parts.append(combined[same_doc])
        docs_parts.append(docs[:count][same_doc])
    n = len(texts)
    if not keys_parts:
        return SparseRows(
            np.zeros(n + 1, dtype=np.int64),
            np.zeros(0, dtype=np.int64),
            np.zeros(0, dtype=np.float32),
            dim,
        )
    keys = np.concatenate(keys_parts)
    doc_ids = np.concatenate(docs_parts)
    buckets = (keys % np.uint64(dim)).astype(np.int64)
    signs = np.where(keys >> np.uint64(63), -1.0, 1.0)
    cell, inverse = np.unique(doc_ids * dim + buckets, return_inverse=True)
    counts = np.bincount(inverse, weights=signs).astype(np.float64)
    rows = cell // dim
    norms = np.sqrt(np.bincount(rows, weights=counts**2, minlength=n))
    normalised = counts / np.where(norms[rows] > 0, norms[rows], 1.0)
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n))]).astype(np.int64)
    return SparseRows(indptr, (cell % dim).astype(np.int64), normalised.astype(np.float32), dim)


def feature_matrix(column: pa.Array | pa.ChunkedArray) -> NDArray[np.float32]:
    """The canonical ``features`` column (list<float32>) as a dense ``(n, d)`` array.

    Raises ScorerError when rows have different lengths (ingest checks
    lengths within a shard only) or a row is null.
    """
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if len(column) == 0:
        return np.zeros((0, 0), dtype=np.float32)
    if column.null_count:
        raise ScorerError("the features column holds null vectors")
    lengths = np.asarray(pc.list_value_length(column), dtype=np.int64)
    if (lengths != lengths[0]).any():
        raise ScorerError(
            f"feature vectors of different lengths ({sorted(set(lengths.tolist()))[:5]}) in one "
            "batch; every shard must use the same vector length"
        )
    flat = np.asarray(pc.list_flatten(column).cast(pa.float32()), dtype=np.float32)
    return flat.reshape(len(column), int(lengths[0]))


class FeatureExtractor:
    """Fits (when needed), saves, loads and applies one :class:`FeatureConfig`.

    ``fit`` runs once on the driver; ``save``/``load`` go through a directory
    (JSON and safetensors, never pickle); ``transform`` is pure and per row,
    so a document gets the same vector in any batch.
    """

    def __init__(self, config: FeatureConfig, device: str = "auto") -> None:
        self.config = config
        self.device = device
        self.mean_: NDArray[np.float64] | None = None
        self.scale_: NDArray[np.float64] | None = None
        self.lm_path_: str | None = None
        self._lm: Any = None

    # -- fitting ---------------------------------------------------------------------
    def fit(self, sample: pa.Table, context: FitContext) -> FeatureExtractor:
        """Fit what the source needs: standardisation statistics, or the reference LM."""
        if self.config.source == "features":
            matrix = feature_matrix(sample.column(S.FEATURES)).astype(np.float64)
            if matrix.shape[0] == 0:
                raise ScorerError("no rows with features to fit the standardisation on")
            self.mean_ = matrix.mean(axis=0)
            scale = matrix.std(axis=0)
            self.scale_ = np.where(scale > 1e-8, scale, 1.0)
        elif self.config.source == "sentence_transformer":
            from thresher.models.sentence import model_directory

            model_directory(self.config.model_path)  # fails now when the model is missing
        elif self.config.source == "lm" and self.config.model_path is not None:
            local_model(self.config.model_path, "proxy.features.model_path")
            self.lm_path_ = self.config.model_path  # a URI stays one: each worker copies it
        elif self.config.source == "lm":
            from thresher.models.lm_training import fit_reference_lm

            self.lm_path_ = str(fit_reference_lm(context, **self.config.lm))
        return self

    @property
    def dim(self) -> int:
        """Width of the vectors ``transform`` returns (after ``fit``/``load``)."""
        if self.config.source == "hashed_ngrams":
            return self.config.dim
        if self.config.source == "features":
            assert self.mean_ is not None, "fit or load first"
            return int(self.mean_.shape[0])
        if self.config.source == "sentence_transformer":
            from thresher.models.sentence import embedding_width

            return embedding_width(self.config.model_path)
        return int(self._model().hidden_size)

    # -- persistence -------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        from safetensors.numpy import save_file

        directory.mkdir(parents=True, exist_ok=True)
        state: dict[str, Any] = {"config": self.config.model_dump(), "lm_path": self.lm_path_}
        if self.mean_ is not None and self.scale_ is not None:
            save_file(
                {"mean": self.mean_, "scale": self.scale_},
                str(directory / "standardise.safetensors"),
            )
        (directory / "features.json").write_text(json.dumps(state, indent=2, sort_keys=True))

    @classmethod
    def load(cls, directory: Path) -> FeatureExtractor:
        from thresher.models._safe import load_safetensors

        state = json.loads((directory / "features.json").read_text())
        extractor = cls(FeatureConfig.model_validate(state["config"]))
        extractor.lm_path_ = state.get("lm_path")
        if extractor.config.source == "features":
            arrays = load_safetensors(directory / "standardise.safetensors")
            extractor.mean_ = arrays["mean"].astype(np.float64)
            extractor.scale_ = arrays["scale"].astype(np.float64)
        return extractor

    # -- applying ----------------------------------------------------------------------
    def _model(self) -> Any:
        if self._lm is None:
            from thresher.models.lm import ReferenceLM

            if self.lm_path_ is None:
                raise ScorerError("the LM feature extractor is not fitted")
            key = (self.lm_path_, self.device)
            if key not in _LOADED_LMS:
                path = local_model(self.lm_path_, "proxy.features: model")
                _LOADED_LMS[key] = ReferenceLM.load(path, device=self.device)
            self._lm = _LOADED_LMS[key]
        return self._lm

    def _embed(self, texts: list[str]) -> NDArray[np.float32]:
        """LM embeddings, computed once per batch even when several scorers ask for them."""
        digest = hashlib.sha256("\0".join(texts).encode("utf-8", "surrogatepass")).hexdigest()
        key = (self.lm_path_, self.device, len(texts), digest)
        cached = _LAST_EMBEDDING.get("batch")
        if cached is not None and cached[0] == key:
            return cached[1]
        vectors = np.asarray(self._model().embed(texts), dtype=np.float32)
        _LAST_EMBEDDING["batch"] = (key, vectors)
        return vectors

    def transform(self, table: pa.Table | pa.RecordBatch) -> Matrix:
        """Feature vectors of ``table``'s rows: ``(n, dim)``, float32 (sparse for hashing)."""
        column = table.column(table.schema.get_field_index(self.config.input_column))
        if self.config.source == "hashed_ngrams":
            return hashed_ngrams(column.to_pylist(), self.config.dim, self.config.ngrams)
        if self.config.source == "features":
            assert self.mean_ is not None and self.scale_ is not None, "fit or load first"
            matrix = feature_matrix(column)
            if matrix.shape[0] == 0:
                return np.zeros((0, self.mean_.shape[0]), dtype=np.float32)
            if matrix.shape[1] != self.mean_.shape[0]:
                raise ScorerError(
                    f"feature vectors have length {matrix.shape[1]}, but the proxy was fitted "
                    f"on length {self.mean_.shape[0]}"
                )
            return ((matrix - self.mean_) / self.scale_).astype(np.float32)
        texts = [t or "" for t in column.to_pylist()]
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self.config.source == "sentence_transformer":
            from thresher.devices import resolve_device
            from thresher.models.sentence import encode

            device = resolve_device(self.device)
            return encode(texts, self.config.model_path, device, self.config.batch_size)
        return self._embed(texts).copy()
