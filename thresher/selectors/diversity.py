"""Log-determinant diversity of a set of embeddings (how far it is from redundant).

For ``m`` vectors, scaled to unit length (a zero vector stays zero), with
``K`` their cosine-similarity kernel (``K_ij = x_i . x_j``, unit diagonal):

    diversity = log det(K + ridge * I) / m

the mean log eigenvalue of the kernel plus a small ridge (``1e-3``, the
DPP selector's default). It is the negative of the log-determinant distance
of Wang et al. (2024) to a maximally diverse reference set of the same size,
per row: ``m`` orthonormal vectors (``K = I``) give ``log(1 + ridge)``,
about 0, the most any set of unit vectors can reach (Hadamard's
inequality); ``m`` identical vectors give about ``log(ridge)`` (-6.9), the
least. Dividing by ``m`` keeps sets of different sizes on one scale; above
the embedding width ``d`` the kernel has rank at most ``d`` and the ridge
bounds the other ``m - d`` eigenvalues, so values are compared between sets
of the same size and width (the select stage compares a step's kept rows
with a random subset of the same size: :mod:`thresher.stages.diversity`).

The determinant is taken in float64 on the smaller side: ``K`` when
``m <= d``, else the ``d x d`` Gram matrix ``X^T X`` by Sylvester's identity
``det(X X^T + r I_m) = r^(m - d) det(X^T X + r I_d)``, so a sample of
``m`` rows costs ``O(m d min(m, d))``.

References
----------
Wang, Shen, Guo, Stallone, Kim, Golland and Panda, "Diversity Measurement
and Subset Selection for Instruction Tuning Datasets", 2024.
Kulesza and Taskar, "Determinantal Point Processes for Machine Learning",
Foundations and Trends in Machine Learning, 2012.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from thresher.keys import id_priority

#: Added to the kernel's diagonal (the DPP selector's default ridge).
RIDGE = 1e-3
#: Most rows a diversity is computed on (each of the kept and the random sample).
SAMPLE = 2000


def logdet_diversity(vectors: NDArray[np.floating[Any]], ridge: float = RIDGE) -> float:
    """``log det(K + ridge I) / m`` of the cosine kernel ``K`` of the ``m`` rows (see module docstring).

    Raises ValueError for an empty set, a non-finite value or a ridge <= 0.
    """
    x = np.asarray(vectors, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(
            f"the diversity of a set needs an (m, d) matrix with m >= 1, got {x.shape}"
        )
    if not np.isfinite(x).all():
        raise ValueError("the diversity of a set needs finite vectors")
    if not ridge > 0:
        raise ValueError(f"ridge must be > 0, got {ridge!r}")
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))
    x = x * np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)[:, None]
    m, d = x.shape
    if m <= d:
        kernel = x @ x.T + ridge * np.eye(m)
        logdet = _logdet(kernel)
    else:
        logdet = (m - d) * float(np.log(ridge)) + _logdet(x.T @ x + ridge * np.eye(d))
    return logdet / m


def _logdet(matrix: NDArray[np.float64]) -> float:
    sign, value = np.linalg.slogdet(matrix)
    if sign <= 0:  # positive definite by construction; a failure here is a bug, not data
        raise ArithmeticError("the kernel plus its ridge is not positive definite")
    return float(value)


def sample_positions(
    ids: pa.Array | pa.ChunkedArray, order: NDArray[np.int64], seed: int, size: int
) -> NDArray[np.int64]:
    """Positions of the ``size`` rows with the smallest seeded id hash (ties by input order).

    The same rows that :func:`thresher.selectors.ranking.k_smallest` finds
    with a :class:`~thresher.selectors.ranking.PriorityKey` of ``seed`` on
    any engine; returned in ascending position.
    """
    order = np.asarray(order, dtype=np.int64)
    if size >= order.size:
        return np.arange(order.size, dtype=np.int64)
    priority = id_priority(ids, seed)
    ranked = np.lexsort((order.astype(np.uint64), priority))
    return np.sort(ranked[:size]).astype(np.int64)
