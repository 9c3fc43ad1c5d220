"""The character tables of thresher's two tokenisers, and what each splits text on.

Both tokenisers run in compiled kernels that look each code point up in a
table built once per process:

- :func:`shingle_classes` (MinHash shingles, decontamination n-grams): a code
  point is whitespace, punctuation (Unicode category ``P*``) or other. Words
  are runs of "other"; punctuation is dropped. Code points from
  ``SHINGLE_TABLE_SIZE`` up are "other": no whitespace or punctuation
  character lies above it (a test scans the whole range).
- :func:`word_classes` (hashed n-gram features: DSIR, the text eval's
  model): a code point is whitespace, a word character or other, exactly as
  Python's ``re`` sees ``\\s`` and ``\\w``, over all of Unicode.

The two differ on purpose (a shingle ignores punctuation; a feature n-gram
keeps ``\\w`` runs only): changing either changes signatures or features,
hence what runs keep.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray

#: Code points below this bound are classified by the shingle table.
SHINGLE_TABLE_SIZE = 0x20000
#: Classes of the shingle table.
SHINGLE_OTHER, SHINGLE_SPACE, SHINGLE_PUNCT = 0, 1, 2

#: Classes of the word table.
WORD_SPACE, WORD_CHAR, WORD_OTHER = 0, 1, 2
_MAX_CODE_POINT = 0x110000


@lru_cache(maxsize=1)
def shingle_classes() -> NDArray[np.uint8]:
    """Class of each code point below ``SHINGLE_TABLE_SIZE``: other, whitespace or punctuation."""
    classes = np.zeros(SHINGLE_TABLE_SIZE, dtype=np.uint8)
    for code in range(SHINGLE_TABLE_SIZE):
        char = chr(code)
        if char.isspace():
            classes[code] = SHINGLE_SPACE
        elif unicodedata.category(char).startswith("P"):
            classes[code] = SHINGLE_PUNCT
    return classes


@lru_cache(maxsize=1)
def word_classes() -> NDArray[np.uint8]:
    """Class of every Unicode code point, as Python's ``re`` sees ``\\w`` and ``\\s``."""
    everything = "".join(map(chr, range(_MAX_CODE_POINT)))
    classes = np.full(_MAX_CODE_POINT, WORD_OTHER, dtype=np.uint8)
    for match in re.finditer(r"\w+", everything):
        classes[match.start() : match.end()] = WORD_CHAR
    for match in re.finditer(r"\s+", everything):
        classes[match.start() : match.end()] = WORD_SPACE
    return classes
