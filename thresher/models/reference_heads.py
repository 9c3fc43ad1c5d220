"""Reference heads: the proxy's output layer trained on a target set, one per checkpoint.

The mimic score (:mod:`thresher.scorers.mimic`) compares a sample's
last-layer loss gradient at a proxy checkpoint ``w_t`` with the direction
``w_ref - w_t`` towards a reference model trained on clean or target data.
For that difference to mean anything, ``w_ref`` must live in the very space
the gradient does: the output layer applied to the *checkpoint's*
penultimate features ``h``. A separately trained network's output layer
reads hidden units of its own, which match the proxy's neither in order
nor in meaning (only a linear proxy, whose features are the inputs, would
share them). So the reference here is the checkpoint's own head trained
further on the target rows, its features held fixed:

- start: the checkpoint's output weights and bias;
- data: the target rows' penultimate features under that checkpoint, with
  their labels;
- recipe: the proxy's own (:mod:`thresher.models.proxy`): minibatch SGD
  with heavy-ball momentum and L2 weight decay as torch applies them, the
  learning rate and weight decay the proxy trained with (``proxy.json``),
  its batch size and number of epochs over the target, batches from seeded
  permutations;
- length: those epochs, but never fewer than ``min_steps`` steps. A target
  of a few batches would otherwise take a dozen steps, and a head a dozen
  momentum steps from the checkpoint is still mostly the checkpoint (topical
  documents with 15% of labels flipped, a 50-row clean target: after 12
  steps the score ranks the flipped rows at AUROC 0.66, after 36 or more
  at 1.0).

``w_ref - w_t`` is then where training on the target moves the model from
``w_t``. To first order (a single small step) it is the target's mean
negative gradient, and the mimic score is TracIn's influence on the target
(:mod:`thresher.scorers.influence`); trained longer, it points to where the
target's training leads, the role of the paper's fully trained reference.

Every loaded checkpoint is trained at once (one batch order), in float64 on
the CPU, whatever device scores: the same heads on every machine. The
target's features are held in memory meanwhile, ``T x K x P`` floats (a
10,000-row target under 32 checkpoints of a 64-wide proxy: 160 MB). The
heads are saved as ``reference.safetensors`` (``out.weight`` ``(K, C, P)``,
``out.bias`` ``(K, C)`` for ``K`` checkpoints) with ``reference.json``
(checkpoints, settings, the target's loss and accuracy before and after),
in a directory staged and renamed into place, like the proxy's, so a crash
never leaves a half-written reference that a resume would trust.

References
----------
Huang, Bilkhu, Sala and Movellan, "Evaluating Sample Utility for Data
Selection by Mimicking Model Weights", arXiv:2501.06708, 2025 (later
versions, with Cooper: "... for Efficient Data Selection ...").
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from thresher.errors import ScorerError
from thresher.models._safe import load_safetensors
from thresher.models.classifier import batch_rows
from thresher.models.proxy import ProxyModel, threads_for

if TYPE_CHECKING:
    import torch

REFERENCE_FORMAT = 1
REFERENCE_FILE = "reference.safetensors"
REFERENCE_META = "reference.json"
#: Mixed into the run seed for the reference's batch order.
BATCH_SALT = 0x4D494D43
#: Target rows per forward pass when computing their features.
_CHUNK = 1024


def apply_heads(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``W_k h_k + b_k`` for every checkpoint ``k``: ``(n, K|1, P), (K, C, P), (K, C) -> (n, K, C)``.

    A linear proxy's ``h`` is the input, shared by the checkpoints (``K|1 = 1``).
    """
    import torch

    if h.shape[1] == 1:
        k, n_classes, width = weight.shape
        product = h[:, 0] @ weight.reshape(k * n_classes, width).T
        return product.reshape(-1, k, n_classes) + bias
    return torch.einsum("nkp,kcp->nkc", h, weight) + bias


def _head_gradient(g: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """``sum_n g_n h_n^T`` per checkpoint: ``(n, K, C), (n, K|1, P) -> (K, C, P)``."""
    import torch

    if h.shape[1] == 1:
        n, k, n_classes = g.shape
        return (g.reshape(n, k * n_classes).T @ h[:, 0]).reshape(k, n_classes, -1)
    return torch.einsum("nkc,nkp->kcp", g, h)


def target_features(model: ProxyModel, table: pa.Table) -> torch.Tensor:
    """Penultimate features of ``table``'s rows under every loaded checkpoint: ``(T, K|1, P)``."""
    import torch

    parts = []
    for start in range(0, table.num_rows, _CHUNK):
        h, _ = model.forward(model.features(table.slice(start, _CHUNK)))
        parts.append(h.clone())
    return torch.cat(parts)


def fit_reference_heads(
    model: ProxyModel,
    table: pa.Table,
    labels: NDArray[np.int64],
    seed: int,
    directory: Path,
    min_steps: int = 1,
) -> Path:
    """Train (or reuse) the reference heads of ``model``'s loaded checkpoints; return ``directory``.

    Parameters
    ----------
    model
        The proxy, loaded on the CPU (float64) with the checkpoints to reference.
    table
        Target rows with the proxy's input column.
    labels
        Class index of each target row (all known: ``0 .. C - 1``).
    seed
        Run seed (the batch order).
    directory
        Where the heads are saved; an existing complete one is reused.
    min_steps
        Fewest SGD steps, however small the target.
    """
    if (directory / REFERENCE_META).is_file():
        return directory
    import torch
    from safetensors.numpy import save_file

    if model.weights["out.weight"].dtype != torch.float64:
        raise ScorerError("the reference heads are trained from a proxy loaded on the CPU")
    config = model.metadata["config"]
    lr, decay = float(model.metadata["learning_rate"]), float(model.metadata["weight_decay"])
    momentum, batch_size = float(config["momentum"]), int(config["batch_size"])
    h = target_features(model, table)
    n = h.shape[0]
    onehot = torch.nn.functional.one_hot(torch.from_numpy(labels), model.n_classes).to(h.dtype)
    weight = model.weights["out.weight"].clone()
    bias = model.weights["out.bias"].clone()
    before = _fit_quality(h, onehot, weight, bias)
    steps = max(int(min_steps), model.epochs * max(1, n // batch_size))
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), BATCH_SALT]))
    velocity_w, velocity_b = torch.zeros_like(weight), torch.zeros_like(bias)
    with threads_for(batch_size * weight.numel(), "cpu"):
        for rows in batch_rows(n, batch_size, steps, rng):
            index = torch.from_numpy(rows)
            batch_h = h[index]
            g = torch.softmax(apply_heads(batch_h, weight, bias), dim=-1) - onehot[index][:, None]
            gradient = _head_gradient(g, batch_h) / len(rows)
            velocity_w = momentum * velocity_w + gradient + decay * weight
            velocity_b = momentum * velocity_b + g.mean(dim=0) + decay * bias
            weight = weight - lr * velocity_w
            bias = bias - lr * velocity_b
    if not (torch.isfinite(weight).all() and torch.isfinite(bias).all()):
        raise ScorerError(
            f"the reference heads diverged at the proxy's learning rate {lr:g}; "
            "lower proxy.lr or leave it out to have it chosen"
        )
    after = _fit_quality(h, onehot, weight, bias)
    metadata = {
        "format": REFERENCE_FORMAT,
        "checkpoints": [[c.seed, c.epoch] for c in model.checkpoints],
        "n_targets": int(n),
        "steps": int(steps),
        "learning_rate": lr,
        "weight_decay": decay,
        "momentum": momentum,
        "batch_size": batch_size,
        "target_loss": {"proxy": before[0], "reference": after[0]},
        "target_accuracy": {"proxy": before[1], "reference": after[1]},
    }
    staging = directory.parent / f".{directory.name}-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    try:
        tensors = {"out.weight": weight.numpy(), "out.bias": bias.numpy()}
        save_file(tensors, str(staging / REFERENCE_FILE))
        (staging / REFERENCE_META).write_text(json.dumps(metadata, indent=2, sort_keys=True))
        try:
            os.rename(staging, directory)
        except OSError:
            if not (directory / REFERENCE_META).is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return directory


def _fit_quality(
    h: torch.Tensor, onehot: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of the heads on the target, averaged over checkpoints."""
    import torch

    logits = apply_heads(h, weight, bias)
    loss = -(torch.log_softmax(logits, dim=-1) * onehot[:, None]).sum(-1).mean()
    correct = logits.argmax(-1) == onehot.argmax(-1)[:, None]
    return float(loss), float(correct.double().mean())


def load_reference_heads(directory: Path, model: ProxyModel) -> dict[str, Any]:
    """The heads saved for ``model``'s loaded checkpoints, as tensors on its device and dtype."""
    import torch

    meta_path = directory / REFERENCE_META
    if not meta_path.is_file():
        raise ScorerError(f"no reference heads at {directory} (missing {REFERENCE_META})")
    metadata = json.loads(meta_path.read_text())
    expected = [[c.seed, c.epoch] for c in model.checkpoints]
    if metadata.get("format") != REFERENCE_FORMAT or metadata.get("checkpoints") != expected:
        raise ScorerError(
            f"{meta_path}: reference heads for checkpoints {metadata.get('checkpoints')}, "
            f"the proxy loaded {expected}"
        )
    arrays = load_safetensors(directory / REFERENCE_FILE)
    like = model.weights["out.weight"]
    return {name: torch.from_numpy(arrays[name]).to(like.device, like.dtype) for name in arrays}
