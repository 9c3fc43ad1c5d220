"""Known answers for the Gopher-style text statistics."""

from __future__ import annotations

import pytest

from tests.helpers.batches import text_batch
from thresher.scorers import make_scorer


def _values(name: str, texts: list[str]) -> list[float]:
    return make_scorer(name).score(text_batch(texts)).to_pylist()


def test_word_count() -> None:
    assert _values("word_count", ["one two  three", "  ", "a\nb\tc d", "naïve café"]) == [
        3,
        0,
        4,
        2,
    ]


def test_alpha_fraction_counts_letters_of_any_script() -> None:
    values = _values("alpha_fraction", ["abcd", "ab12", "Привет мир", "!!!!", ""])
    assert values == pytest.approx([1.0, 0.5, 1.0, 0.0, 0.0])


def test_mean_word_length() -> None:
    assert _values("mean_word_length", ["ab abcd", "a", ""]) == pytest.approx([3.0, 1.0, 0.0])


def test_repeated_line_fraction() -> None:
    texts = ["a\nb\nc", "menu\nmenu\nmenu\nbody", "x\n\n\nx", "single line"]
    assert _values("repeated_line_fraction", texts) == pytest.approx([0.0, 0.5, 0.5, 0.0])
