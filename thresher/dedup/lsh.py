"""LSH banding: which documents become candidate pairs, and with what probability.

A signature of ``num_perm`` values is cut into ``bands`` bands of ``rows``
values; two documents are a candidate pair when all rows of at least one
band agree. For a pair with Jaccard similarity ``J`` that happens with
probability (the S-curve)::

    P(J) = 1 - (1 - J**rows) ** bands

datasketch picks ``(bands, rows)`` minimising the weighted area of false
positives (``P`` below the threshold) plus false negatives (``1 - P`` above
it). That optimum puts the S-curve's steep part *above* the threshold: for
0.8 and 128 permutations it is 9 x 13, with ``P(0.8)`` about 0.4, so more
than half of the pairs at exactly the threshold are missed.
:func:`choose_bands_rows` minimises the same objective among the choices
with ``P(threshold) >= min_recall`` (default 0.95); the precision lost to
the extra candidates is won back by verifying each candidate pair with
its signature-estimated Jaccard (``thresher.dedup.graph``).

References
----------
Leskovec, Rajaraman and Ullman, "Mining of Massive Datasets", chapter 3.4
(the S-curve and banding).
Zhu et al., datasketch ``MinHashLSH`` (``_optimal_param``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

# Gauss-Legendre nodes: exact for polynomials of degree <= 2 * 80 - 1, so
# for every S-curve with bands * rows <= 159 (the integrals are then exact
# up to rounding); accurate far beyond.
_NODES, _WEIGHTS = np.polynomial.legendre.leggauss(80)


def candidate_probability(jaccard: float | NDArray[np.float64], bands: int, rows: int) -> Any:
    """P(candidate | J) = 1 - (1 - J**rows) ** bands (scalar or array)."""
    return 1.0 - (1.0 - np.asarray(jaccard, dtype=np.float64) ** rows) ** bands


def _integral(low: float, high: float, bands: int, rows: int, complement: bool) -> float:
    """Integral of P (or 1 - P) over [low, high]."""
    if high <= low:
        return 0.0
    points = 0.5 * (high - low) * _NODES + 0.5 * (high + low)
    values = candidate_probability(points, bands, rows)
    if complement:
        values = 1.0 - values
    return float(0.5 * (high - low) * np.dot(_WEIGHTS, values))


@dataclass(frozen=True)
class LshParams:
    """A banding and what it promises.

    ``probability_at_threshold`` is P(candidate | J = threshold);
    ``false_positive_area`` and ``false_negative_area`` are the integrals of
    P over [0, threshold] and of 1 - P over [threshold, 1].
    """

    bands: int
    rows: int
    threshold: float
    probability_at_threshold: float
    false_positive_area: float
    false_negative_area: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def describe(threshold: float, bands: int, rows: int) -> LshParams:
    """The promises of a given banding at ``threshold``."""
    return LshParams(
        bands=bands,
        rows=rows,
        threshold=threshold,
        probability_at_threshold=float(candidate_probability(threshold, bands, rows)),
        false_positive_area=_integral(0.0, threshold, bands, rows, complement=False),
        false_negative_area=_integral(threshold, 1.0, bands, rows, complement=True),
    )


def choose_bands_rows(
    threshold: float,
    num_perm: int,
    min_recall: float = 0.95,
    false_positive_weight: float = 0.5,
    false_negative_weight: float = 0.5,
) -> LshParams:
    """Bands and rows minimising the weighted error with ``P(threshold) >= min_recall``.

    Candidates are visited as datasketch does (bands, then rows, ascending)
    and the first strict minimum wins, so with ``min_recall=0`` the choice
    is datasketch's ``_optimal_param``. Raises ValueError when no banding
    of ``num_perm`` values reaches ``min_recall``.
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    if not 0.0 <= min_recall <= 1.0:
        raise ValueError(f"min_recall must be in [0, 1], got {min_recall}")
    best: LshParams | None = None
    best_error = float("inf")
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            if candidate_probability(threshold, bands, rows) < min_recall:
                continue
            params = describe(threshold, bands, rows)
            error = (
                false_positive_weight * params.false_positive_area
                + false_negative_weight * params.false_negative_area
            )
            if error < best_error:
                best, best_error = params, error
    if best is None:
        raise ValueError(
            f"no banding of {num_perm} permutations reaches P(candidate | J={threshold}) "
            f">= {min_recall}; lower min_recall or use more permutations"
        )
    return best


_MIX_1 = np.uint64(0xFF51AFD7ED558CCD)
_MIX_2 = np.uint64(0xC4CEB9FE1A85EC53)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _fmix64(values: NDArray[np.uint64]) -> NDArray[np.uint64]:
    values = values ^ (values >> np.uint64(33))
    values = values * _MIX_1
    values = values ^ (values >> np.uint64(33))
    values = values * _MIX_2
    return values ^ (values >> np.uint64(33))


def band_keys(signatures: NDArray[np.uint32], bands: int, rows: int) -> NDArray[np.int64]:
    """64-bit key of each band of each signature: ``(n, bands)`` int64.

    Equal bands give equal keys; different bands collide with probability
    about 2**-64. The local engine sorts by these keys, then splits a
    shared key by the band's values, so buckets are exact band values on
    both engines (Spark groups by the band's bytes).
    """
    n, width = signatures.shape
    if bands * rows > width:
        raise ValueError(f"{bands} bands x {rows} rows need {bands * rows} values, have {width}")
    keys = np.empty((n, bands), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for band in range(bands):
            seed = _fmix64(np.array([band + 1], dtype=np.uint64) * _GOLDEN)[0]
            key: NDArray[np.uint64] = np.full(n, seed, dtype=np.uint64)
            for column in range(band * rows, (band + 1) * rows):
                key = _fmix64(np.bitwise_xor(key, signatures[:, column].astype(np.uint64)))
            keys[:, band] = key
    return keys.view(np.int64)
