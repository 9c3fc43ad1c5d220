"""GraNd: the norm of the loss gradient, in its cheap last-layer form.

For cross-entropy, the gradient with respect to the logits is
``g = softmax(f(x)) - onehot(y)``; the last layer maps the penultimate
features ``h`` to the logits with weights ``W`` and bias ``b``, so its
gradient is ``[g h^T, g]`` and

    GraNd(x, y) = || [g (x) h, g] ||_2 = ||g||_2 * sqrt(1 + ||h||_2^2)
                = EL2N(x, y) * sqrt(1 + ||h||_2^2)

(``h`` is the hidden layer of the proxy, or its input features for a linear
head). Evaluated at an early epoch, in eval mode, averaged over the
proxy's seeds, like EL2N (:mod:`thresher.scorers.el2n`). Unseen labels give
NaN.

References
----------
Paul, Ganguli and Dziugaite, "Deep Learning on a Data Diet: Finding
Important Examples Early in Training", NeurIPS 2021 (GraNd, and the
last-layer approximation is the one used for large models in "BERT on a
Data Diet", Fayyaz et al. 2022).
"""

from __future__ import annotations

from typing import Any, ClassVar

import pyarrow as pa

from thresher._params import Constraints, Integral, Interval
from thresher.models.proxy import round_scores
from thresher.scorers.el2n import check_epoch, chosen_epoch
from thresher.scorers.proxy import ProxyScorer, residuals, with_unknown_as_nan


class GraNdScorer(ProxyScorer):
    """Last-layer gradient norm of the proxy classifier's loss.

    Parameters
    ----------
    proxy : dict, optional
        Proxy settings, as for :class:`thresher.scorers.el2n.EL2NScorer`.
    epoch : int, optional
        Epoch of the checkpoints used (default: the first quarter of training).
    device : str
        ``"auto"``, ``"cpu"`` or ``"cuda:N"``.
    """

    name: ClassVar[str] = "grand"
    _parameter_constraints: ClassVar[dict[str, Constraints]] = {
        "epoch": [Interval(Integral, 1, None), None],
    }

    def __init__(
        self, proxy: dict[str, Any] | None = None, epoch: int | None = None, device: str = "auto"
    ) -> None:
        self.proxy = proxy
        self.epoch = epoch
        self.device = device

    def _check_together(self) -> None:
        super()._check_together()
        check_epoch(self.name, self.epoch, self.proxy_config.epochs)

    def output_fields(self, column: str) -> list[pa.Field]:
        return [pa.field(column, pa.float64())]

    def needed_epochs(self) -> list[int] | None:
        return [chosen_epoch(self.epoch, self.proxy_config.epochs)]

    def score(self, batch: pa.RecordBatch) -> pa.Array:
        if batch.num_rows == 0:
            return pa.array([], pa.float64())
        model = self.model
        x, labels = self.inputs(batch)
        h, logits = model.forward(x)
        gradient_norm = residuals(logits, labels).norm(dim=-1)  # (n, K)
        hidden_norm_sq = (h * h).sum(dim=-1)  # (n, K) or (n, 1) for a linear head
        grand = gradient_norm * (1.0 + hidden_norm_sq).sqrt()
        values = model.seed_epoch_grid(grand)[:, :, 0].mean(axis=1)
        return pa.array(round_scores(with_unknown_as_nan(values, labels)), pa.float64())
