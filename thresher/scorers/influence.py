"""TracIn-CP influence from the proxy's checkpoints: self-influence and influence on a target.

TracIn-CP estimates how much training on ``z`` lowers the loss on ``z'`` by
summing, over saved checkpoints ``w_i``, the learning rate times the dot
product of the two loss gradients:

    influence(z, z') = sum_i lr_i < grad L(w_i, z), grad L(w_i, z') >

Gradients are those of the last layer (weights and bias), which factor as
``g (x) h~`` with ``g = softmax - onehot(y)`` and ``h~ = [h, 1]`` (``h``:
the penultimate features), so ``<grad(z), grad(z')> = <g, g'> <h~, h~'>``.
When ``h~`` is wider than ``projection_dim`` it is replaced by ``R h~``,
with ``R`` a fixed Gaussian matrix (``projection_dim x width``, entries
``N(0, 1/projection_dim)``, seeded by the run seed): inner products are
preserved in expectation (Johnson-Lindenstrauss), and the memory per
checkpoint stays ``classes x projection_dim`` whatever the features' width.

Outputs (column ``influence`` renamed by ``column:`` renames both):

- ``influence``: self-influence ``sum_i lr_i ||g_i||^2 ||h~_i||^2``, a
  mislabel / difficulty score (high: the example pulls the model alone);
- ``influence_target`` (when a target is given): mean influence on the
  target examples, ``sum_i lr_i g_i^T M_i h~_i`` with ``M_i`` the target's
  mean gradient at checkpoint ``i`` (computed once in ``fit``). High: training
  on the example helps the target task, so keep the top.

Every (seed, epoch) checkpoint of the proxy counts, averaged over seeds.
The target is ``target_ids`` (ids of corpus rows), or ``target_file``: a text
file of ids (one per line), or a Parquet / JSONL file of target records
with the label and the proxy's input column (``text`` or ``features``;
rename with ``target_columns: {label: my_label, text: body}``). Unseen
labels give NaN.

References
----------
Pruthi, Liu, Kale and Sundararajan, "Estimating Training Data Influence by
Tracing Gradient Descent", NeurIPS 2020.
Anand et al., "Influence Scores at Scale for Efficient Language Data
Sampling", EMNLP 2023.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from thresher._params import Constraints, Integral, Interval, ListOf, Mapping, Text
from thresher.fitting import FitContext
from thresher.keys import json_digest
from thresher.models._safe import load_safetensors
from thresher.models.proxy import ProxyModel, round_scores
from thresher.scorers.proxy import (
    ProxyScorer,
    residuals,
    struct_or_array,
    with_unknown_as_nan,
)
from thresher.scorers.targets import (
    check_target_params,
    target_labels,
    target_spec,
    target_table,
)

if TYPE_CHECKING:
    import torch

_TARGET_FILE = "target_gradients.safetensors"
_TARGET_META = "target.json"
_TARGET_CHUNK = 1024  # target rows per forward pass in fit


class InfluenceScorer(ProxyScorer):
    """TracIn-CP self-influence, and influence on a target set.

    Parameters
    ----------
    proxy : dict, optional
        Proxy settings, as for :class:`thresher.scorers.el2n.EL2NScorer`.
    projection_dim : int or None
        Width of the random projection of ``[h, 1]``; ``None`` keeps the
        exact gradients (memory ``classes x (width + 1)`` per checkpoint).
    target_ids : list of str, optional
        Ids of corpus rows forming the target set.
    target_file : str, optional
        A file of target ids (text, one per line) or target records
        (Parquet or JSONL).
    target_columns : dict, optional
        For a records file: canonical name (``label``, ``text``,
        ``features``) -> the file's column name.
    device : str
        ``"auto"``, ``"cpu"`` or ``"cuda:N"``.
    """

    name: ClassVar[str] = "influence"
    transient_attributes: ClassVar[tuple[str, ...]] = (
        "model_",
        "projection_",
        "target_gradients_",
    )
    _parameter_constraints: ClassVar[dict[str, Constraints]] = {
        "projection_dim": [Interval(Integral, 1, None), None],
        "target_ids": [ListOf(Text(allow_empty=True), what="id strings"), None],
        "target_file": [Text(), None],
        "target_columns": [Mapping(), None],
    }

    def __init__(
        self,
        proxy: dict[str, Any] | None = None,
        projection_dim: int | None = 256,
        target_ids: list[str] | None = None,
        target_file: str | None = None,
        target_columns: dict[str, str] | None = None,
        device: str = "auto",
    ) -> None:
        self.proxy = proxy
        self.projection_dim = projection_dim
        self.target_ids = target_ids
        self.target_file = target_file
        self.target_columns = target_columns
        self.device = device

    # -- configuration -------------------------------------------------------------------
    @property
    def has_target(self) -> bool:
        return self.target_ids is not None or self.target_file is not None

    def _check_together(self) -> None:
        super()._check_together()
        check_target_params(self.name, self.target_ids, self.target_file, self.target_columns)

    def output_fields(self, column: str) -> list[pa.Field]:
        fields = [pa.field(column, pa.float64())]
        if self.has_target:
            fields.append(pa.field(f"{column}_target", pa.float64()))
        return fields

    # -- fitting ---------------------------------------------------------------------------
    def fit(self, context: FitContext) -> None:
        super().fit(context)
        self.projection_seed_ = int(context.seed)
        if not self.has_target:
            return
        key = self._target_key()
        meta_path = context.artifact_dir / _TARGET_META
        if meta_path.is_file() and json.loads(meta_path.read_text()).get("key") == key:
            self.target_path_ = str(context.artifact_dir / _TARGET_FILE)
            return
        import torch
        from safetensors.numpy import save_file

        table = target_table(
            self.name,
            context,
            self.proxy_config.features.input_column,
            self.target_ids,
            self.target_file,
            self.target_columns,
        )
        model = ProxyModel.load(Path(self.proxy_path_), device="cpu")
        labels = target_labels(self.name, model, table)
        projection = self._projection(model)
        total: torch.Tensor | None = None
        for start in range(0, table.num_rows, _TARGET_CHUNK):
            chunk = table.slice(start, _TARGET_CHUNK)
            h, logits = model.forward(model.features(chunk))
            g = residuals(logits, labels[start : start + _TARGET_CHUNK])
            projected = _project(h, projection).expand(g.shape[0], g.shape[1], -1)
            part = torch.einsum("nkc,nkj->kcj", g, projected)
            total = part if total is None else total + part
        assert total is not None
        mean_gradient = total.double().numpy() / table.num_rows
        context.artifact_dir.mkdir(parents=True, exist_ok=True)
        save_file({"mean_gradient": mean_gradient}, str(context.artifact_dir / _TARGET_FILE))
        meta_path.write_text(
            json.dumps(
                {"key": key, "n_targets": table.num_rows, "shape": list(mean_gradient.shape)}
            )
        )
        self.target_path_ = str(context.artifact_dir / _TARGET_FILE)

    def _target_key(self) -> str:
        spec = {
            "proxy_path": self.proxy_path_,
            "projection_dim": self.projection_dim,
            "seed": self.projection_seed_,
            **target_spec(self.target_ids, self.target_file, self.target_columns),
        }
        return json_digest(spec, length=64)

    # -- scoring ------------------------------------------------------------------------------
    def setup(self) -> None:
        if getattr(self, "model_", None) is not None:
            return
        super().setup()
        self.projection_ = self._projection(self.model_)
        if self.has_target:
            import torch

            gradients = load_safetensors(Path(self.target_path_))["mean_gradient"]
            weights = self.model_.weights["out.weight"]
            self.target_gradients_ = torch.from_numpy(gradients).to(weights.device, weights.dtype)

    def _projection(self, model: ProxyModel) -> torch.Tensor | None:
        """The fixed ``(projection_dim, width + 1)`` Gaussian matrix, or None (exact)."""
        import torch

        width = model.hidden or int(model.metadata["input_dim"])
        if self.projection_dim is None or width + 1 <= self.projection_dim:
            return None
        rng = np.random.default_rng([self.projection_seed_, 0x7AC1])
        matrix = rng.standard_normal((self.projection_dim, width + 1)) / np.sqrt(
            self.projection_dim
        )
        weights = model.weights["out.weight"]
        return torch.from_numpy(matrix).to(weights.device, weights.dtype)

    def score(self, batch: pa.RecordBatch) -> pa.Array:
        fields = self.output_fields(self.name)
        if batch.num_rows == 0:
            return struct_or_array([np.zeros(0)] * len(fields), fields)
        import torch

        self.setup()
        model = self.model
        x, labels = self.inputs(batch)
        h, logits = model.forward(x)
        g = residuals(logits, labels)  # (n, K, C)
        projected = _project(h, self.projection_)  # (n, K|1, k)
        lrs = torch.tensor([c.lr for c in model.checkpoints], dtype=g.dtype, device=g.device)
        self_influence = lrs * (g * g).sum(-1) * (projected * projected).sum(-1)
        columns = [_per_seed_sum(model, self_influence)]
        if self.has_target:
            pulled = torch.einsum("nkc,kcj->nkj", g, self.target_gradients_)
            columns.append(_per_seed_sum(model, lrs * (pulled * projected).sum(-1)))
        columns = [round_scores(with_unknown_as_nan(c, labels)) for c in columns]
        return struct_or_array(columns, fields)


def _project(h: torch.Tensor, projection: torch.Tensor | None) -> torch.Tensor:
    """``[h, 1]`` (exact) or ``R [h, 1]``: shape ``(n, K|1, width + 1 | projection_dim)``."""
    import torch

    if projection is None:
        return torch.cat([h, torch.ones_like(h[..., :1])], dim=-1)
    width = h.shape[-1]
    return h @ projection[:, :width].T + projection[:, width]


def _per_seed_sum(model: ProxyModel, values: torch.Tensor) -> NDArray[np.float64]:
    """Sum over epochs (TracIn's sum over checkpoints), mean over seeds: ``(n, K) -> (n,)``."""
    return model.seed_epoch_grid(values).sum(axis=2).mean(axis=1)
