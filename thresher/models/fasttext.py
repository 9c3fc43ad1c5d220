"""Supervised fastText classifiers: text normalisation, training, loading, prediction.

A classifier tells ``__label__positive`` from ``__label__negative`` text
(:func:`train_classifier`), or is any fastText ``.bin`` classifier loaded
from a path (:func:`load_fasttext`, which checks the file's header before
fastText's loader reads it). Text is normalised the same way for training
and scoring (:func:`normalise`). fastText trains single-threaded here, so a
seed gives the same model. :class:`thresher.scorers.fasttext_quality.FastTextQualityScorer`
combines several into a quality score.

References
----------
Joulin et al., "Bag of Tricks for Efficient Text Classification", EACL 2017.
"""

from __future__ import annotations

import os
import re
import struct
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from thresher.errors import ThresherError

POSITIVE = "__label__positive"
NEGATIVE = "__label__negative"
_FASTTEXT_MAGIC = 793712314  # first int32 of every fastText .bin file
_PUNCTUATION = re.compile(r"([^\w\s])")
_SPACES = re.compile(r"\s+")


class FastTextModelError(ThresherError):
    """A fastText model file cannot be used (missing, or not a fastText model)."""


def normalise(text: str, lowercase: bool = True, max_words: int = 1000) -> str:
    """One line of space-separated words, punctuation split off, at most ``max_words`` words."""
    if lowercase:
        text = text.lower()
    words = _SPACES.sub(" ", _PUNCTUATION.sub(r" \1 ", text)).strip().split(" ")
    return " ".join(words[:max_words])


def train_classifier(
    positives: list[str],
    negatives: list[str],
    spec: dict[str, Any],
    seed: int,
    path: Path,
    lowercase: bool,
    max_words: int,
) -> dict[str, Any]:
    """Train one classifier from a temporary file (shuffled, seeded) and save it to ``path``."""
    import fasttext

    lines = [f"{POSITIVE} {normalise(t, lowercase, max_words)}" for t in positives]
    lines += [f"{NEGATIVE} {normalise(t, lowercase, max_words)}" for t in negatives]
    order = np.random.default_rng(seed).permutation(len(lines))
    with tempfile.TemporaryDirectory(prefix="thresher-fasttext-") as directory:
        train_file = Path(directory) / "train.txt"
        train_file.write_text("\n".join(lines[i] for i in order) + "\n", encoding="utf-8")
        model = fasttext.train_supervised(
            input=str(train_file),
            epoch=int(spec["epoch"]),
            lr=float(spec["learning_rate"]),
            dim=int(spec["dim"]),
            wordNgrams=int(spec["word_ngrams"]),
            minCount=int(spec["min_count"]),
            bucket=int(spec["bucket"]),
            loss="softmax",
            thread=1,
            seed=seed,
            verbose=0,
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_name(f".{path.name}.partial")
        model.save_model(str(staging))
        os.replace(staging, path)
    return {
        "seed": seed,
        "n_positive": len(positives),
        "n_negative": len(negatives),
        "spec": {k: v for k, v in spec.items() if v is not None},
        "model": path.name,
    }


def check_fasttext_file(path: Path) -> None:
    """Refuse a path that is not a fastText model before fastText's loader reads it."""
    if not path.is_file():
        raise FastTextModelError(f"fastText model not found: {path}")
    with path.open("rb") as handle:
        header = handle.read(8)
    if len(header) < 8 or struct.unpack("<i", header[:4])[0] != _FASTTEXT_MAGIC:
        raise FastTextModelError(
            f"{path}: not a fastText model (bad magic number); give a .bin saved by fastText"
        )


def load_fasttext(path: Path) -> Any:
    """Load a fastText model after checking its header."""
    import fasttext

    check_fasttext_file(path)
    try:
        return fasttext.load_model(str(path))
    except (ValueError, RuntimeError, MemoryError) as error:
        raise FastTextModelError(f"{path}: cannot load fastText model ({error})") from None


def positive_probability(model: Any, lines: list[str], positive_label: str) -> np.ndarray:
    """P(``positive_label``) for each normalised line (NaN when the model gives no label)."""
    if positive_label not in model.get_labels():
        raise FastTextModelError(
            f"positive_label {positive_label!r} is not a label of the model "
            f"(labels: {model.get_labels()})"
        )
    if not lines:
        return np.zeros(0, dtype=np.float64)
    labels, probabilities = model.predict(lines, k=-1, threshold=0.0)
    out = np.full(len(lines), np.nan, dtype=np.float64)
    for i, (names, values) in enumerate(zip(labels, probabilities, strict=True)):
        for name, value in zip(names, values, strict=True):
            if name == positive_label:
                out[i] = min(1.0, max(0.0, float(value)))
                break
        else:
            if len(names):
                out[i] = 0.0  # the model ranks every other label but not this one: p ~ 0
    return out
