"""MinHash signatures: datasketch's values exactly, known shingles, unbiased Jaccard estimates."""

from __future__ import annotations

import random
import sys

import numpy as np
import pyarrow as pa
import pytest
from datasketch import MinHash

from tests.helpers.batches import text_batch
from tests.helpers.minhash import datasketch_minhash
from thresher.dedup.shingles import (
    normalize_text,
    permutations,
    shingles,
    signature_matrix,
    to_lean_minhash,
)
from thresher.scorers import make_scorer

TEXTS = [
    "Hello, World!  This is   a test of the émergency broadcast system.",
    "The chef simmered the fragrant sauce for an hour.\nThen the guests arrived.",
    "short",
    "Ünïcödé\u00a0spaces\u3000and — dashes “quotes” 日本語のテキスト、句読点。 😀 emoji",
    "tab\tseparated\r\nlines  with trailing space   ",
    "İstanbul ΣΊΣΥΦΟΣ straße don't stop",
]
OPTIONS = [
    {"ngram": 5, "unit": "word"},
    {"ngram": 1, "unit": "word"},
    {"ngram": 3, "unit": "word", "punctuation": False, "lowercase": False},
    {"ngram": 4, "unit": "char"},
    {"ngram": 2, "unit": "char", "whitespace": False, "punctuation": False},
]


@pytest.mark.parametrize("options", OPTIONS)
def test_signatures_are_datasketchs(options: dict[str, object]) -> None:
    signatures, counts = signature_matrix(pa.array(TEXTS), num_perm=64, seed=7, **options)
    for row, text in enumerate(TEXTS):
        expected = datasketch_minhash(text, num_perm=64, seed=7, **options)  # type: ignore[arg-type]
        assert np.array_equal(signatures[row], expected.hashvalues), text
        assert counts[row] == len(shingles(text, **options))  # type: ignore[arg-type]


def test_permutations_are_datasketchs() -> None:
    for num_perm, seed in [(128, 1), (64, 42)]:
        a, b = permutations(num_perm, seed)
        reference = MinHash(num_perm=num_perm, seed=seed).permutations
        assert np.array_equal(a, reference[0]) and np.array_equal(b, reference[1])


def test_known_normalisation_and_shingles() -> None:
    assert normalize_text("Hello,  World!\n") == "hello world"
    assert normalize_text("Hello,  World!", punctuation=False) == "hello, world!"
    assert normalize_text("A  b", lowercase=False, whitespace=False) == "A  b"
    assert normalize_text("don't — stop") == "dont stop"
    assert shingles("a b c d", ngram=2) == [b"a b", b"b c", b"c d"]
    assert shingles("Two words", ngram=5) == [b"two words"]  # shorter than ngram: one shingle
    assert shingles("abcd", ngram=3, unit="char") == [b"abc", b"bcd"]
    assert shingles("!!! ...") == []


def test_no_shingle_means_no_signature() -> None:
    signatures, counts = signature_matrix(pa.array(["!!! ...", None, "words here"]), num_perm=8)
    assert counts.tolist() == [0, 0, 1]
    assert np.all(signatures[:2] == np.uint32(0xFFFFFFFF))


def test_shingle_classes_cover_every_space_and_punctuation() -> None:
    import unicodedata

    from thresher.tokens import shingle_classes

    classes = shingle_classes()
    assert classes[ord(" ")] == 1 and classes[ord("\u3000")] == 1 and classes[ord(",")] == 2
    beyond = [
        code
        for code in range(len(classes), sys.maxunicode + 1)
        if chr(code).isspace() or unicodedata.category(chr(code)).startswith("P")
    ]
    assert beyond == []


def _unique_words(rng: random.Random, n: int) -> list[str]:
    return [f"w{rng.getrandbits(48):012x}" for _ in range(n)]


def test_estimates_are_unbiased_at_known_jaccard() -> None:
    """Word sets with exactly known Jaccard: replacing k of n distinct words gives (n-k)/(n+k)."""
    rng = random.Random(0)
    n, num_perm = 120, 128
    errors = []
    for k in (0, 6, 13, 20, 40, 60):
        truth = (n - k) / (n + k)
        for _ in range(12):
            words = _unique_words(rng, n)
            edited = words[: n - k] + _unique_words(rng, k)
            rng.shuffle(edited)
            sigs, _ = signature_matrix(
                pa.array([" ".join(words), " ".join(edited)]), num_perm=num_perm, ngram=1
            )
            estimate = float(np.mean(sigs[0] == sigs[1]))
            errors.append(estimate - truth)
            assert abs(estimate - truth) < 5 * np.sqrt(truth * (1 - truth) / num_perm) + 1e-9
    # 72 pairs: the mean error of an unbiased estimator is within a few standard errors of 0.
    assert abs(np.mean(errors)) < 0.015


def test_scorer_columns_round_trip_to_datasketch() -> None:
    scorer = make_scorer("minhash", {"num_perm": 32, "ngram": 2, "seed": 3})
    scorer.setup()
    texts = [
        "Alpha beta gamma delta.",
        "Alpha beta gamma epsilon.",
        "Alpha beta gamma delta.",
        "?!",
    ]
    result = scorer.score(text_batch(texts))
    assert [f.name for f in scorer.output_fields("mh")] == ["mh", "mh_exact", "mh_length"]
    signature, exact, length = (result.field(i) for i in range(3))
    assert signature.type == pa.binary()
    assert signature.is_null().to_pylist() == [False, False, False, True]
    leans = [to_lean_minhash(signature[i].as_py(), seed=3) for i in range(3)]
    references = [datasketch_minhash(t, num_perm=32, ngram=2, seed=3) for t in texts[:3]]
    for lean, reference in zip(leans, references, strict=True):
        assert np.array_equal(lean.hashvalues, reference.hashvalues)
    assert leans[0].jaccard(leans[1]) == references[0].jaccard(references[1])
    assert exact[0].as_py() == exact[2].as_py() != exact[1].as_py()
    assert len(exact[0].as_py()) == 16
    assert length.to_pylist() == [len(t) for t in texts]


def test_scorer_rejects_bad_parameters() -> None:
    for params in ({"num_perm": 0}, {"ngram": 0}, {"unit": "byte"}, {"seed": -1}):
        with pytest.raises(ValueError, match=next(iter(params))):
            make_scorer("minhash", params).output_fields("minhash")
