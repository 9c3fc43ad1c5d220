"""Compiled English word tokenizer: spaCy's blank English tokenizer, without spaCy.

datatrove 0.10.1 counts the words of the Gopher, C4 and FineWeb rules with
spaCy's blank English tokenizer (spaCy 3.8). :func:`tokenize` runs the same
algorithm over a buffer of code points, inside numba, with spaCy's English
rules copied as data (:mod:`thresher.scorers.quality_tables`):

1. split the text at whitespace (``str.isspace``); whitespace is not a word
   (spaCy makes a whitespace token of a run of whitespace, less one leading
   space after a word: the sentencizer sees those, the word counts do not);
2. in each piece, repeatedly split off a *prefix* (one punctuation mark,
   bracket, quote, currency sign or symbol; a run of two or more dots;
   ``US$``, ``C$``, ``A$``; ``+`` unless a digit follows) and a *suffix*
   (the same marks, ``'s``, a run of dots, a unit or currency sign after a
   digit, ``+`` after a digit, and a final ``.`` after a digit, a lower-case
   letter, ``%``, ``²``, ``-``, ``+``, punctuation or a quote, or after two
   upper-case letters; the leftmost-starting match wins), and stop as soon
   as what is left is one of spaCy's English exceptions (``"don't"`` becomes
   ``"do"``, ``"n't"``; ``"Mr."``, ``"e.g."``, ``":)"`` stay whole);
3. split what is left at *infixes*: runs of dots, ``…``, symbols, ``-+*^``
   between digits, ``.`` in ``lower.Upper``, ``,`` between letters, hyphens
   (``-``, ``--``, ``---``, ``–``, ``—``, ``——``, ``~``) after a letter or digit
   and before a letter, ``: < > = /`` after a letter or digit and before a
   letter; unless it is an exception or matches spaCy's ``URL_MATCH``
   (optional scheme and user, host labels and a lower-case top-level domain,
   optional port and path), which stays one token;
4. spaCy's second pass: a run of tokens of one piece that spells an
   exception the way the affix rules alone would split it becomes that
   exception's tokens (``ls(1):`` gives ``ls(1``, ``):``; ``''`` stays
   whole), unless a run taken before it (longest first, then leftmost;
   runs across a single space count, though they change nothing) shares
   its first or last token.

Not reproduced: the IP-address branch of ``URL_MATCH`` (an address is one
token either way unless a path follows it). On the agreement benchmark
(16,014 documents of the sample corpus, 63,956 Debian package
descriptions, 3,000 man pages) the words are spaCy's on every document.

References
----------
Honnibal et al., spaCy 3 (``spacy/tokenizer.pyx``, ``spacy/lang/punctuation.py``,
``spacy/lang/en/``), MIT licence.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, NamedTuple

import numba as nb
import numpy as np
from numpy.typing import NDArray

from thresher.scorers.quality_tables import (
    DECIMAL,
    SP_ALPHA,
    SP_DOT_AFTER,
    SP_ICON,
    SP_LOWER,
    SP_PREFIX,
    SP_QUOTE,
    SP_SUFFIX,
    SP_UPPER,
    SPACE,
    SPACY_CURRENCY,
    SPACY_EXCEPTIONS,
    SPACY_UNITS,
    URL_CHAR,
    WORD,
    character_classes,
)

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)

# Header of the `meta` array: where each part of the tables starts.
_FIRST_UNIT = 0  # index of the first unit among the strings
_FIRST_CURRENCY = 1
_FIRST_EXCEPTION = 2
_N_STRINGS = 3
_OFFSETS = 4  # meta[meta[_OFFSETS] + s]: where string s starts in `strings`
_PIECE_OFFSETS = 5  # per exception: where its token lengths start
_PIECES = 6  # token lengths of the exceptions
_SLOTS = 7  # open-addressing table of the exceptions (exception number or -1)
_N_SLOTS = 8
_MATCH_OFFSETS = 9  # per exception: where the token lengths of its affix-split spelling start
_MATCH_PIECES = 10  # those token lengths (none for an exception the merge pass ignores)
_MAX_MATCH = 11  # most tokens of such a spelling
_MAX_LENGTH = 12  # longest exception text
_MAX_PIECES = 13  # most tokens of an exception
_HEADER = 14


class TokenTables(NamedTuple):
    """The tokenizer's data as three flat arrays (built once per process).

    ``classes``: flags of every code point (:func:`character_classes`);
    ``strings``: code points of the units, currency signs and exception
    texts, concatenated; ``meta``: a header (the ``_*`` indices of this
    module), the strings' offsets, the exceptions' token lengths and a hash
    table of the exceptions. Kernels take the three arrays, not the tuple:
    passing a tuple of arrays to a compiled function costs a reference count
    per array and call.
    """

    classes: NDArray[np.uint32]
    strings: NDArray[np.int32]
    meta: NDArray[np.int64]


def _layout(
    texts: list[str], exceptions: list[str], patterns: list[list[int]]
) -> tuple[NDArray[np.int32], NDArray[np.int64]]:
    """``strings`` and ``meta`` for the strings ``texts``, with the merge patterns ``patterns``."""
    strings = np.fromiter((ord(c) for s in texts for c in s), dtype=np.int32)
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum([len(s) for s in texts], out=offsets[1:])
    piece_offsets = np.zeros(len(exceptions) + 1, dtype=np.int64)
    np.cumsum([len(SPACY_EXCEPTIONS[e]) for e in exceptions], out=piece_offsets[1:])
    pieces = np.asarray([len(p) for e in exceptions for p in SPACY_EXCEPTIONS[e]], dtype=np.int64)
    match_offsets = np.zeros(len(exceptions) + 1, dtype=np.int64)
    np.cumsum([len(p) for p in patterns], out=match_offsets[1:])
    match_pieces = np.asarray([n for p in patterns for n in p], dtype=np.int64)
    n_slots = 1
    while n_slots < 4 * len(exceptions):
        n_slots *= 2
    header = np.zeros(_HEADER, dtype=np.int64)
    header[_FIRST_UNIT] = 0
    header[_FIRST_CURRENCY] = len(SPACY_UNITS)
    header[_FIRST_EXCEPTION] = len(SPACY_UNITS) + len(SPACY_CURRENCY)
    header[_N_STRINGS] = len(texts)
    header[_OFFSETS] = _HEADER
    header[_PIECE_OFFSETS] = header[_OFFSETS] + offsets.size
    header[_PIECES] = header[_PIECE_OFFSETS] + piece_offsets.size
    header[_MATCH_OFFSETS] = header[_PIECES] + pieces.size
    header[_MATCH_PIECES] = header[_MATCH_OFFSETS] + match_offsets.size
    header[_SLOTS] = header[_MATCH_PIECES] + match_pieces.size
    header[_N_SLOTS] = n_slots
    header[_MAX_MATCH] = max((len(p) for p in patterns), default=0)
    header[_MAX_LENGTH] = max(len(e) for e in exceptions)
    header[_MAX_PIECES] = max(len(SPACY_EXCEPTIONS[e]) for e in exceptions)
    slots = np.full(n_slots, -1, dtype=np.int64)
    meta = np.concatenate(
        [header, offsets, piece_offsets, pieces, match_offsets, match_pieces, slots]
    )
    _fill_exception_slots(strings, meta)
    return strings, meta


@lru_cache(maxsize=1)
def token_tables() -> TokenTables:
    """The tokenizer's tables.

    spaCy's second pass re-merges a run of tokens that spells an exception
    the way the affix rules alone split it (``)`` + ``:`` -> ``):``); it
    knows the exceptions that have a prefix, suffix or infix. Their
    affix-only spellings are found here with the tokenizer itself, run
    without exceptions.
    """
    classes = character_classes()
    exceptions = list(SPACY_EXCEPTIONS)
    texts = [*SPACY_UNITS, *SPACY_CURRENCY, *exceptions]
    strings, meta = _layout(texts, exceptions, [[] for _ in exceptions])
    patterns = []
    for text in exceptions:
        points = np.fromiter(map(ord, text), dtype=np.int32, count=len(text))
        n = len(text)
        starts, ends = np.empty(n + 1, dtype=np.int64), np.empty(n + 1, dtype=np.int64)
        stack = np.empty(2 * n + 2, dtype=np.int64)
        count = _piece(points, 0, n, classes, strings, meta, False, starts, ends, 0, stack)
        has_affix = (
            _find_prefix(points, 0, n, classes, strings, meta) > 0
            or _find_suffix(points, 0, n, classes, strings, meta) > 0
            or any(_infix_at(points, 0, i, n, classes) > 0 for i in range(n))
        )
        patterns.append(
            [int(ends[k] - starts[k]) for k in range(count)] if has_affix and count > 1 else []
        )
    strings, meta = _layout(texts, exceptions, patterns)
    return TokenTables(classes, strings, meta)


# -- small helpers -------------------------------------------------------------------------


@nb.njit(cache=True, nogil=True, inline="always")
def has(classes: NDArray[np.uint32], code: Any, flag: int) -> bool:
    """Whether code point ``code`` has ``flag`` (a :mod:`quality_tables` flag)."""
    return (classes[code] & flag) != 0


@nb.njit(cache=True, nogil=True, inline="always")
def _is_digit(code: Any) -> bool:
    return 48 <= code <= 57


@nb.njit(cache=True, nogil=True)
def decode(data: NDArray[np.uint8], start: int, end: int, out: NDArray[np.int32]) -> int:
    """Code points of the UTF-8 bytes ``data[start:end]`` into ``out``; returns their number."""
    n = 0
    i = start
    while i < end:
        lead = np.int32(data[i])
        if lead < 0x80:
            out[n] = lead
            i += 1
        elif lead < 0xE0:
            out[n] = ((lead & 0x1F) << 6) | (np.int32(data[i + 1]) & 0x3F)
            i += 2
        elif lead < 0xF0:
            out[n] = (
                ((lead & 0x0F) << 12)
                | ((np.int32(data[i + 1]) & 0x3F) << 6)
                | (np.int32(data[i + 2]) & 0x3F)
            )
            i += 3
        else:
            out[n] = (
                ((lead & 0x07) << 18)
                | ((np.int32(data[i + 1]) & 0x3F) << 12)
                | ((np.int32(data[i + 2]) & 0x3F) << 6)
                | (np.int32(data[i + 3]) & 0x3F)
            )
            i += 4
        n += 1
    return n


@nb.njit(cache=True, nogil=True, inline="always")
def mix(h: np.uint64) -> np.uint64:
    """splitmix64's finaliser: spreads a hash over the low bits used as a table index."""
    h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


@nb.njit(cache=True, nogil=True)
def same(a: NDArray[np.int32], a0: int, b: NDArray[np.int32], b0: int, n: int) -> bool:
    """Whether ``a[a0:a0 + n] == b[b0:b0 + n]``."""
    for k in range(n):  # noqa: SIM110 - numba compiles no generator
        if a[a0 + k] != b[b0 + k]:
            return False
    return True


@nb.njit(cache=True, nogil=True)
def _fnv(points: NDArray[np.int32], start: int, end: int) -> np.uint64:
    h = _FNV_OFFSET
    for i in range(start, end):
        h = (h ^ np.uint64(points[i])) * _FNV_PRIME
    return h


@nb.njit(cache=True, nogil=True, inline="always")
def _string(meta: NDArray[np.int64], s: int) -> tuple[int, int]:
    """Where string ``s`` starts and ends in ``strings``."""
    base = meta[_OFFSETS]
    return meta[base + s], meta[base + s + 1]


@nb.njit(cache=True, nogil=True)
def _fill_exception_slots(strings: NDArray[np.int32], meta: NDArray[np.int64]) -> None:
    base = meta[_SLOTS]
    mask = meta[_N_SLOTS] - 1
    for s in range(meta[_FIRST_EXCEPTION], meta[_N_STRINGS]):
        a, b = _string(meta, s)
        slot = np.int64(mix(_fnv(strings, a, b)) & np.uint64(mask))
        while meta[base + slot] >= 0:
            slot = (slot + 1) & mask
        meta[base + slot] = s - meta[_FIRST_EXCEPTION]


@nb.njit(cache=True, nogil=True)
def _exception(
    points: NDArray[np.int32],
    start: int,
    end: int,
    strings: NDArray[np.int32],
    meta: NDArray[np.int64],
) -> int:
    """Number of the exception spelled by ``points[start:end]``, or -1."""
    n = end - start
    if n <= 0:
        return -1
    base = meta[_SLOTS]
    mask = meta[_N_SLOTS] - 1
    slot = np.int64(mix(_fnv(points, start, end)) & np.uint64(mask))
    while meta[base + slot] >= 0:
        e = meta[base + slot]
        a, b = _string(meta, meta[_FIRST_EXCEPTION] + e)
        if b - a == n and same(strings, a, points, start, n):
            return e
        slot = (slot + 1) & mask
    return -1


@nb.njit(cache=True, nogil=True)
def _suffix_string(
    points: NDArray[np.int32],
    start: int,
    end: int,
    strings: NDArray[np.int32],
    meta: NDArray[np.int64],
    first: int,
    last: int,
) -> int:
    """Leftmost start of a string ``first..last-1`` ending ``points[start:end]`` after a digit."""
    best = end
    for s in range(first, last):
        a, b = _string(meta, s)
        m = b - a
        if (
            m < end - start
            and _is_digit(points[end - m - 1])
            and same(strings, a, points, end - m, m)
        ):
            best = min(best, end - m)
    return best


# -- affixes, infixes, URLs ------------------------------------------------------------------


@nb.njit(cache=True, nogil=True)
def _find_prefix(
    points: NDArray[np.int32],
    start: int,
    end: int,
    classes: NDArray[np.uint32],
    strings: NDArray[np.int32],
    meta: NDArray[np.int64],
) -> int:
    """Length of spaCy's prefix of ``points[start:end]`` (0: none)."""
    c = points[start]
    if c == 43:  # "+" unless a digit follows
        return 0 if end - start > 1 and _is_digit(points[start + 1]) else 1
    if has(classes, c, SP_PREFIX):
        return 1
    if c == 46 and end - start > 1 and points[start + 1] == 46:
        k = start
        while k < end and points[k] == 46:
            k += 1
        return k - start
    if c == 85 or c == 67 or c == 65:  # US$, C$, A$
        for s in range(meta[_FIRST_CURRENCY], meta[_FIRST_EXCEPTION]):
            a, b = _string(meta, s)
            if 1 < b - a <= end - start and same(strings, a, points, start, b - a):
                return b - a
    return 0


@nb.njit(cache=True, nogil=True)
def _find_suffix(
    points: NDArray[np.int32],
    start: int,
    end: int,
    classes: NDArray[np.uint32],
    strings: NDArray[np.int32],
    meta: NDArray[np.int64],
) -> int:
    """Length of spaCy's suffix of ``points[start:end]``: the match starting leftmost."""
    n = end - start
    if n <= 0:
        return 0
    last = points[end - 1]
    best = end
    if has(classes, last, SP_SUFFIX):
        best = end - 1
    if n >= 2:
        before = points[end - 2]
        if last == 0x2026 and before == 0x2026:
            best = min(best, end - 2)
        if (last == 115 or last == 83) and (before == 39 or before == 0x2019):
            best = min(best, end - 2)  # 's 'S ’s ’S
        if last == 46:
            if before == 46:  # a run of dots
                p = end - 1
                while p > start and points[p - 1] == 46:
                    p -= 1
                best = min(best, p)
            elif has(classes, before, SP_DOT_AFTER) or (
                n >= 3
                and has(classes, before, SP_UPPER)
                and has(classes, points[end - 3], SP_UPPER)
            ):
                best = min(best, end - 1)
            elif n >= 3 and points[end - 3] == 0xB0:
                lower = before | 32
                if lower == 99 or lower == 102 or lower == 107:
                    best = min(best, end - 1)  # °C. °F. °K., either case
    has_digit = False
    for k in range(start, end - 1):
        if _is_digit(points[k]):
            has_digit = True
            break
    if has_digit:
        if last == 43 and _is_digit(points[end - 2]):
            best = min(best, end - 1)
        first, stop = meta[_FIRST_UNIT], meta[_FIRST_EXCEPTION]  # units, then currency signs
        best = min(best, _suffix_string(points, start, end, strings, meta, first, stop))
    return end - best


@nb.njit(cache=True, nogil=True)
def _infix_at(
    points: NDArray[np.int32], start: int, i: int, end: int, classes: NDArray[np.uint32]
) -> int:
    """Length of the match of spaCy's English infix rules at ``i`` (0: none), in their order."""
    c = points[i]
    if c == 46 and i + 1 < end and points[i + 1] == 46:
        k = i
        while k < end and points[k] == 46:
            k += 1
        return k - i
    if c == 0x2026 or has(classes, c, SP_ICON):
        return 1
    if i == start:
        return 0
    before = points[i - 1]
    after = points[i + 1] if i + 1 < end else -1
    if (
        (c == 43 or c == 45 or c == 42 or c == 94)
        and _is_digit(before)
        and after >= 0
        and (_is_digit(after) or after == 45)
    ):
        return 1
    if (
        c == 46
        and after >= 0
        and (has(classes, before, SP_LOWER) or has(classes, before, SP_QUOTE))
        and (has(classes, after, SP_UPPER) or has(classes, after, SP_QUOTE))
    ):
        return 1
    if c == 44 and after >= 0 and has(classes, before, SP_ALPHA) and has(classes, after, SP_ALPHA):
        return 1
    if not (has(classes, before, SP_ALPHA) or _is_digit(before)):
        return 0
    if c == 45:  # "-", "--", "---": the first that a letter follows
        for m in range(1, 4):
            if i + m >= end or points[i + m - 1] != 45:
                return 0
            if has(classes, points[i + m], SP_ALPHA):
                return m
        return 0
    if c == 0x2014:  # "—", "——"
        if after >= 0 and has(classes, after, SP_ALPHA):
            return 1
        if after == 0x2014 and i + 2 < end and has(classes, points[i + 2], SP_ALPHA):
            return 2
        return 0
    if c == 0x2013 or c == 126 or c == 58 or c == 60 or c == 62 or c == 61 or c == 47:
        return 1 if after >= 0 and has(classes, after, SP_ALPHA) else 0
    return 0


@nb.njit(cache=True, nogil=True)
def _label_ok(points: NDArray[np.int32], start: int, end: int, classes: NDArray[np.uint32]) -> bool:
    """A host label of spaCy's URL rule: 1-64 characters, first and last alphanumeric."""
    if not 1 <= end - start <= 64:
        return False
    if not (has(classes, points[start], URL_CHAR) and has(classes, points[end - 1], URL_CHAR)):
        return False
    for k in range(start, end):
        c = points[k]
        if not (has(classes, c, URL_CHAR) or c == 95 or c == 45):
            return False
    return True


@nb.njit(cache=True, nogil=True)
def _host_and_rest(
    points: NDArray[np.int32], h: int, end: int, classes: NDArray[np.uint32]
) -> bool:
    """``points[h:end]`` is host labels, a lower-case top-level domain, a port, a path."""
    stop = h  # the host ends at the first ":", "/", "?" or "#"
    while stop < end and not (
        points[stop] == 58 or points[stop] == 47 or points[stop] == 63 or points[stop] == 35
    ):
        stop += 1
    dot = -1
    for k in range(stop - 1, h - 1, -1):
        if points[k] == 46:
            dot = k
            break
    if dot < 0 or not 2 <= stop - dot - 1 <= 63:
        return False
    for k in range(dot + 1, stop):
        if not has(classes, points[k], SP_LOWER):
            return False
    label = h
    for k in range(h, dot + 1):
        if points[k] == 46:
            if not _label_ok(points, label, k, classes):
                return False
            label = k + 1
    if stop == end or points[stop] != 58:
        return True
    k = stop + 1  # a port of 2 to 5 digits, then the end or a path
    while k < end and has(classes, points[k], DECIMAL):
        k += 1
    if not 2 <= k - stop - 1 <= 5:
        return False
    return k == end or points[k] == 47 or points[k] == 63 or points[k] == 35


@nb.njit(cache=True, nogil=True)
def _is_url(points: NDArray[np.int32], start: int, end: int, classes: NDArray[np.uint32]) -> bool:
    """spaCy's ``URL_MATCH`` on ``points[start:end]`` (host names; not its IP-address branch)."""
    has_dot = False
    for k in range(start, end):
        if points[k] == 46:
            has_dot = True
            break
    if not has_dot:
        return False
    for attempt in range(2):
        h0 = start
        if attempt == 1:  # with a scheme: [\w+\-.]{2,}://
            k = start
            while k < end and (
                has(classes, points[k], WORD)
                or points[k] == 43
                or points[k] == 45
                or points[k] == 46
            ):
                k += 1
            if not (
                k - start >= 2
                and k + 2 < end
                and points[k] == 58
                and points[k + 1] == 47
                and points[k + 2] == 47
            ):
                break
            h0 = k + 3
        if _host_and_rest(points, h0, end, classes):
            return True
        for q in range(h0 + 1, end):  # user information: anything up to an "@"
            if points[q] == 64 and _host_and_rest(points, q + 1, end, classes):
                return True
    return False


# -- the tokenizer -------------------------------------------------------------------------


@nb.njit(cache=True, nogil=True, inline="always")
def _emit(starts: NDArray[np.int64], ends: NDArray[np.int64], n: int, a: int, b: int) -> int:
    starts[n] = a
    ends[n] = b
    return n + 1


@nb.njit(cache=True, nogil=True)
def _emit_exception(
    meta: NDArray[np.int64],
    e: int,
    a: int,
    starts: NDArray[np.int64],
    ends: NDArray[np.int64],
    n: int,
) -> int:
    """The tokens of exception ``e`` spelled at ``a``."""
    base = meta[_PIECE_OFFSETS]
    for k in range(meta[base + e], meta[base + e + 1]):
        length = meta[meta[_PIECES] + k]
        n = _emit(starts, ends, n, a, a + length)
        a += length
    return n


@nb.njit(cache=True, nogil=True)
def _attach(
    points: NDArray[np.int32],
    a: int,
    b: int,
    classes: NDArray[np.uint32],
    strings: NDArray[np.int32],
    meta: NDArray[np.int64],
    exceptions: bool,
    starts: NDArray[np.int64],
    ends: NDArray[np.int64],
    n: int,
) -> int:
    """Tokens of what is left of a piece once its affixes are off: exception, URL or infixes."""
    e = _exception(points, a, b, strings, meta) if exceptions else -1
    if e >= 0:
        return _emit_exception(meta, e, a, starts, ends, n)
    if _is_url(points, a, b, classes):
        return _emit(starts, ends, n, a, b)
    at = a
    i = a
    while i < b:
        m = _infix_at(points, a, i, b, classes)
        if m == 0:
            i += 1
            continue
        if i != a:  # spaCy skips an infix at the very start
            if i != at:
                n = _emit(starts, ends, n, at, i)
            n = _emit(starts, ends, n, i, i + m)
            at = i + m
        i += m
    if at < b:
        n = _emit(starts, ends, n, at, b)
    return n


@nb.njit(cache=True, nogil=True)
def _piece(
    points: NDArray[np.int32],
    a: int,
    b: int,
    classes: NDArray[np.uint32],
    strings: NDArray[np.int32],
    meta: NDArray[np.int64],
    exceptions: bool,
    starts: NDArray[np.int64],
    ends: NDArray[np.int64],
    n: int,
    stack: NDArray[np.int64],
) -> int:
    """Tokens of one whitespace-free piece ``points[a:b]`` (spaCy's ``_split_affixes``).

    ``exceptions``: whether spaCy's exceptions apply (they always do, except
    when the tables are built).
    """
    plain = True  # letters only, none of them an affix or symbol: no rule but exceptions applies
    for k in range(a, b):
        if (classes[points[k]] & (SP_ALPHA | SP_PREFIX | SP_SUFFIX | SP_ICON)) != SP_ALPHA:
            plain = False
            break
    if plain:
        e = _exception(points, a, b, strings, meta) if exceptions else -1
        if e < 0:
            return _emit(starts, ends, n, a, b)
        return _emit_exception(meta, e, a, starts, ends, n)
    n_prefixes = 0  # prefixes fill stack[0:2k] upwards, suffixes stack[-2k:] downwards
    n_suffixes = 0
    top = stack.size
    last = -1
    while b > a and b - a != last:
        if exceptions and _exception(points, a, b, strings, meta) >= 0:
            break
        last = b - a
        pre = _find_prefix(points, a, b, classes, strings, meta)
        if (
            exceptions
            and pre
            and a + pre < b
            and _exception(points, a + pre, b, strings, meta) >= 0
        ):
            stack[2 * n_prefixes] = a
            stack[2 * n_prefixes + 1] = a + pre
            n_prefixes += 1
            a += pre
            break
        suf = _find_suffix(points, a + pre, b, classes, strings, meta)
        if (
            exceptions
            and suf
            and b - suf > a
            and _exception(points, a, b - suf, strings, meta) >= 0
        ):
            stack[top - 2 * n_suffixes - 2] = b - suf
            stack[top - 2 * n_suffixes - 1] = b
            n_suffixes += 1
            b -= suf
            break
        if pre:
            stack[2 * n_prefixes] = a
            stack[2 * n_prefixes + 1] = a + pre
            n_prefixes += 1
        if suf:
            stack[top - 2 * n_suffixes - 2] = b - suf
            stack[top - 2 * n_suffixes - 1] = b
            n_suffixes += 1
        a += pre
        b -= suf
    for k in range(n_prefixes):
        n = _emit(starts, ends, n, stack[2 * k], stack[2 * k + 1])
    if b > a:
        n = _attach(points, a, b, classes, strings, meta, exceptions, starts, ends, n)
    for k in range(n_suffixes - 1, -1, -1):
        n = _emit(starts, ends, n, stack[top - 2 * k - 2], stack[top - 2 * k - 1])
    return n


@nb.njit(cache=True, nogil=True)
def _spelling(
    points: NDArray[np.int32],
    strings: NDArray[np.int32],
    meta: NDArray[np.int64],
    starts: NDArray[np.int64],
    ends: NDArray[np.int64],
    spaces: NDArray[np.bool_],
    n: int,
    i: int,
    m: int,
) -> int:
    """The exception whose affix-only spelling is tokens ``i:i + m``, or -1.

    The tokens must be words with no whitespace token between them; a single
    space between two pieces makes no token, so they may stand in different
    pieces (spaCy's matcher compares token texts, not the text between).
    """
    if i + m > n:
        return -1
    total = 0
    for k in range(i, i + m):
        if spaces[k]:
            return -1
        total += ends[k] - starts[k]
    if total > meta[_MAX_LENGTH]:
        return -1
    h = _FNV_OFFSET
    for k in range(i, i + m):
        for c in range(starts[k], ends[k]):
            h = (h ^ np.uint64(points[c])) * _FNV_PRIME
    base = meta[_SLOTS]
    mask = meta[_N_SLOTS] - 1
    slot = np.int64(mix(h) & np.uint64(mask))
    while meta[base + slot] >= 0:
        e = meta[base + slot]
        slot = (slot + 1) & mask
        a, b = _string(meta, meta[_FIRST_EXCEPTION] + e)
        first = meta[meta[_MATCH_OFFSETS] + e]
        if b - a != total or meta[meta[_MATCH_OFFSETS] + e + 1] - first != m:
            continue
        at = a
        ok = True
        for k in range(m):
            length = ends[i + k] - starts[i + k]
            if length != meta[meta[_MATCH_PIECES] + first + k] or not same(
                strings, at, points, starts[i + k], length
            ):
                ok = False
                break
            at += length
        if ok:
            return e
    return -1


@nb.njit(cache=True, nogil=True)
def _blocked(
    points: NDArray[np.int32],
    strings: NDArray[np.int32],
    meta: NDArray[np.int64],
    starts: NDArray[np.int64],
    ends: NDArray[np.int64],
    spaces: NDArray[np.bool_],
    n: int,
    i: int,
    m: int,
) -> bool:
    """Whether a run that spaCy's matcher takes before run ``i:i + m`` covers its first or last token.

    spaCy takes runs longest first, then leftmost, and every run it looks at
    (kept or not) blocks later runs that share their first or last token.
    """
    longest = meta[_MAX_MATCH]
    for s in range(max(0, i - longest + 1), i + m):
        for size in range(m, longest + 1):
            if s + size > n:
                break
            if size == m and s >= i:
                continue  # not before run i:i + m
            covers_first = s <= i < s + size
            covers_last = s <= i + m - 1 < s + size
            if (covers_first or covers_last) and _spelling(
                points, strings, meta, starts, ends, spaces, n, s, size
            ) >= 0:
                return True
    return False


@nb.njit(cache=True, nogil=True)
def _merge_exceptions(
    points: NDArray[np.int32],
    strings: NDArray[np.int32],
    meta: NDArray[np.int64],
    starts: NDArray[np.int64],
    ends: NDArray[np.int64],
    spaces: NDArray[np.bool_],
    n: int,
) -> int:
    """spaCy's ``_apply_special_cases``: returns the new number of tokens.

    A run of two or more tokens of one piece that spells an exception exactly
    as the affix rules split it becomes that exception's tokens, unless an
    earlier run (see :func:`_blocked`) shares its first or last token. Runs
    across a space never change a token (their text is no exception) but do
    block.
    """
    longest = meta[_MAX_MATCH]
    found = 0
    for i in range(n - 1):
        for m in range(2, longest + 1):
            if i + m > n or ends[i + m - 2] != starts[i + m - 1]:
                break  # the run leaves its piece
            if _spelling(points, strings, meta, starts, ends, spaces, n, i, m) >= 0:
                found += 1
    if found == 0:
        return n
    run_start = np.empty(found, dtype=np.int64)
    run_size = np.empty(found, dtype=np.int64)
    run_exception = np.empty(found, dtype=np.int64)
    k = 0
    for i in range(n - 1):
        for m in range(2, longest + 1):
            if i + m > n or ends[i + m - 2] != starts[i + m - 1]:
                break
            e = _spelling(points, strings, meta, starts, ends, spaces, n, i, m)
            if e >= 0 and not _blocked(points, strings, meta, starts, ends, spaces, n, i, m):
                run_start[k] = i
                run_size[k] = m
                run_exception[k] = e
                k += 1
    if k == 0:
        return n
    taken = np.full(n, -1, dtype=np.int64)  # runs kept do not overlap
    for r in range(k):
        taken[run_start[r]] = r
    size = n + k * meta[_MAX_PIECES]
    new_starts = np.empty(size, dtype=np.int64)
    new_ends = np.empty(size, dtype=np.int64)
    new_spaces = np.zeros(size, dtype=np.bool_)
    count = 0
    i = 0
    while i < n:
        r = taken[i]
        if r < 0:
            new_starts[count] = starts[i]
            new_ends[count] = ends[i]
            new_spaces[count] = spaces[i]
            count += 1
            i += 1
        else:
            count = _emit_exception(meta, run_exception[r], starts[i], new_starts, new_ends, count)
            i += run_size[r]
    starts[:count] = new_starts[:count]
    ends[:count] = new_ends[:count]
    spaces[:count] = new_spaces[:count]
    return count


@nb.njit(cache=True, nogil=True)
def tokenize(
    points: NDArray[np.int32],
    start: int,
    end: int,
    classes: NDArray[np.uint32],
    strings: NDArray[np.int32],
    meta: NDArray[np.int64],
    with_space: bool,
    starts: NDArray[np.int64],
    ends: NDArray[np.int64],
    spaces: NDArray[np.bool_],
    stack: NDArray[np.int64],
) -> int:
    """Tokens of ``points[start:end]`` as ranges ``starts[k]:ends[k]``; returns their number.

    Words only, or (``with_space``) also the whitespace tokens spaCy makes
    (``spaces[k]`` tells them apart). ``starts``, ``ends`` and ``spaces``
    need room for ``end - start`` entries, ``stack`` for twice that.
    """
    n = 0
    split = False  # a piece became several tokens: the second pass may apply
    i = start
    while i < end:
        j = i
        if has(classes, points[i], SPACE):
            while j < end and has(classes, points[j], SPACE):
                j += 1
            a = i + 1 if (i > start and points[i] == 32) else i  # spaCy's space after a word
            if a < j:
                spaces[n] = True
                n = _emit(starts, ends, n, a, j)
        else:
            while j < end and not has(classes, points[j], SPACE):
                j += 1
            first = n
            n = _piece(points, i, j, classes, strings, meta, True, starts, ends, n, stack)
            spaces[first:n] = False
            split = split or n - first > 1
        i = j
    if split:
        n = _merge_exceptions(points, strings, meta, starts, ends, spaces, n)
    if with_space:
        return n
    words = 0
    for k in range(n):
        if not spaces[k]:
            starts[words] = starts[k]
            ends[words] = ends[k]
            words += 1
    return words


def words(text: str, *, with_space: bool = False) -> list[str]:
    """The tokens of ``text`` (whitespace tokens too with ``with_space``).

    For tests and for looking at a document; the kernels never build these strings.
    """
    tables = token_tables()
    points = np.fromiter((ord(c) for c in text), dtype=np.int32, count=len(text))
    n = len(text)
    starts = np.empty(n + 1, dtype=np.int64)
    ends = np.empty(n + 1, dtype=np.int64)
    spaces = np.empty(n + 1, dtype=np.bool_)
    stack = np.empty(2 * n + 2, dtype=np.int64)
    count = tokenize(points, 0, n, *tables, with_space, starts, ends, spaces, stack)
    return [text[starts[k] : ends[k]] for k in range(count)]
