"""EL2N, and the training dynamics of the same proxy: AUM and forgetting counts.

EL2N(x, y) = || softmax(f(x)) - onehot(y) ||_2 under the proxy classifier
(:mod:`thresher.models.proxy`) at an early epoch, in eval mode, averaged
over the proxy's seeds. High EL2N: hard or mislabelled; low: easy,
redundant. Optional outputs from the same checkpoints (column ``el2n``
renamed by ``column:`` renames them all):

- ``el2n_epoch_<k>`` (``per_epoch: true``): EL2N at every epoch ``k``, so a
  trainer can prune dynamically, rescoring as training goes (NLU on Data
  Diets);
- ``el2n_aum`` (``aum: true``): area under the margin, the mean over epochs
  (and seeds) of ``logit_y - max_{j != y} logit_j``, measured at the end of
  each epoch; low or negative for mislabelled examples;
- ``el2n_forgetting`` (``forgetting: true``): forgetting events, the number
  of epochs ``k`` at which an example is misclassified after being
  classified correctly at ``k - 1`` (mean over seeds). An example never
  classified correctly at any epoch gets ``epochs``, more than any example
  can be forgotten, as Toneva et al. rank unlearned examples first.

Per-epoch measurements use the checkpoints saved at the end of each epoch,
not every minibatch presentation as in the papers: cheaper, and the same
for every row of the corpus, trained on or not.

A row whose label the proxy never saw (or a null label) scores NaN (the
select stage then drops it with reason ``invalid_score``).

References
----------
Paul, Ganguli and Dziugaite, "Deep Learning on a Data Diet: Finding
Important Examples Early in Training", NeurIPS 2021.
Fayyaz et al., "BERT on a Data Diet: Finding Important Examples by
Gradient-Based Pruning", 2022.
Attendu and Corbeil, "NLU on Data Diets: Dynamic Data Subset Selection for
NLP Classification Tasks", 2023.
Pleiss, Zhang, Elenberg and Weinberger, "Identifying Mislabeled Data using
the Area Under the Margin Ranking", NeurIPS 2020.
Toneva et al., "An Empirical Study of Example Forgetting during Deep Neural
Network Learning", ICLR 2019.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from thresher._params import Bool, Constraints, Integral, Interval
from thresher.errors import ConfigError
from thresher.models.proxy import round_scores
from thresher.scorers.proxy import (
    ProxyScorer,
    residuals,
    struct_or_array,
    with_unknown_as_nan,
)


def default_epoch(epochs: int) -> int:
    """The early epoch EL2N and GraNd use by default: the end of the first quarter.

    Paul et al. score at epoch 20 of 200; "BERT on a Data Diet" finds at
    least one full epoch necessary for text. ``ceil(epochs / 4)`` is both.
    """
    return max(1, math.ceil(epochs / 4))


def chosen_epoch(epoch: int | None, epochs: int) -> int:
    """``epoch``, or the default for a proxy trained ``epochs`` epochs."""
    return default_epoch(epochs) if epoch is None else epoch


def check_epoch(owner: str, epoch: int | None, epochs: int) -> None:
    """A given ``epoch`` is one the proxy trains (``1..epochs``): ConfigError otherwise."""
    if epoch is not None and not 1 <= epoch <= epochs:
        raise ConfigError(f"{owner}.epoch: {epoch!r} is not in 1..{epochs} (proxy.epochs)")


class EL2NScorer(ProxyScorer):
    """EL2N score (and optionally per-epoch EL2N, AUM, forgetting counts).

    Parameters
    ----------
    proxy : dict, optional
        Proxy classifier settings (:class:`thresher.models.proxy.ProxyConfig`):
        features (``source: hashed_ngrams | features | lm``), ``hidden``,
        ``epochs``, ``n_seeds``... Scorers with equal ``proxy`` share it.
    epoch : int, optional
        Epoch whose checkpoints give EL2N (default :func:`default_epoch`).
    per_epoch, aum, forgetting : bool
        Also write ``<column>_epoch_<k>``, ``<column>_aum``, ``<column>_forgetting``.
    device : str
        ``"auto"`` (Spark's GPU, else CUDA, else CPU), ``"cpu"`` or ``"cuda:N"``.
    """

    name: ClassVar[str] = "el2n"
    _parameter_constraints: ClassVar[dict[str, Constraints]] = {
        "epoch": [Interval(Integral, 1, None), None],
        "per_epoch": [Bool()],
        "aum": [Bool()],
        "forgetting": [Bool()],
    }

    def __init__(
        self,
        proxy: dict[str, Any] | None = None,
        epoch: int | None = None,
        per_epoch: bool = False,
        aum: bool = False,
        forgetting: bool = False,
        device: str = "auto",
    ) -> None:
        self.proxy = proxy
        self.epoch = epoch
        self.per_epoch = per_epoch
        self.aum = aum
        self.forgetting = forgetting
        self.device = device

    @property
    def dynamics(self) -> bool:
        return bool(self.per_epoch or self.aum or self.forgetting)

    def _check_together(self) -> None:
        super()._check_together()
        check_epoch(self.name, self.epoch, self.proxy_config.epochs)

    def output_fields(self, column: str) -> list[pa.Field]:
        epochs = self.proxy_config.epochs
        fields = [pa.field(column, pa.float64())]
        if self.per_epoch:
            fields += [pa.field(f"{column}_epoch_{k}", pa.float64()) for k in range(1, epochs + 1)]
        if self.aum:
            fields.append(pa.field(f"{column}_aum", pa.float64()))
        if self.forgetting:
            fields.append(pa.field(f"{column}_forgetting", pa.float64()))
        return fields

    def needed_epochs(self) -> list[int] | None:
        if self.dynamics:
            return None
        return [chosen_epoch(self.epoch, self.proxy_config.epochs)]

    def score(self, batch: pa.RecordBatch) -> pa.Array:
        fields = self.output_fields(self.name)
        if batch.num_rows == 0:
            return struct_or_array([np.zeros(0)] * len(fields), fields)
        model = self.model
        x, labels = self.inputs(batch)
        _, logits = model.forward(x)
        el2n = model.seed_epoch_grid(residuals(logits, labels).norm(dim=-1))  # (n, S, E)
        epochs = model.loaded_epochs()
        chosen = epochs.index(chosen_epoch(self.epoch, model.epochs))
        columns = [el2n[:, :, chosen].mean(axis=1)]
        if self.per_epoch:
            columns += [el2n[:, :, k].mean(axis=1) for k in range(len(epochs))]
        if self.aum or self.forgetting:
            logit_grid = logits.detach().cpu().double().numpy()
            if self.aum:
                columns.append(_aum(logit_grid, labels, model.n_seeds))
            if self.forgetting:
                columns.append(_forgetting(logit_grid, labels, model.n_seeds))
        columns = [round_scores(with_unknown_as_nan(c, labels)) for c in columns]
        return struct_or_array(columns, fields)


def margins(logits: NDArray[np.float64], labels: NDArray[np.int64]) -> NDArray[np.float64]:
    """``logit_y - max_{j != y} logit_j`` per checkpoint, shape ``(n, K)`` (NaN for label -1)."""
    n, _, _ = logits.shape
    rows = np.arange(n)
    known = labels >= 0
    safe = np.where(known, labels, 0)
    assigned = logits[rows, :, safe]
    others = logits.copy()
    others[rows, :, safe] = -np.inf
    out = assigned - others.max(axis=2)
    out[~known] = np.nan
    return out


def _aum(
    logits: NDArray[np.float64], labels: NDArray[np.int64], n_seeds: int
) -> NDArray[np.float64]:
    grid = margins(logits, labels).reshape(len(labels), n_seeds, -1)
    return grid.mean(axis=(1, 2))


def forgetting_events(correct: NDArray[np.bool_]) -> NDArray[np.float64]:
    """Forgetting count per row from correctness over epochs, shape ``(n, E) -> (n,)``.

    A forgetting event is ``correct[k-1] and not correct[k]``; a row never
    correct at any epoch counts ``E`` (never learned).
    """
    events = (correct[:, :-1] & ~correct[:, 1:]).sum(axis=1).astype(np.float64)
    never = ~correct.any(axis=1)
    events[never] = correct.shape[1]
    return events


def _forgetting(
    logits: NDArray[np.float64], labels: NDArray[np.int64], n_seeds: int
) -> NDArray[np.float64]:
    n = len(labels)
    correct = logits.argmax(axis=2) == labels[:, None]  # (n, K)
    grid = correct.reshape(n, n_seeds, -1)
    per_seed = np.stack([forgetting_events(grid[:, s, :]) for s in range(n_seeds)], axis=1)
    return per_seed.mean(axis=1)
