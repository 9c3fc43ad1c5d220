"""The per-classifier specs of ``fasttext_quality``: their keys, constraints, rules and files.

A spec is a mapping of :data:`SPEC_KEYS` (the scorer's own values fill the
keys a spec leaves out). Each key is declared once, in
:data:`SPEC_CONSTRAINTS`: the scorer's parameters of the same names and the
keys of every ``classifiers`` entry are checked against it.
:func:`check_spec` checks a classifier's own keys and refuses a spec without
exactly one data source (and checks a ``preselect`` source in full,
:func:`thresher.models.preselect.preselect_params`);
:func:`example_fingerprints` tells a changed example file (local or on a
store), so that the classifier is trained again. The files are read by
:mod:`thresher.io.documents`.
"""

from __future__ import annotations

from typing import Any

from thresher._params import (
    Constraints,
    Integral,
    Interval,
    ListOf,
    Mapping,
    Real,
    Text,
    check_entry,
)
from thresher.io.documents import file_fingerprints
from thresher.models.preselect import preselect_params

_POSITIVE_COUNT = Interval(Integral, 1, None)

#: What each per-classifier parameter may be (the scorer's parameters of these names too).
SPEC_CONSTRAINTS: dict[str, Constraints] = {
    "positive_files": [ListOf(Text(), what="file paths"), None],
    "negative_files": [ListOf(Text(), what="file paths"), None],
    "positive_labels": [
        ListOf(Text(allow_empty=True), Interval(Integral, None, None), what="labels"),
        None,
    ],
    "label_column": [Text()],
    "n_negatives": [_POSITIVE_COUNT, None],
    "n_documents": [_POSITIVE_COUNT],
    "preselect": [Mapping(), None],
    "model_path": [Text(), None],
    "positive_label": [Text()],
    "seed": [Interval(Integral, None, None), None],
    "epoch": [_POSITIVE_COUNT],
    "learning_rate": [Interval(Real, 0, None, closed="neither")],
    "dim": [_POSITIVE_COUNT],
    "word_ngrams": [_POSITIVE_COUNT],
    "min_count": [_POSITIVE_COUNT],
    "bucket": [_POSITIVE_COUNT],
}

#: Per-classifier parameters (the scorer's own values are their defaults).
SPEC_KEYS = tuple(SPEC_CONSTRAINTS)


def check_spec(own: dict[str, Any], defaults: dict[str, Any], where: str) -> dict[str, Any]:
    """The complete spec of a classifier: its own keys checked, then the scorer's values added.

    ``own`` is a ``classifiers`` entry (``{}`` for the scorer's single
    classifier); ``defaults`` are the scorer's values, checked as its
    parameters. Refuses an unknown key, a bad value, and a spec without
    exactly one data source (ValueError starting with ``where``).
    """
    check_entry(where, own, SPEC_CONSTRAINTS)
    spec = {**defaults, **own}
    sources = [
        name
        for name, present in (
            ("positive_files", spec["positive_files"] is not None),
            ("positive_labels", spec["positive_labels"] is not None),
            ("preselect", spec["preselect"] is not None),
            ("model_path", spec["model_path"] is not None),
        )
        if present
    ]
    if len(sources) != 1:
        raise ValueError(
            f"{where}: give exactly one of positive_files (with or without negative_files), "
            f"positive_labels, preselect or model_path; got {sources or 'none'}"
        )
    if spec["negative_files"] is not None and spec["positive_files"] is None:
        raise ValueError(f"{where}: negative_files needs positive_files")
    if spec["preselect"] is not None:
        preselect_params(spec["preselect"], f"{where}: preselect")
    return spec


def example_fingerprints(spec: dict[str, Any]) -> list[list[Any]]:
    """URI, size and version of each example file of a spec (a changed file retrains)."""
    return file_fingerprints([*(spec["positive_files"] or []), *(spec["negative_files"] or [])])
