"""Test data for the proxy-based scorers: topical documents with planted label noise.

Documents come from the sample corpus generator (clean, topical prose only),
and a known fraction of their labels is flipped to another topic. A proxy
trained on them should find the flipped rows: that is the known answer the
EL2N, AUM, forgetting, GraNd and influence tests check.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from thresher.examples.sample_corpus import generate_records
from thresher.fitting import FitContext
from thresher.io import schema as S

# Small enough to train in about a second, large enough to learn the topics.
SMALL_PROXY = {
    "features": {"dim": 1024},
    "hidden": 32,
    "epochs": 4,
    "n_seeds": 2,
    "batch_size": 16,
    "lr": 0.15,
    "weight_decay": 5e-4,
}


@cache
def noisy_topics(n_documents: int = 700, flip_fraction: float = 0.15, seed: int = 5) -> pa.Table:
    """Canonical rows (id, text, label, positions) of clean documents, some labels flipped.

    Column ``flipped`` (bool) marks the rows whose label is wrong, and
    ``true_label`` holds the right one.
    """
    records = [r for r in generate_records(n_documents, seed) if r["kind"] == "clean"]
    rng = np.random.default_rng(seed)
    topics = sorted({r["topic"] for r in records})
    flipped = rng.random(len(records)) < flip_fraction
    labels = [
        str(rng.choice([t for t in topics if t != r["topic"]])) if flip else r["topic"]
        for r, flip in zip(records, flipped, strict=True)
    ]
    return pa.table(
        {
            S.ID: [r["id"] for r in records],
            S.TEXT: [r["text"] for r in records],
            S.LABEL: labels,
            S.SHARD: pa.array(np.zeros(len(records), dtype=np.int32)),
            S.ROW: pa.array(np.arange(len(records), dtype=np.int64)),
            "flipped": flipped,
            "true_label": [r["topic"] for r in records],
        }
    )


def fit_context(table: pa.Table, artifact_dir: Path, seed: int = 0) -> FitContext:
    """A FitContext whose ``sample`` draws from ``table`` like the fit stage does."""
    return FitContext.of_table(table, artifact_dir, seed)


def shared_context(
    tmp_path_factory: pytest.TempPathFactory, table: pa.Table, scorer: str
) -> FitContext:
    """A FitContext for ``scorer`` in one run directory per test session.

    Scorers fitted through it with equal proxy settings share one trained
    proxy (``models/_shared``), across test modules, as in a real run.
    """
    models = tmp_path_factory.getbasetemp() / "noisy-topics-run" / "models"
    return fit_context(table, models / scorer)


def batch_of(table: pa.Table, columns: tuple[str, ...]) -> pa.RecordBatch:
    """The scorer's view of ``table``: only its input columns, one batch."""
    return pa.RecordBatch.from_arrays(
        [table.column(c).combine_chunks() for c in columns], names=list(columns)
    )


def auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve: the chance a positive outranks a negative (ties count 1/2).

    Mann-Whitney form with average ranks, O(n log n).
    """
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    ranks = (ends - (counts - 1) / 2.0)[inverse]  # 1-based average ranks
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))
