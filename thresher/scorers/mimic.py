"""Mimic score: does training on a sample move the proxy towards a reference model?

A sample is useful when its negative loss gradient points from the
current weights ``w_t`` towards the weights ``w_ref`` of a reference model
trained on clean or target data:

    mimic(x) = < -grad_w L(w_t, x), w_ref - w_t > / || w_ref - w_t ||

(the paper's score: the length of the gradient step's projection on the
reference direction). ``normalize: cosine`` divides by the gradient's norm
too (the cosine, in ``[-1, 1]``: direction alone, not how hard the sample
pulls); ``normalize: none`` keeps the plain inner product.

Here ``w`` is the proxy's output layer (weights and bias), whose gradient
factors as ``g (x) h~`` (``g = softmax - onehot(y)``, ``h~ = [h, 1]``, ``h``
the penultimate features), so ``<grad, D> = g^T D h~`` with ``D = [W_ref -
W_t, b_ref - b_t]``: a ``C``-vector per row and checkpoint, nothing per
parameter. The reference is the checkpoint's own head trained further on
the target rows with the proxy's recipe (``proxy.epochs`` epochs over the
target, at least ``reference_steps`` steps), the checkpoint's features held
fixed (:mod:`thresher.models.reference_heads` says why a separately trained
network's last layer would not be comparable). It is trained once per run,
and shared by the mimic scorers with the same proxy, epochs and target
(``models/_shared/mimic-reference-<key>/``).

The paper tracks the score along training (Grad-Mimic's offline filter
pools it over steps); here the score is the mean over the proxy's (seed,
epoch) checkpoints, the analogue at the checkpoints the proxy saved (the
sum over epochs, as TracIn's, ranks the same), or over the seeds at one
``epoch``. High: the sample moves the model towards the reference, so keep
the top; mislabelled or off-target samples score low. A row whose label the
proxy never saw (or a null label) scores NaN.

The target is given as for ``influence``: ``target_ids`` (ids of corpus
rows), or ``target_file`` (a text file of ids, or Parquet / JSONL records
with the label and the proxy's input column; ``target_columns`` renames).

References
----------
Huang, Bilkhu, Sala and Movellan, "Evaluating Sample Utility for Data
Selection by Mimicking Model Weights", arXiv:2501.06708, 2025 (later
versions, with Cooper: "... for Efficient Data Selection ...").
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pyarrow as pa

from thresher._params import Constraints, Integral, Interval, ListOf, Mapping, Options, Text
from thresher.errors import ConfigError
from thresher.fitting import FitContext
from thresher.keys import json_digest
from thresher.models.proxy import SHARED_DIR, ProxyModel, round_scores
from thresher.models.reference_heads import (
    REFERENCE_FORMAT,
    REFERENCE_META,
    apply_heads,
    fit_reference_heads,
    load_reference_heads,
)
from thresher.scorers.el2n import check_epoch
from thresher.scorers.proxy import ProxyScorer, residuals, with_unknown_as_nan
from thresher.scorers.targets import (
    check_target_params,
    target_labels,
    target_spec,
    target_table,
)

if TYPE_CHECKING:
    import torch

NORMALIZATIONS = ("projection", "cosine", "none")


class MimicScorer(ProxyScorer):
    """Alignment of each sample's negative gradient with the direction to a reference model.

    Parameters
    ----------
    proxy : dict, optional
        Proxy settings, as for :class:`thresher.scorers.el2n.EL2NScorer`.
    target_ids : list of str, optional
        Ids of corpus rows the reference is trained on (clean or target rows).
    target_file : str, optional
        A file of such ids (text, one per line) or target records (Parquet
        or JSONL) with a label and the proxy's input column.
    target_columns : dict, optional
        For a records file: canonical name (``label``, ``text``,
        ``features``) -> the file's column name.
    normalize : str
        ``"projection"`` (divide by ``||w_ref - w_t||``, the paper's score),
        ``"cosine"`` (by the gradient's norm too) or ``"none"``.
    epoch : int, optional
        Score at this epoch's checkpoints only (default: every epoch).
    reference_steps : int
        Fewest SGD steps the reference heads train on the target (they train
        ``proxy.epochs`` epochs over it, and at least this many steps).
    device : str
        ``"auto"``, ``"cpu"`` or ``"cuda:N"``.
    """

    name: ClassVar[str] = "mimic"
    transient_attributes: ClassVar[tuple[str, ...]] = ("model_", "direction_")
    _parameter_constraints: ClassVar[dict[str, Constraints]] = {
        "target_ids": [ListOf(Text(allow_empty=True), what="id strings"), None],
        "target_file": [Text(), None],
        "target_columns": [Mapping(), None],
        "normalize": [Options(*NORMALIZATIONS)],
        "epoch": [Interval(Integral, 1, None), None],
        "reference_steps": [Interval(Integral, 1, None)],
    }

    def __init__(
        self,
        proxy: dict[str, Any] | None = None,
        target_ids: list[str] | None = None,
        target_file: str | None = None,
        target_columns: dict[str, str] | None = None,
        normalize: str = "projection",
        epoch: int | None = None,
        reference_steps: int = 200,
        device: str = "auto",
    ) -> None:
        self.proxy = proxy
        self.target_ids = target_ids
        self.target_file = target_file
        self.target_columns = target_columns
        self.normalize = normalize
        self.epoch = epoch
        self.reference_steps = reference_steps
        self.device = device

    # -- configuration -------------------------------------------------------------------
    def _check_together(self) -> None:
        super()._check_together()
        check_target_params(self.name, self.target_ids, self.target_file, self.target_columns)
        if self.target_ids is None and self.target_file is None:
            raise ConfigError(
                "mimic needs a target set to train its reference model on: give target_ids "
                "(ids of clean corpus rows) or target_file (ids, or labelled records)"
            )
        check_epoch(self.name, self.epoch, self.proxy_config.epochs)

    def needed_epochs(self) -> list[int] | None:
        return None if self.epoch is None else [self.epoch]

    # -- fitting ---------------------------------------------------------------------------
    def fit(self, context: FitContext) -> None:
        """Train (or reuse) the proxy, then the reference heads of its checkpoints."""
        super().fit(context)
        model = ProxyModel.load(Path(self.proxy_path_), epochs=self.needed_epochs(), device="cpu")
        key = json_digest(
            {
                "format": REFERENCE_FORMAT,
                "proxy": Path(self.proxy_path_).name,
                "epochs": model.loaded_epochs(),
                "steps": self.reference_steps,
                "seed": context.seed,
                "target": target_spec(self.target_ids, self.target_file, self.target_columns),
            }
        )
        directory = context.artifact_dir.parent / SHARED_DIR / f"mimic-reference-{key}"
        if not (directory / REFERENCE_META).is_file():
            table = target_table(
                self.name,
                context,
                self.proxy_config.features.input_column,
                self.target_ids,
                self.target_file,
                self.target_columns,
            )
            labels = target_labels(self.name, model, table)
            fit_reference_heads(model, table, labels, context.seed, directory, self.reference_steps)
        self.reference_path_ = str(directory)

    # -- scoring ------------------------------------------------------------------------------
    def setup(self) -> None:
        if getattr(self, "model_", None) is not None:
            return
        super().setup()
        reference = load_reference_heads(Path(self.reference_path_), self.model_)
        weights = self.model_.weights
        delta_w = reference["out.weight"] - weights["out.weight"]
        delta_b = reference["out.bias"] - weights["out.bias"]
        norm = ((delta_w * delta_w).sum(dim=(1, 2)) + (delta_b * delta_b).sum(dim=1)).sqrt()
        self.direction_ = (delta_w, delta_b, norm)

    def score(self, batch: pa.RecordBatch) -> pa.Array:
        if batch.num_rows == 0:
            return pa.array(np.zeros(0), pa.float64())
        self.setup()
        model = self.model
        x, labels = self.inputs(batch)
        h, logits = model.forward(x)
        g = residuals(logits, labels)  # (n, K, C)
        delta_w, delta_b, norm = self.direction_
        raw = -(g * apply_heads(h, delta_w, delta_b)).sum(-1)  # <-grad, D> per checkpoint
        values = model.seed_epoch_grid(self._normalized(raw, g, h, norm)).mean(axis=(1, 2))
        return pa.array(round_scores(with_unknown_as_nan(values, labels)), pa.float64())

    def _normalized(
        self, raw: torch.Tensor, g: torch.Tensor, h: torch.Tensor, norm: torch.Tensor
    ) -> torch.Tensor:
        """``raw`` divided as ``normalize`` says; 0 where a divisor is 0 (nothing moves)."""
        import torch

        if self.normalize == "none":
            return raw
        divisor = norm.expand_as(raw)
        if self.normalize == "cosine":
            h_norm = ((h * h).sum(-1) + 1.0).sqrt()  # ||[h, 1]||
            divisor = divisor * g.norm(dim=-1) * h_norm
        safe = torch.where(divisor > 0, divisor, torch.ones_like(divisor))
        return torch.where(divisor > 0, raw / safe, torch.zeros_like(raw))
