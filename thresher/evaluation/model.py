"""The downstream classifier trained on each subset, for a fixed number of steps.

A softmax classifier on fixed feature vectors (:mod:`thresher.models.classifier`,
the same model and SGD loop as the proxies): linear (``hidden = 0``) or one
hidden ReLU layer, trained for exactly ``steps`` steps of ``batch_size``
rows, drawn epoch by epoch from seeded permutations of the subset (the
whole subset per step when it is smaller): a 2% subset gets as many
updates as the full data, the protocol of the data-pruning papers, so a
selector cannot win by training longer. Importance weights (sensitivity
sampling) weight each row's loss.

The learning rate and weight decay, when the configuration leaves them
out, are chosen once per eval on the validation split by models trained
on the whole pool (:func:`thresher.models.classifier.tune`); every subset
then trains with the chosen values.

With ``distill`` configured, a subset's model also learns from a teacher's
logits on its rows (:class:`thresher.models.classifier.SoftTargets`): the
teacher is a model trained on the whole pool
(:mod:`thresher.evaluation.teacher`).

References
----------
Paul, Ganguli and Dziugaite, "Deep Learning on a Data Diet: Finding
Important Examples Early in Training", NeurIPS 2021 (fixed-steps protocol).
Zheng, Liu, Li and Prakash, "Coverage-centric Coreset Selection for High
Pruning Rates", ICLR 2023.
Ben-Baruch, Botach, Kviatkovsky, Aggarwal and Medioni, "Distilling the
Knowledge in Data Pruning", ICML 2025, arXiv:2403.07854.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from thresher.evaluation.config import DownstreamConfig
from thresher.models.classifier import (
    Classifier,
    SGDSettings,
    SoftTargets,
    batch_rows,
    init_classifier,
    width,
)
from thresher.models.classifier import train_classifier as _train
from thresher.models.features import Matrix

__all__ = [
    "Classifier",
    "batch_rows",
    "init_classifier",
    "learning_rate",
    "settings",
    "train_classifier",
    "width",
]


def settings(config: DownstreamConfig) -> SGDSettings:
    """The SGD settings of ``config`` (its learning rate and weight decay must be set)."""
    if config.lr is None or config.weight_decay is None:
        raise ValueError("the learning rate and weight decay are chosen before training")
    return SGDSettings(
        steps=config.steps,
        batch_size=config.batch_size,
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
        schedule=config.schedule,
    )


def learning_rate(config: DownstreamConfig, step: int) -> float:
    """Learning rate at ``step`` (0-based): constant, or cosine from ``lr`` to 0 over ``steps``."""
    return settings(config).learning_rate(step)


def train_classifier(
    matrix: Matrix,
    targets: NDArray[np.int64],
    n_classes: int,
    config: DownstreamConfig,
    seed: int,
    weights: NDArray[np.float64] | None = None,
    teacher_logits: NDArray[np.float32] | None = None,
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
        Model size and optimisation settings (``lr`` and ``weight_decay`` set).
    seed : int
        Seed of the initial weights and of the batch order.
    weights : ndarray of float64, shape (n,), optional
        Importance weight of each row's loss (used when ``config.weighted``).
    teacher_logits : ndarray of float32, shape (n, n_classes), optional
        The teacher's logits on each row: the model is distilled with
        ``config.distill``'s ``alpha`` and ``temperature`` (which must be set).
    """
    soft = None
    if teacher_logits is not None:
        if config.distill is None:
            raise ValueError("teacher logits given but eval.model.distill is not configured")
        soft = SoftTargets(teacher_logits, config.distill.alpha, config.distill.temperature)
    return _train(
        matrix,
        targets,
        n_classes,
        config.hidden,
        settings(config),
        seed,
        weights=weights if config.weighted else None,
        soft_targets=soft,
    )
