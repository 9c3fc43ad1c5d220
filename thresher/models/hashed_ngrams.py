"""Hashed word n-gram features and the bag-of-n-grams models DSIR compares.

A document is lowercased and cut into words the way NLTK's
``WordPunctTokenizer`` does (the tokenizer of DSIR's reference code): maximal
runs of word characters (``\\w``: letters, digits, underscore, in any
script) and maximal runs of other non-space characters (punctuation).
Every 1-gram to ``n``-gram of words (an n-gram is its words joined by one
space) is hashed into one of ``n_buckets`` buckets: 64-bit FNV-1a over its
UTF-8 bytes, finished by SplitMix64, modulo ``n_buckets``.

One numba kernel scans a whole Arrow string array: it either counts the
buckets of all documents (to fit a model) or sums, per document, a value per
bucket (to score: ``log p_target(b) - log p_raw(b)``). Both are exact and
deterministic: integer counts, and each document's sum in n-gram order.

References
----------
Xie, Santurkar, Ma and Liang, "Data Selection for Language Models via
Importance Resampling", NeurIPS 2023 (hashed n-gram features, 10,000 buckets).
Weinberger et al., "Feature Hashing for Large Scale Multitask Learning",
ICML 2009.
"""

from __future__ import annotations

from typing import Any

import numba as nb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

from thresher.tokens import WORD_CHAR, WORD_OTHER, WORD_SPACE, word_classes

#: Character classes of the tokenizer (:func:`thresher.tokens.word_classes`).
SPACE, WORD, OTHER = WORD_SPACE, WORD_CHAR, WORD_OTHER
_MODE_COUNT, _MODE_SUM = 0, 1


def _utf8(texts: pa.Array | pa.ChunkedArray) -> tuple[NDArray[np.int64], NDArray[np.uint8]]:
    """Offsets and bytes of the lowercased texts (a null text is empty)."""
    array = texts.combine_chunks() if isinstance(texts, pa.ChunkedArray) else texts
    array = pc.utf8_lower(pc.fill_null(array.cast(pa.large_string()), ""))
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    n = len(array)
    if n == 0:
        return np.zeros(1, dtype=np.int64), np.zeros(0, dtype=np.uint8)
    offsets = np.frombuffer(array.buffers()[1], dtype=np.int64)[array.offset : array.offset + n + 1]
    buffer = array.buffers()[2]
    data = np.frombuffer(buffer, dtype=np.uint8) if buffer is not None else np.zeros(0, np.uint8)
    return offsets, data


def bucket_counts(
    texts: pa.Array | pa.ChunkedArray, n_buckets: int = 10_000, ngrams: int = 2
) -> NDArray[np.int64]:
    """How many 1- to ``ngrams``-grams of all ``texts`` fall in each bucket, shape (n_buckets,)."""
    offsets, data = _utf8(texts)
    counts = np.zeros(n_buckets, dtype=np.int64)
    _scan(
        data, offsets, word_classes(), ngrams, n_buckets, _MODE_COUNT,
        np.zeros(0, np.float64), counts, np.zeros(0, np.float64), np.zeros(0, np.int64),
    )  # fmt: skip
    return counts


def bucket_sums(
    texts: pa.Array | pa.ChunkedArray, values: NDArray[np.float64], ngrams: int = 2
) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Per text: the sum of ``values[bucket]`` over its n-grams, and its number of n-grams."""
    offsets, data = _utf8(texts)
    n = offsets.size - 1
    sums = np.zeros(n, dtype=np.float64)
    lengths = np.zeros(n, dtype=np.int64)
    values = np.ascontiguousarray(values, dtype=np.float64)
    _scan(
        data, offsets, word_classes(), ngrams, values.size, _MODE_SUM,
        values, np.zeros(0, np.int64), sums, lengths,
    )  # fmt: skip
    return sums, lengths


def smoothed_log_probabilities(
    counts: NDArray[np.integer[Any]], smoothing: float = 1.0
) -> NDArray[np.float64]:
    """``log((c + smoothing) / (sum(c) + smoothing * n_buckets))``: an additively smoothed model."""
    counts = np.asarray(counts, dtype=np.float64)
    return np.log(counts + smoothing) - np.log(counts.sum() + smoothing * counts.size)


_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)


@nb.njit(cache=True, inline="always")
def _fnv(state: np.uint64, data: NDArray[np.uint8], start: int, end: int) -> np.uint64:
    for j in range(start, end):
        state = (state ^ np.uint64(data[j])) * _FNV_PRIME
    return state


@nb.njit(cache=True, inline="always")
def _finish(value: np.uint64) -> np.uint64:
    value = value + np.uint64(0x9E3779B97F4A7C15)
    value = (value ^ (value >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    value = (value ^ (value >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return value ^ (value >> np.uint64(31))


@nb.njit(cache=True, nogil=True)
def _scan(
    data: NDArray[np.uint8],
    offsets: NDArray[np.int64],
    classes: NDArray[np.uint8],
    ngrams: int,
    n_buckets: int,
    mode: int,
    values: NDArray[np.float64],
    counts: NDArray[np.int64],
    sums: NDArray[np.float64],
    lengths: NDArray[np.int64],
) -> None:
    """Tokenise every document and visit its n-gram buckets (count them, or sum ``values``)."""
    modulus = np.uint64(n_buckets)
    space = np.uint64(0x20)
    previous = np.zeros(ngrams, dtype=np.uint64)  # raw FNV states of the k-grams ending before
    current = np.zeros(ngrams, dtype=np.uint64)
    for i in range(offsets.size - 1):
        total = 0.0
        seen = 0  # words so far in this document
        n_grams = 0
        start = -1  # first byte of the word being read, -1 when none
        kind = np.int64(-1)
        j = offsets[i]
        end = offsets[i + 1]
        while j <= end:
            if j < end:
                lead = data[j]
                if lead < 0x80:
                    code, width = np.int64(lead), 1
                elif lead < 0xE0:
                    code, width = (np.int64(lead & 0x1F) << 6) | np.int64(data[j + 1] & 0x3F), 2
                elif lead < 0xF0:
                    code = (
                        (np.int64(lead & 0x0F) << 12)
                        | (np.int64(data[j + 1] & 0x3F) << 6)
                        | np.int64(data[j + 2] & 0x3F)
                    )
                    width = 3
                else:
                    code = (
                        (np.int64(lead & 0x07) << 18)
                        | (np.int64(data[j + 1] & 0x3F) << 12)
                        | (np.int64(data[j + 2] & 0x3F) << 6)
                        | np.int64(data[j + 3] & 0x3F)
                    )
                    width = 4
                cls = np.int64(classes[code]) if code < classes.size else np.int64(OTHER)
            else:
                cls, width = np.int64(-1), 1  # the end of the document closes the last word
            if start >= 0 and cls != kind:
                # a word ends at j: its k-grams for k = 1..ngrams
                top = min(ngrams, seen + 1)
                current[0] = _fnv(_FNV_OFFSET, data, start, j)
                for k in range(1, top):
                    state = (previous[k - 1] ^ space) * _FNV_PRIME
                    current[k] = _fnv(state, data, start, j)
                for k in range(top):
                    bucket = np.int64(_finish(current[k]) % modulus)
                    if mode == 0:
                        counts[bucket] += 1
                    else:
                        total += values[bucket]
                n_grams += top
                for k in range(top):
                    previous[k] = current[k]
                seen += 1
                start = -1
            if cls > 0 and start < 0:
                start = j
                kind = cls
            j += width
        if mode == 1:
            sums[i] = total
            lengths[i] = n_grams
