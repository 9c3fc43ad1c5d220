"""The per-classifier specs of ``fasttext_quality``: their keys, checks and example files.

A spec is a mapping of :data:`SPEC_KEYS` (the scorer's own values fill the
keys a spec leaves out). :func:`check_spec` refuses a spec without exactly
one data source or with settings out of range; :func:`example_fingerprints`
tells a changed example file (local or on a store), so that the classifier
is trained again. The files are read by :mod:`thresher.io.documents`.
"""

from __future__ import annotations

from typing import Any

from thresher.io.documents import file_fingerprints

#: Per-classifier parameters and their defaults (the scorer's own values override these).
SPEC_KEYS = (
    "positive_files",
    "negative_files",
    "positive_labels",
    "label_column",
    "n_negatives",
    "n_documents",
    "model_path",
    "positive_label",
    "seed",
    "epoch",
    "learning_rate",
    "dim",
    "word_ngrams",
    "min_count",
    "bucket",
)


def check_spec(spec: dict[str, Any], where: str) -> dict[str, Any]:
    """Exactly one data source per classifier; numeric settings in range."""
    sources = [
        name
        for name, present in (
            ("positive_files", spec["positive_files"] is not None),
            ("positive_labels", spec["positive_labels"] is not None),
            ("model_path", spec["model_path"] is not None),
        )
        if present
    ]
    if len(sources) != 1:
        raise ValueError(
            f"{where}: give exactly one of positive_files (with or without negative_files), "
            f"positive_labels or model_path; got {sources or 'none'}"
        )
    if spec["negative_files"] is not None and spec["positive_files"] is None:
        raise ValueError(f"{where}: negative_files needs positive_files")
    for key in ("positive_files", "negative_files", "positive_labels"):
        value = spec[key]
        if value is not None and (
            not isinstance(value, list)
            or not value
            or not all(isinstance(v, str | int) for v in value)
        ):
            raise ValueError(f"{where}: {key} must be a non-empty list, got {value!r}")
    for key in ("epoch", "dim", "word_ngrams", "min_count", "n_documents", "bucket"):
        value = spec[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{where}: {key} must be a positive integer, got {value!r}")
    if spec["n_negatives"] is not None and (
        isinstance(spec["n_negatives"], bool)
        or not isinstance(spec["n_negatives"], int)
        or spec["n_negatives"] < 1
    ):
        raise ValueError(
            f"{where}: n_negatives must be a positive integer, got {spec['n_negatives']!r}"
        )
    if not isinstance(spec["learning_rate"], int | float) or not spec["learning_rate"] > 0:
        raise ValueError(f"{where}: learning_rate must be > 0, got {spec['learning_rate']!r}")
    if spec["seed"] is not None and (
        isinstance(spec["seed"], bool) or not isinstance(spec["seed"], int)
    ):
        raise ValueError(f"{where}: seed must be an integer, got {spec['seed']!r}")
    return spec


def example_fingerprints(spec: dict[str, Any]) -> list[list[Any]]:
    """URI, size and version of each example file of a spec (a changed file retrains)."""
    return file_fingerprints([*(spec["positive_files"] or []), *(spec["negative_files"] or [])])
