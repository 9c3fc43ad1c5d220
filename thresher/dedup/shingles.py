"""MinHash signatures of whole batches: normalise, shingle, hash, permute, in one compiled pass.

A document's signature is exactly what datasketch computes for the same
shingles (:func:`shingles`)::

    m = datasketch.MinHash(num_perm=P, seed=S, hashfunc=xxhash.xxh32_intdigest)
    m.update_batch(shingles(text, ...))          # scheme "affine32", datasketch's default

so a stored signature becomes a ``datasketch.LeanMinHash`` with
:func:`to_lean_minhash` and ``jaccard()`` agrees with datasketch's. The
scheme is datasketch 2.0's ``affine32``: each shingle is hashed once with
xxh32 (seed 0) over its UTF-8 bytes, pre-mixed with the MurmurHash3
finaliser, then permutation ``k`` maps it to ``a_k * h + b_k mod 2**32``
(``a_k`` odd, so a bijection; datasketch draws ``a``, ``b`` from
``numpy.random.RandomState(seed)``). The older ``mod (2**61 - 1)`` scheme
(datasketch < 2.0, "legacy") folds 61-bit values to 32 bits, which inflates
similarity on large sets; it is not offered.

Normalisation, in order:

1. ``lowercase``: Arrow's ``utf8_lower`` (Unicode simple case mapping);
2. ``punctuation``: characters of Unicode category ``P*`` are removed
   (``"don't"`` -> ``"dont"``);
3. ``whitespace``: runs of whitespace (``str.isspace``) become one space and
   the ends are trimmed. Word shingles always split on whitespace runs, so
   the flag matters only for character shingles.

Shingles are ``ngram`` consecutive words joined by one space, or ``ngram``
consecutive characters (code points) of the normalised text. A document
shorter than ``ngram`` units has one shingle, the whole normalised text; a
document with nothing left after normalisation has no shingle and no
signature (``None``): it cannot be a near-duplicate of anything.

The compiled kernel (numba) does steps 2-3, the shingling, xxh32 and the
permutations for a whole Arrow string array in one pass over its buffers:
no Python object per shingle, and ``num_perm`` affine maps per shingle in
a vectorised loop.

References
----------
Broder, "On the resemblance and containment of documents", 1997.
Zhu et al., datasketch (``datasketch.MinHash``, scheme ``affine32``), 2.0.
"""

from __future__ import annotations

import unicodedata
from typing import TYPE_CHECKING, Literal

import numba as nb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash
from numpy.typing import NDArray

from thresher.tokens import (
    SHINGLE_OTHER,
    SHINGLE_PUNCT,
    SHINGLE_SPACE,
    SHINGLE_TABLE_SIZE,
    shingle_classes,
)

if TYPE_CHECKING:
    from datasketch import LeanMinHash

Unit = Literal["word", "char"]

_TABLE_SIZE = SHINGLE_TABLE_SIZE
_OTHER, _SPACE, _PUNCT = SHINGLE_OTHER, SHINGLE_SPACE, SHINGLE_PUNCT
_EMPTY = np.uint32(0xFFFFFFFF)


# -- reference implementation (Python; used to build datasketch objects and in tests) -------


def normalize_text(
    text: str, *, lowercase: bool = True, punctuation: bool = True, whitespace: bool = True
) -> str:
    """The normalised text whose shingles are hashed (see module docstring)."""
    if lowercase:
        text = str(pc.utf8_lower(pa.array([text], pa.string()))[0].as_py())
    if punctuation:
        text = "".join(c for c in text if not unicodedata.category(c).startswith("P"))
    if whitespace:
        text = " ".join(text.split())
    return text


def shingles(
    text: str,
    *,
    ngram: int = 5,
    unit: Unit = "word",
    lowercase: bool = True,
    punctuation: bool = True,
    whitespace: bool = True,
) -> list[bytes]:
    """The shingles of ``text`` as UTF-8 bytes, in document order (repeats included).

    This is the set a signature summarises; feeding it to datasketch's
    ``MinHash.update_batch`` (xxh32 hash function) gives the same signature.
    """
    normal = normalize_text(
        text,
        lowercase=lowercase,
        punctuation=punctuation,
        whitespace=whitespace or unit == "word",
    )
    units: list[str] = normal.split() if unit == "word" else list(normal)
    if not units:
        return []
    joiner = " " if unit == "word" else ""
    count = max(1, len(units) - ngram + 1)
    return [joiner.join(units[i : i + ngram]).encode("utf-8") for i in range(count)]


def permutations(num_perm: int, seed: int) -> tuple[NDArray[np.uint32], NDArray[np.uint32]]:
    """datasketch's ``affine32`` permutation parameters ``(a, b)`` for ``num_perm`` and ``seed``."""
    generator = np.random.RandomState(seed)
    a = generator.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = generator.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    return a.astype(np.uint32), b.astype(np.uint32)


def to_lean_minhash(signature: bytes | NDArray[np.uint32], seed: int = 1) -> LeanMinHash:
    """A ``datasketch.LeanMinHash`` from a stored signature (its bytes, or uint32 values)."""
    from datasketch import LeanMinHash

    values = (
        np.frombuffer(signature, dtype="<u4").astype(np.uint32)
        if isinstance(signature, bytes)
        else np.asarray(signature, dtype=np.uint32)
    )
    return LeanMinHash(seed=seed, hashvalues=values, scheme="affine32")


# -- the compiled path ---------------------------------------------------------------


@nb.njit(inline="always")
def _rotl(x: np.uint32, r: int) -> np.uint32:
    return np.uint32((x << np.uint32(r)) | (x >> np.uint32(32 - r)))


@nb.njit(cache=True)
def _xxh32_fmix(
    text: NDArray[np.uint8], words: NDArray[np.uint32], start: int, end: int
) -> np.uint32:
    """xxh32 (seed 0) of ``text[start:end]``, then the MurmurHash3 finaliser.

    ``words[i]`` holds the little-endian 32-bit word at byte ``i``.
    """
    p1 = np.uint32(0x9E3779B1)
    p2 = np.uint32(0x85EBCA77)
    p3 = np.uint32(0xC2B2AE3D)
    p4 = np.uint32(0x27D4EB2F)
    p5 = np.uint32(0x165667B1)
    length = end - start
    i = start
    if length >= 16:
        v1 = np.uint32(p1 + p2)
        v2 = p2
        v3 = np.uint32(0)
        v4 = np.uint32(np.uint32(0) - p1)
        limit = end - 16
        while i <= limit:
            v1 = np.uint32(_rotl(np.uint32(v1 + np.uint32(words[i] * p2)), 13) * p1)
            v2 = np.uint32(_rotl(np.uint32(v2 + np.uint32(words[i + 4] * p2)), 13) * p1)
            v3 = np.uint32(_rotl(np.uint32(v3 + np.uint32(words[i + 8] * p2)), 13) * p1)
            v4 = np.uint32(_rotl(np.uint32(v4 + np.uint32(words[i + 12] * p2)), 13) * p1)
            i += 16
        h = np.uint32(_rotl(v1, 1) + _rotl(v2, 7) + _rotl(v3, 12) + _rotl(v4, 18))
    else:
        h = p5
    h = np.uint32(h + np.uint32(length))
    while i + 4 <= end:
        h = np.uint32(_rotl(np.uint32(h + np.uint32(words[i] * p3)), 17) * p4)
        i += 4
    while i < end:
        h = np.uint32(_rotl(np.uint32(h + np.uint32(np.uint32(text[i]) * p5)), 11) * p1)
        i += 1
    h = np.uint32(h ^ (h >> np.uint32(15)))
    h = np.uint32(h * p2)
    h = np.uint32(h ^ (h >> np.uint32(13)))
    h = np.uint32(h * p3)
    h = np.uint32(h ^ (h >> np.uint32(16)))
    # MurmurHash3 fmix32: datasketch's pre-mix of the input hash (affine32 scheme).
    h = np.uint32(h ^ (h >> np.uint32(16)))
    h = np.uint32(h * np.uint32(0x85EBCA6B))
    h = np.uint32(h ^ (h >> np.uint32(13)))
    h = np.uint32(h * np.uint32(0xC2B2AE35))
    return np.uint32(h ^ (h >> np.uint32(16)))


@nb.njit(cache=True)
def _normalize(
    data: NDArray[np.uint8],
    start: int,
    end: int,
    classes: NDArray[np.uint8],
    drop_punctuation: bool,
    collapse: bool,
    out: NDArray[np.uint8],
) -> int:
    """Remove punctuation and collapse whitespace of one UTF-8 document into ``out``.

    Returns the number of bytes written.
    """
    n = 0
    i = start
    pending_space = False
    table_size = classes.shape[0]
    while i < end:
        lead = np.int64(data[i])
        if lead < 0x80:
            code = lead
            width = 1
        elif lead < 0xE0:
            code = ((lead & 0x1F) << 6) | (np.int64(data[i + 1]) & 0x3F)
            width = 2
        elif lead < 0xF0:
            code = (
                ((lead & 0x0F) << 12)
                | ((np.int64(data[i + 1]) & 0x3F) << 6)
                | (np.int64(data[i + 2]) & 0x3F)
            )
            width = 3
        else:
            code = (
                ((lead & 0x07) << 18)
                | ((np.int64(data[i + 1]) & 0x3F) << 12)
                | ((np.int64(data[i + 2]) & 0x3F) << 6)
                | (np.int64(data[i + 3]) & 0x3F)
            )
            width = 4
        kind = classes[code] if code < table_size else 0
        if kind == 1 and collapse:
            pending_space = n > 0
        elif not (kind == 2 and drop_punctuation):
            if pending_space:
                out[n] = 32
                n += 1
                pending_space = False
            for k in range(width):
                out[n] = data[i + k]
                n += 1
        i += width
    return n


@nb.njit(cache=True)
def _signatures(
    data: NDArray[np.uint8],
    offsets: NDArray[np.int64],
    classes: NDArray[np.uint8],
    drop_punctuation: bool,
    collapse: bool,
    char_mode: bool,
    ngram: int,
    a: NDArray[np.uint32],
    b: NDArray[np.uint32],
    out: NDArray[np.uint32],
    counts: NDArray[np.int64],
) -> None:
    """Signatures of the documents ``data[offsets[d]:offsets[d + 1]]`` into ``out[d]``.

    ``counts[d]`` receives the number of shingles (0: no signature).
    """
    n_perm = a.shape[0]
    longest = 0
    for d in range(offsets.shape[0] - 1):
        longest = max(longest, offsets[d + 1] - offsets[d])
    text = np.zeros(longest + 4, dtype=np.uint8)
    words = np.zeros(longest + 1, dtype=np.uint32)
    starts = np.empty(longest + 2, dtype=np.int64)
    ends = np.empty(longest + 2, dtype=np.int64)
    hashes = np.empty(longest + 1, dtype=np.uint32)
    for d in range(offsets.shape[0] - 1):
        n = _normalize(data, offsets[d], offsets[d + 1], classes, drop_punctuation, collapse, text)
        text[n] = 0
        text[n + 1] = 0
        text[n + 2] = 0
        for i in range(n):
            words[i] = (
                np.uint32(text[i])
                | (np.uint32(text[i + 1]) << np.uint32(8))
                | (np.uint32(text[i + 2]) << np.uint32(16))
                | (np.uint32(text[i + 3]) << np.uint32(24))
            )
        # Units: words (runs of non-space bytes) or code points.
        n_units = 0
        if char_mode:
            for i in range(n):
                if (text[i] & 0xC0) != 0x80:
                    starts[n_units] = i
                    if n_units > 0:
                        ends[n_units - 1] = i
                    n_units += 1
            if n_units > 0:
                ends[n_units - 1] = n
        else:
            i = 0
            while i < n:
                while i < n and text[i] == 32:
                    i += 1
                if i >= n:
                    break
                starts[n_units] = i
                while i < n and text[i] != 32:
                    i += 1
                ends[n_units] = i
                n_units += 1
        n_shingles = 0
        if n_units > 0:
            n_shingles = n_units - ngram + 1 if n_units >= ngram else 1
            for k in range(n_shingles):
                last = min(k + ngram - 1, n_units - 1)
                hashes[k] = _xxh32_fmix(text, words, starts[k], ends[last])
        counts[d] = n_shingles
        for p in range(n_perm):
            ap = a[p]
            bp = b[p]
            low = np.uint32(0xFFFFFFFF)
            for k in range(n_shingles):
                low = min(low, np.uint32(ap * hashes[k] + bp))
            out[d, p] = low


def signature_matrix(
    texts: pa.Array | pa.ChunkedArray,
    *,
    num_perm: int = 128,
    seed: int = 1,
    ngram: int = 5,
    unit: Unit = "word",
    lowercase: bool = True,
    punctuation: bool = True,
    whitespace: bool = True,
) -> tuple[NDArray[np.uint32], NDArray[np.int64]]:
    """Signatures of a string array: ``(n, num_perm)`` uint32 and shingle counts ``(n,)``.

    Rows with no shingle (or a null text) hold datasketch's empty value
    ``2**32 - 1`` everywhere and a count of 0.
    """
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    if lowercase:
        texts = pc.utf8_lower(texts)
    texts = texts.cast(pa.large_string())
    n = len(texts)
    out = np.full((n, num_perm), _EMPTY, dtype=np.uint32)
    counts = np.zeros(n, dtype=np.int64)
    if n == 0:
        return out, counts
    buffers = texts.buffers()
    offsets = np.frombuffer(buffers[1], dtype=np.int64)[texts.offset : texts.offset + n + 1]
    data = (
        np.frombuffer(buffers[2], dtype=np.uint8)
        if buffers[2] is not None
        else np.zeros(0, dtype=np.uint8)
    )
    a, b = permutations(num_perm, seed)
    _signatures(
        data,
        np.ascontiguousarray(offsets),
        shingle_classes(),
        punctuation,
        whitespace or unit == "word",
        unit == "char",
        ngram,
        a,
        b,
        out,
        counts,
    )
    if texts.null_count:
        valid = np.asarray(texts.is_valid())
        out[~valid] = _EMPTY
        counts[~valid] = 0
    return out, counts


def content_hashes(texts: pa.Array | pa.ChunkedArray) -> list[bytes | None]:
    """xxh3-128 digest (16 bytes) of each text's UTF-8 bytes; ``None`` for a null text."""
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    texts = texts.cast(pa.large_string())
    n = len(texts)
    if n == 0:
        return []
    buffers = texts.buffers()
    offsets = np.frombuffer(buffers[1], dtype=np.int64)[texts.offset : texts.offset + n + 1]
    data = memoryview(buffers[2]) if buffers[2] is not None else memoryview(b"")
    valid = np.asarray(texts.is_valid()) if texts.null_count else np.ones(n, dtype=bool)
    digest = xxhash.xxh3_128_digest
    bounds = offsets.tolist()
    return [digest(data[bounds[i] : bounds[i + 1]]) if valid[i] else None for i in range(n)]
