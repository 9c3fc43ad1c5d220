"""Perplexity under a reference LM, and token-level EL2N under the same LM.

The reference LM is trained on a random sample of the corpus by
:func:`thresher.models.lm_training.fit_reference_lm` (shared with every other scorer
of the run that asks for the same LM parameters), or loaded from
``model_path``: a thresher LM directory or a local Hugging Face causal LM
checkpoint (the ``hf`` extra). Nothing is downloaded.

Outputs, for the column name ``<column>`` the run gives this scorer:

- ``<column>``: perplexity ``exp(mean token NLL)`` of the document's first
  ``max_tokens`` tokens (NaN for a document with no token, which selection
  then drops as ``invalid_score``);
- ``<column>_token_el2n`` (with ``token_el2n=True``): the mean over tokens of
  ``||softmax(logits) - onehot(next token)||_2``, in ``[0, sqrt(2)]``;
- ``<column>_in_lm_train`` (with ``flag_lm_train=True``, the default): whether
  the document was in the LM's training sample. Its perplexity is then
  optimistic; filter these rows out (a ``threshold`` filter with ``max: 0``)
  to select, as in "Perplexed by Perplexity", only among documents the LM
  did not see.

Selection keeps a perplexity band (``quantile_band`` with ``band: low``,
``medium`` or ``high``): which band helps depends on the corpus.

References
----------
Ankner et al., "Perplexed by Perplexity: Perplexity-Based Data Pruning With
Small Reference Models", 2024. Marion et al., "When Less is More:
Investigating Data Pruning for Pretraining LLMs at Scale", 2023.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from thresher._params import Bool, Constraints, Device, Integral, Interval, Mapping, Text
from thresher.errors import ScorerError
from thresher.fitting import FitContext
from thresher.io import schema as S
from thresher.io.localize import local_model
from thresher.scorers.base import Scorer


class PerplexityScorer(Scorer):
    """Perplexity of each document under a reference LM (see module docstring).

    Parameters
    ----------
    lm : dict, optional
        Parameters of the reference LM to train (keys of
        :data:`thresher.models.lm_training.LM_DEFAULTS`: ``d_model``, ``n_layers``,
        ``steps``, ``n_documents``...). Scorers given the same ``lm`` share one LM.
    model_path : str, optional
        Use this LM instead of training one: a thresher LM directory or a
        local Hugging Face checkpoint directory (safetensors weights).
    max_tokens : int
        Score at most the first ``max_tokens`` tokens of a document.
    batch_tokens : int
        Padded tokens per forward pass (the batching budget).
    token_el2n : bool
        Also write ``<column>_token_el2n``.
    flag_lm_train : bool
        Also write ``<column>_in_lm_train`` (reads the id and row position).
    device : str
        ``"auto"`` (the task's GPU in Spark, else CUDA if present, else CPU),
        ``"cpu"`` or ``"cuda:N"``.
    """

    name: ClassVar[str] = "perplexity"
    requires_fit: ClassVar[bool] = True
    transient_attributes: ClassVar[tuple[str, ...]] = ("lm_", "training_rows_")
    _parameter_constraints: ClassVar[dict[str, Constraints]] = {
        "lm": [Mapping(), None],
        "model_path": [Text(), None],
        "max_tokens": [Interval(Integral, 1, None)],
        "batch_tokens": [Interval(Integral, 1, None)],
        "token_el2n": [Bool()],
        "flag_lm_train": [Bool()],
        "device": [Device()],
    }

    def __init__(
        self,
        lm: dict[str, Any] | None = None,
        model_path: str | None = None,
        max_tokens: int = 512,
        batch_tokens: int = 8192,
        token_el2n: bool = False,
        flag_lm_train: bool = True,
        device: str = "auto",
    ) -> None:
        self.lm = lm
        self.model_path = model_path
        self.max_tokens = max_tokens
        self.batch_tokens = batch_tokens
        self.token_el2n = token_el2n
        self.flag_lm_train = flag_lm_train
        self.device = device

    @property
    def input_columns(self) -> tuple[str, ...]:  # type: ignore[override]
        """``text``, plus the id and row position when ``flag_lm_train`` is on."""
        return (S.TEXT, S.ID, S.SHARD, S.ROW) if self.flag_lm_train else (S.TEXT,)

    def output_fields(self, column: str) -> list[pa.Field]:
        fields = [pa.field(column, pa.float64())]
        if self.token_el2n:
            fields.append(pa.field(f"{column}_token_el2n", pa.float64()))
        if self.flag_lm_train:
            fields.append(pa.field(f"{column}_in_lm_train", pa.bool_()))
        return fields

    def _check_together(self) -> None:
        from thresher.models.lm_training import lm_params

        if self.lm is not None and self.model_path is not None:
            raise ValueError(
                f"{self.name}: give either lm (train a reference LM) or model_path, not both"
            )
        try:
            lm_params(**(self.lm or {}))
        except ValueError as error:
            raise ValueError(f"{self.name}: lm: {error}") from None

    # -- lifecycle -----------------------------------------------------------------
    def fit(self, context: FitContext) -> None:
        """Train (or reuse) the reference LM, or check ``model_path``; remember its directory."""
        from thresher.models.lm import lm_kind
        from thresher.models.lm_training import fit_reference_lm

        self.validate_params()
        if self.model_path is not None:
            path = local_model(self.model_path, "perplexity: model_path")
            lm_kind(path)  # fail here, on the driver, rather than in every worker
            self.lm_path_ = self.model_path  # a URI stays one: each worker copies it
        else:
            path = fit_reference_lm(context, **(self.lm or {}))
            self.lm_path_ = str(path)
        record = {"lm_path": self.lm_path_}
        config = path / "config.json"
        if config.is_file():
            details = json.loads(config.read_text(encoding="utf-8"))
            for key in ("validation_perplexity", "n_parameters", "n_train_documents"):
                if key in details:
                    record[key] = details[key]
        (context.artifact_dir / "perplexity.json").write_text(json.dumps(record, indent=2))

    def setup(self) -> None:
        """Load the LM once per worker (on the device ``device`` resolves to here)."""
        if getattr(self, "lm_", None) is not None:
            return
        from thresher.models.lm import ReferenceLM

        path = getattr(self, "lm_path_", None) or self.model_path
        if path is None:
            raise ScorerError("perplexity: not fitted (call fit) and no model_path given")
        self.lm_ = ReferenceLM.load(local_model(path, "perplexity: model"), device=self.device)
        self.training_rows_ = self.lm_.training_rows()

    def score(self, batch: pa.RecordBatch) -> pa.Array:
        from thresher.models.lm import in_training_sample

        self.setup()
        texts = batch.column(batch.schema.get_field_index(S.TEXT)).to_pylist()
        mean_nll, token_el2n = self.lm_.score_documents(
            texts,
            max_tokens=self.max_tokens,
            batch_tokens=self.batch_tokens,
            token_el2n=self.token_el2n,
        )
        with np.errstate(over="ignore"):
            values = [pa.array(np.exp(mean_nll), pa.float64(), from_pandas=False)]
        if self.token_el2n:
            values.append(pa.array(token_el2n, pa.float64()))
        if self.flag_lm_train:
            shards = batch.column(batch.schema.get_field_index(S.SHARD)).to_numpy(
                zero_copy_only=False
            )
            rows = batch.column(batch.schema.get_field_index(S.ROW)).to_numpy(zero_copy_only=False)
            ids = batch.column(batch.schema.get_field_index(S.ID)).to_pylist()
            flags = in_training_sample(self.training_rows_, shards, rows, ids)
            values.append(pa.array(flags, pa.bool_()))
        if len(values) == 1:
            return values[0]
        return pa.StructArray.from_arrays(values, fields=list(self.output_field(self.name).type))
