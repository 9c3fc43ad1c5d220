"""A small head on fixed vectors (embeddings): a linear map or a one-hidden-layer MLP.

Used by the ``embedding_classifier`` scorer: classification (one logit,
P(positive) by the logistic function, trained with the logistic loss) or
regression (one value, trained with the squared error on the standardised
target). Inputs are standardised with the training rows' mean and standard
deviation, which the head keeps.

Deterministic by construction:

- training runs on the CPU in float64 with one torch thread (restored after),
  the initial weights from a local ``torch.Generator``, the batch order from
  a numpy ``Generator``, both seeded: the same rows and seed give the same
  weights whatever torch's thread count, and whether or not a GPU is
  present (the head is too small to gain from one);
- prediction runs in numpy float64, every output summed row by row along the
  vector (numpy's reduction over a row's last axis), so a row's score does
  not depend on the batch it comes in, the thread count or the engine.

Alongside: the held-out split (stratified by class for classification) and
its metrics (accuracy and ROC AUC; Pearson and Spearman correlation).

References
----------
Penedo et al., "The FineWeb Datasets: Decanting the Web for the Finest Text
Data at Scale", NeurIPS 2024 (FineWeb-Edu: a regression head on embeddings
predicting 0-5 educational scores). Kingma and Ba, "Adam: A Method for
Stochastic Optimization", ICLR 2015.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

from thresher.errors import ScorerError
from thresher.models._safe import load_safetensors, safetensors_metadata

Task = Literal["classification", "regression"]
FORMAT = "thresher-vector-head-1"
#: Rows a prediction multiplies at once (bounds the memory of a big batch).
PREDICT_ROWS = 4096


@dataclass(frozen=True)
class HeadSettings:
    """What is trained: the task, the head's shape and the optimiser's settings (AdamW)."""

    task: Task
    head: Literal["linear", "mlp"] = "linear"
    hidden: int = 64
    epochs: int = 20
    batch_size: int = 64
    learning_rate: float = 0.01
    weight_decay: float = 1e-4


@dataclass
class VectorHead:
    """A trained head: ``arrays`` holds float64 weights and the standardisation (see module)."""

    task: Task
    arrays: dict[str, NDArray[np.float64]]

    @property
    def width(self) -> int:
        """Length of the vectors the head reads."""
        return int(self.arrays["mean"].shape[0])

    def predict(self, vectors: NDArray[np.float64]) -> NDArray[np.float64]:
        """P(positive) (classification) or the predicted value of each row, shape ``(n,)``."""
        out = np.empty(vectors.shape[0], dtype=np.float64)
        for start in range(0, out.size, PREDICT_ROWS):
            out[start : start + PREDICT_ROWS] = self._predict(vectors[start : start + PREDICT_ROWS])
        return out

    def _predict(self, vectors: NDArray[np.float64]) -> NDArray[np.float64]:
        a = self.arrays
        z = (np.asarray(vectors, dtype=np.float64) - a["mean"]) / a["scale"]
        if "hidden.weight" in a:
            z = np.maximum(_rows_dot(z, a["hidden.weight"]) + a["hidden.bias"], 0.0)
        out = _rows_dot(z, a["out.weight"])[:, 0] + a["out.bias"][0]
        if self.task == "classification":
            return 0.5 * (1.0 + np.tanh(0.5 * out))  # the logistic function, without overflow
        return out * a["target_scale"][0] + a["target_mean"][0]

    def save(self, path: Path) -> None:
        """Write the head as one safetensors file (atomically: a staging name, then a rename)."""
        from safetensors.numpy import save_file

        staging = path.with_name(f".{path.name}.partial")
        save_file(
            {k: np.ascontiguousarray(v) for k, v in self.arrays.items()},
            str(staging),
            metadata={"format": FORMAT, "task": self.task},
        )
        staging.replace(path)

    @classmethod
    def load(cls, path: Path | str) -> VectorHead:
        """Read a head saved by :meth:`save` (never unpickled: safetensors only)."""
        metadata = safetensors_metadata(path)
        if metadata.get("format") != FORMAT or metadata.get("task") not in (
            "classification",
            "regression",
        ):
            raise ScorerError(f"{path}: not a head saved by thresher ({FORMAT})")
        arrays = load_safetensors(path)
        task: Task = "classification" if metadata["task"] == "classification" else "regression"
        return cls(task, {k: np.asarray(v, dtype=np.float64) for k, v in arrays.items()})


def _rows_dot(z: NDArray[np.float64], weight: NDArray[np.float64]) -> NDArray[np.float64]:
    """``z @ weight.T``, each entry summed along its row alone (independent of the other rows)."""
    out = np.empty((z.shape[0], weight.shape[0]), dtype=np.float64)
    for j in range(weight.shape[0]):
        out[:, j] = (z * weight[j]).sum(axis=1)
    return out


@contextmanager
def _one_torch_thread() -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_head(
    vectors: NDArray[np.float64], targets: NDArray[np.float64], settings: HeadSettings, seed: int
) -> VectorHead:
    """Train a head on ``vectors`` (float64, shape ``(n, d)``, finite) and ``targets`` (shape ``(n,)``).

    Classification targets are 0 (negative) or 1 (positive). Training runs
    ``settings.epochs`` passes over the rows in seeded random order,
    ``settings.batch_size`` rows a step (the last step of a pass takes the
    rows left). Raises ScorerError when the loss stops being finite.
    """
    import torch

    x = np.asarray(vectors, dtype=np.float64)
    y = np.asarray(targets, dtype=np.float64)
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    scale = np.where(std > 1e-12, std, 1.0)
    z = (x - mean) / scale
    arrays: dict[str, NDArray[np.float64]] = {"mean": mean, "scale": scale}
    if settings.task == "regression":
        target_std = float(y.std())
        arrays["target_mean"] = np.array([y.mean()])
        arrays["target_scale"] = np.array([target_std if target_std > 1e-12 else 1.0])
        y = (y - arrays["target_mean"][0]) / arrays["target_scale"][0]
    hidden = settings.hidden if settings.head == "mlp" else 0
    with _one_torch_thread():
        generator = torch.Generator().manual_seed(int(seed))
        weights: dict[str, torch.Tensor] = {}
        if hidden:
            weights["hidden.weight"], weights["hidden.bias"] = _init(x.shape[1], hidden, generator)
        weights["out.weight"], weights["out.bias"] = _init(hidden or x.shape[1], 1, generator)
        for tensor in weights.values():
            tensor.requires_grad_()
        optimiser = torch.optim.AdamW(
            list(weights.values()),
            lr=settings.learning_rate,
            weight_decay=settings.weight_decay,
            foreach=False,
        )
        inputs, outputs = torch.from_numpy(z), torch.from_numpy(y)
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), 1]))
        for _ in range(settings.epochs):
            order = rng.permutation(x.shape[0])
            for start in range(0, order.size, settings.batch_size):
                rows = torch.from_numpy(order[start : start + settings.batch_size])
                predicted = _forward(weights, inputs[rows])
                if settings.task == "classification":
                    loss = torch.nn.functional.binary_cross_entropy_with_logits(
                        predicted, outputs[rows]
                    )
                else:
                    loss = torch.nn.functional.mse_loss(predicted, outputs[rows])
                if not math.isfinite(float(loss.detach())):
                    raise ScorerError(
                        "embedding_classifier: training diverged (non-finite loss); "
                        "lower learning_rate"
                    )
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
        for name, tensor in weights.items():
            arrays[name] = tensor.detach().numpy().copy()
    return VectorHead(settings.task, arrays)


def _init(n_in: int, n_out: int, generator: Any) -> tuple[Any, Any]:
    """torch.nn.Linear's default initialisation, U(-1/sqrt(n_in), 1/sqrt(n_in)), in float64."""
    import torch

    bound = 1.0 / math.sqrt(max(1, n_in))
    weight = (torch.rand(n_out, n_in, generator=generator, dtype=torch.float64) * 2 - 1) * bound
    bias = (torch.rand(n_out, generator=generator, dtype=torch.float64) * 2 - 1) * bound
    return weight, bias


def _forward(weights: dict[str, Any], x: Any) -> Any:
    import torch

    if "hidden.weight" in weights:
        x = torch.relu(x @ weights["hidden.weight"].T + weights["hidden.bias"])
    return (x @ weights["out.weight"].T + weights["out.bias"])[:, 0]


# -- vectors from Arrow ------------------------------------------------------------------


def vector_matrix(
    column: pa.Array | pa.ChunkedArray, width: int | None, what: str
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """A list column of numbers as a float64 matrix, and which rows hold a usable vector.

    A null row, or a vector holding a null, NaN or infinite value, is not
    usable (its row of the matrix is NaN). ``width`` is the length every
    vector must have (None: the first usable vector's); a vector of another
    length is refused (ScorerError naming ``what``, the column).
    """
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    n = len(array)
    kind = array.type
    if not (
        pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)
    ):
        if n == 0 or pa.types.is_null(kind):
            return np.full((n, width or 0), np.nan), np.zeros(n, dtype=bool)
        raise ScorerError(f"{what}: not a column of vectors (type {kind})")
    present = ~np.asarray(array.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    lengths = np.asarray(pc.fill_null(pc.list_value_length(array), 0), dtype=np.int64)
    if width is None:
        width = int(lengths[present][0]) if present.any() else 0
    wrong = present & (lengths != width)
    if wrong.any():
        row = int(np.flatnonzero(wrong)[0])
        raise ScorerError(
            f"{what}: a vector of length {lengths[row]} (row {row}), expected {width}"
        )
    flat = pc.list_flatten(array).cast(pa.float64())
    values = np.asarray(pc.fill_null(flat, np.nan).to_numpy(zero_copy_only=False), np.float64)
    matrix = np.full((n, width), np.nan)
    matrix[present] = values.reshape(-1, width) if width else values.reshape(-1, 0)
    usable = present & np.isfinite(matrix).all(axis=1)
    matrix[~usable] = np.nan
    return matrix, usable


# -- held-out split and metrics ----------------------------------------------------------


def holdout_split(
    targets: NDArray[np.float64], share: float, task: Task, seed: int
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Row positions (sorted) of the training and held-out rows: ``share`` of them held out.

    Classification holds out ``share`` of each class, keeping at least one
    row of each class for training.
    """
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 2]))
    groups = (
        [np.flatnonzero(targets == value) for value in (0.0, 1.0)]
        if task == "classification"
        else [np.arange(targets.size)]
    )
    held: list[NDArray[np.int64]] = []
    for group in groups:
        count = min(round(share * group.size), group.size - 1)
        held.append(rng.permutation(group)[: max(count, 0)])
    out = np.sort(np.concatenate(held)).astype(np.int64)
    train = np.setdiff1d(np.arange(targets.size), out).astype(np.int64)
    return train, out


def heldout_metrics(
    task: Task, predicted: NDArray[np.float64], targets: NDArray[np.float64]
) -> dict[str, float | None]:
    """Accuracy and ROC AUC (classification) or Pearson and Spearman (regression); None if undefined."""
    if task == "classification":
        positive = targets == 1.0
        accuracy = float(np.mean((predicted >= 0.5) == positive)) if targets.size else None
        return {"accuracy": accuracy, "auc": roc_auc(predicted, positive)}
    return {
        "pearson": correlation(predicted, targets),
        "spearman": correlation(average_ranks(predicted), average_ranks(targets)),
    }


def average_ranks(values: NDArray[np.float64]) -> NDArray[np.float64]:
    """Ranks from 1, ties given the mean of the ranks they span."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts = np.concatenate([[0], np.flatnonzero(np.diff(ordered) != 0) + 1])
    ends = np.concatenate([starts[1:], [values.size]])
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return ranks


def roc_auc(scores: NDArray[np.float64], positive: NDArray[np.bool_]) -> float | None:
    """P(a positive scores above a negative), ties counting half; None without both classes."""
    n_positive = int(positive.sum())
    n_negative = int(positive.size - n_positive)
    if n_positive == 0 or n_negative == 0:
        return None
    ranks = average_ranks(scores)
    return float(
        (ranks[positive].sum() - n_positive * (n_positive + 1) / 2) / (n_positive * n_negative)
    )


def correlation(a: NDArray[np.float64], b: NDArray[np.float64]) -> float | None:
    """Pearson correlation; None with fewer than two rows or a constant side."""
    if a.size < 2 or float(np.std(a)) == 0.0 or float(np.std(b)) == 0.0:
        return None
    return float(np.corrcoef(a, b)[0, 1])
