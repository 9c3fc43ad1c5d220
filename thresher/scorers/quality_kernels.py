"""Compiled kernels of the Gopher, C4 and FineWeb quality signals: one pass per document.

Each kernel reads an Arrow string array's UTF-8 buffer and offsets, decodes a
document's code points once into a scratch buffer and computes every signal of
its rule set from it (see :mod:`thresher.scorers.quality_signals` for the
signals and their definitions). No Python object is made per document, line
or word: words, lines and paragraphs are index ranges into the code points.

Words are the tokens of :func:`thresher.scorers.quality_tokens.tokenize`
(spaCy's blank English tokenizer, which datatrove uses, without spaCy).
C4's sentence count is spaCy's sentencizer rule over the tokens of a line,
whitespace tokens included as spaCy makes them: a new sentence starts at the
first token that is neither punctuation (Unicode ``P*``) nor a
sentence-final mark (``. ! ?`` and the other marks of spaCy's list) after a
token that is such a mark.

Exactness of the duplicate counts
---------------------------------
Lines, paragraphs and n-grams are hashed (a polynomial hash mod 2**64 over
code points, then mixed) into a per-document open-addressing table; on equal
hashes the code points themselves are compared, so counts are exact whatever
the hash collisions.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, NamedTuple

import numba as nb
import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from thresher.scorers.quality_tables import (
    ALPHA,
    DECIMAL,
    PUNCTUATION,
    SENTENCE_END,
    SPACE,
    SYMBOL,
    TERMINAL,
)
from thresher.scorers.quality_tokens import decode, has, mix, same, token_tables, tokenize

_HASH_BASE = np.uint64(0x9E3779B97F4A7C15)

#: The Gopher stop words (datatrove's STOP_WORDS), one bit each in the kernel.
STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")

#: C4's phrases, lower case: "lorem ipsum", "javascript", then its policy phrases.
C4_PHRASES = (
    "lorem ipsum",
    "javascript",
    "terms of use",
    "privacy policy",
    "cookie policy",
    "uses cookies",
    "use of cookies",
    "use cookies",
)
#: C4's citation marks other than a number in brackets.
C4_CITATIONS = ("[edit]", "[citation needed]")


@lru_cache(maxsize=1)
def _phrases() -> tuple[NDArray[np.int32], NDArray[np.int64]]:
    """Code points and offsets of the stop words, C4's phrases and its citation marks."""
    texts = [*STOP_WORDS, *C4_PHRASES, *C4_CITATIONS]
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum([len(t) for t in texts], out=offsets[1:])
    return np.fromiter((ord(c) for t in texts for c in t), dtype=np.int32), offsets


# -- shared pieces of the signal kernels -----------------------------------------------------


@nb.njit(cache=True, nogil=True, inline="always")
def _ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``; NaN for 0/0, infinity for x/0 (a division datatrove never reaches)."""
    if denominator > 0:
        return numerator / denominator
    return np.nan if numerator == 0 else np.inf


@nb.njit(cache=True, nogil=True, inline="always")
def _is_line_break(c: Any) -> bool:
    """A line boundary of ``str.splitlines`` (``\\r\\n`` is handled by the caller)."""
    return (10 <= c <= 13) or (28 <= c <= 30) or c == 0x85 or c == 0x2028 or c == 0x2029


@nb.njit(cache=True, nogil=True)
def _line_end(points: NDArray[np.int32], i: int, n: int) -> int:
    while i < n and not _is_line_break(points[i]):
        i += 1
    return i


@nb.njit(cache=True, nogil=True, inline="always")
def _next_line(points: NDArray[np.int32], e: int, n: int) -> int:
    """Where the line after a line ending at ``e`` starts (``\\r\\n`` is one boundary)."""
    if e >= n:
        return n
    if points[e] == 13 and e + 1 < n and points[e + 1] == 10:
        return e + 2
    return e + 1


@nb.njit(cache=True, nogil=True, inline="always")
def _short_key(points: NDArray[np.int32], a: int, b: int) -> int:
    """A number that identifies an ASCII string of at most 4 characters (-1 for any other)."""
    if b - a > 4:
        return -1
    key = 0
    for i in range(a, b):
        if points[i] >= 128:
            return -1
        key = key * 128 + points[i] + 1
    return key


@nb.njit(cache=True, nogil=True)
def _prefix_hashes(
    buffer: NDArray[np.int32], n: int, hashes: NDArray[np.uint64], powers: NDArray[np.uint64]
) -> None:
    """``hashes[k]``: polynomial hash of ``buffer[:k]``; ``powers[k]``: the base to the ``k``."""
    hashes[0] = np.uint64(0)
    powers[0] = np.uint64(1)
    for k in range(n):
        hashes[k + 1] = hashes[k] * _HASH_BASE + np.uint64(buffer[k] + 1)
        powers[k + 1] = powers[k] * _HASH_BASE


@nb.njit(cache=True, nogil=True, inline="always")
def _range_hash(
    hashes: NDArray[np.uint64], powers: NDArray[np.uint64], a: int, b: int
) -> np.uint64:
    return mix(hashes[b] - hashes[a] * powers[b - a])


class _Counter(NamedTuple):
    """An open-addressing table of distinct code point ranges with their counts."""

    keys: NDArray[np.uint64]
    starts: NDArray[np.int64]  # a representative's range in the buffer it was found in
    lengths: NDArray[np.int64]  # -1: empty slot
    counts: NDArray[np.int64]
    order: NDArray[np.int64]  # used slots, in order of first occurrence


@nb.njit(cache=True, nogil=True)
def _new_counter(n_items: int) -> _Counter:
    size = 16
    while size < 2 * n_items + 2:
        size *= 2
    return _Counter(
        np.zeros(size, dtype=np.uint64),
        np.zeros(size, dtype=np.int64),
        np.full(size, -1, dtype=np.int64),
        np.zeros(size, dtype=np.int64),
        np.zeros(size, dtype=np.int64),
    )


@nb.njit(cache=True, nogil=True)
def _add(
    c: _Counter, n_used: int, h: np.uint64, buffer: NDArray[np.int32], a: int, b: int
) -> tuple[np.int64, int]:
    """Count one occurrence of ``buffer[a:b]``; returns (its slot, the new number of used slots)."""
    mask = c.keys.size - 1
    slot = np.int64(h & np.uint64(mask))
    n = b - a
    while c.lengths[slot] >= 0:
        if (
            c.keys[slot] == h
            and c.lengths[slot] == n
            and same(buffer, c.starts[slot], buffer, a, n)
        ):
            c.counts[slot] += 1
            return slot, n_used
        slot = (slot + 1) & mask
    c.keys[slot] = h
    c.starts[slot] = a
    c.lengths[slot] = n
    c.counts[slot] = 1
    c.order[n_used] = slot
    return slot, n_used + 1


@nb.njit(cache=True, nogil=True)
def _clear(c: _Counter, n_used: int) -> None:
    for k in range(n_used):
        c.lengths[c.order[k]] = -1


@nb.njit(cache=True, nogil=True)
def _fit(c: _Counter, n_items: int) -> _Counter:
    """``c`` if it has room for ``n_items`` distinct ranges, else a larger empty table.

    The table grows to the largest document's needs (about 80 bytes per
    line or word) and is reused, cleared, for every document of the batch.
    """
    if c.keys.size >= 2 * n_items + 2:
        return c
    return _new_counter(n_items)


@nb.njit(cache=True, nogil=True)
def _duplicates(
    c: _Counter,
    buffer: NDArray[np.int32],
    hashes: NDArray[np.uint64],
    powers: NDArray[np.uint64],
    starts: NDArray[np.int64],
    ends: NDArray[np.int64],
    n_items: int,
) -> tuple[int, int]:
    """datatrove's ``find_duplicates``: (repeats, code points in repeats) of the ranges, in order."""
    n_used = 0
    repeats = 0
    repeated = 0
    for k in range(n_items):
        a = starts[k]
        b = ends[k]
        slot, n_used = _add(c, n_used, _range_hash(hashes, powers, a, b), buffer, a, b)
        if c.counts[slot] > 1:
            repeats += 1
            repeated += b - a
    _clear(c, n_used)
    return repeats, repeated


# -- Gopher quality ------------------------------------------------------------------------

#: Outputs of :func:`gopher_quality`, in order.
GOPHER_QUALITY_OUTPUTS = (
    "n_non_symbol_words",
    "mean_word_length",
    "hash_ratio",
    "ellipsis_ratio",
    "bullet_lines",
    "ellipsis_lines",
    "alpha_words",
    "stop_words",
)


@nb.njit(cache=True, nogil=True)
def _gopher_quality(
    data: NDArray[np.uint8],
    offsets: NDArray[np.int64],
    classes: NDArray[np.uint32],
    strings: NDArray[np.int32],
    meta: NDArray[np.int64],
    phrases: NDArray[np.int32],
    phrase_offsets: NDArray[np.int64],
    out: NDArray[np.float64],
) -> None:
    longest = 1
    for d in range(offsets.size - 1):
        longest = max(longest, offsets[d + 1] - offsets[d])
    points = np.empty(longest + 1, dtype=np.int32)
    starts = np.empty(longest + 1, dtype=np.int64)
    ends = np.empty(longest + 1, dtype=np.int64)
    stack = np.empty(2 * longest + 2, dtype=np.int64)
    spaces = np.empty(longest + 2, dtype=np.bool_)
    n_stop = len(STOP_WORDS)
    stop_keys = np.empty(n_stop, dtype=np.int64)
    for s in range(n_stop):
        stop_keys[s] = _short_key(phrases, phrase_offsets[s], phrase_offsets[s + 1])
    for d in range(offsets.size - 1):
        n = decode(data, offsets[d], offsets[d + 1], points)
        n_words = tokenize(points, 0, n, classes, strings, meta, False, starts, ends, spaces, stack)
        non_symbol = 0
        letters = 0
        alpha_words = 0
        stop = 0
        for k in range(n_words):
            a = starts[k]
            b = ends[k]
            symbol = True
            alpha = False
            for i in range(a, b):
                flags = classes[points[i]]
                if (flags & SYMBOL) == 0:
                    symbol = False
                if (flags & ALPHA) != 0:
                    alpha = True
            if not symbol:
                non_symbol += 1
                letters += b - a
            if alpha:
                alpha_words += 1
            if b - a <= 4:
                key = _short_key(points, a, b)
                for s in range(n_stop):
                    if key == stop_keys[s]:
                        stop |= 1 << s
        hashes = 0
        ellipses = 0
        dots = 0
        for i in range(n):
            c = points[i]
            if c == 46:
                dots += 1
                continue
            ellipses += dots // 3
            dots = 0
            if c == 35:
                hashes += 1
            elif c == 0x2026:
                ellipses += 1
        ellipses += dots // 3
        n_lines = 0
        bullets = 0
        ellipsis_lines = 0
        i = 0
        while i < n:
            e = _line_end(points, i, n)
            n_lines += 1
            first = i
            while first < e and has(classes, points[first], SPACE):
                first += 1
            if first < e and (points[first] == 0x2022 or points[first] == 45):
                bullets += 1
            last = e - 1
            while last >= i and has(classes, points[last], SPACE):
                last -= 1
            if last >= i and (
                points[last] == 0x2026
                or (
                    last - 2 >= i
                    and points[last] == 46
                    and points[last - 1] == 46
                    and points[last - 2] == 46
                )
            ):
                ellipsis_lines += 1
            i = _next_line(points, e, n)
        n_stop_found = 0
        for s in range(n_stop):
            if stop & (1 << s):
                n_stop_found += 1
        out[d, 0] = non_symbol
        out[d, 1] = letters / non_symbol if non_symbol > 0 else np.nan
        out[d, 2] = _ratio(hashes, n_words)
        out[d, 3] = _ratio(ellipses, n_words)
        out[d, 4] = _ratio(bullets, n_lines)
        out[d, 5] = _ratio(ellipsis_lines, n_lines)
        out[d, 6] = _ratio(alpha_words, n_words)
        out[d, 7] = n_stop_found


# -- Gopher repetition -----------------------------------------------------------------------

#: Outputs of :func:`gopher_repetition`, in order.
GOPHER_REPETITION_OUTPUTS = (
    "dup_para_fraction",
    "dup_para_char_fraction",
    "dup_line_fraction",
    "dup_line_char_fraction",
    "top_2gram",
    "top_3gram",
    "top_4gram",
    "dup_5gram",
    "dup_6gram",
    "dup_7gram",
    "dup_8gram",
    "dup_9gram",
    "dup_10gram",
)


@nb.njit(cache=True, nogil=True)
def _top_ngram(
    c: _Counter,
    spaced: NDArray[np.int32],
    hashes: NDArray[np.uint64],
    powers: NDArray[np.uint64],
    word_starts: NDArray[np.int64],
    word_ends: NDArray[np.int64],
    n_words: int,
    n: int,
) -> int:
    """datatrove's ``find_top_duplicate``: length x count of the most frequent n-gram.

    n-grams are the words joined by one space (``spaced`` holds them so); ties
    go to the n-gram seen first, as ``Counter.most_common(1)`` does. 0 when
    there is no n-gram (datatrove skips the check).
    """
    if n_words < n:
        return 0
    n_used = 0
    for i in range(n_words - n + 1):
        a = word_starts[i]
        b = word_ends[i + n - 1]
        _, n_used = _add(c, n_used, _range_hash(hashes, powers, a, b), spaced, a, b)
    best = 0
    best_value = 0
    for k in range(n_used):
        slot = c.order[k]
        if c.counts[slot] > best:
            best = c.counts[slot]
            best_value = c.counts[slot] * c.lengths[slot]
    _clear(c, n_used)
    return best_value


@nb.njit(cache=True, nogil=True)
def _all_duplicates(
    c: _Counter,
    joined: NDArray[np.int32],
    hashes: NDArray[np.uint64],
    powers: NDArray[np.uint64],
    word_starts: NDArray[np.int64],
    n_words: int,
    n: int,
) -> int:
    """datatrove's ``find_all_duplicate``: code points in repeated n-grams (words joined by "")."""
    n_used = 0
    repeated = 0
    i = 0
    while i < n_words - n + 1:
        a = word_starts[i]
        b = word_starts[i + n]
        slot, n_used = _add(c, n_used, _range_hash(hashes, powers, a, b), joined, a, b)
        if c.counts[slot] > 1:
            repeated += b - a
            i += n
        else:
            i += 1
    _clear(c, n_used)
    return repeated


@nb.njit(cache=True, nogil=True)
def _gopher_repetition(
    data: NDArray[np.uint8],
    offsets: NDArray[np.int64],
    classes: NDArray[np.uint32],
    strings: NDArray[np.int32],
    meta: NDArray[np.int64],
    phrases: NDArray[np.int32],
    phrase_offsets: NDArray[np.int64],
    out: NDArray[np.float64],
) -> None:
    longest = 1
    for d in range(offsets.size - 1):
        longest = max(longest, offsets[d + 1] - offsets[d])
    points = np.empty(longest + 1, dtype=np.int32)
    starts = np.empty(longest + 2, dtype=np.int64)
    ends = np.empty(longest + 2, dtype=np.int64)
    stack = np.empty(2 * longest + 2, dtype=np.int64)
    spaces = np.empty(longest + 2, dtype=np.bool_)
    joined = np.empty(longest + 1, dtype=np.int32)
    spaced = np.empty(2 * longest + 2, dtype=np.int32)
    word_starts = np.empty(longest + 2, dtype=np.int64)  # in `joined`
    spaced_starts = np.empty(longest + 2, dtype=np.int64)
    spaced_ends = np.empty(longest + 2, dtype=np.int64)
    hashes = np.empty(2 * longest + 3, dtype=np.uint64)
    powers = np.empty(2 * longest + 3, dtype=np.uint64)
    counter = _new_counter(16)
    for d in range(offsets.size - 1):
        n = decode(data, offsets[d], offsets[d + 1], points)
        _prefix_hashes(points, n, hashes, powers)
        # Paragraphs: text.strip() split at runs of two or more "\n".
        a = 0
        b = n
        while a < b and has(classes, points[a], SPACE):
            a += 1
        while b > a and has(classes, points[b - 1], SPACE):
            b -= 1
        n_items = 0
        item = a
        i = a
        while i < b:
            if points[i] == 10 and i + 1 < b and points[i + 1] == 10:
                j = i
                while j < b and points[j] == 10:
                    j += 1
                starts[n_items] = item
                ends[n_items] = i
                n_items += 1
                item = j
                i = j
            else:
                i += 1
        starts[n_items] = item
        ends[n_items] = b
        n_items += 1
        counter = _fit(counter, n_items)
        repeats, repeated = _duplicates(counter, points, hashes, powers, starts, ends, n_items)
        out[d, 0] = repeats / n_items
        out[d, 1] = _ratio(repeated, n)
        # Lines: the text split at runs of "\n" (empty first and last pieces included).
        n_items = 0
        item = 0
        i = 0
        while i < n:
            if points[i] == 10:
                j = i
                while j < n and points[j] == 10:
                    j += 1
                starts[n_items] = item
                ends[n_items] = i
                n_items += 1
                item = j
                i = j
            else:
                i += 1
        starts[n_items] = item
        ends[n_items] = n
        n_items += 1
        counter = _fit(counter, n_items)
        repeats, repeated = _duplicates(counter, points, hashes, powers, starts, ends, n_items)
        out[d, 2] = repeats / n_items
        out[d, 3] = _ratio(repeated, n)
        # Words, joined without and with a space.
        n_words = tokenize(points, 0, n, classes, strings, meta, False, starts, ends, spaces, stack)
        at = 0
        spaced_at = 0
        for k in range(n_words):
            word_starts[k] = at
            spaced_starts[k] = spaced_at
            for i in range(starts[k], ends[k]):
                joined[at] = points[i]
                spaced[spaced_at] = points[i]
                at += 1
                spaced_at += 1
            spaced_ends[k] = spaced_at
            spaced[spaced_at] = 32
            spaced_at += 1
        word_starts[n_words] = at
        counter = _fit(counter, n_words + 1)
        _prefix_hashes(spaced, spaced_at, hashes, powers)
        for g in range(3):
            top = _top_ngram(
                counter, spaced, hashes, powers, spaced_starts, spaced_ends, n_words, g + 2
            )
            out[d, 4 + g] = _ratio(top, n)
        _prefix_hashes(joined, at, hashes, powers)
        for g in range(6):
            repeated = _all_duplicates(counter, joined, hashes, powers, word_starts, n_words, g + 5)
            out[d, 7 + g] = _ratio(repeated, n)


# -- C4 --------------------------------------------------------------------------------------

#: Outputs of :func:`c4_quality`, in order.
C4_OUTPUTS = (
    "sentences",
    "lorem_ipsum",
    "curly_bracket",
    "terminal_punct_lines",
    "javascript_lines",
    "policy_lines",
)


@nb.njit(cache=True, nogil=True, inline="always")
def _lower(c: Any) -> Any:
    """``str.lower`` as far as C4's ASCII phrases can tell; -1 for a character none can match.

    Only ASCII letters and the Kelvin sign lower-case to ASCII letters, and
    "İ" lower-cases to "i" plus a combining dot, which no phrase contains.
    """
    if 65 <= c <= 90:
        return c + 32
    if c < 128:
        return c
    if c == 0x212A:
        return 107
    return -1


@nb.njit(cache=True, nogil=True)
def _contains_lower(
    points: NDArray[np.int32],
    n: int,
    strings: NDArray[np.int32],
    offsets: NDArray[np.int64],
    s: int,
) -> bool:
    """Whether ``points[:n].lower()`` contains phrase ``s``."""
    a = offsets[s]
    m = offsets[s + 1] - a
    for i in range(n - m + 1):
        k = 0
        while k < m and _lower(points[i + k]) == strings[a + k]:
            k += 1
        if k == m:
            return True
    return False


@nb.njit(cache=True, nogil=True)
def _without_citations(
    points: NDArray[np.int32],
    a: int,
    b: int,
    classes: NDArray[np.uint32],
    phrases: NDArray[np.int32],
    phrase_offsets: NDArray[np.int64],
    out: NDArray[np.int32],
) -> int:
    """``points[a:b]`` less C4's citation marks (``\\[\\d*]``, ``[edit]``, ``[citation needed]``).

    Writes the result to ``out`` and returns its length.
    """
    first = len(STOP_WORDS) + len(C4_PHRASES)  # "[edit]", "[citation needed]"
    n = 0
    i = a
    while i < b:
        if points[i] == 91:
            k = i + 1
            while k < b and has(classes, points[k], DECIMAL):
                k += 1
            if k < b and points[k] == 93:
                i = k + 1
                continue
            length = 0
            for s in range(first, first + len(C4_CITATIONS)):
                m = phrase_offsets[s + 1] - phrase_offsets[s]
                if m <= b - i and same(phrases, phrase_offsets[s], points, i, m):
                    length = m
                    break
            if length:
                i += length
                continue
        out[n] = points[i]
        n += 1
        i += 1
    return n


@nb.njit(cache=True, nogil=True)
def _sentences(
    line: NDArray[np.int32],
    n: int,
    classes: NDArray[np.uint32],
    strings: NDArray[np.int32],
    meta: NDArray[np.int64],
    starts: NDArray[np.int64],
    ends: NDArray[np.int64],
    spaces: NDArray[np.bool_],
    stack: NDArray[np.int64],
) -> int:
    """Sentences spaCy's sentencizer finds in ``line[:n]`` (at least 1, as datatrove counts)."""
    n_tokens = tokenize(line, 0, n, classes, strings, meta, True, starts, ends, spaces, stack)
    count = 1
    seen_end = False
    for k in range(n_tokens):
        a = starts[k]
        b = ends[k]
        is_end = b - a == 1 and has(classes, line[a], SENTENCE_END)
        if seen_end and not is_end:
            punct = True
            for i in range(a, b):
                if not has(classes, line[i], PUNCTUATION):
                    punct = False
                    break
            if not punct:
                count += 1
                seen_end = False
        elif is_end:
            seen_end = True
    return count


@nb.njit(cache=True, nogil=True)
def _c4_quality(
    data: NDArray[np.uint8],
    offsets: NDArray[np.int64],
    classes: NDArray[np.uint32],
    strings: NDArray[np.int32],
    meta: NDArray[np.int64],
    phrases: NDArray[np.int32],
    phrase_offsets: NDArray[np.int64],
    out: NDArray[np.float64],
) -> None:
    longest = 1
    for d in range(offsets.size - 1):
        longest = max(longest, offsets[d + 1] - offsets[d])
    points = np.empty(longest + 1, dtype=np.int32)
    line = np.empty(longest + 1, dtype=np.int32)
    starts = np.empty(longest + 1, dtype=np.int64)
    ends = np.empty(longest + 1, dtype=np.int64)
    stack = np.empty(2 * longest + 2, dtype=np.int64)
    spaces = np.empty(longest + 2, dtype=np.bool_)
    first = len(STOP_WORDS)  # C4's phrases follow the stop words
    n_phrases = first + len(C4_PHRASES)
    for d in range(offsets.size - 1):
        n = decode(data, offsets[d], offsets[d + 1], points)
        n_lines = 0
        sentences = 0
        lorem = 0.0
        curly = 0.0
        terminal_lines = 0
        javascript_lines = 0
        policy_lines = 0
        i = 0
        while i < n:
            e = _line_end(points, i, n)
            n_lines += 1
            a = i
            b = e
            i = _next_line(points, e, n)
            while a < b and has(classes, points[a], SPACE):
                a += 1
            while b > a and has(classes, points[b - 1], SPACE):
                b -= 1
            n_words = 0
            too_long = False
            k = a
            while k < b:
                while k < b and has(classes, points[k], SPACE):
                    k += 1
                if k >= b:
                    break
                w = k
                while k < b and not has(classes, points[k], SPACE):
                    k += 1
                n_words += 1
                if k - w > 1000:
                    too_long = True
            m = _without_citations(points, a, b, classes, phrases, phrase_offsets, line)
            last = line[m - 1] if m > 0 else -1
            terminal = (
                last == 46 or last == 63 or last == 33 or last == 34 or last == 39
            ) and not (m >= 3 and line[m - 1] == 46 and line[m - 2] == 46 and line[m - 3] == 46)
            has_lorem = _contains_lower(line, m, phrases, phrase_offsets, first)
            has_javascript = _contains_lower(line, m, phrases, phrase_offsets, first + 1)
            has_policy = False
            for s in range(first + 2, n_phrases):
                if _contains_lower(line, m, phrases, phrase_offsets, s):
                    has_policy = True
                    break
            terminal_lines += terminal
            javascript_lines += has_javascript
            policy_lines += has_policy
            # C4's line loop: which lines it keeps, and the page-level checks they reach.
            if too_long or not terminal or n_words < 3:
                continue
            if has_lorem:
                lorem = 1.0
            if has_javascript:
                continue
            for k in range(m):
                if line[k] == 123:
                    curly = 1.0
                    break
            if has_policy:
                continue
            sentences += _sentences(line, m, classes, strings, meta, starts, ends, spaces, stack)
        out[d, 0] = sentences
        out[d, 1] = lorem
        out[d, 2] = curly
        out[d, 3] = _ratio(terminal_lines, n_lines)
        out[d, 4] = _ratio(javascript_lines, n_lines)
        out[d, 5] = _ratio(policy_lines, n_lines)


# -- FineWeb ---------------------------------------------------------------------------------

#: Outputs of :func:`fineweb_quality`, in order.
FINEWEB_OUTPUTS = ("line_punct_ratio", "short_line_ratio", "char_dup_ratio", "list_ratio")


@nb.njit(cache=True, nogil=True)
def _fineweb_quality(
    data: NDArray[np.uint8],
    offsets: NDArray[np.int64],
    classes: NDArray[np.uint32],
    strings: NDArray[np.int32],
    meta: NDArray[np.int64],
    phrases: NDArray[np.int32],
    phrase_offsets: NDArray[np.int64],
    out: NDArray[np.float64],
) -> None:
    longest = 1
    for d in range(offsets.size - 1):
        longest = max(longest, offsets[d + 1] - offsets[d])
    points = np.empty(longest + 1, dtype=np.int32)
    starts = np.empty(longest + 2, dtype=np.int64)
    ends = np.empty(longest + 2, dtype=np.int64)
    stack = np.empty(2 * longest + 2, dtype=np.int64)
    spaces = np.empty(longest + 2, dtype=np.bool_)
    hashes = np.empty(longest + 2, dtype=np.uint64)
    powers = np.empty(longest + 2, dtype=np.uint64)
    counter = _new_counter(16)
    for d in range(offsets.size - 1):
        n = decode(data, offsets[d], offsets[d + 1], points)
        # Non-blank lines of text.split("\n").
        n_lines = 0
        newlines = 0
        punct_lines = 0
        short_lines = 0
        i = 0
        while True:
            e = i
            while e < n and points[e] != 10:
                e += 1
            blank = True
            for k in range(i, e):
                if not has(classes, points[k], SPACE):
                    blank = False
                    break
            if not blank:
                starts[n_lines] = i
                ends[n_lines] = e
                n_lines += 1
                if has(classes, points[e - 1], TERMINAL):
                    punct_lines += 1
                if e - i <= 30:
                    short_lines += 1
            if e >= n:
                break
            newlines += 1
            i = e + 1
        if n_lines == 0:
            for k in range(4):
                out[d, k] = np.nan
            continue
        counter = _fit(counter, n_lines)
        _prefix_hashes(points, n, hashes, powers)
        _, repeated = _duplicates(counter, points, hashes, powers, starts, ends, n_lines)
        n_words = tokenize(points, 0, n, classes, strings, meta, False, starts, ends, spaces, stack)
        out[d, 0] = punct_lines / n_lines
        out[d, 1] = short_lines / n_lines
        out[d, 2] = repeated / (n - newlines)
        out[d, 3] = _ratio(newlines, n_words)


# -- entry points ------------------------------------------------------------------------------


def _buffers(texts: pa.Array | pa.ChunkedArray) -> tuple[NDArray[np.uint8], NDArray[np.int64]]:
    """The UTF-8 bytes and the ``n + 1`` offsets of a string array."""
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    texts = texts.cast(pa.large_string())
    n = len(texts)
    buffers = texts.buffers()
    offsets = np.frombuffer(buffers[1], dtype=np.int64)[texts.offset : texts.offset + n + 1]
    data = (
        np.frombuffer(buffers[2], dtype=np.uint8)
        if buffers[2] is not None
        else np.zeros(0, np.uint8)
    )
    return data, np.ascontiguousarray(offsets)


def _run(kernel: Any, n_outputs: int, texts: pa.Array | pa.ChunkedArray) -> NDArray[np.float64]:
    data, offsets = _buffers(texts)
    out = np.zeros((len(offsets) - 1, n_outputs), dtype=np.float64)
    if len(out):
        kernel(data, offsets, *token_tables(), *_phrases(), out)
    return out


def gopher_quality(texts: pa.Array | pa.ChunkedArray) -> NDArray[np.float64]:
    """Gopher quality signals of each text, shape ``(n, 8)`` (:data:`GOPHER_QUALITY_OUTPUTS`)."""
    return _run(_gopher_quality, len(GOPHER_QUALITY_OUTPUTS), texts)


def gopher_repetition(texts: pa.Array | pa.ChunkedArray) -> NDArray[np.float64]:
    """Gopher repetition signals, shape ``(n, 13)`` (:data:`GOPHER_REPETITION_OUTPUTS`)."""
    return _run(_gopher_repetition, len(GOPHER_REPETITION_OUTPUTS), texts)


def c4_quality(texts: pa.Array | pa.ChunkedArray) -> NDArray[np.float64]:
    """C4 signals of each text, shape ``(n, 6)`` (:data:`C4_OUTPUTS`)."""
    return _run(_c4_quality, len(C4_OUTPUTS), texts)


def fineweb_quality(texts: pa.Array | pa.ChunkedArray) -> NDArray[np.float64]:
    """FineWeb signals of each text, shape ``(n, 4)`` (:data:`FINEWEB_OUTPUTS`)."""
    return _run(_fineweb_quality, len(FINEWEB_OUTPUTS), texts)
