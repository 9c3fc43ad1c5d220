"""LSH banding: datasketch's optimiser reproduced, recall at the threshold enforced and measured."""

from __future__ import annotations

import random

import numpy as np
import pyarrow as pa
import pytest
from datasketch.lsh import _optimal_param

from thresher.dedup.lsh import band_keys, candidate_probability, choose_bands_rows, describe
from thresher.dedup.shingles import signature_matrix


@pytest.mark.parametrize("num_perm", [64, 128])
@pytest.mark.parametrize("threshold", [0.5, 0.7, 0.8, 0.9])
def test_without_recall_floor_the_choice_is_datasketchs(threshold: float, num_perm: int) -> None:
    params = choose_bands_rows(threshold, num_perm, min_recall=0.0)
    assert (params.bands, params.rows) == _optimal_param(threshold, num_perm, 0.5, 0.5)


@pytest.mark.parametrize("threshold", [0.5, 0.6, 0.7, 0.8, 0.9])
def test_recall_at_the_threshold_is_high(threshold: float) -> None:
    params = choose_bands_rows(threshold, 128)
    assert params.bands * params.rows <= 128
    assert params.probability_at_threshold >= 0.95
    assert params.probability_at_threshold == pytest.approx(
        candidate_probability(threshold, params.bands, params.rows)
    )
    # datasketch's own choice flags fewer than half of the pairs at exactly the threshold.
    bands, rows = _optimal_param(threshold, 128, 0.5, 0.5)
    assert candidate_probability(threshold, bands, rows) < 0.6


def test_error_areas_known_answer() -> None:
    # One band of one row: P(J) = J, so FP = t^2 / 2 and FN = (1 - t)^2 / 2.
    params = describe(0.3, bands=1, rows=1)
    assert params.false_positive_area == pytest.approx(0.3**2 / 2)
    assert params.false_negative_area == pytest.approx(0.7**2 / 2)
    with pytest.raises(ValueError, match="no banding"):
        choose_bands_rows(0.2, 2, min_recall=0.5)  # best: 1 - 0.8**2 = 0.36


def test_band_keys_change_only_with_their_band() -> None:
    rng = np.random.default_rng(0)
    signatures = rng.integers(0, 2**32, size=(3, 12), dtype=np.uint64).astype(np.uint32)
    signatures[1] = signatures[0]
    signatures[1, 5] ^= 1  # band 1 of 3 bands x 4 rows
    keys = band_keys(signatures, bands=3, rows=4)
    assert keys.dtype == np.int64 and keys.shape == (3, 3)
    assert keys[0, 0] == keys[1, 0] and keys[0, 2] == keys[1, 2] and keys[0, 1] != keys[1, 1]
    assert len(set(keys[:, 0]) | set(keys[:, 1])) >= 4  # same values in other bands differ
    with pytest.raises(ValueError, match="need 16 values"):
        band_keys(signatures, bands=4, rows=4)


def test_candidate_rate_follows_the_s_curve() -> None:
    """Pairs at exactly J = 0.8 (word sets): the share that shares a band is P(0.8)."""
    rng = random.Random(1)
    params = choose_bands_rows(0.8, 128)
    n, k = 90, 10  # replacing 10 of 90 distinct words: J = 80 / 100
    truth = (n - k) / (n + k)
    pairs = 400
    texts = []
    for _ in range(pairs):
        words = [f"w{rng.getrandbits(48):x}" for _ in range(n)]
        edited = words[: n - k] + [f"v{rng.getrandbits(48):x}" for _ in range(k)]
        texts += [" ".join(words), " ".join(edited)]
    signatures, _ = signature_matrix(pa.array(texts), num_perm=128, ngram=1)
    keys = band_keys(signatures, params.bands, params.rows)
    shared = np.any(keys[0::2] == keys[1::2], axis=1)
    expected = candidate_probability(truth, params.bands, params.rows)
    spread = 4 * np.sqrt(expected * (1 - expected) / pairs)
    assert abs(shared.mean() - expected) < spread + 0.01
