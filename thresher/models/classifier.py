"""One softmax classifier and one SGD loop, shared by the eval's downstream model and the proxies.

A classifier on fixed feature vectors: linear (``hidden = 0``, multinomial
logistic regression) or one hidden ReLU layer. Sparse inputs (hashed
n-grams, :class:`~thresher.models.features.SparseRows`) go through the first
layer as a sparse product (``torch.nn.functional.embedding_bag`` with the
values as per-sample weights), never densified: a 128-row batch of 16,384
hashed features costs a few hundred multiply-adds per row instead of
16,384 times the layer width.

Training is minibatch SGD (heavy-ball momentum, L2 weight decay as torch's
SGD applies it, cosine or constant learning rate) for exactly ``steps``
steps, batches drawn epoch by epoch from seeded permutations. Everything
random comes from the ``seed`` argument (a local ``torch.Generator`` for the
initial weights, a numpy ``Generator`` for the batch order), never torch's
global state.

Why the learning rate has to be chosen, not fixed: the loss of a batch is
the mean over its rows, and hashed n-gram rows are L2-normalised (a short
document has ten or so entries of about 0.3), so a weight moves by about
``lr * 0.3 / batch_size`` per example that touches it. A learning rate that
suits standardised pixels (0.05) leaves a text model near its
initialisation after a few epochs; one that suits text (about 10) makes an
MLP on pixels diverge. :func:`tune` picks the learning rate, then the
weight decay, from small grids on a validation split.

Knowledge distillation (:class:`SoftTargets`): given a teacher's logits for
each row, a row's loss becomes ``(1 - alpha) * CE(label) + alpha * T^2 *
KL(softmax(teacher / T) || softmax(student / T))``; the ``T^2`` keeps the
soft term's gradients on the scale of the hard term's whatever the
temperature. Importance weights still weight each row's whole loss. Without
soft targets, training is exactly the plain loop.

References
----------
Bottou, "Stochastic Gradient Descent Tricks", in Neural Networks: Tricks of
the Trade, 2012 (the learning rate chosen on a validation sample).
Paul, Ganguli and Dziugaite, "Deep Learning on a Data Diet: Finding
Important Examples Early in Training", NeurIPS 2021 (fixed-steps protocol).
Hinton, Vinyals and Dean, "Distilling the Knowledge in a Neural Network",
NIPS 2014 Deep Learning Workshop, arXiv:1503.02531 (soft targets, ``T^2``).
Ben-Baruch, Botach, Kviatkovsky, Aggarwal and Medioni, "Distilling the
Knowledge in Data Pruning", ICML 2025, arXiv:2403.07854 (distilling the student
trained on a pruned subset from a teacher trained on all the data).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from thresher.models.features import Matrix, SparseRows, n_rows, take_rows

if TYPE_CHECKING:
    import torch

#: Learning rates tried by :func:`tune` (a factor of about 3 apart).
LR_GRID = (0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
#: Weight decays tried by :func:`tune` at the chosen learning rate (the first while choosing it).
WEIGHT_DECAY_GRID = (0.0, 1e-5, 1e-4, 1e-3)
#: Rows evaluated at once when predicting.
PREDICT_ROWS = 4096


@dataclass(frozen=True)
class SGDSettings:
    """How a classifier is trained: ``steps`` steps of ``batch_size`` rows."""

    steps: int
    batch_size: int
    lr: float
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "cosine"

    def learning_rate(self, step: int) -> float:
        """Learning rate at ``step`` (0-based): constant, or cosine from ``lr`` to 0 over ``steps``."""
        if self.schedule == "constant":
            return self.lr
        return self.lr * 0.5 * (1.0 + math.cos(math.pi * step / self.steps))


@dataclass(frozen=True)
class SoftTargets:
    """A teacher's soft targets for knowledge distillation: its logits per row, ``alpha``, ``T``.

    ``logits`` has one row per training row (same order) and one column per
    class; ``alpha`` in [0, 1] is the soft term's share of the loss and
    ``temperature`` (> 0) softens both distributions.
    """

    logits: NDArray[np.float32]
    alpha: float
    temperature: float

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha is a share of the loss in [0, 1], got {self.alpha!r}")
        if not self.temperature > 0.0:
            raise ValueError(f"the temperature must be > 0, got {self.temperature!r}")


def distillation_loss(
    student: torch.Tensor,
    labels: torch.Tensor,
    teacher: torch.Tensor,
    alpha: float,
    temperature: float,
) -> torch.Tensor:
    """Per-row loss ``(1 - alpha) * CE(labels) + alpha * T^2 * KL(p_teacher || p_student)``.

    ``p`` are the softmax of the logits divided by ``T``; rows, not their
    mean, so that importance weights can weight each one.
    """
    import torch

    hard = torch.nn.functional.cross_entropy(student, labels, reduction="none")
    log_student = torch.log_softmax(student / temperature, dim=1)
    log_teacher = torch.log_softmax(teacher.to(student.dtype) / temperature, dim=1)
    soft = (log_teacher.exp() * (log_teacher - log_student)).sum(dim=1)
    return (1.0 - alpha) * hard + (alpha * temperature**2) * soft


def width(matrix: Matrix) -> int:
    """Number of columns of a dense or sparse feature matrix."""
    return matrix.dim if isinstance(matrix, SparseRows) else int(matrix.shape[1])


def _tensors(matrix: Matrix, device: Any = "cpu") -> Any:
    """A batch as torch sees it: a dense float32 tensor, or (indices, offsets, values)."""
    import torch

    if isinstance(matrix, SparseRows):
        return (
            torch.from_numpy(matrix.indices).to(device),
            torch.from_numpy(matrix.indptr[:-1]).to(device),
            torch.from_numpy(np.asarray(matrix.values, dtype=np.float32)).to(device),
        )
    return torch.from_numpy(np.ascontiguousarray(matrix, dtype=np.float32)).to(device)


def _affine(x: Any, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``x W^T + b`` for a dense tensor or a sparse (indices, offsets, values) batch."""
    import torch

    if isinstance(x, tuple):
        indices, offsets, values = x
        product = torch.nn.functional.embedding_bag(
            indices, weight.T, offsets, mode="sum", per_sample_weights=values.to(weight.dtype)
        )
        return product + bias
    return x.to(weight.dtype) @ weight.T + bias


@dataclass
class Classifier:
    """A trained classifier: ``logits = relu(x W1^T + b1) W2^T + b2`` (no hidden layer: ``x W2^T + b2``).

    ``diverged`` is True when training met a non-finite loss and stopped.
    """

    weights: dict[str, torch.Tensor]
    n_classes: int
    diverged: bool = False

    @property
    def hidden(self) -> int:
        return int(self.weights["hidden.weight"].shape[0]) if "hidden.weight" in self.weights else 0

    def logits(self, x: Any) -> torch.Tensor:
        """Logits of a dense tensor or a sparse (indices, offsets, values) batch."""
        import torch

        if "hidden.weight" in self.weights:
            h = torch.relu(_affine(x, self.weights["hidden.weight"], self.weights["hidden.bias"]))
            return h @ self.weights["out.weight"].T + self.weights["out.bias"]
        return _affine(x, self.weights["out.weight"], self.weights["out.bias"])

    def predict(self, matrix: Matrix) -> NDArray[np.int64]:
        """Predicted class index of each row (class 0 everywhere once diverged)."""
        import torch

        out = np.zeros(n_rows(matrix), dtype=np.int64)
        if self.diverged:
            return out
        device = self.weights["out.weight"].device
        with torch.inference_mode():
            for start in range(0, out.size, PREDICT_ROWS):
                rows = np.arange(start, min(out.size, start + PREDICT_ROWS))
                x = _tensors(take_rows(matrix, rows), device)
                out[rows] = self.logits(x).argmax(dim=1).cpu().numpy()
        return out

    def predict_logits(self, matrix: Matrix) -> NDArray[np.float32]:
        """Logits of each row, shape ``(n, n_classes)``, float32 (a teacher's soft targets)."""
        import torch

        out = np.zeros((n_rows(matrix), self.n_classes), dtype=np.float32)
        device = self.weights["out.weight"].device
        with torch.inference_mode():
            for start in range(0, out.shape[0], PREDICT_ROWS):
                rows = np.arange(start, min(out.shape[0], start + PREDICT_ROWS))
                x = _tensors(take_rows(matrix, rows), device)
                out[rows] = self.logits(x).to("cpu", dtype=torch.float32).numpy()
        return out

    def accuracy(self, matrix: Matrix, targets: NDArray[np.int64]) -> float:
        """Fraction of rows whose predicted class is the target (a target of -1 is never right)."""
        if targets.size == 0:
            raise ValueError("accuracy of an empty split")
        return float(np.mean(self.predict(matrix) == targets))

    def state(self) -> dict[str, NDArray[np.float32]]:
        """The weights as float32 numpy arrays (what a checkpoint file holds)."""
        import torch

        return {
            name: tensor.detach().to("cpu", dtype=torch.float32).numpy().copy()
            for name, tensor in self.weights.items()
        }


def _linear(n_in: int, n_out: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """torch.nn.Linear's default initialisation, U(-1/sqrt(n_in), 1/sqrt(n_in)), from ``generator``."""
    import torch

    bound = 1.0 / math.sqrt(max(1, n_in))
    weight = (torch.rand(n_out, n_in, generator=generator) * 2 - 1) * bound
    bias = (torch.rand(n_out, generator=generator) * 2 - 1) * bound
    return weight, bias


def init_classifier(n_features: int, n_classes: int, hidden: int, seed: int) -> Classifier:
    """A freshly initialised classifier (same ``seed``: same weights)."""
    import torch

    generator = torch.Generator().manual_seed(int(seed))
    weights: dict[str, Any] = {}
    if hidden:
        weights["hidden.weight"], weights["hidden.bias"] = _linear(n_features, hidden, generator)
    weights["out.weight"], weights["out.bias"] = _linear(hidden or n_features, n_classes, generator)
    return Classifier(weights, n_classes)


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
    hidden: int,
    settings: SGDSettings,
    seed: int,
    weights: NDArray[np.float64] | None = None,
    *,
    device: str = "cpu",
    every: int | None = None,
    on_checkpoint: Callable[[int, Classifier], None] | None = None,
    batches: Callable[[Classifier], Iterable[NDArray[np.int64]]] | None = None,
    soft_targets: SoftTargets | None = None,
) -> Classifier:
    """Train a classifier on ``matrix`` rows for exactly ``settings.steps`` steps.

    Parameters
    ----------
    matrix : ndarray of float32, shape (n, d), or SparseRows
        Feature vectors.
    targets : ndarray of int64, shape (n,)
        Class index of each row, in ``0 .. n_classes - 1``.
    n_classes : int
        Number of classes (output width).
    hidden : int
        Width of the hidden ReLU layer (0: linear).
    settings : SGDSettings
        Optimisation settings.
    seed : int
        Seed of the initial weights and of the batch order.
    weights : ndarray of float64, shape (n,), optional
        Importance weight of each row's loss: a batch's loss is ``sum(w l) / sum(w)``.
    device : str
        Torch device.
    every, on_checkpoint : optional
        ``on_checkpoint(k, model)`` is called after every ``every`` steps
        (``k`` = 1, 2, ...), e.g. to save per-epoch checkpoints.
    batches : callable, optional
        ``batches(model)`` gives the row positions of each step from the
        model being trained (dynamic pruning rescores the rows as it learns,
        :mod:`thresher.models.dynamic_pruning`); left out, :func:`batch_rows`
        over every row.
    soft_targets : SoftTargets, optional
        A teacher's logits per row: each row's loss is then
        :func:`distillation_loss` (the weights still weight it).

    Returns
    -------
    Classifier
        Its weights no longer require gradients; ``diverged`` tells whether
        training stopped at a non-finite loss.
    """
    import torch

    n = n_rows(matrix)
    if targets.shape != (n,) or (n and (targets.min() < 0 or targets.max() >= n_classes)):
        raise ValueError(f"targets must be {n} class indices in 0..{n_classes - 1}")
    if soft_targets is not None and soft_targets.logits.shape != (n, n_classes):
        raise ValueError(
            f"soft targets must be {n} rows of {n_classes} teacher logits, "
            f"got shape {soft_targets.logits.shape}"
        )
    model = init_classifier(width(matrix), n_classes, hidden, seed)
    model.weights = {k: v.to(device).requires_grad_() for k, v in model.weights.items()}
    parameters = list(model.weights.values())
    optimiser = torch.optim.SGD(
        parameters,
        lr=settings.lr,
        momentum=settings.momentum,
        weight_decay=settings.weight_decay,
    )
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 1]))
    schedule = (
        batch_rows(n, settings.batch_size, settings.steps, rng)
        if batches is None
        else batches(model)
    )
    dense = None if isinstance(matrix, SparseRows) else _tensors(matrix, device)
    labels = torch.from_numpy(np.asarray(targets, dtype=np.int64)).to(device)
    row_weights = (
        None
        if weights is None
        else torch.from_numpy(np.asarray(weights, dtype=np.float32)).to(device)
    )
    teacher = (
        None
        if soft_targets is None
        else torch.from_numpy(np.asarray(soft_targets.logits, dtype=np.float32)).to(device)
    )
    for step, rows in enumerate(schedule):
        index = torch.from_numpy(rows).to(device)
        x = dense[index] if dense is not None else _tensors(take_rows(matrix, rows), device)
        if teacher is None or soft_targets is None:
            losses = torch.nn.functional.cross_entropy(
                model.logits(x), labels[index], reduction="none"
            )
        else:
            losses = distillation_loss(
                model.logits(x),
                labels[index],
                teacher[index],
                soft_targets.alpha,
                soft_targets.temperature,
            )
        if row_weights is None:
            loss = losses.mean()
        else:
            w = row_weights[index]
            loss = (w * losses).sum() / w.sum()
        if not torch.isfinite(loss):
            model.diverged = True
            break
        for group in optimiser.param_groups:
            group["lr"] = settings.learning_rate(step)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        if on_checkpoint is not None and every and (step + 1) % every == 0:
            on_checkpoint((step + 1) // every, model)
    for parameter in parameters:
        parameter.requires_grad_(False)
    if not model.diverged and not all(bool(torch.isfinite(p).all()) for p in parameters):
        model.diverged = True
    return model


@dataclass(frozen=True)
class Trial:
    """One tried setting and its validation accuracy."""

    lr: float
    weight_decay: float
    accuracy: float
    diverged: bool = False


def tune(
    evaluate: Callable[[float, float], tuple[float, bool]],
    lr: float | None,
    weight_decay: float | None,
    lr_grid: tuple[float, ...] | list[float] = LR_GRID,
    weight_decay_grid: tuple[float, ...] | list[float] = WEIGHT_DECAY_GRID,
) -> tuple[float, float, list[Trial]]:
    """Choose the learning rate, then the weight decay, by validation accuracy.

    ``evaluate(lr, weight_decay)`` trains a model and returns its
    validation accuracy and whether it diverged. A value given (not None)
    is kept; otherwise the learning rate is chosen from ``lr_grid`` (at the
    given weight decay, else the first of ``weight_decay_grid``), then the
    weight decay from ``weight_decay_grid`` at that learning rate. Ties go
    to the value listed first; a diverged model never wins.

    Returns
    -------
    lr, weight_decay : float
        The chosen values.
    trials : list of Trial
        Every setting tried, in order (empty when both were given).
    """
    trials: list[Trial] = []
    seen: dict[tuple[float, float], Trial] = {}

    def run(lr_value: float, decay: float) -> Trial:
        key = (float(lr_value), float(decay))
        if key not in seen:
            accuracy, diverged = evaluate(*key)
            seen[key] = Trial(key[0], key[1], float(accuracy), bool(diverged))
            trials.append(seen[key])
        return seen[key]

    def best(candidates: list[Trial]) -> Trial:
        score = [-1.0 if t.diverged else t.accuracy for t in candidates]
        return candidates[int(np.argmax(score))]

    decay = float(weight_decay) if weight_decay is not None else float(weight_decay_grid[0])
    if lr is None:
        lr = best([run(value, decay) for value in lr_grid]).lr
    if weight_decay is None:
        decay = best([run(lr, value) for value in weight_decay_grid]).weight_decay
    return float(lr), float(decay), trials
