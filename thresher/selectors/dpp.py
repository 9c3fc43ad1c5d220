"""Diversity selection: greedy MAP inference of a determinantal point process.

The kernel is ``L = diag(q) (S + ridge * I) diag(q)`` with ``S`` the linear
kernel of the L2-normalised embeddings (cosine similarity, positive
semi-definite) and the quality ``q = exp(alpha * (score - max(score)))``
(all ones without a score; subtracting the maximum only rescales ``L`` and
keeps ``exp`` finite). The ridge keeps ``L`` positive definite, so more
items than the embedding dimension can be chosen.

The greedy step adds the item with the largest marginal gain in
``log det(L_Y)``; Chen et al.'s incremental Cholesky update keeps, for
every item, its residual variance ``d_i^2 = det(L_{Y+i}) / det(L_Y)`` and
the Cholesky row ``c_i``, for O(N k^2) time and O(N k) memory. It stops at
``k`` items or when the best ``d_i^2`` falls below 1e-10. The budget is
then met deterministically: the remaining slots go to the unselected rows
of highest quality ``q`` (ties by row position).

A sum budget (:class:`~thresher.selectors.base.SumBudget`, e.g. tokens)
takes rows in that order (greedy picks, then the fill) and stops before the
first row that would make the sum exceed the total; the greedy loop runs
only as far as that point can lie (the most rows whose sizes, smallest
first, fit in the total).

Runs with numpy on the CPU, with torch on a GPU when ``device`` resolves to
one (``"auto"``: the GPU Spark assigned, else the first CUDA device). On
the CPU the kernel rows are numpy's own single-threaded sums (``einsum``),
not BLAS, whose rounding depends on the thread count: the greedy choices,
which can hinge on near-ties, are the same at any number of threads.

References
----------
Chen, Zhang and Zhou, "Fast Greedy MAP Inference for Determinantal Point
Process to Improve Recommendation Diversity", NeurIPS 2018.
Wang et al., "Diversity Measurement and Subset Selection for Instruction
Tuning Datasets", 2024.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from thresher._params import Constraints, Device, Interval, Options, Real, Text
from thresher.selectors.base import (
    Budget,
    RandomState,
    Selection,
    Selector,
    check_embeddings,
    fitting_prefix,
    score_values,
    sum_limit,
)
from thresher.selectors.kmeans import normalize_rows
from thresher.selectors.partition import Partitionable

#: Stop when the best residual variance (marginal determinant ratio) is below this.
MIN_GAIN = 1e-10
Precision = Literal["float64", "float32"]


def dpp_quality(values: NDArray[np.float64] | None, n: int, alpha: float) -> NDArray[np.float64]:
    """Quality term ``exp(alpha * (score - max score))``; ones without a score."""
    if values is None or n == 0:
        return np.ones(n)
    return np.exp(alpha * (values - values.max()))


def greedy_map_numpy(
    features: NDArray[np.floating[Any]],
    quality: NDArray[np.float64],
    ridge: float,
    k: int,
    precision: Precision = "float64",
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Fast greedy MAP (Chen et al. 2018, Algorithm 1) with kernel rows computed on the fly.

    Parameters
    ----------
    features : ndarray, shape (N, d)
        Row vectors ``b_i``; the kernel is ``L_ij = q_i q_j (b_i . b_j + ridge [i == j])``.
    quality : ndarray of float64, shape (N,)
    ridge : float
    k : int
        Largest number of items to choose.

    Returns
    -------
    order : ndarray of int64, shape (m,), m <= k
        Chosen items in the order the greedy step took them.
    gains : ndarray of float64, shape (m,)
        ``d^2`` of each item when it was taken; ``sum(log(gains)) = log det(L_order)``.
    """
    dtype: type[np.floating[Any]] = np.float64 if precision == "float64" else np.float32
    b: NDArray[np.floating[Any]] = np.ascontiguousarray(features, dtype=dtype)
    q: NDArray[np.floating[Any]] = np.asarray(quality, dtype=dtype)
    n = b.shape[0]
    k = min(k, n)
    if k == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    cis: NDArray[np.floating[Any]] = np.zeros((k, n), dtype=dtype)
    d2: NDArray[np.floating[Any]] = (np.sum(b * b, axis=1) + ridge) * q * q
    d2 = d2.astype(dtype, copy=False)
    order = np.zeros(k, dtype=np.int64)
    gains = np.zeros(k)
    j = int(np.argmax(d2))
    m = 0
    row: NDArray[np.floating[Any]] = np.empty(n, dtype=dtype)
    while m < k and d2[j] >= MIN_GAIN:
        order[m], gains[m] = j, float(d2[j])
        if m + 1 < k:
            np.einsum("ij,j->i", b, b[j], out=row)  # kernel row L_j, built in place
            row *= q
            row *= q[j]
            row[j] += ridge * q[j] * q[j]
            if m:
                row -= np.einsum("t,ti->i", cis[:m, j], cis[:m])
            row /= np.sqrt(d2[j])
            cis[m] = row
            d2 -= row * row
        m += 1
        d2[j] = -np.inf  # earlier choices are -inf already
        j = int(np.argmax(d2))
    return order[:m], gains[:m]


def greedy_map_torch(
    features: NDArray[np.floating[Any]],
    quality: NDArray[np.float64],
    ridge: float,
    k: int,
    device: str,
    precision: Precision = "float64",
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """The same algorithm as :func:`greedy_map_numpy` with torch tensors on ``device``."""
    import torch

    dtype = torch.float64 if precision == "float64" else torch.float32
    dev = torch.device(device)
    with torch.inference_mode():
        b = torch.as_tensor(np.ascontiguousarray(features), device=dev).to(dtype)
        q = torch.as_tensor(np.asarray(quality), device=dev).to(dtype)
        n = b.shape[0]
        k = min(k, n)
        if k == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        cis = torch.zeros((k, n), dtype=dtype, device=dev)
        d2 = ((b * b).sum(dim=1) + ridge) * q * q
        order: list[int] = []
        gains: list[float] = []
        j = int(torch.argmax(d2))
        while len(order) < k:
            gain = float(d2[j])
            if gain < MIN_GAIN:
                break
            m = len(order)
            order.append(j)
            gains.append(gain)
            if m + 1 < k:
                row = torch.mv(b, b[j]) * q * q[j]
                row[j] += ridge * q[j] * q[j]
                if m:
                    row -= cis[:m, j] @ cis[:m]
                row /= gain**0.5
                cis[m] = row
                d2 -= row * row
            d2[j] = -torch.inf
            j = int(torch.argmax(d2))
    return np.asarray(order, dtype=np.int64), np.asarray(gains)


class DPPSelector(Partitionable, Selector):
    """Greedy MAP of a quality-weighted DPP (see module docstring).

    Parameters
    ----------
    score : str or None
        Quality score (higher is better); None gives every row quality 1.
    alpha : float
        Strength of the quality term; 0 ignores the score.
    ridge : float
        Added to the similarity diagonal (> 0 lets k exceed the embedding dimension).
    device : str
        ``"auto"``, ``"cpu"`` or a torch CUDA device. For bit-identical
        results across machines with and without GPUs, use ``"cpu"``.
    precision : {"float64", "float32"}
        Arithmetic of the greedy loop (float32 halves the O(N k) memory).
    """

    name: ClassVar[str] = "dpp"
    requires_embeddings: ClassVar[bool] = True
    _parameter_constraints: ClassVar[dict[str, Constraints]] = {
        "score": [Text(), None],
        "alpha": [Interval(Real, None, None)],
        "ridge": [Interval(Real, 0, None)],
        "device": [Device()],
        "precision": [Options("float64", "float32")],
    }

    def __init__(
        self,
        score: str | None = None,
        alpha: float = 1.0,
        ridge: float = 1e-3,
        device: str = "auto",
        precision: Precision = "float64",
    ) -> None:
        self.score = score
        self.alpha = alpha
        self.ridge = ridge
        self.device = device
        self.precision = precision

    def score_columns(self) -> list[str]:
        return [] if self.score is None else [self.score]

    def select(
        self,
        scores: pa.Table,
        embeddings: NDArray[np.floating[Any]] | None = None,
        budget: Budget | None = None,
        *,
        random_state: RandomState = None,
    ) -> Selection:
        self.validate_params()
        n = scores.num_rows
        matrix = check_embeddings(embeddings, n, selector=self.name)
        k, sizes = sum_limit(budget, scores, selector=self.name)
        values = (
            None if self.score is None else score_values(scores, self.score, selector=self.name)
        )
        quality = dpp_quality(values, n, float(self.alpha))
        features = normalize_rows(matrix)
        device = _device(self.device)
        if device == "cpu":
            order, gains = greedy_map_numpy(features, quality, float(self.ridge), k, self.precision)
        else:
            order, gains = greedy_map_torch(
                features, quality, float(self.ridge), k, device, self.precision
            )
        fill = _fill(order, quality, k)
        taken = fitting_prefix(np.concatenate([order, fill]), sizes, budget)
        return Selection.from_indices(
            taken,
            details={
                "greedy": int(order.size),
                "filled": int(fill.size),
                "log_det": float(np.sum(np.log(gains))) if gains.size else 0.0,
                "alpha": float(self.alpha),
                "ridge": float(self.ridge),
            },
        )


def _fill(order: NDArray[np.int64], quality: NDArray[np.float64], k: int) -> NDArray[np.int64]:
    """Rows completing the budget after an early stop: highest quality first, then position."""
    missing = k - order.size
    if missing <= 0:
        return np.zeros(0, dtype=np.int64)
    rest = np.setdiff1d(np.arange(quality.size), order)
    return rest[np.argsort(-quality[rest], kind="stable")[:missing]]


def _device(device: str) -> str:
    if device == "cpu":
        return "cpu"
    from thresher.devices import resolve_device

    return resolve_device(device)
