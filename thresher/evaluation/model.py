"""The downstream classifier trained on each subset, for a fixed number of steps.

A softmax classifier on fixed feature vectors: linear (``hidden = 0``) or
one hidden ReLU layer. It trains with minibatch SGD (heavy-ball momentum,
L2 weight decay, cosine or constant learning rate) for exactly ``steps``
steps of ``batch_size`` rows, drawn epoch by epoch from seeded permutations
of the subset (the whole subset per step when it is smaller): a 2% subset
gets as many updates as the full data, the protocol of the data-pruning
papers, so a selector cannot win by training longer.

Everything random (initial weights, batch order) comes from the ``seed``
argument through a local ``torch.Generator`` and numpy ``Generator``, never
torch's global state, so that models trained at the same time in several
threads are each reproducible. Importance weights (sensitivity sampling)
weight each row's loss: the loss of a batch is ``sum(w l) / sum(w)``.

References
----------
Paul, Ganguli and Dziugaite, "Deep Learning on a Data Diet: Finding
Important Examples Early in Training", NeurIPS 2021 (fixed-steps protocol).
Zheng, Liu, Li and Prakash, "Coverage-centric Coreset Selection for High
Pruning Rates", ICLR 2023.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from thresher.evaluation.config import DownstreamConfig
from thresher.models.features import Matrix, SparseRows, n_rows, take_rows

if TYPE_CHECKING:
    import torch

#: Rows evaluated at once when predicting.
PREDICT_ROWS = 4096


def _dense(matrix: Matrix) -> NDArray[np.float32]:
    return matrix.dense() if isinstance(matrix, SparseRows) else np.asarray(matrix, np.float32)


def width(matrix: Matrix) -> int:
    """Number of columns of a dense or sparse feature matrix."""
    return matrix.dim if isinstance(matrix, SparseRows) else int(matrix.shape[1])


@dataclass
class Classifier:
    """A trained classifier: ``logits = relu(x W1^T + b1) W2^T + b2`` (no hidden layer: ``x W2^T + b2``)."""

    weights: dict[str, torch.Tensor]
    n_classes: int

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        import torch

        if "hidden.weight" in self.weights:
            x = torch.relu(x @ self.weights["hidden.weight"].T + self.weights["hidden.bias"])
        return x @ self.weights["out.weight"].T + self.weights["out.bias"]

    def predict(self, matrix: Matrix) -> NDArray[np.int64]:
        """Predicted class index of each row."""
        import torch

        out = np.zeros(n_rows(matrix), dtype=np.int64)
        with torch.inference_mode():
            for start in range(0, out.size, PREDICT_ROWS):
                rows = np.arange(start, min(out.size, start + PREDICT_ROWS))
                x = torch.from_numpy(_dense(take_rows(matrix, rows)))
                out[rows] = self.logits(x).argmax(dim=1).numpy()
        return out

    def accuracy(self, matrix: Matrix, targets: NDArray[np.int64]) -> float:
        """Fraction of rows whose predicted class is the target (a target of -1 is never right)."""
        if targets.size == 0:
            raise ValueError("accuracy of an empty split")
        return float(np.mean(self.predict(matrix) == targets))


def _linear(n_in: int, n_out: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """torch.nn.Linear's default initialisation, U(-1/sqrt(n_in), 1/sqrt(n_in)), from ``generator``."""
    import torch

    bound = 1.0 / math.sqrt(max(1, n_in))
    weight = (torch.rand(n_out, n_in, generator=generator) * 2 - 1) * bound
    bias = (torch.rand(n_out, generator=generator) * 2 - 1) * bound
    return weight.requires_grad_(), bias.requires_grad_()


def init_classifier(n_features: int, n_classes: int, hidden: int, seed: int) -> Classifier:
    """A freshly initialised classifier (same ``seed``: same weights)."""
    import torch

    generator = torch.Generator().manual_seed(int(seed))
    weights: dict[str, Any] = {}
    if hidden:
        weights["hidden.weight"], weights["hidden.bias"] = _linear(n_features, hidden, generator)
    weights["out.weight"], weights["out.bias"] = _linear(hidden or n_features, n_classes, generator)
    return Classifier(weights, n_classes)


def learning_rate(config: DownstreamConfig, step: int) -> float:
    """Learning rate at ``step`` (0-based): constant, or cosine from ``lr`` to 0 over ``steps``."""
    if config.schedule == "constant":
        return config.lr
    return config.lr * 0.5 * (1.0 + math.cos(math.pi * step / config.steps))


def batch_rows(n: int, batch_size: int, steps: int, rng: np.random.Generator) -> NDArray[np.int64]:
    """Row positions of every step, shape ``(steps, min(batch_size, n))``.

    Epochs of seeded permutations; a batch never spans two epochs (the last
    rows of a permutation that do not fill a batch are skipped), so every
    step sees distinct rows.
    """
    if n == 0:
        raise ValueError("cannot train on an empty subset")
    size = min(batch_size, n)
    per_epoch = n // size
    epochs = -(-steps // per_epoch)
    orders = [rng.permutation(n)[: per_epoch * size] for _ in range(epochs)]
    return np.concatenate(orders).reshape(-1, size)[:steps].astype(np.int64)


def train_classifier(
    matrix: Matrix,
    targets: NDArray[np.int64],
    n_classes: int,
    config: DownstreamConfig,
    seed: int,
    weights: NDArray[np.float64] | None = None,
) -> Classifier:
    """Train a classifier on ``matrix`` rows for exactly ``config.steps`` steps.

    Parameters
    ----------
    matrix : ndarray of float32, shape (n, d), or SparseRows
        Feature vectors of the subset.
    targets : ndarray of int64, shape (n,)
        Class index of each row, in ``0 .. n_classes - 1``.
    n_classes : int
        Number of classes (output width).
    config : DownstreamConfig
        Model size and optimisation settings.
    seed : int
        Seed of the initial weights and of the batch order.
    weights : ndarray of float64, shape (n,), optional
        Importance weight of each row's loss (used when ``config.weighted``).
    """
    import torch

    n = n_rows(matrix)
    if targets.shape != (n,) or (n and (targets.min() < 0 or targets.max() >= n_classes)):
        raise ValueError(f"targets must be {n} class indices in 0..{n_classes - 1}")
    model = init_classifier(width(matrix), n_classes, config.hidden, seed)
    parameters = list(model.weights.values())
    optimiser = torch.optim.SGD(
        parameters, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 1]))
    schedule = batch_rows(n, config.batch_size, config.steps, rng)
    dense = None if isinstance(matrix, SparseRows) else torch.from_numpy(_dense(matrix))
    labels = torch.from_numpy(np.asarray(targets, dtype=np.int64))
    row_weights = (
        torch.from_numpy(np.asarray(weights, dtype=np.float32))
        if weights is not None and config.weighted
        else None
    )
    for step, rows in enumerate(schedule):
        index = torch.from_numpy(rows)
        x = dense[index] if dense is not None else torch.from_numpy(_dense(take_rows(matrix, rows)))
        losses = torch.nn.functional.cross_entropy(model.logits(x), labels[index], reduction="none")
        if row_weights is None:
            loss = losses.mean()
        else:
            w = row_weights[index]
            loss = (w * losses).sum() / w.sum()
        for group in optimiser.param_groups:
            group["lr"] = learning_rate(config, step)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
    for parameter in parameters:
        parameter.requires_grad_(False)
    return model
