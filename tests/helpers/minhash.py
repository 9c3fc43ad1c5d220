"""MinHash references for the tests: datasketch computing what thresher's signatures must equal."""

from __future__ import annotations

import xxhash
from datasketch import MinHash

from thresher.dedup.shingles import Unit, shingles


def datasketch_minhash(
    text: str,
    *,
    num_perm: int = 128,
    seed: int = 1,
    ngram: int = 5,
    unit: Unit = "word",
    lowercase: bool = True,
    punctuation: bool = True,
    whitespace: bool = True,
) -> MinHash:
    """The ``datasketch.MinHash`` that the scorer's signature of ``text`` equals."""
    minhash = MinHash(num_perm=num_perm, seed=seed, hashfunc=xxhash.xxh32_intdigest)
    minhash.update_batch(
        shingles(
            text,
            ngram=ngram,
            unit=unit,
            lowercase=lowercase,
            punctuation=punctuation,
            whitespace=whitespace,
        )
    )
    return minhash
