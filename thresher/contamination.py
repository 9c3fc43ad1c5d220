"""Benchmark contamination: exact word n-gram overlap between documents and evaluation sets.

A document is *contaminated* by an evaluation set when it contains, after
normalisation, one of the set's word n-grams (default ``n = 13``): the
overlap test of GPT-3's Appendix C (Brown et al. 2020). Open corpora such
as Dolma (Soldaini et al. 2024) also remove documents overlapping with
evaluation data before release; whole documents are dropped here, so that
no benchmark text reaches training.

The rule, exactly:

1. **normalise** (the same rule as MinHash dedup, :mod:`thresher.dedup.shingles`):
   lowercase with Arrow's ``utf8_lower`` (Unicode simple case mapping);
   delete every character of Unicode category ``P*`` (punctuation:
   ``"don't"`` becomes ``"dont"``, ``"e.g."`` becomes ``"eg"``); split on
   runs of whitespace (``str.isspace``), so words are joined by one space;
2. **n-grams**: every run of ``n`` consecutive words of an evaluation item.
   An item of fewer than ``n`` words (but at least one) is one n-gram, the
   whole normalised item, as GPT-3 does for short examples: a document
   containing those words consecutively matches. An item with no word left
   after normalisation contributes nothing;
3. **match**: a document matches a set when one of its runs of ``k``
   consecutive words equals one of the set's n-grams of ``k`` words.

Membership is exact. Each n-gram is hashed to 64 bits (an FNV-1a hash of
each word, SplitMix64-mixed, combined as a polynomial over the words so
that every window of a document costs O(1)); the evaluation n-grams' hashes
sit in one sorted array under a radix directory of their top bits, beside
the normalised evaluation text. A document's window whose hash is found is
compared byte for byte with the stored n-gram, so a hash collision can cost
time but never a false match, and equal n-grams always have equal hashes,
so no match is missed. A bit set of the hashes of every n-gram's first two
words lets most document windows skip the lookup. The index's memory is
that of the evaluation sets, whatever the corpus size: 38 to 48 bytes per
distinct n-gram (hash, set, byte range, directory, bit set) plus their
normalised text.

The first match of a document is the one starting at its earliest word;
at the same word the longest n-gram; at the same n-gram the first set in
configuration order. Every set a document matches is recorded too.

References
----------
Brown et al., "Language Models are Few-Shot Learners", 2020, Appendix C.
Soldaini et al., "Dolma: an Open Corpus of Three Trillion Tokens for
Language Model Pretraining Research", 2024 (decontamination of the corpus
against evaluation sets).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numba as nb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

from thresher.dedup.shingles import _normalize, normalize_text
from thresher.keys import _splitmix
from thresher.tokens import shingle_classes

#: Names the normalisation rule in the stage's key: a change of rule recomputes results.
RULE = "lowercase,strip-punctuation(P*),collapse-whitespace;words;short-item=whole;v1"
DEFAULT_NGRAM = 13

_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)
_LENGTH_MIX = np.uint64(0xD6E8FEB86659FD93)
_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
_SPACE = 32


# -- reference implementation (Python: the rule as plain code, for tests and benchmarks) --------


def normalized_words(text: str) -> list[str]:
    """The words of ``text`` after normalisation (see module docstring)."""
    return normalize_text(text).split()


def item_ngrams(text: str, ngram: int = DEFAULT_NGRAM) -> list[str]:
    """The n-grams an evaluation item contributes (an item shorter than ``ngram``: itself)."""
    words = normalized_words(text)
    if not words:
        return []
    if len(words) < ngram:
        return [" ".join(words)]
    return [" ".join(words[i : i + ngram]) for i in range(len(words) - ngram + 1)]


# -- compiled kernels -----------------------------------------------------------------------


@nb.njit(cache=True)
def _split_words(
    text: NDArray[np.uint8], n: int, starts: NDArray[np.int64], ends: NDArray[np.int64]
) -> int:
    """Word boundaries of a normalised text (words are separated by one space byte)."""
    count = 0
    i = 0
    while i < n:
        while i < n and text[i] == _SPACE:
            i += 1
        if i >= n:
            break
        starts[count] = i
        while i < n and text[i] != _SPACE:
            i += 1
        ends[count] = i
        count += 1
    return count


@nb.njit(cache=True)
def _prefix_hashes(
    text: NDArray[np.uint8],
    starts: NDArray[np.int64],
    ends: NDArray[np.int64],
    n_words: int,
    prefix: NDArray[np.uint64],
) -> None:
    """``prefix[k]``: polynomial hash of the first ``k`` words' hashes (mod 2**64)."""
    prefix[0] = np.uint64(0)
    for w in range(n_words):
        h = _FNV_OFFSET
        for j in range(starts[w], ends[w]):
            h = (h ^ np.uint64(text[j])) * _FNV_PRIME
        prefix[w + 1] = prefix[w] * _MULTIPLIER + _splitmix(h)


@nb.njit(inline="always")
def _window_hash(
    prefix: NDArray[np.uint64], powers: NDArray[np.uint64], first: int, length: int
) -> np.uint64:
    """The 64-bit hash of words ``first .. first + length - 1``."""
    h = prefix[first + length] - prefix[first] * powers[length]
    return _splitmix(h ^ (np.uint64(length) * _LENGTH_MIX))


@nb.njit(cache=True)
def _normalize_all(
    data: NDArray[np.uint8],
    offsets: NDArray[np.int64],
    classes: NDArray[np.uint8],
    out: NDArray[np.uint8],
    out_offsets: NDArray[np.int64],
    word_counts: NDArray[np.int64],
) -> None:
    """Normalise every text into ``out`` (one buffer) and count each one's words."""
    at = 0
    for d in range(offsets.shape[0] - 1):
        out_offsets[d] = at
        n = _normalize(data, offsets[d], offsets[d + 1], classes, True, True, out[at:])
        words = 0
        inside = False
        for i in range(at, at + n):
            if out[i] == _SPACE:
                inside = False
            elif not inside:
                inside = True
                words += 1
        word_counts[d] = words
        at += n
    out_offsets[offsets.shape[0] - 1] = at


@nb.njit(cache=True)
def _item_entries(
    text: NDArray[np.uint8],
    offsets: NDArray[np.int64],
    ngram: int,
    powers: NDArray[np.uint64],
    hashes: NDArray[np.uint64],
    entry_start: NDArray[np.int64],
    entry_end: NDArray[np.int64],
    entry_pair: NDArray[np.uint64],
) -> int:
    """The n-grams of normalised items: hash, byte range in ``text``, hash of the first two words.

    Returns their number (``entry_pair`` is 0 for a one-word n-gram).
    """
    longest = 0
    for d in range(offsets.shape[0] - 1):
        longest = max(longest, offsets[d + 1] - offsets[d])
    starts = np.empty(longest + 1, dtype=np.int64)
    ends = np.empty(longest + 1, dtype=np.int64)
    prefix = np.empty(longest + 2, dtype=np.uint64)
    k = 0
    for d in range(offsets.shape[0] - 1):
        base = offsets[d]
        n_words = _split_words(text[base : offsets[d + 1]], offsets[d + 1] - base, starts, ends)
        if n_words == 0:
            continue
        _prefix_hashes(text[base:], starts, ends, n_words, prefix)
        length = min(ngram, n_words)
        for first in range(n_words - length + 1):
            hashes[k] = _window_hash(prefix, powers, first, length)
            entry_start[k] = base + starts[first]
            entry_end[k] = base + ends[first + length - 1]
            entry_pair[k] = _window_hash(prefix, powers, first, 2) if length >= 2 else 0
            k += 1
    return k


@nb.njit(cache=True)
def _same_bytes(
    text: NDArray[np.uint8], a0: int, a1: int, other: NDArray[np.uint8], b0: int
) -> bool:
    for i in range(a1 - a0):  # noqa: SIM110 - numba compiles no generator
        if text[a0 + i] != other[b0 + i]:
            return False
    return True


@nb.njit(cache=True)
def _distinct_entries(
    hashes: NDArray[np.uint64],
    sets: NDArray[np.int32],
    entry_start: NDArray[np.int64],
    entry_end: NDArray[np.int64],
    text: NDArray[np.uint8],
) -> NDArray[np.bool_]:
    """Entries sorted by (hash, set): keep the first of each distinct (n-gram, set)."""
    n = hashes.shape[0]
    keep = np.zeros(n, dtype=np.bool_)
    group = 0
    for i in range(n):
        if i == 0 or hashes[i] != hashes[group] or sets[i] != sets[group]:
            group = i
        length = entry_end[i] - entry_start[i]
        seen = False
        for j in range(group, i):
            if (
                keep[j]
                and entry_end[j] - entry_start[j] == length
                and _same_bytes(text, entry_start[i], entry_end[i], text, entry_start[j])
            ):
                seen = True
                break
        keep[i] = not seen
    return keep


@nb.njit(cache=True)
def _scan(
    data: NDArray[np.uint8],
    offsets: NDArray[np.int64],
    classes: NDArray[np.uint8],
    lengths: NDArray[np.int64],
    powers: NDArray[np.uint64],
    hashes: NDArray[np.uint64],
    entry_set: NDArray[np.int32],
    entry_start: NDArray[np.int64],
    entry_end: NDArray[np.int64],
    index_text: NDArray[np.uint8],
    buckets: NDArray[np.int64],
    shift: np.uint64,
    pairs: NDArray[np.uint64],
    pair_shift: np.uint64,
    first_entry: NDArray[np.int64],
    matched: NDArray[np.bool_],
) -> None:
    """For each document: its first verified match (an entry, or -1) and every set it matches."""
    n_sets = matched.shape[1]
    longest = 0
    for d in range(offsets.shape[0] - 1):
        longest = max(longest, offsets[d + 1] - offsets[d])
    text = np.zeros(longest + 4, dtype=np.uint8)
    starts = np.empty(longest + 1, dtype=np.int64)
    ends = np.empty(longest + 1, dtype=np.int64)
    prefix = np.empty(longest + 2, dtype=np.uint64)
    for d in range(offsets.shape[0] - 1):
        first_entry[d] = -1
        n = _normalize(data, offsets[d], offsets[d + 1], classes, True, True, text)
        n_words = _split_words(text, n, starts, ends)
        if n_words == 0 or hashes.shape[0] == 0:
            continue
        _prefix_hashes(text, starts, ends, n_words, prefix)
        found = 0
        for first in range(n_words):
            paired = False
            if first + 1 < n_words:
                bit = _window_hash(prefix, powers, first, 2) >> pair_shift
                paired = (pairs[np.int64(bit >> np.uint64(6))] >> (bit & np.uint64(63))) & 1 == 1
            for li in range(lengths.shape[0]):
                length = lengths[li]
                if first + length > n_words or (length >= 2 and not paired):
                    continue
                h = _window_hash(prefix, powers, first, length)
                bucket = np.int64(h >> shift)
                lo = buckets[bucket]
                hi = buckets[bucket + 1]
                begin = starts[first]
                size = ends[first + length - 1] - begin
                for k in range(lo, hi):
                    candidate = hashes[k]
                    if candidate > h:
                        break
                    if candidate != h:
                        continue
                    if entry_end[k] - entry_start[k] != size:
                        continue
                    if not _same_bytes(index_text, entry_start[k], entry_end[k], text, begin):
                        continue
                    if first_entry[d] < 0:
                        first_entry[d] = k
                    s = entry_set[k]
                    if not matched[d, s]:
                        matched[d, s] = True
                        found += 1
            if found == n_sets:
                break


# -- the index --------------------------------------------------------------------------


def _string_buffers(
    texts: pa.Array | pa.ChunkedArray,
) -> tuple[NDArray[np.uint8], NDArray[np.int64]]:
    """The UTF-8 bytes and int64 offsets of a lowercased string array (nulls as empty)."""
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    texts = pc.utf8_lower(texts.cast(pa.large_string()))
    if texts.null_count:
        texts = pc.fill_null(texts, "")
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    n = len(texts)
    buffers = texts.buffers()
    offsets = np.frombuffer(buffers[1], dtype=np.int64)[texts.offset : texts.offset + n + 1]
    data = (
        np.frombuffer(buffers[2], dtype=np.uint8)
        if buffers[2] is not None and len(buffers[2])
        else np.zeros(1, dtype=np.uint8)
    )
    return data, np.ascontiguousarray(offsets)


def _powers(ngram: int) -> NDArray[np.uint64]:
    powers = np.ones(ngram + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(1, ngram + 1):
            powers[k] = powers[k - 1] * _MULTIPLIER
    return powers


@dataclass(frozen=True)
class NgramIndex:
    """The n-grams of named evaluation sets, for exact membership tests (see module docstring).

    Attributes
    ----------
    ngram : int
        Words per n-gram (shorter items are one n-gram of their own length).
    set_names : tuple of str
        The sets, in configuration order; ``entry_set`` indexes it.
    hashes : ndarray of uint64, shape (n_entries,)
        Sorted 64-bit hashes of the distinct (n-gram, set) entries.
    entry_set : ndarray of int32, shape (n_entries,)
    entry_start, entry_end : ndarray of int64, shape (n_entries,)
        Each entry's bytes in ``text``.
    text : ndarray of uint8
        The normalised evaluation items, one buffer.
    lengths : ndarray of int64
        The distinct n-gram lengths (in words), longest first.
    buckets : ndarray of int64, shape (2**bits + 1,)
        Start of each top-``bits`` hash prefix in ``hashes``.
    pairs : ndarray of uint64
        A bit set of the hashes of the first two words of every n-gram of
        two words or more (a prefilter: a document window whose first two
        words are not in it is looked up only among one-word items).
    items, ngrams, short_items : dict
        Per set: items with a word, distinct n-grams, items shorter than ``ngram``.
    """

    ngram: int
    set_names: tuple[str, ...]
    hashes: NDArray[np.uint64]
    entry_set: NDArray[np.int32]
    entry_start: NDArray[np.int64]
    entry_end: NDArray[np.int64]
    text: NDArray[np.uint8]
    lengths: NDArray[np.int64]
    buckets: NDArray[np.int64]
    items: dict[str, int]
    ngrams: dict[str, int]
    short_items: dict[str, int]
    pairs: NDArray[np.uint64]

    @classmethod
    def build(
        cls, sets: dict[str, pa.Array | pa.ChunkedArray | list[str]], ngram: int = DEFAULT_NGRAM
    ) -> NgramIndex:
        """The index of ``sets`` (name -> item texts, in configuration order)."""
        if ngram < 1:
            raise ValueError(f"ngram must be >= 1, got {ngram}")
        names = tuple(sets)
        powers = _powers(ngram)
        classes = shingle_classes()
        texts, entry_parts, set_parts, items, ngrams, short = [], [], [], {}, {}, {}
        pairs: list[NDArray[np.uint64]] = []
        offset = 0
        for number, name in enumerate(names):
            values = sets[name]
            array = values if isinstance(values, pa.Array | pa.ChunkedArray) else pa.array(values)
            data, offsets = _string_buffers(array)
            n_items = offsets.shape[0] - 1
            normal = np.zeros(max(int(offsets[-1] - offsets[0]), 1) + 4, dtype=np.uint8)
            normal_offsets = np.zeros(n_items + 1, dtype=np.int64)
            words = np.zeros(n_items, dtype=np.int64)
            _normalize_all(data, offsets, classes, normal, normal_offsets, words)
            normal = normal[: normal_offsets[-1]]
            count = int(np.sum(np.where(words >= ngram, words - ngram + 1, words > 0)))
            hashes = np.empty(count, dtype=np.uint64)
            start = np.empty(count, dtype=np.int64)
            end = np.empty(count, dtype=np.int64)
            pair = np.empty(count, dtype=np.uint64)
            filled = _item_entries(normal, normal_offsets, ngram, powers, hashes, start, end, pair)
            hashes, start, end = hashes[:filled], start[:filled], end[:filled]
            pairs.append(pair[:filled])
            count = filled
            items[name] = int(np.count_nonzero(words))
            short[name] = int(np.count_nonzero((words > 0) & (words < ngram)))
            lengths = end - start
            entry_parts.append((hashes, start + offset, end + offset, lengths))
            set_parts.append(np.full(count, number, dtype=np.int32))
            texts.append(normal)
            offset += normal.shape[0]
        text = np.concatenate(texts) if texts else np.zeros(0, np.uint8)
        hashes = (
            np.concatenate([p[0] for p in entry_parts]) if entry_parts else np.zeros(0, np.uint64)
        )
        start = (
            np.concatenate([p[1] for p in entry_parts]) if entry_parts else np.zeros(0, np.int64)
        )
        end = np.concatenate([p[2] for p in entry_parts]) if entry_parts else np.zeros(0, np.int64)
        entry_set = np.concatenate(set_parts) if set_parts else np.zeros(0, np.int32)
        order = np.lexsort((entry_set, hashes))
        hashes, start, end, entry_set = hashes[order], start[order], end[order], entry_set[order]
        keep = _distinct_entries(hashes, entry_set, start, end, text)
        hashes, start, end, entry_set = hashes[keep], start[keep], end[keep], entry_set[keep]
        for number, name in enumerate(names):
            ngrams[name] = int(np.count_nonzero(entry_set == number))
        word_lengths = _entry_word_counts(text, start, end)
        lengths = np.unique(word_lengths)[::-1].astype(np.int64)
        return cls(
            ngram=ngram,
            set_names=names,
            pairs=_pair_filter(
                np.concatenate(pairs) if pairs else np.zeros(0, np.uint64), hashes.shape[0]
            ),
            hashes=hashes,
            entry_set=entry_set,
            entry_start=start,
            entry_end=end,
            text=text,
            lengths=np.ascontiguousarray(lengths),
            buckets=_directory(hashes),
            items=items,
            ngrams=ngrams,
            short_items=short,
        )

    @property
    def n_entries(self) -> int:
        return int(self.hashes.shape[0])

    @property
    def nbytes(self) -> int:
        """Memory the index holds (bytes)."""
        arrays = (self.hashes, self.entry_set, self.entry_start, self.entry_end, self.text)
        return int(sum(a.nbytes for a in arrays) + self.buckets.nbytes + self.pairs.nbytes)

    def entry_text(self, entry: int) -> str:
        """The normalised n-gram of an entry."""
        return bytes(self.text[self.entry_start[entry] : self.entry_end[entry]]).decode("utf-8")

    def scan(self, texts: pa.Array | pa.ChunkedArray) -> Matches:
        """Test every document of a string array (nulls never match)."""
        data, offsets = _string_buffers(texts)
        n = offsets.shape[0] - 1
        first = np.full(n, -1, dtype=np.int64)
        matched = np.zeros((n, len(self.set_names)), dtype=np.bool_)
        if n and self.n_entries:
            bits = int(np.log2(self.buckets.shape[0] - 1))
            _scan(
                data,
                offsets,
                shingle_classes(),
                self.lengths,
                _powers(self.ngram),
                self.hashes,
                self.entry_set,
                self.entry_start,
                self.entry_end,
                self.text,
                self.buckets,
                np.uint64(64 - bits),
                self.pairs,
                np.uint64(64 - int(np.log2(self.pairs.shape[0] * 64))),
                first,
                matched,
            )
        return Matches(self, first, matched)

    # -- storage (one .npz file; no pickle) ---------------------------------------------
    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez(
            buffer,
            ngram=np.int64(self.ngram),
            set_names=np.array(self.set_names, dtype=np.str_),
            hashes=self.hashes,
            entry_set=self.entry_set,
            entry_start=self.entry_start,
            entry_end=self.entry_end,
            text=self.text,
            lengths=self.lengths,
            buckets=self.buckets,
            pairs=self.pairs,
            counts=np.array(
                [[self.items[s], self.ngrams[s], self.short_items[s]] for s in self.set_names],
                dtype=np.int64,
            ).reshape(len(self.set_names), 3),
        )
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> NgramIndex:
        with np.load(io.BytesIO(data), allow_pickle=False) as stored:
            names = tuple(str(s) for s in stored["set_names"].tolist())
            counts = stored["counts"]
            return cls(
                ngram=int(stored["ngram"]),
                set_names=names,
                hashes=stored["hashes"],
                entry_set=stored["entry_set"],
                entry_start=stored["entry_start"],
                entry_end=stored["entry_end"],
                text=stored["text"],
                lengths=stored["lengths"],
                buckets=stored["buckets"],
                pairs=stored["pairs"],
                items={s: int(counts[i, 0]) for i, s in enumerate(names)},
                ngrams={s: int(counts[i, 1]) for i, s in enumerate(names)},
                short_items={s: int(counts[i, 2]) for i, s in enumerate(names)},
            )


@nb.njit(cache=True)
def _entry_word_counts(
    text: NDArray[np.uint8], start: NDArray[np.int64], end: NDArray[np.int64]
) -> NDArray[np.int64]:
    out = np.empty(start.shape[0], dtype=np.int64)
    for k in range(start.shape[0]):
        words = 1
        for i in range(start[k], end[k]):
            if text[i] == _SPACE:
                words += 1
        out[k] = words
    return out


def _pair_filter(pair_hashes: NDArray[np.uint64], n_entries: int) -> NDArray[np.uint64]:
    """A bit set over the top bits of the pair hashes, about 16 bits per entry (2**12 at least)."""
    bits = int(min(max(np.ceil(np.log2(max(n_entries, 1))) + 4, 12), 32))
    words = np.zeros((1 << bits) // 64, dtype=np.uint64)
    positions = pair_hashes >> np.uint64(64 - bits)
    np.bitwise_or.at(
        words,
        (positions >> np.uint64(6)).astype(np.int64),
        np.left_shift(np.uint64(1), positions & np.uint64(63)),
    )
    return words


def _directory(hashes: NDArray[np.uint64]) -> NDArray[np.int64]:
    """Start of each top-bits prefix in the sorted ``hashes`` (about 2 entries per bucket)."""
    bits = int(min(max(np.ceil(np.log2(max(hashes.shape[0], 1))), 4), 26))
    prefixes = (hashes >> np.uint64(64 - bits)).astype(np.int64)
    return np.searchsorted(prefixes, np.arange((1 << bits) + 1), side="left").astype(np.int64)


@dataclass(frozen=True)
class Matches:
    """What :meth:`NgramIndex.scan` found in a batch of documents.

    ``first_entry[d]`` is the index entry of document ``d``'s first match (-1
    when it matches nothing); ``matched[d, s]`` whether it matches set ``s``.
    """

    index: NgramIndex
    first_entry: NDArray[np.int64]
    matched: NDArray[np.bool_]

    @property
    def contaminated(self) -> NDArray[np.bool_]:
        return self.first_entry >= 0

    def first_set(self) -> list[str | None]:
        names = self.index.set_names
        sets = self.index.entry_set
        return [None if e < 0 else names[int(sets[e])] for e in self.first_entry.tolist()]

    def first_ngram(self) -> list[str | None]:
        return [None if e < 0 else self.index.entry_text(e) for e in self.first_entry.tolist()]

    def matched_sets(self) -> list[list[str]]:
        names = self.index.set_names
        return [[names[s] for s in np.flatnonzero(row).tolist()] for row in self.matched]
