"""VoG: variance of gradients across training checkpoints, normalised within each class.

For an example ``(x, y)`` and the ``K`` checkpoints of one training run
(the proxy's epochs ``1..K``), take the gradient of the true class's
pre-softmax logit with respect to the input features,
``S_t = d logit_y(w_t, x) / d x`` (a vector of the features' width ``D``):

    mu_p  = 1/K sum_t S_t[p]
    VoG_p = sqrt( 1/K sum_t (S_t[p] - mu_p)^2 )     (population std over checkpoints)
    VoG   = 1/D sum_p VoG_p                          (mean over input dimensions)

averaged over the proxy's seeds. This is the paper's equation (some public
reimplementations compute ``sqrt(1/K) * sum_t (...)^2`` instead; we do not).
VoG is compared within a class: with ``normalize: true`` (default) the
score is ``(VoG - mean_c) / std_c`` with the mean and population std of the
raw VoG over the class ``c`` of the example, measured in ``fit`` on up to
``n_normalize`` labelled rows of the corpus (a class with a single row or
no spread has ``std_c = 1``; a class absent from that sample uses the
statistics of the whole sample). High: unstable, hard or atypical examples.
For text the input is the proxy's feature vector (hashed n-grams or LM
embedding), as the method prescribes for embeddings.

The proxy needs a hidden layer (``proxy.hidden > 0``): for a linear head the
input gradient of a class logit is that class's weight row, the same for
every example of the class, so VoG would not tell examples apart.

References
----------
Agarwal, D'souza and Hooker, "Estimating Example Difficulty using Variance
of Gradients", CVPR 2022.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from thresher._params import Bool, Constraints, Integral, Interval
from thresher.errors import ConfigError, ScorerError
from thresher.fitting import FitContext
from thresher.io import schema as S
from thresher.models.proxy import ProxyModel, round_scores
from thresher.scorers.proxy import ProxyScorer, with_unknown_as_nan

if TYPE_CHECKING:
    import torch

_STATS_FILE = "vog_class_stats.json"
_CHUNK_VALUES = (
    2**23
)  # gradient values held at once (64 MiB in float64): rows x checkpoints x width


def input_gradients(model: ProxyModel, x: torch.Tensor, labels: NDArray[np.int64]) -> torch.Tensor:
    """``d logit_y / d x`` at every loaded checkpoint: shape ``(n, K, D)``.

    For the one-hidden-layer head ``logit = W2 relu(W1 x + b1) + b2`` this is
    ``W1^T (W2[y] * 1[W1 x + b1 > 0])``. Rows with label ``-1`` get zeros.
    """
    import torch

    h, _ = model.forward(x)  # (n, K, H)
    w1 = model.weights["hidden.weight"]  # (K, H, D)
    w2 = model.weights["out.weight"]  # (K, C, H)
    safe = torch.as_tensor(np.where(labels >= 0, labels, 0), device=w2.device)
    rows_of_class = w2[:, safe, :].permute(1, 0, 2)  # (n, K, H)
    active = (h > 0).to(w2.dtype)
    gradients = torch.einsum("nkh,khd->nkd", rows_of_class * active, w1)
    gradients[torch.as_tensor(labels < 0, device=w2.device)] = 0.0
    return gradients


def raw_vog(model: ProxyModel, x: torch.Tensor, labels: NDArray[np.int64]) -> NDArray[np.float64]:
    """Un-normalised VoG of each row (see module docstring), mean over seeds; NaN for label -1."""
    n = x.shape[0]
    values = np.zeros(n, dtype=np.float64)
    chunk = max(1, _CHUNK_VALUES // (len(model.checkpoints) * max(1, x.shape[1])))
    for start in range(0, n, chunk):
        rows = slice(start, start + chunk)
        gradients = input_gradients(model, x[rows], labels[rows])  # (m, K, D)
        m, _, width = gradients.shape
        per_seed = gradients.reshape(m, model.n_seeds, -1, width)  # (m, S, E, D)
        centred = per_seed - per_seed.mean(dim=2, keepdim=True)
        spread = (centred * centred).mean(dim=2).sqrt()  # (m, S, D): population std over epochs
        values[rows] = spread.mean(dim=2).mean(dim=1).double().cpu().numpy()
    return with_unknown_as_nan(values, labels)


class VoGScorer(ProxyScorer):
    """Variance of gradients over the proxy's checkpoints, class-normalised.

    Parameters
    ----------
    proxy : dict, optional
        Proxy settings, as for :class:`thresher.scorers.el2n.EL2NScorer`;
        ``hidden`` must be > 0 and ``epochs`` >= 2.
    normalize : bool
        Standardise within each class (default) or return the raw VoG.
    n_normalize : int
        Labelled rows sampled in ``fit`` for the class statistics.
    device : str
        ``"auto"``, ``"cpu"`` or ``"cuda:N"``.
    """

    name: ClassVar[str] = "vog"
    _parameter_constraints: ClassVar[dict[str, Constraints]] = {
        "normalize": [Bool()],
        "n_normalize": [Interval(Integral, 2, None)],
    }

    def __init__(
        self,
        proxy: dict[str, Any] | None = None,
        normalize: bool = True,
        n_normalize: int = 10_000,
        device: str = "auto",
    ) -> None:
        self.proxy = proxy
        self.normalize = normalize
        self.n_normalize = n_normalize
        self.device = device

    def _check_together(self) -> None:
        super()._check_together()
        config = self.proxy_config
        if config.hidden == 0:
            raise ConfigError(
                "vog.proxy.hidden: VoG needs a hidden layer (> 0); with a linear head every "
                "example of a class has the same input gradient"
            )
        if config.epochs < 2:
            raise ConfigError("vog.proxy.epochs: VoG needs at least 2 checkpoints (epochs >= 2)")

    def output_fields(self, column: str) -> list[pa.Field]:
        return [pa.field(column, pa.float64())]

    def fit(self, context: FitContext) -> None:
        super().fit(context)
        if not self.normalize:
            return
        path = context.artifact_dir / _STATS_FILE
        if path.is_file() and json.loads(path.read_text()).get("proxy") == self.proxy_path_:
            self.stats_path_ = str(path)
            return
        model = ProxyModel.load(Path(self.proxy_path_), device="cpu")
        column = self.proxy_config.features.input_column
        sample = context.sample(self.n_normalize, [S.LABEL, column], context.seed + 1)
        labels = model.label_indices(sample.column(S.LABEL))
        values = np.concatenate(
            [
                raw_vog(
                    model, model.features(sample.slice(start, 1024)), labels[start : start + 1024]
                )
                for start in range(0, sample.num_rows, 1024)
            ]
            or [np.zeros(0)]
        )
        known = labels >= 0
        if not known.any():
            raise ScorerError("vog: no labelled row of a known class to normalise with")
        stats = {"*": _summary(values[known])}
        for index, label in enumerate(model.classes):
            members = values[labels == index]
            if members.size:
                stats[label] = _summary(members)
        path.write_text(json.dumps({"proxy": self.proxy_path_, "classes": stats}, indent=2))
        self.stats_path_ = str(path)

    def setup(self) -> None:
        if getattr(self, "model_", None) is not None:
            return
        super().setup()
        if self.normalize:
            path = getattr(self, "stats_path_", None)
            if path is None:
                raise ScorerError("vog: class statistics missing; call fit() before setup()")
            self.class_stats_ = json.loads(Path(path).read_text())["classes"]

    def score(self, batch: pa.RecordBatch) -> pa.Array:
        if batch.num_rows == 0:
            return pa.array([], pa.float64())
        model = self.model
        x, labels = self.inputs(batch)
        values = raw_vog(model, x, labels)
        if self.normalize:
            means = np.zeros(len(model.classes))
            scales = np.ones(len(model.classes))
            for index, label in enumerate(model.classes):
                stats = self.class_stats_.get(label, self.class_stats_["*"])
                means[index], scales[index] = stats["mean"], stats["std"]
            safe = np.where(labels >= 0, labels, 0)
            values = with_unknown_as_nan((values - means[safe]) / scales[safe], labels)
        return pa.array(round_scores(values), pa.float64())


def _summary(values: NDArray[np.float64]) -> dict[str, float]:
    """Mean, population std (1.0 when there is no spread) and count of raw VoG values."""
    spread = float(values.std()) if values.size > 1 else 0.0
    return {
        "mean": float(values.mean()),
        "std": spread if spread > 0 else 1.0,
        "count": float(values.size),
    }
